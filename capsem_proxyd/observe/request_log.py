"""The one log line of every request.

``capsem_proxyd.request`` gets a line when a request is over: request id,
tenant id, provider API, model, status, outcome and duration (a stream's
outcome is one of ``outcomes.StreamOutcome``; a reply answered whole logs its
status or error code). Never a key and
never prompt text; client-chosen values (the model, a path) have their
control characters escaped so a client cannot forge a line. A request that
went upstream unchecked because an operator opted its path into pass-through
is a WARNING that says so; control-plane requests (``/health``,
``/metrics``...) log at DEBUG unless they failed.
"""

from __future__ import annotations

import logging

from capsem_proxyd.exchange import Exchange
from capsem_proxyd.observe.logs import escape_controls
from capsem_proxyd.observe.recorders import Recorder

log = logging.getLogger("capsem_proxyd.request")

_LINE = (
    "request_id=%s tenant_id=%s provider=%s endpoint=%s model=%s status=%s outcome=%s duration_ms=%.1f path=%s"
)


class RequestLog(Recorder):
    def request_done(self, exchange: Exchange, status: int, outcome: str) -> None:
        if exchange.proxied:
            level = logging.WARNING if exchange.passthrough is not None else logging.INFO
        else:
            level = logging.DEBUG if status < 400 else logging.INFO
        if not log.isEnabledFor(level):
            return
        line = _LINE
        arguments: tuple[object, ...] = (
            exchange.request_id, exchange.tenant_id, exchange.provider, exchange.endpoint,
            escape_controls(exchange.model) or "-", status, outcome, exchange.seconds * 1000,
            escape_controls(exchange.path),
        )
        if exchange.passthrough is not None:
            line = "UNCHECKED pass-through " + line + " pattern=%s"
            arguments += (escape_controls(exchange.passthrough),)
        log.log(level, line, *arguments)
