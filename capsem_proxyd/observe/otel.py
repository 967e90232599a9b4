"""One OpenTelemetry span per proxied request, in the GenAI semantic conventions' terms.

Built by the instance (``daemon/instance.py``) only when export is on (``observe/tracing.py``): a
proxy without tracing never imports this module. The span:

* kind SERVER: it covers the proxy's handling of a client's request, from
  its arrival (``Exchange.started``) to the reply's last byte
  (``request_done``), so trace views and service graphs put it where the
  proxy is, between the client's span and the provider;
* named ``{gen_ai.operation.name} {gen_ai.request.model}`` ("chat
  gpt-4o-mini"), or the API name for calls that are no GenAI operation
  (model lists, token counts, pass-through);
* attributes: ``gen_ai.operation.name``, ``gen_ai.provider.name``
  (``openai``, ``gcp.gemini``, ``anthropic``), ``gen_ai.request.model``,
  ``gen_ai.response.model`` and ``gen_ai.usage.input_tokens`` /
  ``output_tokens`` when the reply states them, ``server.address`` /
  ``server.port`` of the upstream, ``http.response.status_code`` (the
  client's), ``error.type`` on failures; ``capsem.request_id``,
  ``capsem.tenant_id``, ``capsem.provider``, ``capsem.endpoint``,
  ``capsem.stream``, ``capsem.decision`` (as ``x-capsem-decision``) and
  ``capsem.outcome``; on the MCP hop ``mcp.method.name``, ``gen_ai.tool.name``,
  ``capsem.mcp.server`` (the server's name) and its ``server.address``/``port``;
* an event ``capsem.policy_decision`` per policy decision (policy, hook,
  verdict, reason, decision id, mode): every one that is not ALLOW, and the
  first ALLOW of each policy on each hook (a stream is re-checked as it
  grows: its ALLOWs would repeat);
* an event ``capsem.redaction`` per value masked in the request forwarded
  (issue 23): the policy that found it (``memory`` for the tenant's memory of
  masked values), the rule or entity (kind), the hook, how many places, the
  placeholder and the placeholder key's id, as the audit log's redaction
  record has them; never the value. ``capsem.decision`` is then at least
  ``redact``, as ``x-capsem-decision`` says;
* status ERROR for 5xx replies and broken streams; blocks and client errors
  are the proxy doing its job (the HTTP server rule), found by
  ``capsem.decision`` and ``error.type``.

Never exported: prompt or reply text, tool arguments, keys, request headers,
query strings, and decision ``details`` (a policy of the operator's may
quote what it matched; the decision id leads to them in the audit log).

Trace context: the client's ``traceparent`` (and ``tracestate``) make the
span's parent; on the MCP hop, the message's ``params._meta.traceparent``
first when it has one (the MCP conventions: one connection carries many
calls, each message names its own parent); the upstream request carries the span's own context instead
of the client's (``upstream_headers``), so the provider's side, when it
traces, continues under the proxy's span.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from capsem.models import Decision

from capsem_proxyd.config import Settings
from capsem_proxyd.exchange import NO_TENANT, Exchange
from capsem_proxyd.observe.otel_export import SpanExport
from capsem_proxyd.observe.recorders import CacheUse, Recorder
from capsem_proxyd.observe.tracing import TraceExport, missing_otel
from capsem_proxyd.outcomes import StreamOutcome
from capsem_proxyd.verdicts import stricter

try:
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as error:  # pragma: no cover - exercised without the extra (tests/observe/test_otel.py)
    raise missing_otel(error) from None

# gen_ai.provider.name of each upstream API (the GenAI conventions' well-known values).
PROVIDER_NAMES = {"openai": "openai", "gemini": "gcp.gemini", "anthropic": "anthropic"}
DECISION_EVENT = "capsem.policy_decision"
REDACTION_EVENT = "capsem.redaction"
# Client-chosen model names are cut here in names and attributes (a span is no place for 10 kB).
MAX_MODEL_CHARS = 256
_BROKEN_STREAMS = frozenset(
    {StreamOutcome.UPSTREAM_ERROR, StreamOutcome.INTERNAL_ERROR, StreamOutcome.INCOMPLETE,
     StreamOutcome.POLICY_UNAVAILABLE, StreamOutcome.AUDIT_UNAVAILABLE}
)
_PROPAGATOR = TraceContextTextMapPropagator()


@dataclass(slots=True)
class _Trace:
    """What the recorder keeps with one request (``Exchange.trace``)."""

    carrier: dict[str, str] | None = None  # the client's traceparent/tracestate, until the span exists
    span: Span | None = None
    verdict: str = ""  # strictest verdict that applied, as x-capsem-decision reports it
    allowed: set[tuple[str, str, str]] = field(default_factory=set)  # (policy, hook, mode) ALLOWs already told
    ended: bool = False


class SpanRecorder(Recorder):
    """A ``Recorder`` that turns each proxied request into one span."""

    reads_usage = True

    def __init__(self, spans: SpanExport, servers: Mapping[str, tuple[str, int]]) -> None:
        self.spans = spans
        self.tracer = spans.tracer
        self.servers = servers

    @classmethod
    def start(cls, settings: Settings, export: TraceExport) -> SpanRecorder:
        """The recorder, its exporter thread running; ``aclose`` when the app stops."""
        servers = {
            "openai": _server(settings.openai_upstream),
            "gemini": _server(settings.gemini_upstream),
            "anthropic": _server(settings.anthropic_upstream),
        }
        return cls(SpanExport(export), servers)

    async def aclose(self) -> None:
        await self.spans.aclose()

    # -- trace context -------------------------------------------------------

    def request_started(self, exchange: Exchange, headers: Mapping[str, str]) -> None:
        traceparent = headers.get("traceparent")
        if traceparent is None:
            return
        carrier = {"traceparent": traceparent}
        tracestate = headers.get("tracestate")
        if tracestate is not None:
            carrier["tracestate"] = tracestate
        exchange.trace = _Trace(carrier=carrier)

    def upstream_headers(self, exchange: Exchange) -> list[tuple[str, str]]:
        """``traceparent`` (and ``tracestate``) naming this request's span, for the upstream request."""
        span = self._span(exchange)
        carrier: dict[str, str] = {}
        if span is not None:
            _PROPAGATOR.inject(carrier, context=set_span_in_context(span))
        return list(carrier.items())

    # -- moments -------------------------------------------------------------

    def decision_made(
        self, exchange: Exchange, hook: str, policy: str, decision: Decision, mode: str, cache: CacheUse | None = None
    ) -> None:
        span = self._span(exchange)
        if span is None:
            return  # a shadow decision after the request ended
        trace: _Trace = exchange.trace
        verdict = decision.verdict.value
        if mode == "enforce":
            trace.verdict = _stricter(trace.verdict, verdict)
        elif mode == "monitor":
            trace.verdict = _stricter(trace.verdict, "LOG")  # as the engine reports a monitored refusal
        if verdict == "ALLOW":
            key = (policy, hook, mode)
            if key in trace.allowed:
                return
            trace.allowed.add(key)
        span.add_event(DECISION_EVENT, {
            "capsem.policy": policy,
            "capsem.hook": hook,
            "capsem.verdict": verdict,
            "capsem.reason": decision.reason.value,
            "capsem.decision_id": decision.id,
            "capsem.mode": mode,
        })

    def redacted(
        self, exchange: Exchange, hook: str, policy: str, count: int, kind: str = "", placeholder: str = "",
        key_id: str = "",
    ) -> None:
        span = self._span(exchange)
        if span is None:
            return
        trace: _Trace = exchange.trace
        trace.verdict = _stricter(trace.verdict, "REDACT")
        span.add_event(REDACTION_EVENT, {
            "capsem.policy": policy,
            "capsem.kind": kind,
            "capsem.hook": hook,
            "capsem.count": count,
            "capsem.placeholder": placeholder,
            "capsem.key_id": key_id,
        })

    def request_done(self, exchange: Exchange, status: int, outcome: str) -> None:
        if not exchange.proxied:
            return  # the control plane (/health, /metrics, preflights): no span
        span = self._span(exchange)
        if span is None:
            return
        trace: _Trace = exchange.trace
        trace.ended, trace.span = True, None
        span.update_name(_name(exchange))
        span.set_attributes(self._attributes(exchange, trace, status, outcome))
        if status >= 500 or outcome in _BROKEN_STREAMS:
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end()

    # -- the span ------------------------------------------------------------

    def _span(self, exchange: Exchange) -> Span | None:
        """This request's span, started at the request's arrival the first time it is needed."""
        trace = exchange.trace
        if trace is None:
            trace = exchange.trace = _Trace()
        elif trace.ended:
            return None
        if trace.span is None:
            carrier = exchange.mcp_trace or trace.carrier
            parent = _PROPAGATOR.extract(carrier) if carrier else None
            trace.carrier = None
            arrived = time.time_ns() - int((time.perf_counter() - exchange.started) * 1e9)
            trace.span = self.tracer.start_span(_name(exchange), context=parent, kind=SpanKind.SERVER, start_time=arrived)
        return trace.span

    def _attributes(self, exchange: Exchange, trace: _Trace, status: int, outcome: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "capsem.request_id": exchange.request_id,
            "capsem.outcome": outcome,
            "capsem.stream": exchange.stream,
            "http.response.status_code": status,
        }
        if exchange.tenant_id != NO_TENANT:
            attributes["capsem.tenant_id"] = exchange.tenant_id
        if exchange.provider != "-":
            attributes["capsem.provider"] = exchange.provider
            server = self.servers.get(exchange.provider)
            if server is not None:
                attributes["server.address"], attributes["server.port"] = server
        if exchange.endpoint != "-":
            attributes["capsem.endpoint"] = exchange.endpoint
        if exchange.passthrough is not None:
            attributes["capsem.passthrough"] = exchange.passthrough
        if trace.verdict:
            attributes["capsem.decision"] = trace.verdict.lower()
        if status >= 400 or outcome not in ("completed", str(status)):
            attributes["error.type"] = outcome
        if exchange.mcp_server:
            attributes.update(_mcp_attributes(exchange))
        if exchange.operation:
            attributes["gen_ai.operation.name"] = exchange.operation
            attributes["gen_ai.provider.name"] = PROVIDER_NAMES.get(exchange.provider, exchange.provider)
            if exchange.model:
                attributes["gen_ai.request.model"] = exchange.model[:MAX_MODEL_CHARS]
            if exchange.response_model:
                attributes["gen_ai.response.model"] = exchange.response_model[:MAX_MODEL_CHARS]
            if exchange.input_tokens is not None:
                attributes["gen_ai.usage.input_tokens"] = exchange.input_tokens
            if exchange.output_tokens is not None:
                attributes["gen_ai.usage.output_tokens"] = exchange.output_tokens
        return attributes


