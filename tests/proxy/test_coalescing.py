"""A request's head and body reach the provider in one write, a whole reply's reach the client in one.

Each write that reaches an idle provider wakes it (``proxy/coalescing.py``):
httpcore wrote the head, the body and an empty end of message separately, so a
provider woke once for a head it could do nothing with. Seen here at the
socket: every ``send_all`` the proxy makes towards the fake provider is
recorded, through the real app, so a request that went out in pieces fails.
Hypercorn wrote a reply's head and its body separately too; a whole reply now
goes in one write (``_compat/hypercorn.py``), a stream's head at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.proxy.coalescing import HELD_BELOW, JOINED_BELOW, CoalescingStream
from tests.support.bodies import chat_body
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import OPENAI_AUTH


def _record_sends(monkeypatch: pytest.MonkeyPatch, peer_port: int | None = None,
                  local_port: int | None = None) -> list[bytes]:
    """The data of every non-empty ``send_all`` on a socket with that peer (or local) port, in order."""
    sent: list[bytes] = []
    send_all = trio.SocketStream.send_all

    async def recording(stream: trio.SocketStream, data: Any) -> None:
        if data and (stream.socket.getpeername()[1] == peer_port or stream.socket.getsockname()[1] == local_port):
            sent.append(bytes(data))
        await send_all(stream, data)

    monkeypatch.setattr(trio.SocketStream, "send_all", recording)
    return sent


@pytest.fixture
def sends_to_provider(monkeypatch: pytest.MonkeyPatch, fake: FakeUpstream) -> Iterator[list[bytes]]:
    yield _record_sends(monkeypatch, peer_port=int(fake.url.rsplit(":", 1)[1]))


def _agent_turn(size: int) -> bytes:
    body = chat_body(messages=[{"role": "system", "content": "You read files."},
                               {"role": "tool", "tool_call_id": "c1", "content": "x = 1  # line\n" * (size // 14)},
                               {"role": "user", "content": "next"}])
    return json.dumps(body).encode()


@pytest.mark.parametrize("size", [200, 230_000])
async def test_a_request_goes_to_the_provider_in_one_write_with_the_clients_body(
    proxy, fake: FakeUpstream, sends_to_provider: list[bytes], size: int,
) -> None:
    raw = _agent_turn(size)
    async with httpx.AsyncClient(base_url=proxy.url, headers=OPENAI_AUTH) as client:
        for _ in range(2):  # the second on the kept-alive connection
            sends_to_provider.clear()
            reply = await client.post("/v1/chat/completions", content=raw,
                                      headers={"content-type": "application/json"})
            assert reply.status_code == 200
            assert len(sends_to_provider) == 1, [len(data) for data in sends_to_provider]
            head, _, body = sends_to_provider[0].partition(b"\r\n\r\n")
            assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
            assert body == raw == fake.requests[-1].body  # the client's bytes, whole, in that one write
    assert fake.total_connections == 1


async def test_a_whole_reply_goes_to_the_client_in_one_write_and_a_streams_head_at_once(
    proxy, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch,
) -> None:
    sends_to_client = _record_sends(monkeypatch, local_port=int(proxy.url.rsplit(":", 1)[1]))
    raw = _agent_turn(230_000)
    async with httpx.AsyncClient(base_url=proxy.url, headers=OPENAI_AUTH) as client:
        for _ in range(2):
            sends_to_client.clear()
            reply = await client.post("/v1/chat/completions", content=raw,
                                      headers={"content-type": "application/json"})
            assert reply.status_code == 200
            assert len(sends_to_client) == 1, [len(data) for data in sends_to_client]
            assert sends_to_client[0].endswith(b"\r\n\r\n" + reply.content)
        refused = await client.post("/v1/chat/completions", content=b"{", headers={"content-type": "application/json"})
        assert refused.status_code == 400  # a refusal is a whole reply too
        assert len(sends_to_client) == 2 and sends_to_client[1].endswith(b"\r\n\r\n" + refused.content)
        sends_to_client.clear()
        fake.script(Reply(chunks=["one ", "two"], chunk_delay=0.05))
        async with client.stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as streamed:
            assert streamed.status_code == 200
            assert sends_to_client[0].startswith(b"HTTP/1.1 200") and sends_to_client[0].endswith(b"\r\n\r\n")
            await streamed.aread()
        assert len(sends_to_client) > 2  # the head alone, then the events as they came


class _Recording(httpcore.AsyncNetworkStream):
    """What reaches the connection, write by write; a read is logged as None."""

    def __init__(self) -> None:
        self.log: list[bytes | None] = []

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.log.append(buffer)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.log.append(None)
        return b""

    async def aclose(self) -> None:
        pass


_STEPS = st.lists(st.one_of(st.integers(0, 3 * HELD_BELOW), st.sampled_from([JOINED_BELOW - 1, JOINED_BELOW]),
                            st.none()), max_size=12)


@given(steps=_STEPS)
def test_the_bytes_written_reach_the_connection_in_order_and_before_every_read(steps: list[int | None]) -> None:
    """Property: whatever the writes' sizes, the connection gets their bytes in order, all of them before the
    next read, none split, and a write too big to hold goes at once."""
    inner = _Recording()
    stream = CoalescingStream(inner)
    written = bytearray()

    async def run() -> None:
        for number, step in enumerate(steps):
            if step is None:
                await stream.read(10)
                assert b"".join(data for data in inner.log if data is not None) == written  # nothing held over
            else:
                data = bytes([number % 256]) * step
                await stream.write(data)
                written.extend(data)
                if step >= HELD_BELOW:
                    assert inner.log[-1] is not None and inner.log[-1].endswith(data)  # sent now, whole
                if step >= JOINED_BELOW:
                    assert inner.log[-1] is data  # a large write is never copied to join a held one
        await stream.read(10)

    trio.run(run)
    assert b"".join(data for data in inner.log if data is not None) == written
    # one write per run of writes between reads, and none empty
    assert all(data for data in inner.log if data is not None)


def test_a_held_write_that_fails_at_the_read_leaves_the_read_to_say_why() -> None:
    """As httpcore does for its own request writes: a peer that answered and closed is still read."""

    class _Closed(_Recording):
        async def write(self, buffer: bytes, timeout: float | None = None) -> None:
            raise httpcore.WriteError("broken pipe")

        async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n"

    stream = CoalescingStream(_Closed())

    async def run() -> bytes:
        await stream.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        return await stream.read(100)

    assert trio.run(run).startswith(b"HTTP/1.1 413")
