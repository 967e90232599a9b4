"""Timeouts: upstream connect/read, the whole-request deadline, stream idle, policies, and slow clients.

Each ends in a provider-shaped error the SDK raises as its own type, and the
upstream connection is closed (the fake sees the proxy go away).
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from capsem_proxyd.config import Settings
from capsem_proxyd.daemon.instance import open_instance
from capsem_proxyd.enforcement.loader import PolicyConfigError, load_policy_set
from capsem_proxyd.enforcement.tenants import load_policy_config
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import OPENAI_AUTH, OPENAI_KEY, Proxy, in_thread
from tests.support.sdk import (
    PROVIDERS,
    expected_error,
    message_of,
    open_fds,
    sdk_call,
    sdk_error,
    sdk_errors,
    socket_details,
    status_of,
    write_policy_folder,
)
from tests.support.waiting import wait_until

# --- upstream timeouts -------------------------------------------------------------------------


async def test_upstream_timeout_sets_read_and_stream_idle_together_connect_separately() -> None:
    settings = Settings(upstream_timeout=7.0, connect_timeout=3.0, request_timeout=40.0)
    async with open_instance(settings, load_policy_config(settings)) as instance:
        assert instance.upstream.timeouts.read == 7.0
        assert instance.pipeline.stream_settings.idle_timeout == 7.0
        assert instance.upstream.timeouts.connect == 3.0
        assert instance.pipeline.request_timeout == 40.0
    settings = Settings(request_timeout=0)
    async with open_instance(settings, load_policy_config(settings)) as instance:
        assert instance.pipeline.request_timeout is None


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_whole_request_deadline_is_504(
    provider: str, start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream
) -> None:
    """The provider answers slower than the deadline but inside the read timeout: the deadline wins."""
    proxy = await start_proxy(proxy_settings, request_timeout=0.5, upstream_timeout=10.0)
    fake.script(Reply(delay=5))
    error = await sdk_error(provider, proxy)
    assert isinstance(error, expected_error(provider, 504)) and status_of(error) == 504
    assert "did not complete its reply within 0.5s" in message_of(error)
    # The provider would answer after 5 s: done before that, with the client gone, is the proxy hanging up.
    with trio.fail_after(30):  # a cap against hanging, not a measure (what is asserted is below)
        await fake.requests[0].done.wait()
    assert fake.requests[0].client_closed  # the proxy hung up on the provider
    with trio.fail_after(30):  # a cap against hanging, not a measure
        await fake.wait_for_open_connections(0)


async def test_read_timeout_without_a_deadline_is_504(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(proxy_settings, request_timeout=0, upstream_timeout=0.5)
    fake.script(Reply(fault="never_answer"))
    error = await sdk_error("openai", proxy)
    assert status_of(error) == 504 and "did not answer in time" in message_of(error)
    with trio.fail_after(30):  # a cap against hanging, not a measure
        await fake.wait_for_open_connections(0)


@contextmanager
def unanswered_listener() -> Iterator[str]:
    """A port whose accept queue is full: the kernel drops new SYNs, so a connect never completes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    # The accept queue (one entry with a backlog of 0) is full once a filler's handshake is done, which
    # makes it writable: wait for that state, not for a fixed time (the cap only stops a hang).
    _, connected, _ = select.select([], fillers, [], 30)
    assert connected, "no filler connection completed its handshake"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for sock in [*fillers, listener]:
            sock.close()