def _mcp_attributes(exchange: Exchange) -> dict[str, Any]:
    """The MCP hop's: the semantic conventions' method and tool, the server by name and where it is."""
    attributes: dict[str, Any] = {"capsem.mcp.server": exchange.mcp_server}
    host, _, port = exchange.upstream.rpartition(":")
    if host:
        attributes["server.address"] = host
        if port.isdigit():
            attributes["server.port"] = int(port)
    if exchange.mcp_method:
        attributes["mcp.method.name"] = exchange.mcp_method
        if exchange.tool:
            attributes["gen_ai.tool.name"] = exchange.tool
    return attributes


def _name(exchange: Exchange) -> str:
    """``chat gpt-4o-mini``; ``tools/call echo`` on the MCP hop; the API name where there is no GenAI operation;
    the proxy's name before routing."""
    if exchange.mcp_method:
        return f"{exchange.mcp_method} {exchange.tool}" if exchange.tool else exchange.mcp_method
    what = exchange.operation or (exchange.endpoint if exchange.endpoint != "-" else "capsem-proxyd")
    model = exchange.model[:MAX_MODEL_CHARS]
    return f"{what} {model}" if model else what


def _stricter(first: str, second: str) -> str:
    """As ``verdicts.stricter``; ``first`` empty: no verdict applied yet."""
    return stricter(first, second) if first else second


def _server(url: str) -> tuple[str, int]:
    """``server.address`` and ``server.port`` of an upstream base URL."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
