"""One request, one pipeline: key → parse → request checks → upstream → reply checks.

Data flows one way. The pipeline knows nothing of Quart: it takes an
``IncomingRequest`` and returns a ``ProxyReply`` (bytes, or a ``StreamPump``
to iterate), so it can be driven by any front end.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import trio
import orjson

from capsem_proxyd.dialects.base import Dialect
from capsem_proxyd.errors import ProxyError, bad_request, missing_key, upstream_timeout, upstream_unavailable
from capsem_proxyd.exchange import Exchange, new_request_id, tenant_id_for
from capsem_proxyd.proxy.limits import Limits, check_reply_body, check_request_body, check_request_view
from capsem_proxyd.observe.metrics import Metrics
from capsem_proxyd.policy.engine import PolicyEngine, stricter
from capsem_proxyd.proxy.streaming import OpenStreams, StreamPump, StreamSettings
from capsem_proxyd.proxy.upstream import Upstream, request_headers, response_headers
from capsem_proxyd.proxy.upstream import UpstreamResponse

log = logging.getLogger("capsem_proxyd.request")

JSON_HEADERS = [("content-type", "application/json")]
_HEADER_UNSAFE = re.compile(r"[^\x20-\x7e]|,")


@dataclass(slots=True)
class IncomingRequest:
    """The parts of a client request the pipeline needs."""

    method: str
    headers: list[tuple[str, str]]
    header_map: Mapping[str, str]
    query: Mapping[str, str]
    query_string: bytes
    body: bytes
    client_addr: str | None = None  # set only when the operator forwards client addresses


@dataclass(slots=True)
class Route:
    """Where a dialect's request goes: the upstream URL and what the path says."""

    dialect: Dialect
    upstream_url: httpx.URL
    path_model: str | None = None
    path_stream: bool = False


@dataclass(slots=True)
class ProxyReply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes | None = None
    stream: StreamPump | None = None
    exchange: Exchange | None = field(default=None)