async def test_connect_timeout_is_504(start_proxy: Callable[..., Any], proxy_settings: Settings) -> None:
    with unanswered_listener() as url:
        proxy = await start_proxy(proxy_settings, openai_upstream=url + "/v1", connect_timeout=0.5, upstream_timeout=30)
        error = await sdk_error("openai", proxy)
    assert isinstance(error, expected_error("openai", 504))
    assert "ConnectTimeout" in message_of(error)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_stream_idle_timeout_ends_the_stream_with_an_error_event(
    provider: str, start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(proxy_settings, upstream_timeout=0.5)
    fake.script(Reply(chunks=["first words, ", "then silence"], chunk_delay=30))
    error = await sdk_error(provider, proxy, stream=True)
    assert "timed out" in message_of(error) or "idle" in message_of(error), message_of(error)
    # The next chunk would come 30 s later: closed and not completed is the proxy ending the stream.
    with trio.fail_after(20):  # a cap against hanging, not a measure
        await fake.streams[0].closed.wait()
    assert fake.streams[0].client_closed and not fake.streams[0].completed


# --- policies ----------------------------------------------------------------------------------


@pytest.fixture
def failing_policies(tmp_path: Path) -> Path:
    return write_policy_folder(
        tmp_path / "policies",
        debug="",
        hang='class = "tests.support.policies:HangingPolicy"\nname = "StuckScanner"\n',
        explode='class = "tests.support.policies:RaisingPolicy"\nname = "BuggyScanner"\n',
    )


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_hanging_policy_blocks_after_its_timeout_and_is_named_in_the_log(
    provider: str, start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream,
    failing_policies: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = await start_proxy(proxy_settings, policy_dir=str(failing_policies), policy_timeout=0.3)
    error = await sdk_error(provider, proxy, prompt="please hang")
    assert isinstance(error, expected_error(provider, 400))
    assert "StuckScanner" in message_of(error) and "timed out after 0.3s" in message_of(error)
    assert fake.requests == []
    lines = [r.getMessage() for r in caplog.records if r.name == "capsem_proxyd.enforcement" and r.levelno == logging.ERROR]
    assert any(line.startswith("policy StuckScanner timed out in on_model_call") and "fail closed" in line for line in lines)
    assert await in_thread(lambda: sdk_call(provider, proxy, prompt="all fine"))  # the healthy path still works


async def test_raising_policy_blocks(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, failing_policies: Path
) -> None:
    proxy = await start_proxy(proxy_settings, policy_dir=str(failing_policies))
    error = await sdk_error("openai", proxy, prompt="explode now")
    assert status_of(error) == 400 and "BuggyScanner" in message_of(error) and "RuntimeError" in message_of(error)
    assert fake.requests == []


@pytest.mark.parametrize("prompt", ["please hang", "explode now"])
async def test_fail_open_policy_lets_the_request_through_and_says_so(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, prompt: str,
) -> None:
    folder = write_policy_folder(
        tmp_path / "policies",
        debug="",
        hang='class = "tests.support.policies:HangingPolicy"\nname = "StuckScanner"\nfail_open = true\n',
        explode='class = "tests.support.policies:RaisingPolicy"\nname = "BuggyScanner"\nfail_open = true\n',
    )
    proxy = await start_proxy(proxy_settings, policy_dir=str(folder), policy_timeout=0.3)
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            proxy.url + "/v1/chat/completions", headers=OPENAI_AUTH,
            json={"model": "m", "messages": [{"role": "user", "content": prompt}]},
        )
    assert response.status_code == 200
    assert response.headers["x-capsem-decision"] == "log"
    assert len(fake.requests) == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "capsem_proxyd.enforcement"]
    assert any("request allowed (fail_open = true)" in line for line in lines), lines
    # Fail-open is per policy: the Debug policy next to it still blocks.
    async with httpx.AsyncClient(timeout=10) as client:
        blocked = await client.post(
            proxy.url + "/v1/chat/completions", headers=OPENAI_AUTH,
            json={"model": "m", "messages": [{"role": "user", "content": prompt + " capsem_block"}]},
        )
    assert blocked.status_code == 400 and blocked.json()["error"]["capsem"]["policy"] == "Debug"


def test_fail_open_must_be_a_boolean(tmp_path: Path) -> None:
    folder = write_policy_folder(tmp_path / "p", hang='class = "tests.support.policies:HangingPolicy"\nfail_open = "yes"\n')
    with pytest.raises(PolicyConfigError, match="fail_open must be true or false"):
        load_policy_set(folder)


# --- slow and idle clients ---------------------------------------------------------------------


def _connect(proxy: Proxy) -> socket.socket:
    host, port = proxy.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the proxy sends until it closes the connection (a socket timeout fails the test)."""
    received = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return bytes(received)


def _trickle(sock: socket.socket, head: bytes) -> int:
    """Send ``head`` a byte every 50 ms until the proxy closes the connection; returns the bytes sent."""
    sent = 0
    for byte in head:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += 1
        time.sleep(0.05)
        sock.setblocking(False)
        try:
            if sock.recv(65536) == b"":
                break
        except BlockingIOError:
            pass
        except ConnectionResetError:
            break
        finally:
            sock.setblocking(True)
    return sent


SLOW_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 200 + b"\r\n"


async def test_idle_keep_alive_connection_is_closed(start_proxy: Callable[..., Any], proxy_settings: Settings) -> None:
    """Also after a first request (Hypercorn's idle timer would not restart without our shield)."""
    proxy = await start_proxy(proxy_settings, keep_alive_timeout=0.5)

    def idle_client() -> bytes:
        with _connect(proxy) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            return _read_until_closed(sock)  # keep-alive allowed, but not for long

    answer = await in_thread(idle_client)
    assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1") == 1


async def test_connections_the_client_resets_are_closed_at_once(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream
) -> None:
    """Clients that read their reply and reset the connection at once: each connection
    closes then, not after the keep-alive timeout. Hypercorn restarts its idle timer when
    a request ends, and a request can end after reading has already stopped (the reset
    raced the request's last steps): nothing can arrive on such a connection any more."""
    proxy = await start_proxy(proxy_settings, keep_alive_timeout=60)
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + OPENAI_KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )

    def read_reply_then_reset(times: int) -> None:
        for _ in range(times):
            sock = _connect(proxy)
            sock.sendall(request)
            reply = b""
            while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
                reply += sock.recv(65536)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # RST, the moment the reply is in

    await in_thread(lambda: read_reply_then_reset(1))  # the proxy's pooled upstream connection opens
    await wait_until(lambda: fake.open_connections == 1, timeout=30, what="the proxy's pooled upstream connection")
    before = open_fds()
    await in_thread(lambda: read_reply_then_reset(60))
    with trio.move_on_after(30):  # bounded polling on the state: ends as soon as the fds are back
        while open_fds() > before:
            await trio.sleep(0.05)
    after = open_fds()
    # At most as many: the first connection's socket may still be closing when ``before`` is taken.
    assert after <= before, f"file descriptors: {before} before, {after} after: {socket_details()}"
    assert len(fake.requests) == 61


