"""Hypothesis strategies and profiles shared by the fuzz tests.

Pure random JSON rarely reaches a parser's interesting branches, so the
strategies draw object keys and string values mostly from the providers' own
vocabulary (``messages``, ``functionCall``, ``tool_use``, ``data:`` URLs, event
types...) and sometimes from arbitrary text: shapes close to real traffic, with
every field free to hold the wrong type.

The hypothesis profiles (``capsem``, ``ci``, ``capsem-deep``) are registered
and loaded once, in ``tests/conftest.py``, so every property test runs under
them whether or not it imports this module.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

KEYS = [
    # requests
    "model", "messages", "role", "content", "type", "text", "name", "arguments", "id", "tools", "functions",
    "tool_calls", "function", "tool_call_id", "parameters", "description", "input", "instructions", "prompt",
    "system", "stream", "image_url", "url", "input_image", "input_audio", "data", "format", "file", "file_data",
    "filename", "file_id", "refusal", "contents", "parts", "functionCall", "function_call", "functionResponse",
    "function_response", "response", "args", "inlineData", "inline_data", "mimeType", "mime_type", "fileData",
    "systemInstruction", "system_instruction", "functionDeclarations", "function_declarations", "executableCode",
    "tool_use_id", "input_schema", "source", "media_type", "call_id", "output", "requests", "max_tokens",
    # replies and stream events
    "choices", "delta", "message", "candidates", "finish_reason", "index", "reasoning_content", "thought",
    "thinking", "partial_json", "content_block", "output_index", "item", "summary", "error", "usage", "status",
]
STRING_VALUES = [
    "user", "system", "developer", "assistant", "model", "tool", "function", "text", "image_url", "input_text",
    "input_image", "input_audio", "input_file", "file", "tool_use", "tool_result", "server_tool_use", "image",
    "document", "thinking", "redacted_thinking", "function_call", "function_call_output", "message", "reasoning",
    "base64", "url", "content", "mp3", "wav", "stop", "tool_calls",
    "data:image/png;base64,iVBORw0KGgo=", "data:text/plain,hello%20world", "data:;base64,!!not base64!!", "data:",
    "data:image/png;base64", "aGVsbG8=", "aGVsbG8", "a-_b", "capsem_block", "[DONE]", "{\"a\": 1}", "{not json",
    "content_block_start", "content_block_delta", "content_block_stop", "message_start", "message_stop",
    "text_delta", "input_json_delta", "thinking_delta", "response.output_text.delta",
    "response.function_call_arguments.delta", "response.function_call_arguments.done",
    "response.output_item.added", "response.output_item.done", "response.completed", "response.failed", "error",
    "gpt-4o-mini", "gemini-2.5-flash", "claude-sonnet-4-6",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(STRING_VALUES),
    st.text(max_size=24),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=12))


def json_values(max_leaves: int = 40) -> st.SearchStrategy[Any]:
    """Any JSON value, shaped like provider traffic more often than not."""
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.dictionaries(keys, children, max_size=6),
        ),
        max_leaves=max_leaves,
    )


json_objects = st.dictionaries(keys, json_values(), max_size=8)
"""A request body: always a JSON object (the pipeline refuses anything else before a dialect sees it)."""


@st.composite
def split_points(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut into pieces at arbitrary points (how TCP may deliver it)."""
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=6)))
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(data[start:cut])
        start = cut
    pieces.append(data[start:])
    return pieces


# --- Mutations of real traffic ----------------------------------------------------------------
#
# Seeds are what the SDKs send and what the fake provider answers (the same wire formats the
# other tests check against the official SDKs); a mutation replaces, deletes or wraps a few
# nodes, so most examples get deep into a parser before they turn strange.


