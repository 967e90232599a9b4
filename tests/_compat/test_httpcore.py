"""Canary for ``capsem_proxyd/_compat/httpcore.py``: httpcore's trio stream, and when it reads its read timeout.

``trio_stream`` imports ``TrioStream`` from the private module
``httpcore._backends.trio`` and reads its private ``_stream``;
``without_read_timeout`` relies on httpcore's HTTP/1.1 connection reading
``request.extensions["timeout"]["read"]`` when a body's first read starts, from
the dict httpx handed it. A release that moves either must fail here first.
"""

from __future__ import annotations

import functools
import inspect
import socket
import struct

import httpcore
import httpx
import trio
import trio.testing
from httpcore._backends.trio import TrioBackend, TrioStream

from capsem_proxyd._compat.httpcore import trio_stream, without_read_timeout
from capsem_proxyd._compat.httpx import wrap_network_backend
from capsem_proxyd.proxy.coalescing import CoalescingStream
from tests._compat.pins import assert_below_next_minor

PRIVATE_MODULE = "httpcore._backends.trio"  # where TrioStream lives
READ = ("_stream",)  # a TrioStream's trio stream


def test_httpcore_is_pinned_below_its_next_minor_release() -> None:
    assert_below_next_minor("httpx")
    assert_below_next_minor("httpcore")


def test_a_trio_stream_keeps_the_stream_it_reads_where_the_shim_reads_it() -> None:
    assert TrioStream.__module__ == PRIVATE_MODULE
    assert "self._stream.receive_some" in inspect.getsource(TrioStream.read)  # what the shim's read replaces
    left, right = trio.testing.memory_stream_pair()
    wrapped = TrioStream(left)
    assert getattr(wrapped, READ[0]) is left
    assert trio_stream(wrapped) is left
    assert trio_stream(CoalescingStream(wrapped)) is None  # only httpcore's own trio stream is read past


class _Recording(httpcore.AsyncNetworkBackend):
    """httpcore's trio backend, recording the timeout of every read."""

    def __init__(self) -> None:
        self.backend, self.read_timeouts = TrioBackend(), []  # type: list[float | None]

    async def connect_tcp(self, *args, **kwargs) -> httpcore.AsyncNetworkStream:  # type: ignore[no-untyped-def]
        stream = await self.backend.connect_tcp(*args, **kwargs)
        timeouts = self.read_timeouts

        class Stream(httpcore.AsyncNetworkStream):
            async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
                timeouts.append(timeout)
                return await stream.read(max_bytes, timeout)

            async def write(self, buffer: bytes, timeout: float | None = None) -> None:
                await stream.write(buffer, timeout)

            async def aclose(self) -> None:
                await stream.aclose()

        return Stream()

    async def sleep(self, seconds: float) -> None:
        await self.backend.sleep(seconds)


async def test_a_read_timeout_replaced_after_the_head_applies_to_the_body_and_to_that_request_only() -> None:
    body_may_go = trio.Event()

    async def serve(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
        await body_may_go.wait()
        await stream.send_all(b"body")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        backend = _Recording()
        shared = {"connect": 5.0, "read": 7.0, "write": 5.0, "pool": 5.0}  # one dict for every request
        transport = httpx.AsyncHTTPTransport()
        wrap_network_backend(transport, lambda _: backend)
        async with transport:
            request = httpx.Request("GET", f"http://127.0.0.1:{port}/", extensions={"timeout": shared})
            response = await transport.handle_async_request(request)
            response.request = request
            assert backend.read_timeouts and set(backend.read_timeouts) == {7.0}  # the head: httpcore's timeout
            head_reads = len(backend.read_timeouts)
            without_read_timeout(response)
            body_may_go.set()
            assert b"".join([chunk async for chunk in response.aiter_raw()]) == b"body"
            await response.aclose()
        assert backend.read_timeouts[head_reads:] and set(backend.read_timeouts[head_reads:]) == {None}
        assert shared["read"] == 7.0  # another request's timeouts untouched
        nursery.cancel_scope.cancel()


async def test_a_read_with_no_timeout_maps_a_broken_connection_to_httpcore_read_error() -> None:
    accepted: list[trio.SocketStream] = []
    ready = trio.Event()

    async def serve(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        ready.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        stream = CoalescingStream(await TrioBackend().connect_tcp("127.0.0.1", port))
        await ready.wait()
        # The peer resets the connection (a close with SO_LINGER 0): the read fails with ECONNRESET.
        accepted[0].socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        accepted[0].socket.close()
        try:
            await stream.read(1024, None)
        except httpcore.ReadError as error:
            assert isinstance(error.__cause__, trio.BrokenResourceError)
        else:
            raise AssertionError("a reset connection read without an error")
        await stream.aclose()
        try:  # a read on a connection closed here: ClosedResourceError, as httpcore maps it
            await stream.read(1024, None)
        except httpcore.ReadError as error:
            assert isinstance(error.__cause__, trio.ClosedResourceError)
        else:
            raise AssertionError("a closed connection read without an error")
        nursery.cancel_scope.cancel()