async def test_slow_header_client_is_cut_off(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream
) -> None:
    """Slowloris: headers trickling in, a byte at a time, never finish; the connection is closed."""
    proxy = await start_proxy(proxy_settings, keep_alive_timeout=1.0)

    def trickle() -> int:
        with _connect(proxy) as sock:
            return _trickle(sock, SLOW_HEAD)

    sent = await in_thread(trickle)
    assert sent < len(SLOW_HEAD)  # cut off before the head was complete (about 20 bytes a second for 1 s)
    assert fake.requests == []


async def test_slow_header_client_is_cut_off_on_a_reused_connection(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(proxy_settings, keep_alive_timeout=1.0)

    def first_request_then_trickle() -> tuple[bytes, int]:
        with _connect(proxy) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            first = sock.recv(65536)
            return first, _trickle(sock, SLOW_HEAD)

    first, sent = await in_thread(first_request_then_trickle)
    assert first.startswith(b"HTTP/1.1 200")
    assert sent < len(SLOW_HEAD)
    assert fake.requests == []


async def test_slow_body_client_gets_408(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(proxy_settings, body_timeout=0.5)

    def stalled_body() -> bytes:
        with _connect(proxy) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + OPENAI_KEY.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\": "
            )
            return _read_until_closed(sock)

    answer = await in_thread(stalled_body)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"type":"invalid_request_error"' in answer and b"did not arrive within 0.5s" in answer
    assert fake.requests == []


# --- the whole-request deadline on a stream request answered with JSON ----------------------------


async def _drip_json_forever(stream: trio.SocketStream) -> None:
    """A provider that reads the request, answers 200 ``application/json`` (chunked) and then sends one
    byte every 0.2 s, each well inside any read timeout, for as long as the connection stays open."""
    received = b""
    with trio.move_on_after(30):  # a cap against hanging, not a measure
        while b"\r\n\r\n" not in received:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            received += chunk
    try:
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        while True:
            await stream.send_all(b"1\r\n \r\n")
            await trio.sleep(0.2)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return


def _stream_call(provider: str, proxy: Proxy) -> None:
    """A streamed generation call whose client gives up after 30 s (so a hanging proxy fails the test)."""
    messages = [{"role": "user", "content": "hi"}]
    if provider == "openai":
        with proxy.openai(timeout=30) as client:
            for _ in client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True):
                pass
    else:
        with proxy.anthropic(timeout=30) as client:
            with client.messages.stream(model="claude-sonnet-4-6", max_tokens=50, messages=messages) as events:
                for _ in events.text_stream:
                    pass


# Not Gemini: a JSON body is its streamed JSON array, a stream, bounded by the idle timeout per read.
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_stream_request_answered_with_dripping_json_gets_the_deadline(
    provider: str, start_proxy: Callable[..., Any], proxy_settings: Settings, nursery: trio.Nursery,
) -> None:
    """A stream request the provider answers with JSON is a JSON reply: read whole, under the deadline.
    A provider dripping that JSON a byte at a time inside every read timeout used to hold the client,
    with no response headers, for as long as it liked."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    await nursery.start(trio.serve_listeners, _drip_json_forever, listeners)
    url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    proxy = await start_proxy(
        proxy_settings, openai_upstream=url + "/v1", gemini_upstream=url, anthropic_upstream=url,
        request_timeout=1, upstream_timeout=5,
    )
    try:
        await trio.to_thread.run_sync(lambda: _stream_call(provider, proxy))
    except sdk_errors(provider) as error:
        assert isinstance(error, expected_error(provider, 504)), repr(error)
        assert status_of(error) == 504 and "did not complete its reply within 1s" in message_of(error)
    else:
        raise AssertionError("the stream call succeeded")
