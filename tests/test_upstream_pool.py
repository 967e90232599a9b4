"""The upstream connection pool: keep-alive reuse, stale connections, framing, decoding,
timeouts, slot limits and TLS — against real sockets, through the proxy where the
fake provider can show it, and against a byte-exact scripted server where it cannot."""

from __future__ import annotations

import gzip
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import httpx
import pytest
import trio
import trustme

from capsem_proxyd.upstream_pool import UpstreamPool
from tests.conftest import OPENAI_KEY
from tests.fake_upstream import FakeUpstream, Reply

Handler = Callable[[trio.SocketStream, int], Awaitable[None]]


def _pool(**kwargs: float) -> UpstreamPool:
    settings = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0, **kwargs}
    return UpstreamPool(**settings)  # type: ignore[arg-type]


async def _read_request(stream: trio.SocketStream, buffer: bytearray) -> bytes:
    """One request head (and its Content-Length body) off the stream; b"" at EOF."""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            return b""
        buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += await stream.receive_some(65536)
    buffer[:] = rest[length:]
    return head


@asynccontextmanager
async def scripted_server(handler: Handler, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback server calling ``handler(stream, connection_number)`` per connection;
    yields its base URL and the list of connection numbers opened so far."""
    opened: list[int] = []

    async def serve(stream: trio.SocketStream) -> None:
        opened.append(len(opened))
        wrapped: trio.abc.Stream = trio.SSLStream(stream, tls, server_side=True) if tls else stream
        try:
            await handler(wrapped, opened[-1])  # type: ignore[arg-type]
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield (f"{'https' if tls else 'http'}://{'localhost' if tls else '127.0.0.1'}:{port}", opened)
        nursery.cancel_scope.cancel()


def _answer(body: bytes, *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"content-type: application/json", b"content-length: %d" % len(body), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def _get(pool: UpstreamPool, url: str) -> tuple[int, bytes]:
    response = await pool.request(b"POST", httpx.URL(url + "/v1/x"), [(b"content-type", b"application/json")], b"{}")
    try:
        return response.status_code, await response.aread()
    finally:
        await response.aclose()


async def test_sequential_requests_through_the_proxy_reuse_one_upstream_connection(proxy, fake: FakeUpstream) -> None:
    async with httpx.AsyncClient(base_url=proxy.url, headers={"authorization": f"Bearer {OPENAI_KEY}"}) as client:
        for _ in range(3):
            reply = await client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
            assert reply.status_code == 200
    assert len(fake.requests) == 3
    assert fake.total_connections == 1


async def test_a_stream_cut_short_closes_its_upstream_connection_and_the_next_request_gets_a_fresh_one(
    proxy, fake: FakeUpstream
) -> None:
    fake.script(Reply(chunks=["word "] * 400, chunk_delay=0.01))
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=proxy.url, headers={"authorization": f"Bearer {OPENAI_KEY}"}) as client:
        async with client.stream("POST", "/v1/chat/completions", json=body) as streamed:
            async for _ in streamed.aiter_bytes():
                break  # leave mid-stream
    with trio.fail_after(10):
        await fake.wait_for_open_connections(0)  # the half-read upstream response was not kept
    async with httpx.AsyncClient(base_url=proxy.url, headers={"authorization": f"Bearer {OPENAI_KEY}"}) as client:
        reply = await client.post("/v1/chat/completions", json={**body, "stream": False})
    assert reply.status_code == 200
    assert fake.total_connections == 2


async def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    async def handler(stream: trio.SocketStream, number: int) -> None:
        buffer = bytearray()
        await _read_request(stream, buffer)
        await stream.send_all(_answer(b'{"n": %d}' % number))
        await stream.aclose()  # keep-alive promised, then closed while idle

    pool = _pool()
    async with scripted_server(handler) as (url, opened):
        assert await _get(pool, url) == (200, b'{"n": 0}')
        await trio.sleep(0.05)  # the FIN arrives: the pooled socket becomes readable
        assert await _get(pool, url) == (200, b'{"n": 1}')
    assert opened == [0, 1]
    await pool.aclose()


async def test_connection_close_from_the_server_is_honoured() -> None:
    async def handler(stream: trio.SocketStream, number: int) -> None:
        buffer = bytearray()
        while await _read_request(stream, buffer):
            await stream.send_all(_answer(b"{}", b"connection: close"))

    pool = _pool()
    async with scripted_server(handler) as (url, opened):
        for _ in range(2):
            assert await _get(pool, url) == (200, b"{}")
    assert opened == [0, 1]
    await pool.aclose()


async def test_chunked_and_gzip_bodies_arrive_decoded() -> None:
    payload = b'{"text": "' + b"hello " * 2000 + b'"}'
    packed = gzip.compress(payload)

    async def handler(stream: trio.SocketStream, number: int) -> None:
        buffer = bytearray()
        head = await _read_request(stream, buffer)
        assert b"accept-encoding: gzip, deflate" in head.lower()
        chunks = [packed[i : i + 700] for i in range(0, len(packed), 700)]
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
            + b"0\r\n\r\n"
        )
        buffer.clear()
        await _read_request(stream, buffer)
        deflated = zlib.compress(payload)
        await stream.send_all(_answer(deflated, b"content-encoding: deflate"))

    pool = _pool()
    async with scripted_server(handler) as (url, opened):
        assert await _get(pool, url) == (200, payload)
        assert await _get(pool, url) == (200, payload)
    assert opened == [0]  # both on one kept-alive connection
    await pool.aclose()


async def test_an_unknown_content_encoding_is_refused_not_forwarded_mislabelled() -> None:
    async def handler(stream: trio.SocketStream, number: int) -> None:
        await _read_request(stream, bytearray())
        await stream.send_all(_answer(b"\x00\x01", b"content-encoding: br"))

    pool = _pool()
    async with scripted_server(handler) as (url, _):
        with pytest.raises(httpx.DecodingError):
            await _get(pool, url)
    await pool.aclose()


async def test_a_truncated_body_is_a_protocol_error_and_the_connection_is_dropped() -> None:
    async def handler(stream: trio.SocketStream, number: int) -> None:
        buffer = bytearray()
        await _read_request(stream, buffer)
        if number == 0:
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial")
            await stream.aclose()
            return
        await stream.send_all(_answer(b"{}"))

    pool = _pool()
    async with scripted_server(handler) as (url, opened):
        with pytest.raises(httpx.RemoteProtocolError):
            await _get(pool, url)
        assert await _get(pool, url) == (200, b"{}")
    assert opened == [0, 1]
    await pool.aclose()


async def test_a_silent_upstream_is_a_read_timeout() -> None:
    async def handler(stream: trio.SocketStream, number: int) -> None:
        await _read_request(stream, bytearray())
        await trio.sleep_forever()

    pool = _pool(read=0.2)
    async with scripted_server(handler) as (url, _):
        with pytest.raises(httpx.ReadTimeout):
            await _get(pool, url)
    await pool.aclose()


async def test_requests_beyond_the_slot_limit_wait_then_time_out() -> None:
    release = trio.Event()

    async def handler(stream: trio.SocketStream, number: int) -> None:
        await _read_request(stream, bytearray())
        await release.wait()
        await stream.send_all(_answer(b"{}"))

    pool = UpstreamPool(connect=5, read=5, write=5, pool=0.2, max_connections=1)
    async with scripted_server(handler) as (url, _):
        async with trio.open_nursery() as nursery:
            results: list[tuple[int, bytes]] = []

            async def first() -> None:
                results.append(await _get(pool, url))

            nursery.start_soon(first)
            await trio.sleep(0.05)
            with pytest.raises(httpx.PoolTimeout):
                await _get(pool, url)
            release.set()
        assert results == [(200, b"{}")]
        assert await _get(pool, url) == (200, b"{}")  # the slot came back
    await pool.aclose()


async def test_tls_upstream_is_verified_and_addressed_by_name() -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)
    seen_names: list[str | None] = []
    server_context.sni_callback = lambda sock, name, context: seen_names.append(name)  # type: ignore[assignment]

    async def handler(stream: trio.SocketStream, number: int) -> None:
        buffer = bytearray()
        while await _read_request(stream, buffer):
            await stream.send_all(_answer(b'{"tls": true}'))

    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    async with scripted_server(handler, tls=server_context) as (url, opened):
        pool = _pool(connect=2)
        pool._ssl_context = trusting  # the operator's trust store would hold the provider's CA
        assert await _get(pool, url) == (200, b'{"tls": true}')
        assert await _get(pool, url) == (200, b'{"tls": true}')
        assert seen_names == ["localhost"] and opened == [0]
        await pool.aclose()

        untrusting = _pool(connect=2)  # default trust store: this CA is unknown
        with pytest.raises(httpx.ConnectError):
            await _get(untrusting, url)
        await untrusting.aclose()


async def test_the_client_address_reaches_the_upstream_only_when_the_operator_forwards_it(
    start_proxy, proxy_settings, fake: FakeUpstream
) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    for forward in (False, True):
        proxy = await start_proxy(proxy_settings, forward_client_ip=forward)
        async with httpx.AsyncClient(base_url=proxy.url, headers={"authorization": f"Bearer {OPENAI_KEY}"}) as client:
            assert (await client.post("/v1/chat/completions", json=body, headers={"remote-addr": "10.9.8.7"})).status_code == 200
        seen = fake.requests[-1].headers
        assert "remote-addr" not in seen  # Quart's own header, and a client's forged one
        assert ("127.0.0.1" in seen.get("x-forwarded-for", "")) is forward
