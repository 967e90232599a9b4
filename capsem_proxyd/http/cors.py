"""CORS for browser clients: the preflight answer and the headers on every reply.

One policy object for both planes: the control plane (Quart) answers
preflights and decorates its own replies with it, the data plane adds the same
headers to proxied replies, so a browser's request takes the fast path like
any other. Credentials are never allowed: a browser page must bring the key
itself, the proxy never lends it a cookie's authority.
"""

from __future__ import annotations

from collections.abc import Mapping

ALLOW_METHODS = "GET, POST, OPTIONS"
EXPOSE_HEADERS = "x-request-id, x-capsem-request-id, x-capsem-decision, x-capsem-policies, retry-after"
PREFLIGHT_MAX_AGE = "600"


class Cors:
    """``origins`` empty: any origin (answered ``*``); else only those (answered by name, ``Vary: Origin``)."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.origins = frozenset(origins)

    def allows(self, origin: str) -> bool:
        return not self.origins or origin in self.origins

    def reply_headers(self, origin: str | None) -> list[tuple[str, str]]:
        """What a reply to a (non-preflight) request from ``origin`` carries; nothing without an Origin."""
        if not origin or not self.allows(origin):
            return []
        headers = [("access-control-allow-origin", origin if self.origins else "*"),
                   ("access-control-expose-headers", EXPOSE_HEADERS)]
        if self.origins:
            headers.append(("vary", "Origin"))
        return headers

    def preflight(self, headers: Mapping[str, str]) -> tuple[int, list[tuple[str, str]]]:
        """The status and headers answering an ``OPTIONS`` preflight (403 for an origin not allowed)."""
        origin = headers.get("origin") or ""
        if not self.allows(origin):
            return 403, []
        answer = [
            ("access-control-allow-origin", origin if self.origins else "*"),
            ("access-control-allow-methods", headers.get("access-control-request-method") or ALLOW_METHODS),
            ("access-control-max-age", PREFLIGHT_MAX_AGE),
        ]
        requested = headers.get("access-control-request-headers")
        if requested:
            answer.append(("access-control-allow-headers", requested))
        if self.origins:
            answer.append(("vary", "Origin"))
        return 204, answer
