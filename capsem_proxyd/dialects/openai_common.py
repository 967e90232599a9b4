"""What OpenAI's APIs (Chat Completions, Responses, ...) share: key and error shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from capsem_proxyd.dialects.base import Dialect, bearer_token
from capsem_proxyd.errors import ProxyError, decision_fields

_ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "invalid_request_error",
    "permission": "capsem_policy_violation",
    # A policy block: "invalid_request_error", the type OpenAI refuses flagged content with. Clients that derive a
    # status from an in-stream error's type (Vercel AI SDK) then see a final 400, not a retryable 500.
    "policy": "invalid_request_error",
    "not_found": "invalid_request_error",
    "too_large": "invalid_request_error",
    "upstream_error": "api_error",
    "upstream_timeout": "timeout_error",
}


def openai_api_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    return bearer_token(headers)


def openai_error_body(error: ProxyError) -> dict[str, Any]:
    """``{"error": {message, type, param, code}}`` as the openai SDK parses it."""
    inner: dict[str, Any] = {
        "message": error.message,
        "type": _ERROR_TYPES.get(error.kind, "api_error"),
        "param": None,
        "code": error.code,
    }
    body: dict[str, Any] = {"error": inner}
    if error.decision is not None:
        inner["capsem"] = decision_fields(error.decision)
        body["detail"] = f"Request blocked by security policy: {error.decision.details}"
    return body


class OpenAIDialect(Dialect):
    """What every OpenAI API dialect shares: the Bearer key and the error shape."""

    provider = "openai"

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return openai_api_key(headers, query)

    def error_body(self, error: ProxyError) -> dict[str, Any]:
        return openai_error_body(error)
