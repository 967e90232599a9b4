"""Several httpx transports, each its own httpcore pool, used as one.

Why: on every request and every response close, httpcore's pool walks all of
its connections (polling each idle one's socket, a syscall) and, for each
idle one, counts the idle connections again: quadratic in the connections
held. With 32 requests in flight that was 14% of the proxy's CPU (py-spy
under ``bench --quick``), growing with the connections held, not the work.
Split over ``count`` pools, a request walks only its pool's share.

A request goes to the pool with the fewest exchanges in flight (from sending
until its response is closed, so a long stream keeps counting), the
lowest-numbered on ties: one request at a time stays on pool 0 and its
kept-alive connection, and concurrent requests and streams spread evenly. The
limits are the whole transport's, divided among the pools, and the pools
share one TLS context and send a request's head with its body
(``coalescing.py``). Everything HTTP (pooling, keep-alive, TLS, decoding,
timeouts) stays httpx's and httpcore's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from capsem_proxyd._compat.httpx import wrap_network_backend
from capsem_proxyd.proxy.coalescing import CoalescingBackend


class ShardedTransport(httpx.AsyncBaseTransport):
    def __init__(self, count: int, limits: httpx.Limits, **options: Any) -> None:
        def share(total: int | None) -> int | None:
            return None if total is None else max(1, -(-total // count))

        per_pool = httpx.Limits(
            max_connections=share(limits.max_connections),
            max_keepalive_connections=share(limits.max_keepalive_connections),
            keepalive_expiry=limits.keepalive_expiry,
        )
        if "verify" not in options:
            # One TLS context for all: each would load the CA bundle again (~0.5 MiB apiece).
            options["verify"] = httpx.create_ssl_context(trust_env=options.get("trust_env", True))
        self.transports = [httpx.AsyncHTTPTransport(limits=per_pool, **options) for _ in range(count)]
        for transport in self.transports:  # a request's head and body in one write (coalescing.py)
            wrap_network_backend(transport, CoalescingBackend)
        self.in_flight = [0] * count

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        in_flight = self.in_flight
        index = in_flight.index(min(in_flight))
        in_flight[index] += 1

        def release() -> None:
            in_flight[index] -= 1

        try:
            response = await self.transports[index].handle_async_request(request)
        except BaseException:
            release()
            raise
        response.stream = _ReleasedOnClose(response.stream, release)
        return response

    async def aclose(self) -> None:
        for transport in self.transports:
            await transport.aclose()


class _ReleasedOnClose(httpx.AsyncByteStream):
    """The pool's response stream; closing it (once) ends the exchange's count."""

    __slots__ = ("_stream", "_release")

    def __init__(self, stream: Any, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()  # the pool's own iterator: no extra layer per chunk

    async def aclose(self) -> None:
        release, self._release = self._release, None
        try:
            await self._stream.aclose()
        finally:
            if release is not None:
                release()