@st.composite
def mutations(draw: st.DrawFn, seeds: list[Any]) -> Any:
    """A deep copy of one of ``seeds`` with one to three nodes replaced, deleted or wrapped."""
    value = orjson_copy(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        slots = list(_slots(value))
        if not slots:
            return value  # everything was deleted: an empty object (or array) stays one
        parent, key = draw(st.sampled_from(slots))
        action = draw(st.sampled_from(["replace", "replace", "delete", "wrap", "retype"]))
        if action == "replace":
            parent[key] = draw(json_values(10))
        elif action == "delete":
            del parent[key]
        elif action == "wrap":
            parent[key] = [parent[key]] if draw(st.booleans()) else {draw(keys): parent[key]}
        else:
            parent[key] = draw(scalars)
    return value


def orjson_copy(value: Any) -> Any:
    import orjson

    return orjson.loads(orjson.dumps(value))


def _slots(value: Any) -> Any:
    """Every (container, key) pair inside ``value``, depth first."""
    stack = [value]
    while stack:
        container = stack.pop()
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, child in list(items):
            yield container, key
            if isinstance(child, (dict, list)):
                stack.append(child)


IMAGE_URL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="
WEATHER_PARAMETERS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
REQUEST_SEEDS: dict[str, list[dict[str, Any]]] = {
    "openai": [
        {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
        {"model": "gpt-4o-mini", "stream": True, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": IMAGE_URL}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"forecast\": \"sun\"}"},
        ], "tools": [{"type": "function", "function": {"name": "get_weather", "description": "w", "parameters": WEATHER_PARAMETERS}}]},
        {"model": "gpt-4o-mini", "instructions": "be brief", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}, {"type": "input_image", "image_url": IMAGE_URL}]},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ], "tools": [{"type": "function", "name": "get_weather", "parameters": WEATHER_PARAMETERS}], "stream": True},
        {"model": "text-embedding-3-small", "input": ["hello", "world"]},
        {"model": "gpt-3.5-turbo-instruct", "prompt": ["say hi"], "stream": False},
    ],
    "gemini": [
        {"contents": [{"role": "user", "parts": [{"text": "hi"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]},
                      {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
                      {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 20}}}]}],
         "systemInstruction": {"parts": [{"text": "be brief"}]},
         "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "w", "parameters": WEATHER_PARAMETERS}]}]},
        {"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "hello"}]}}]},
    ],
    "anthropic": [
        {"model": "claude-sonnet-4-6", "max_tokens": 100, "system": [{"type": "text", "text": "be brief"}], "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "tu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": [{"type": "text", "text": "sunny"}]}]},
        ], "tools": [{"name": "get_weather", "description": "w", "input_schema": WEATHER_PARAMETERS}], "stream": True},
    ],
}


def reply_seeds(dialect_name: str) -> tuple[list[Any], list[tuple[Any, str | None]]]:
    """(JSON replies, stream events as (payload, SSE event name)) the fake provider sends for a dialect."""
    import orjson

    from capsem_proxyd.dialects.framing import SSEDecoder
    from tests.support.fake_upstream import (
        Reply,
        ToolCall,
        anthropic_format,
        gemini_format,
        openai_format,
        openai_responses,
    )
    from tests.support.fake_upstream.wire import RecordedRequest, Turn

    handlers = {
        "openai-chat": openai_format.chat_completions,
        "openai-responses": openai_responses.responses,
        "openai-completions": openai_format.completions,
        "gemini": gemini_format.stream_generate_content,
        "anthropic-messages": anthropic_format.messages,
    }
    handler = handlers.get(dialect_name, openai_format.chat_completions)
    replies = [
        Reply(text="The weather is fine today.", thoughts="let me think"),
        Reply(text="calling a tool", tool_calls=[ToolCall("get_weather", {"city": "Paris"}), ToolCall("get_time", {})]),
    ]
    bodies: list[Any] = []
    events: list[tuple[Any, str | None]] = []
    for reply in replies:
        for stream in (False, True):
            body = orjson.dumps({"stream": stream, "messages": [{"role": "user", "content": "hi"}]})
            request = RecordedRequest(method="POST", path="/v1beta/models/m:streamGenerateContent",
                                      query={"alt": "sse"}, headers={}, body=body)
            answer = gemini_format.generate_content if dialect_name == "gemini" and not stream else handler
            plan = answer(Turn(request=request, reply=reply, user_text=None, model="m"))
            if plan.events is None:
                bodies.append(orjson.loads(plan.body or b"null"))
                continue
            decoder = SSEDecoder()  # every fake stream here is SSE (Gemini's with alt=sse)
            for event in [e for chunk in plan.events for e in decoder.feed(chunk)] + decoder.close():
                if event.data and event.data != "[DONE]":
                    events.append((orjson.loads(event.data), event.event))
    return bodies, events