class Pipeline:
    """Runs every proxied request; ``engine`` is read per request so reloads swap cleanly."""

    def __init__(
        self,
        upstream: Upstream,
        current_engine: Callable[[], PolicyEngine],
        stream_settings: StreamSettings,
        metrics: Metrics | None = None,
        *,
        limits: Limits | None = None,
        request_timeout: float | None = None,
    ) -> None:
        self.upstream = upstream
        self.current_engine = current_engine
        self.stream_settings = stream_settings
        self.metrics = metrics
        self.limits = limits or Limits()
        # Whole-request deadline of non-streamed calls; streams are bounded by their idle timeout.
        self.request_timeout = request_timeout
        # When a shutdown's grace period is over, the open streams end with an error event.
        self.open_streams = OpenStreams()

    async def handle(self, route: Route, incoming: IncomingRequest) -> ProxyReply:
        dialect = route.dialect
        exchange: Exchange | None = None
        engine: PolicyEngine | None = None
        outcome = "ALLOW"
        try:
            api_key = _require_key(dialect, incoming)
            tenant_id = tenant_id_for(api_key)
            engine = self.current_engine().for_tenant(tenant_id)
            body = _parse_body(incoming.body)
            check_request_body(body, self.limits)
            model = dialect.model(body, route.path_model)
            exchange = Exchange(
                request_id=new_request_id(),
                tenant_id=tenant_id,
                provider=dialect.provider,
                endpoint=dialect.endpoint,
                model=model,
                stream=dialect.wants_stream(body, incoming.query, route.path_stream),
            )
            view = dialect.request_view(body, model)
            check_request_view(view, self.limits)
            exchange.prompt = view.prompt  # a reference, for an audit log that opted in to prompts
            outcome = await engine.check_request(exchange, view)
            reply = await self._forward(route, incoming, exchange, engine, outcome)
        except ProxyError as error:
            reply = error_reply(dialect, error)
            if engine is not None and exchange is not None:
                verdict = error.decision.verdict.value if error.decision is not None else outcome
                reply.headers.extend(decision_headers(engine, verdict))
        reply.exchange = exchange
        return reply

    async def relay(self, route: Route, incoming: IncomingRequest) -> ProxyReply:
        """Forward without content checks and answer what the upstream answered.

        Only for requests without content (model lists and lookups) and for
        paths an operator opted into unchecked pass-through; the key is still
        required, so every request has a tenant.
        """
        dialect = route.dialect
        exchange: Exchange | None = None
        try:
            api_key = _require_key(dialect, incoming)
            self.current_engine().for_tenant(tenant_id_for(api_key))  # the allow-list holds here too
            exchange = Exchange(
                request_id=new_request_id(),
                tenant_id=tenant_id_for(api_key),
                provider=dialect.provider,
                endpoint=dialect.endpoint,
                model=route.path_model or "",
            )
            with self._deadline():
                response = await self._send(exchange, route, incoming)
                content = await self.upstream.read_body(response, self.limits.max_response_size)
            reply = ProxyReply(response.status_code, response_headers(response.headers), body=content)
        except ProxyError as error:
            reply = error_reply(dialect, error)
        reply.exchange = exchange
        return reply

    async def _send(self, exchange: Exchange, route: Route, incoming: IncomingRequest) -> UpstreamResponse:
        """Send upstream (body unread), timing the wait for the response headers."""
        started = time.perf_counter()
        headers = request_headers(incoming.headers, incoming.client_addr)
        response = await self.upstream.send(incoming.method, route.upstream_url, headers, incoming.body, stream=True)
        if self.metrics is not None:
            self.metrics.upstream_latency(exchange.provider, exchange.endpoint, time.perf_counter() - started)
        return response

    async def _forward(
        self, route: Route, incoming: IncomingRequest, exchange: Exchange, engine: PolicyEngine, outcome: str = "ALLOW"
    ) -> ProxyReply:
        with self._deadline(exchange.stream):
            response = await self._send(exchange, route, incoming)
            headers = response_headers(response.headers)
            if response.status_code == 200 and (exchange.stream or _is_event_stream(response.headers)):
                # An event stream the request did not ask for in the dialect's terms (say
                # "stream": 1) is still a stream: checked as one, never parsed as JSON.
                exchange.stream = True
                # Sent at stream start: they cover the request checks (the stream is checked as it goes).
                headers.extend(decision_headers(engine, outcome))
                pump = StreamPump(
                    exchange, route.dialect, engine, response, incoming.query, self.stream_settings, self.open_streams
                )
                return ProxyReply(200, headers, stream=pump)
            content = await self.upstream.read_body(response, self.limits.max_response_size)
        if response.status_code >= 300:
            # Provider errors pass through untouched: the SDK shows the provider's own message.
            return ProxyReply(response.status_code, headers + decision_headers(engine, outcome), body=content)
        try:
            reply_body = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise upstream_unavailable("The upstream provider answered with a body that is not valid JSON.") from None
        check_reply_body(reply_body, self.limits)
        outcome = stricter(outcome, await engine.check_response(exchange, route.dialect.response_view(reply_body)))
        return ProxyReply(response.status_code, headers + decision_headers(engine, outcome), body=content)

    @contextmanager
    def _deadline(self, stream: bool = False) -> Iterator[None]:
        """The whole-request deadline around a non-streamed call's upstream I/O (504 when it passes)."""
        if stream or not self.request_timeout:
            yield
            return
        try:
            with trio.fail_after(self.request_timeout):
                yield
        except trio.TooSlowError:
            raise upstream_timeout(
                f"The upstream provider did not complete its reply within {self.request_timeout:g}s."
            ) from None


def decision_headers(engine: PolicyEngine, verdict: str) -> list[tuple[str, str]]:
    """What was checked, for SDK users: ``x-capsem-decision`` (allow, log, confirm, block)
    and ``x-capsem-policies`` (the policies the request ran under)."""
    names = ", ".join(_HEADER_UNSAFE.sub("_", name) for name in engine.names)
    return [("x-capsem-decision", verdict.lower()), ("x-capsem-policies", names or "none")]


def _is_event_stream(headers: httpx.Headers) -> bool:
    return (headers.get("content-type") or "").lower().startswith("text/event-stream")


def _require_key(dialect: Dialect, incoming: IncomingRequest) -> str:
    api_key = dialect.api_key(incoming.header_map, incoming.query)
    if not api_key:
        raise missing_key("No API key was provided: pass your provider key as you would to the provider itself.")
    return api_key


def _parse_body(raw: bytes) -> dict:
    if not raw:
        raise bad_request("The request body is empty; expected a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise bad_request(f"The request body is not valid JSON: {error}.") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def error_reply(dialect: Dialect, error: ProxyError) -> ProxyReply:
    return ProxyReply(error.status, list(JSON_HEADERS), body=orjson.dumps(dialect.error_body(error)))
