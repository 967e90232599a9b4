"""Upstream connections that send a request's head and its body in one write.

httpcore writes an HTTP/1.1 request as separate socket writes: the head (request
line and headers), then the body, then an empty end of message. On loopback and
on a LAN each write that reaches an idle peer wakes it: the provider (or the
next proxy) reads the head, finds no body yet, and sleeps again until the body's
write wakes it a second time. Measured on the bench's agent workload (230 kB
turns, Debug and Secrets): py-spy found the proxy in the head's write in a tenth
of its samples per turn, more than in the 230 kB body's (the peer ran on the
proxy's core in between); one write instead of two took the upstream's context
switches per turn from 3.8 to 2.3, the proxy's from 4.5 to 3.1.

Here a small write (a head) is held until the next write, which carries both
(the body), or until the connection reads (a request with no body: its response
is what comes next), whichever comes first. The bytes on the wire, and their
order, are the ones httpcore wrote: only how they are split into writes
changes. HTTP/1.1 only (the transport never offers HTTP/2), where one request is
written, then its response read, one at a time per connection.

A read with no timeout (a streamed body: the stream pump keeps its own idle
timeout) goes to the trio stream directly, past httpcore's deadline scope and
exception mapping around each read (see ``_compat/httpcore.py``): once per
event when a provider writes its events one by one.
"""

from __future__ import annotations

import ssl
import typing
from collections.abc import Iterable

import httpcore
import trio

from capsem_proxyd._compat.httpcore import trio_stream

# httpcore's own socket option type (a setsockopt's arguments)
SocketOption: typing.TypeAlias = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]

# A write smaller than this is held for the next one: a request head is a few hundred bytes, a few kB
# with long headers; a larger write goes at once (it is worth its own wake-up, and copying it would cost).
HELD_BELOW = 16 * 1024
# A held write joins a next one smaller than this (an agent's turn, a few hundred kB: a copy of ~20 us);
# a larger body follows in a write of its own rather than be copied whole (a 20 MB body: 20 MB more held).
JOINED_BELOW = 1024 * 1024


class CoalescingStream(httpcore.AsyncNetworkStream):
    """A connection whose small writes wait for the next write or read, and go out with it."""

    __slots__ = ("_stream", "_held", "_trio")

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._held = b""
        self._trio = trio_stream(stream)  # None: another backend's stream, read through httpcore

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        held, self._held = self._held, b""
        if held:
            if len(buffer) >= JOINED_BELOW:
                await self._stream.write(held, timeout)
            else:
                buffer = held + buffer
        if len(buffer) < HELD_BELOW:
            self._held = buffer  # b"" (an empty end of message) holds nothing
            return
        await self._stream.write(buffer, timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        held, self._held = self._held, b""
        if held:
            try:
                await self._stream.write(held, timeout)
            except httpcore.WriteError:
                # As httpcore treats a failed write of its request: the peer may have closed its side after
                # answering (a well-formed refusal); the read says what there is to say.
                pass
        if timeout is None and self._trio is not None:
            # As httpcore's trio backend reads with no timeout, less its deadline scope (of infinity).
            # trio's socket stream already turns an OSError into BrokenResourceError.
            try:
                return bytes(await self._trio.receive_some(max_bytes))
            except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                raise httpcore.ReadError(error) from error
        return await self._stream.read(max_bytes, timeout)

    async def aclose(self) -> None:
        self._held = b""  # a request never completed: nothing of it is owed to the peer
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        # Nothing is held before TLS starts: httpcore writes no request on a connection before its handshake.
        return CoalescingStream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class CoalescingBackend(httpcore.AsyncNetworkBackend):
    """httpcore's own network backend, with each connection a ``CoalescingStream``."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        self.backend = backend

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return CoalescingStream(await self.backend.connect_tcp(host, port, timeout, local_address, socket_options))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return CoalescingStream(await self.backend.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self.backend.sleep(seconds)
