"""Gemini (Generative Language API) wire formats, for /v1 and /v1beta.

`:streamGenerateContent?alt=sse` answers `data: {GenerateContentResponse}\\r\\n\\r\\n`
events (CRLF, like Google's servers; google-genai splits on any line ending).
Without `alt=sse` it answers the REST streaming form: one JSON array, sent
element by element (`[{...}` then `\\r\\n,\\r\\n{...}` ... then `\\r\\n]`).
Function calls arrive whole in one chunk, never as partial JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .openai_format import fake_vector
from .script import new_id
from .wire import Plan, Turn, json_plan, sse_plan

MODELS = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash", "gemini-embedding-001", "text-embedding-004"]

JSON_TYPE = "application/json; charset=UTF-8"

_STATUSES: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "Method doesn't allow unregistered callers. Please use API Key or other form of API consumer identity to call this API."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


def error_object(status: int, message: str | None = None, error_type: str | None = None) -> dict[str, Any]:
    """`{"error": {"code", "message", "status"}}` (google.rpc.Status as JSON)."""
    name, default = _STATUSES.get(status, ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION", f"Error {status}"))
    return {"error": {"code": status, "message": message or default, "status": error_type or name}}


def error_plan(status: int, message: str | None = None, error_type: str | None = None) -> Plan:
    return json_plan(error_object(status, message, error_type), status, content_type=JSON_TYPE)


def last_user_text(body: dict[str, Any]) -> str | None:
    """Text of the last user content (`role` may be omitted, meaning user)."""
    contents = body.get("contents")
    if isinstance(contents, dict):
        contents = [contents]
    if isinstance(contents, list):
        for content in reversed(contents):
            if isinstance(content, dict) and content.get("role", "user") == "user":
                parts = content.get("parts") or []
                texts = [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
                return "".join(texts)
    return None


def _usage(turn: Turn, final: bool) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": turn.prompt_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": turn.prompt_tokens}],
    }
    if final:
        thoughts = len(turn.reply.thoughts) // 4 if turn.reply.thoughts else 0
        candidates = max(0, turn.completion_tokens - thoughts)
        usage["candidatesTokenCount"] = candidates
        usage["totalTokenCount"] = turn.prompt_tokens + candidates + thoughts
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
    else:
        usage["totalTokenCount"] = turn.prompt_tokens
    return usage


def _function_parts(turn: Turn) -> list[dict[str, Any]]:
    return [{"functionCall": {"name": c.name, "args": c.arguments}} for c in turn.reply.tool_calls]


def _response(turn: Turn, response_id: str, parts: list[dict[str, Any]], final: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if final:
        candidate["finishReason"] = "STOP"
    return {
        "candidates": [candidate],
        "usageMetadata": _usage(turn, final),
        "modelVersion": turn.model,
        "responseId": response_id,
    }


def generate_content(turn: Turn) -> Plan:
    """`:generateContent`: thought part, text part, functionCall parts."""
    parts: list[dict[str, Any]] = []
    if turn.reply.thoughts:
        parts.append({"text": turn.reply.thoughts, "thought": True})
    if turn.text or not turn.reply.tool_calls:
        parts.append({"text": turn.text})
    parts.extend(_function_parts(turn))
    return json_plan(_response(turn, new_id("", 22), parts, final=True), content_type=JSON_TYPE)


def _chunks(turn: Turn) -> Iterator[dict[str, Any]]:
    """The GenerateContentResponse objects of a stream; the last one has finishReason."""
    response_id = new_id("", 22)
    parts_list: list[list[dict[str, Any]]] = [[{"text": p, "thought": True}] for p in turn.reply.thought_chunks()]
    parts_list += [[{"text": p}] for p in turn.text_chunks]
    if turn.reply.tool_calls:
        parts_list.append(_function_parts(turn))
    if not parts_list:
        parts_list.append([{"text": ""}])
    for index, parts in enumerate(parts_list):
        yield _response(turn, response_id, parts, final=index == len(parts_list) - 1)


def stream_generate_content(turn: Turn) -> Plan:
    """`:streamGenerateContent`, SSE with `alt=sse`, else a streamed JSON array."""
    error = error_object(
        turn.reply.status if turn.reply.status >= 400 else 500, turn.reply.error_message, turn.reply.error_type
    )
    if turn.request.query.get("alt") == "sse":
        events = (f"data: {json.dumps(c, ensure_ascii=False)}\r\n\r\n".encode() for c in _chunks(turn))
        plan = sse_plan(events, error_event=lambda _sent: f"data: {json.dumps(error)}\r\n\r\n".encode())
        plan.headers = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
        plan.garbage = b"data: {not json\r\n\r\n"
        return plan

    def array_events() -> Iterator[bytes]:
        for index, chunk in enumerate(_chunks(turn)):
            yield ("[" if index == 0 else "\r\n,\r\n").encode() + json.dumps(chunk, indent=2).encode()
        yield b"\r\n]"

    def array_error(sent: int) -> bytes:
        return ("[" if sent == 0 else "\r\n,\r\n").encode() + json.dumps(error, indent=2).encode() + b"\r\n]"

    plan = sse_plan(array_events(), error_event=array_error)
    plan.headers = [("content-type", JSON_TYPE)]
    plan.garbage = b"\r\n,\r\n{not json"
    return plan


# --- Side endpoints ---------------------------------------------------------


def _model(name: str) -> dict[str, Any]:
    embedding = "embedding" in name
    return {
        "name": f"models/{name}",
        "version": "001",
        "displayName": name.replace("-", " ").title(),
        "description": f"Fake {name}",
        "inputTokenLimit": 2048 if embedding else 1048576,
        "outputTokenLimit": 1 if embedding else 65536,
        "supportedGenerationMethods": ["embedContent", "batchEmbedContents"]
        if embedding
        else ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"],
        **({} if embedding else {"temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2, "thinking": True}),
    }


def list_models(turn: Turn) -> Plan:
    """`GET /{version}/models`."""
    return json_plan({"models": [_model(m) for m in MODELS]}, content_type=JSON_TYPE)


def get_model(turn: Turn, model: str) -> Plan:
    """`GET /{version}/models/{model}`: any model exists."""
    return json_plan(_model(model), content_type=JSON_TYPE)


def count_tokens(turn: Turn) -> Plan:
    """`:countTokens`."""
    tokens = turn.prompt_tokens
    return json_plan(
        {"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]},
        content_type=JSON_TYPE,
    )


def _content_text(content: Any) -> str:
    if isinstance(content, dict):
        return "".join(str(p.get("text", "")) for p in content.get("parts") or [] if isinstance(p, dict))
    return str(content)


def _dimensions(request: dict[str, Any]) -> int:
    return int(request.get("outputDimensionality") or 8)


def embed_content(turn: Turn) -> Plan:
    """`:embedContent`."""
    vector = fake_vector(_content_text(turn.body.get("content")), _dimensions(turn.body))
    return json_plan({"embedding": {"values": vector}}, content_type=JSON_TYPE)


def batch_embed_contents(turn: Turn) -> Plan:
    """`:batchEmbedContents`: one embedding per request."""
    requests = turn.body.get("requests") or []
    embeddings = [
        {"values": fake_vector(_content_text(r.get("content")), _dimensions(r))}
        for r in requests
        if isinstance(r, dict)
    ]
    return json_plan({"embeddings": embeddings}, content_type=JSON_TYPE)
