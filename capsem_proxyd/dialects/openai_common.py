"""What OpenAI's APIs (Chat Completions, Responses, ...) share: key and error shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from capsem_proxyd.dialects.base import Dialect, as_dict, as_str, bearer_token, parse_usage_event, token_count
from capsem_proxyd.dialects.framing import StreamEvent
from capsem_proxyd.errors import ProxyError, decision_fields
from capsem_proxyd.views import Usage

_ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "invalid_request_error",
    "permission": "capsem_policy_violation",
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


def openai_usage(body: Any) -> Usage | None:
    """``usage`` of a Chat Completions, Completions or Embeddings reply (or of a chunk).

    ``prompt_tokens`` already counts cached tokens, ``completion_tokens`` reasoning tokens.
    """
    body = as_dict(body)
    usage = as_dict(body.get("usage"))
    model = as_str(body.get("model")) or None
    if not usage and model is None:
        return None
    return Usage(token_count(usage.get("prompt_tokens")), token_count(usage.get("completion_tokens")), model)


def openai_stream_usage(event: StreamEvent) -> Usage | None:
    """The usage chunk a stream ends with when the client asked for it (``stream_options.include_usage``)."""
    chunk = parse_usage_event(event, '"prompt_tokens"')
    return openai_usage(chunk) if chunk is not None else None


class OpenAIDialect(Dialect):
    """What every OpenAI API dialect shares: the Bearer key and the error shape."""

    provider = "openai"

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return openai_api_key(headers, query)

    def error_body(self, error: ProxyError) -> dict[str, Any]:
        return openai_error_body(error)
