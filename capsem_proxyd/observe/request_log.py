"""The one log line of every request.

``capsem_proxyd.request`` gets a line when a request is over: request id,
tenant id, provider API, model, status, outcome and duration (a stream's
outcome is one of ``outcomes.StreamOutcome``; a reply answered whole logs its
status, and ``error=`` the code of the error it was answered with). Never a key and
never prompt text; client-chosen values (the model, a path) are escaped and
quoted by the formatter so a client cannot forge a line or a field.

The line names the request's decision, so a refusal reads apart from a
malformed request without the audit log: ``decision=block policy=...
hook=... reason=... decision_id=...`` for the decision that weighed most
(BLOCK, then CONFIRM, then REDACT, then LOG), ``decision=allow`` when every
policy allowed, no ``decision`` when no policy was asked. A monitor-mode
policy's would-be refusal let the content through as LOG and says what it
would have done: ``decision=log monitored=block policy=...`` (an enforced
LOG on the same request does not hide it).

A request the upstream failed (unreachable, a scheme httpx cannot speak,
reset, timed out) is a WARNING with ``upstream=host:port`` and
``failure=...`` in the transport's own words. A request that went upstream
unchecked because an operator opted its path into pass-through is a WARNING
that says so; control-plane requests (``/health``, ``/metrics``...) log at
DEBUG unless they failed.
"""

from __future__ import annotations

import logging

from capsem.models import Decision

from capsem_proxyd.exchange import Exchange, NotedDecision
from capsem_proxyd.observe.logs import log_event
from capsem_proxyd.observe.recorders import CacheUse, Recorder
from capsem_proxyd.verdicts import VerdictRank, rank

log = logging.getLogger("capsem_proxyd.request")

_ALLOWED = NotedDecision("ALLOW")
_PASS_THROUGH = "UNCHECKED pass-through"


def _weight(noted: NotedDecision) -> tuple[int, bool]:
    """How much a decision weighs on the request: its effect first (a monitored refusal's is LOG's),
    then being a would-be refusal (the operator's dry run must not hide behind a plain LOG)."""
    if noted.monitored:
        return int(VerdictRank.LOG), True
    return int(rank(noted.verdict)), False


def _note(exchange: Exchange, noted: NotedDecision) -> None:
    if exchange.decision is None or _weight(noted) > _weight(exchange.decision):
        exchange.decision = noted


class RequestLog(Recorder):
    def decision_made(
        self, exchange: Exchange, hook: str, policy: str, decision: Decision, mode: str, cache: CacheUse | None = None
    ) -> None:
        """Shadow decisions have no effect on the request (they log on ``capsem_proxyd.shadow``)."""
        if mode == "shadow":
            return
        verdict = decision.verdict.value
        if verdict == "ALLOW":
            if exchange.decision is None:
                exchange.decision = _ALLOWED
            return
        _note(exchange, NotedDecision(verdict, policy, hook, decision.id, decision.reason.value, mode == "monitor"))

    def redacted(
        self, exchange: Exchange, hook: str, policy: str, count: int, kind: str = "", placeholder: str = "",
        key_id: str = "",
    ) -> None:
        _note(exchange, NotedDecision("REDACT", policy, hook))

    def request_done(self, exchange: Exchange, status: int, outcome: str) -> None:
        if exchange.proxied:
            level = logging.WARNING if exchange.passthrough is not None or exchange.failure else logging.INFO
        else:
            level = logging.DEBUG if status < 400 else logging.INFO
        if not log.isEnabledFor(level):
            return
        fields: dict[str, object] = {
            "request_id": exchange.request_id, "tenant_id": exchange.tenant_id, "provider": exchange.provider,
            "endpoint": exchange.endpoint, "model": exchange.model or "-", "status": status, "outcome": outcome,
            "duration_ms": round(exchange.seconds * 1000, 1), "path": exchange.path,
        }
        if exchange.error and exchange.error != outcome:
            fields["error"] = exchange.error
        if (noted := exchange.decision) is not None:
            _decision_fields(fields, noted)
        if exchange.failure:
            fields["upstream"] = exchange.upstream or "-"
            fields["failure"] = exchange.failure
        if exchange.passthrough is not None:
            fields["pattern"] = exchange.passthrough
            log_event(log, level, _PASS_THROUGH, fields)
        else:
            log_event(log, level, "", fields)


def _decision_fields(fields: dict[str, object], noted: NotedDecision) -> None:
    if noted.monitored:
        fields["decision"] = "log"
        fields["monitored"] = noted.verdict.lower()
    else:
        fields["decision"] = noted.verdict.lower()
    if noted.policy:
        fields["policy"] = noted.policy
        fields["hook"] = noted.hook
    if noted.reason:
        fields["reason"] = noted.reason
    if noted.decision_id:
        fields["decision_id"] = noted.decision_id
