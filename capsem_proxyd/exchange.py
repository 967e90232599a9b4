"""One client request, from its first byte to its last log line.

Like mitmproxy's flow, an ``Exchange`` exists from the moment a request
arrives (``Exchange.begin``, at the ASGI entry): every reply carries its
request id, and every recorder (log line, metrics, audit) reads it. What is
learnt later fills it in: the provider API once the route is known, the
tenant once the key is read, the model once the body is parsed, and — only
when a recorder asks for it — the token usage the reply states.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from capsem.models import Agent

if TYPE_CHECKING:
    from capsem_proxyd.redaction.masker import Masker

# Before the key is read (or when there is none) a request has no tenant.
NO_TENANT = "-"


@dataclass(frozen=True, slots=True)
class NotedDecision:
    """The decision a request's log line names: the policy verdict that weighed most on it.

    ``verdict`` is a verdict name (CAPSEM's, or the proxy's own ``REDACT``
    for masked content); ``monitored`` is true for a monitor-mode policy's
    would-be refusal, which let the content through as LOG. ``reason`` is
    CAPSEM's reason code, never the policy's free-text details (they may
    quote the prompt).
    """

    verdict: str
    policy: str = ""
    hook: str = ""
    decision_id: str = ""
    reason: str = ""
    monitored: bool = False


def tenant_id_for(api_key: str) -> str:
    """The tenant identity: first 16 hex chars of SHA-256 of the key (never the key)."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def new_request_id() -> str:
    return "req_" + os.urandom(8).hex()


@dataclass(slots=True)
class Exchange:
    """Request id, tenant, provider API and model: what every reply, log line and decision carries.

    ``proxied`` is false for the control plane (``/health``, ``/metrics``,
    preflights, unknown paths outside any provider API); ``passthrough`` names
    the operator pattern an unchecked pass-through request matched;
    ``operation`` is the API's GenAI operation name (``chat``...) or empty.

    ``input_tokens``, ``output_tokens`` and ``response_model`` are what the
    reply said of itself; the pipeline reads them only when a recorder wants
    them (``Recorder.reads_usage``). ``trace`` is the OpenTelemetry recorder's
    state for this request (its span); None when tracing is off.

    ``decision`` is what the request log names as the request's decision
    (None until a policy decided); ``error`` the error code a whole reply
    answered with (``errors.ErrorCode``; a stream's outcome says how it
    ended instead); ``upstream`` is the provider's host and
    port once the request was sent (never its path or query, where a Gemini
    key may sit); ``failure`` says, for the operator's log, why the upstream
    failed this request (a transport's own words, never a key; empty when it
    did not).
    """

    request_id: str
    started: float
    path: str = ""
    tenant_id: str = NO_TENANT
    provider: str = "-"
    endpoint: str = "-"
    model: str = ""
    stream: bool = False
    proxied: bool = True
    passthrough: str | None = None
    operation: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    response_model: str = ""
    prompt: str = field(default="", repr=False)
    trace: Any = field(default=None, repr=False)
    decision: NotedDecision | None = None
    error: str = ""
    upstream: str = ""
    failure: str = ""
    # On the MCP hop: the JSON-RPC method of the client's message and the tool it calls (spans name them),
    # the server's name, and the trace context the message carries in ``params._meta`` (``traceparent``
    # and ``tracestate``): the agent's span for this call, which the span takes as its parent.
    mcp_method: str = ""
    tool: str = ""
    mcp_server: str = ""
    mcp_trace: dict[str, str] | None = None
    # What enforcing policies asked to mask in the request: (value, kind, policy, hook) each; never logged.
    redactions: list[tuple[str, str, str, str]] = field(default_factory=list, repr=False)
    # The process's placeholders and tenants' memory (set by the pipeline): what gives the policies that
    # cannot mask the masked view of the content.
    masker: Masker | None = field(default=None, repr=False)
    _agent: Agent | None = field(default=None, repr=False)

    @classmethod
    def begin(cls, path: str) -> Exchange:
        return cls(request_id=new_request_id(), started=time.perf_counter(), path=path)

    @property
    def seconds(self) -> float:
        """Time since the request arrived."""
        return time.perf_counter() - self.started

    def record_usage(self, input_tokens: int | None, output_tokens: int | None, model: str | None) -> None:
        """What a reply (or a stream event) stated; what it left unsaid keeps its earlier value."""
        if input_tokens is not None:
            self.input_tokens = input_tokens
        if output_tokens is not None:
            self.output_tokens = output_tokens
        if model:
            self.response_model = model

    @property
    def agent(self) -> Agent:
        """The CAPSEM agent for this tenant (built lazily: most requests never need it twice)."""
        if self._agent is None:
            self._agent = Agent.model_construct(
                name=f"tenant-{self.tenant_id}",
                instructions="",
                tools=[],
                sub_agents=[],
            )
        return self._agent

    def log_fields(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "tenant_id": self.tenant_id,
            "provider": self.provider,
            "endpoint": self.endpoint,
            "model": self.model,
        }
