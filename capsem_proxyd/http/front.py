"""What both front ends do around the pipeline: the Quart routes and the ASGI lane.

A request reaches the pipeline either through a Quart route or through the
ASGI lane (``asgi_lane``) that serves the hot proxy routes without Quart's
per-request machinery. Both must answer alike, so what surrounds the pipeline
call lives here once: pointing the route at the client's query string, the
headers the proxy adds to a reply, the streamed body's lifecycle (metrics and
one log line when it ends), the per-request log line, and the errors the
edge itself raises (body too large, too slow, an internal error).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from quart.wrappers.response import ResponseBody

from capsem_proxyd.dialects.base import Dialect
from capsem_proxyd.errors import ProxyError
from capsem_proxyd.observe.metrics import Metrics
from capsem_proxyd.proxy.pipeline import IncomingRequest, ProxyReply, Route
from capsem_proxyd.proxy.streaming import StreamPump

if TYPE_CHECKING:
    from capsem_proxyd.http.app import ProxyState

log = logging.getLogger("capsem_proxyd.request")

_STREAM_HEADERS = [("cache-control", "no-cache"), ("x-accel-buffering", "no")]


async def run_route(state: ProxyState, route: Route, incoming: IncomingRequest, *, relay: bool = False) -> ProxyReply:
    """Run ``route`` through the pipeline; ``relay`` forwards without content checks."""
    if incoming.query_string:
        route.upstream_url = route.upstream_url.copy_with(query=incoming.query_string)
    return await (state.pipeline.relay if relay else state.pipeline.handle)(route, incoming)


def reply_headers(reply: ProxyReply) -> list[tuple[str, str]]:
    """The reply's headers and the proxy's own; an upstream header of the same name is replaced."""
    own = list(_STREAM_HEADERS) if reply.stream is not None else []
    if reply.exchange is not None:
        own.append(("x-capsem-request-id", reply.exchange.request_id))
    if not own:
        return reply.headers
    names = {name for name, _ in own}
    return [(name, value) for name, value in reply.headers if name.lower() not in names] + own


class PumpBody(ResponseBody):
    """A StreamPump as a response body (enter → iterate → exit), counted and logged when it ends."""

    def __init__(self, pump: StreamPump, on_done: Callable[[str], None], metrics: Metrics) -> None:
        self.pump = pump
        self.on_done = on_done
        self.metrics = metrics

    async def __aenter__(self) -> StreamPump:
        await self.pump.__aenter__()
        self.metrics.stream_started()
        return self.pump

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc_value: BaseException | None, tb: object
    ) -> None:
        try:
            await self.pump.__aexit__(exc_type, exc_value, tb)
        finally:
            # Also when cancelled (the client hung up): the stream is over and must be counted.
            self.metrics.stream_finished()
            outcome = self.pump.outcome if exc_type is None else "client_disconnected"
            self.on_done(outcome)


def stream_body(state: ProxyState, reply: ProxyReply, dialect: Dialect, started: float) -> PumpBody:
    assert reply.stream is not None
    return PumpBody(reply.stream, lambda outcome: log_request(state, reply, dialect, outcome, started), state.metrics)


def log_request(state: ProxyState, reply: ProxyReply, dialect: Dialect, outcome: str, started: float) -> None:
    """The one log line (and audit record, and metrics) of a proxied request."""
    exchange = reply.exchange
    duration_ms = (time.perf_counter() - started) * 1000
    state.record_request(exchange, dialect, reply.status, outcome, duration_ms)
    stream_outcome = outcome if reply.stream is not None else None
    state.metrics.request_done(dialect.provider, dialect.endpoint, reply.status, stream_outcome)
    log.info(
        "request_id=%s tenant_id=%s provider=%s endpoint=%s model=%s status=%s outcome=%s duration_ms=%.1f",
        exchange.request_id if exchange else "-",
        exchange.tenant_id if exchange else "-",
        dialect.provider,
        dialect.endpoint,
        printable(exchange.model) if exchange else "-",
        reply.status,
        outcome,
        duration_ms,
    )


def printable(text: str) -> str:
    """Escape control characters so a client cannot forge log lines."""
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def body_too_large() -> ProxyError:
    return ProxyError(413, "too_large", "The request body is larger than this proxy accepts.")


def body_too_slow(seconds: float | None) -> ProxyError:
    return ProxyError(408, "invalid_request", f"The request body did not arrive within {seconds}s (--body-timeout).")


def internal_error() -> ProxyError:
    return ProxyError(500, "upstream_error", "capsem-proxyd hit an internal error; see its log.", code="internal_error")


def log_internal_error(path: str) -> None:
    logging.getLogger("capsem_proxyd").exception("unexpected error on %s", printable(path))
