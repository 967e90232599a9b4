"""Anthropic Messages API wire formats.

Streams are `event: <type>\\ndata: {json}\\n\\n`: message_start, per block
content_block_start / content_block_delta (text_delta or input_json_delta,
the JSON split at arbitrary points, starting with an empty piece like the
real API) / content_block_stop, a `ping` after the first block start, then
message_delta and message_stop. Errors mid-stream are `event: error`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .script import new_id
from .wire import Plan, Turn, json_plan, sse, sse_plan

MODELS = [
    ("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17T00:00:00Z"),
    ("claude-opus-4-6", "Claude Opus 4.6", "2026-02-05T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
]

_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}


def error_body(status: int, message: str | None = None, error_type: str | None = None) -> dict[str, Any]:
    """`{"type": "error", "error": {"type", "message"}, "request_id"}`."""
    kind, default = _ERRORS.get(status, ("api_error" if status >= 500 else "invalid_request_error", f"Error {status}"))
    return {
        "type": "error",
        "error": {"type": error_type or kind, "message": message or default},
        "request_id": new_id("req_"),
    }


def error_plan(status: int, message: str | None = None, error_type: str | None = None) -> Plan:
    return json_plan(error_body(status, message, error_type), status, pretty=False)


def last_user_text(body: dict[str, Any]) -> str | None:
    """Text of the last user message (string content or text blocks)."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, str):
                    return content
                if isinstance(content, list):
                    return "".join(
                        b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
                    )
    return None


def _usage(turn: Turn, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": turn.prompt_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _message(
    turn: Turn, message_id: str, content: list[Any], stop_reason: str | None, output_tokens: int
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": turn.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _usage(turn, output_tokens),
    }


def _has_text_block(turn: Turn) -> bool:
    return bool(turn.text) or not turn.reply.tool_calls


def messages(turn: Turn) -> Plan:
    """`POST /v1/messages`."""
    message_id = new_id("msg_01")
    stop_reason = "tool_use" if turn.reply.tool_calls else "end_turn"
    if turn.body.get("stream"):

        def error_event(_sent: int) -> bytes:
            status = turn.reply.status if turn.reply.status >= 400 else 500
            body = error_body(status, turn.reply.error_message, turn.reply.error_type)
            body.pop("request_id")
            return sse(body, "error")

        plan = sse_plan(_events(turn, message_id, stop_reason), error_event=error_event)
        plan.garbage = b"event: content_block_delta\ndata: {not json\n\n"
        return plan
    content: list[dict[str, Any]] = []
    if _has_text_block(turn):
        content.append({"type": "text", "text": turn.text})
    for call in turn.reply.tool_calls:
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments})
    return json_plan(_message(turn, message_id, content, stop_reason, turn.completion_tokens), pretty=False)


def _events(turn: Turn, message_id: str, stop_reason: str) -> Iterator[bytes]:
    yield sse({"type": "message_start", "message": _message(turn, message_id, [], None, 1)}, "message_start")
    index = 0
    pinged = False

    def block_start(block: dict[str, Any]) -> Iterator[bytes]:
        nonlocal pinged
        yield sse({"type": "content_block_start", "index": index, "content_block": block}, "content_block_start")
        if not pinged:
            pinged = True
            yield sse({"type": "ping"}, "ping")

    def delta(payload: dict[str, Any]) -> bytes:
        return sse({"type": "content_block_delta", "index": index, "delta": payload}, "content_block_delta")

    def block_stop() -> bytes:
        return sse({"type": "content_block_stop", "index": index}, "content_block_stop")

    if _has_text_block(turn):
        yield from block_start({"type": "text", "text": ""})
        for piece in turn.text_chunks:
            yield delta({"type": "text_delta", "text": piece})
        yield block_stop()
        index += 1
    for call in turn.reply.tool_calls:
        yield from block_start({"type": "tool_use", "id": call.id, "name": call.name, "input": {}})
        for piece in ["", *turn.reply.argument_chunks(call)]:
            yield delta({"type": "input_json_delta", "partial_json": piece})
        yield block_stop()
        index += 1
    yield sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": turn.completion_tokens},
        },
        "message_delta",
    )
    yield sse({"type": "message_stop"}, "message_stop")


def count_tokens(turn: Turn) -> Plan:
    """`POST /v1/messages/count_tokens`."""
    return json_plan({"input_tokens": turn.prompt_tokens}, pretty=False)


def _model(model_id: str, display_name: str | None = None, created_at: str = "2025-01-01T00:00:00Z") -> dict[str, Any]:
    return {"type": "model", "id": model_id, "display_name": display_name or model_id, "created_at": created_at}


def list_models(turn: Turn) -> Plan:
    """`GET /v1/models` (told apart from OpenAI's by the `anthropic-version` header)."""
    data = [_model(*m) for m in MODELS]
    return json_plan(
        {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}, pretty=False
    )


def get_model(turn: Turn, model_id: str) -> Plan:
    """`GET /v1/models/{id}`: any id exists."""
    known = {m[0]: m for m in MODELS}
    return json_plan(_model(*known[model_id]) if model_id in known else _model(model_id), pretty=False)
