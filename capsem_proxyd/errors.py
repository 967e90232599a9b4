"""Errors the pipeline raises; each dialect renders them in its provider's shape."""

from __future__ import annotations

from capsem.models import Decision


class ProxyError(Exception):
    """An error answered to the client with ``status`` and a provider-shaped body.

    ``kind`` is a provider-neutral name that dialects map to their own error
    types (``invalid_request``, ``authentication``, ``permission``, ...).
    """

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        *,
        code: str | None = None,
        decision: Decision | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.code = code or kind
        self.decision = decision


def bad_request(message: str) -> ProxyError:
    return ProxyError(400, "invalid_request", message)


def missing_key(message: str) -> ProxyError:
    return ProxyError(401, "authentication", message, code="missing_api_key")


def not_found(message: str) -> ProxyError:
    return ProxyError(404, "not_found", message)


def upstream_unavailable(message: str) -> ProxyError:
    return ProxyError(502, "upstream_error", message, code="upstream_unavailable")


def upstream_timeout(message: str) -> ProxyError:
    return ProxyError(504, "upstream_timeout", message, code="upstream_timeout")


def shutting_down() -> ProxyError:
    return ProxyError(
        503, "upstream_error", "capsem-proxyd is shutting down; this stream was cut.", code="server_shutting_down"
    )


def policy_blocked(decision: Decision, what: str) -> ProxyError:
    """A request or reply refused by policy; ``what`` names the checked thing."""
    confirm = decision.verdict.value != "BLOCK"
    code = "capsem_confirmation_required" if confirm else "capsem_blocked"
    verb = "needs confirmation" if confirm else "blocked"
    message = (
        f"{what} {verb} by CAPSEM policy '{decision.policy}' "
        f"({decision.reason.value}): {decision.details}"
    )
    return ProxyError(403, "permission", message, code=code, decision=decision)


def decision_fields(decision: Decision) -> dict[str, str]:
    """The CAPSEM decision as it travels in error bodies, for operators to trace."""
    return {
        "policy": decision.policy,
        "verdict": decision.verdict.value,
        "reason": decision.reason.value,
        "details": decision.details,
        "decision_id": decision.id,
        "hook": decision.callback,
    }
