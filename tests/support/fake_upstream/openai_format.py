"""OpenAI wire formats: Chat Completions, legacy Completions, side endpoints, errors.

Streams are `data: {json}\\n\\n` lines ending with `data: [DONE]\\n\\n`. The
Responses API lives in `openai_responses.py`.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterator
from typing import Any

from .script import new_id
from .wire import Plan, Turn, json_plan, sse, sse_plan

MODELS = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "o3-mini",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "omni-moderation-latest",
]

# status -> (type, code, default message), as the real API answers them.
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: sk-test. You can find your API key at https://platform.openai.com/account/api-keys.",
    ),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country, region, or territory not supported"),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def error_object(status: int, message: str | None = None, error_type: str | None = None) -> dict[str, Any]:
    """The inner `{"message", "type", "param", "code"}` object."""
    kind, code, default = _ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None, ""))
    return {
        "message": message or default or f"Error {status}",
        "type": error_type or kind,
        "param": None,
        "code": code,
    }


def error_plan(status: int, message: str | None = None, error_type: str | None = None) -> Plan:
    """OpenAI's error body: `{"error": {...}}`."""
    return json_plan({"error": error_object(status, message, error_type)}, status)


def _stream_error(turn: Turn) -> bytes:
    """Mid-stream error as OpenAI sends it: a bare `data: {"error": ...}` line."""
    status = turn.reply.status if turn.reply.status >= 400 else 500
    return sse({"error": error_object(status, turn.reply.error_message, turn.reply.error_type)})


def last_user_text(body: dict[str, Any]) -> str | None:
    """Text of the last user message in a chat or legacy completion request."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _content_text(message.get("content"))
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], str):
        return prompt[-1]
    return prompt if isinstance(prompt, str) else None


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "".join(texts)
    return None


def _usage(turn: Turn) -> dict[str, Any]:
    prompt, completion = turn.prompt_tokens, turn.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


# --- Chat Completions -------------------------------------------------------


def chat_completions(turn: Turn) -> Plan:
    """`POST /v1/chat/completions`, JSON or (with `"stream": true`) SSE."""
    if turn.body.get("stream"):
        return sse_plan(_chat_events(turn), error_event=lambda _sent: _stream_error(turn))
    calls = turn.reply.tool_calls
    message: dict[str, Any] = {
        "role": "assistant",
        "content": turn.text if (turn.text or not calls) else None,
        "refusal": None,
        "annotations": [],
    }
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
            for c in calls
        ]
    return json_plan(
        {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": turn.created,
            "model": turn.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if calls else "stop",
                }
            ],
            "usage": _usage(turn),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
    )


def _chat_events(turn: Turn) -> Iterator[bytes]:
    """Role chunk, text deltas, tool-call deltas, finish chunk, usage chunk, [DONE]."""
    completion_id = new_id("chatcmpl-")
    include_usage = bool((turn.body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        obj: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": turn.created,
            "model": turn.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            obj["usage"] = None
        return sse(obj)

    calls = turn.reply.tool_calls
    has_text = bool(turn.text_chunks)
    yield chunk({"role": "assistant", "content": "" if has_text or not calls else None, "refusal": None})
    for piece in turn.text_chunks:
        yield chunk({"content": piece})
    for index, call in enumerate(calls):
        head = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        yield chunk({"tool_calls": [head]})
        for piece in turn.reply.argument_chunks(call):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, "tool_calls" if calls else "stop")
    if include_usage:
        yield sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": turn.created,
                "model": turn.model,
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
                "choices": [],
                "usage": _usage(turn),
            }
        )
    yield b"data: [DONE]\n\n"


# --- Legacy Completions -----------------------------------------------------


def completions(turn: Turn) -> Plan:
    """`POST /v1/completions` (legacy), JSON or SSE."""
    completion_id = new_id("cmpl-")

    def obj(text: str, finish_reason: str | None, usage: dict[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": completion_id,
            "object": "text_completion",
            "created": turn.created,
            "model": turn.model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
        }
        if usage is not None:
            out["usage"] = usage
        return out

    usage = {
        "prompt_tokens": turn.prompt_tokens,
        "completion_tokens": turn.completion_tokens,
        "total_tokens": turn.prompt_tokens + turn.completion_tokens,
    }
    if not turn.body.get("stream"):
        return json_plan(obj(turn.text, "stop", usage))

    include_usage = bool((turn.body.get("stream_options") or {}).get("include_usage"))

    def events() -> Iterator[bytes]:
        for piece in turn.text_chunks:
            yield sse(obj(piece, None, None))
        yield sse(obj("", "stop", None))
        if include_usage:
            final = obj("", None, usage)
            final["choices"] = []
            yield sse(final)
        yield b"data: [DONE]\n\n"

    return sse_plan(events(), error_event=lambda _sent: _stream_error(turn))


# --- Side endpoints ---------------------------------------------------------


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1715367049, "owned_by": "system"}


def list_models(turn: Turn) -> Plan:
    """`GET /v1/models`."""
    return json_plan({"object": "list", "data": [_model(m) for m in MODELS]})


def get_model(turn: Turn, model_id: str) -> Plan:
    """`GET /v1/models/{id}`: any id exists, so tests need no setup."""
    return json_plan(_model(model_id))


def fake_vector(text: str, dimensions: int = 8) -> list[float]:
    """A deterministic vector derived from `text` (same input, same vector).

    Values are multiples of 1/128, exact in float32, so base64 and float
    encodings decode to the very same numbers.
    """
    digest = hashlib.sha256(text.encode()).digest()
    return [(digest[i % len(digest)] - 128) / 128.0 for i in range(dimensions)]


def embeddings(turn: Turn) -> Plan:
    """`POST /v1/embeddings`; honours `encoding_format` ("base64" is the SDK default)."""
    inputs = turn.body.get("input", "")
    items = inputs if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else [inputs]
    dimensions = int(turn.body.get("dimensions") or 8)
    data = []
    for index, item in enumerate(items):
        vector = fake_vector(str(item), dimensions)
        value: Any = vector
        if turn.body.get("encoding_format") == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    tokens = sum(max(1, len(str(i)) // 4) for i in items)
    return json_plan(
        {
            "object": "list",
            "data": data,
            "model": turn.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


_MODERATION_CATEGORIES = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
]


def moderations(turn: Turn) -> Plan:
    """`POST /v1/moderations`: flags any input containing "FLAG_ME" (as violence)."""
    inputs = turn.body.get("input", "")
    items = inputs if isinstance(inputs, list) else [inputs]
    results = []
    for item in items:
        text = item if isinstance(item, str) else str(item.get("text", "")) if isinstance(item, dict) else ""
        flagged = "FLAG_ME" in text
        results.append(
            {
                "flagged": flagged,
                "categories": {c: flagged and c == "violence" for c in _MODERATION_CATEGORIES},
                "category_scores": {
                    c: (0.97 if flagged and c == "violence" else 0.0001) for c in _MODERATION_CATEGORIES
                },
                "category_applied_input_types": {c: ["text"] for c in _MODERATION_CATEGORIES},
            }
        )
    return json_plan({"id": new_id("modr-"), "model": turn.model, "results": results})
