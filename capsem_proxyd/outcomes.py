"""How a proxied request or stream ended: one closed set of names, shared by the pump, the request log and the metrics.

A streamed reply's status is sent before its first event, so the outcome is
what says how it really ended; it is the ``outcome`` label of the
``capsem_proxyd_streams`` counter and the ``outcome=`` of its request log
line. A request answered whole logs its status (or its error code) instead,
except one whose client left before the answer: ``client_disconnected``.
"""

from __future__ import annotations

from enum import StrEnum


class StreamOutcome(StrEnum):
    """How a stream ended (a ``str``: it goes into log lines and metric labels as its value)."""

    INCOMPLETE = "incomplete"  # not ended yet: what a pump says until it knows
    COMPLETED = "completed"  # the client received the whole reply, checked
    BLOCKED = "blocked"  # a policy refused what came next: the stream ended with the refusal
    UPSTREAM_ERROR = "upstream_error"  # the upstream broke off, timed out, sent garbage or an error event
    POLICY_UNAVAILABLE = "policy_unavailable"  # no policy worker process was ready to check what came next (503)
    AUDIT_UNAVAILABLE = "audit_unavailable"  # the audit log could not record a decision on what came next (503)
    CLIENT_DISCONNECTED = "client_disconnected"  # the client left before the reply was whole
    SERVER_SHUTTING_DOWN = "server_shutting_down"  # the shutdown's grace period ended the stream
    INTERNAL_ERROR = "internal_error"  # a fault of the proxy's own (logged with its traceback)
