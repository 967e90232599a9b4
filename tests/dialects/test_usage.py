"""Each dialect reads the token usage and answering model its provider's replies state.

Payloads are shaped as each provider documents them (JSON replies, and the
stream events that carry usage); events that state nothing give None, and odd
values (strings, negatives, booleans) are not counts.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from capsem_proxyd.dialects.framing import SSEDecoder, StreamEvent
from capsem_proxyd.dialects.relay import RelayDialect
from capsem_proxyd.http.routes import DIALECTS, OPENAI_CHAT
from capsem_proxyd.views import Usage


def event(payload: Any, name: str | None = None) -> StreamEvent:
    data = json.dumps(payload)
    raw = (f"event: {name}\n" if name else "").encode() + f"data: {data}\n\n".encode()
    (decoded,) = SSEDecoder().feed(raw)
    return decoded


def stream_usage(dialect_key: str, events: list[StreamEvent]) -> tuple[int | None, int | None, str | None]:
    """The usage a whole stream states, merged as the pump merges it (later values win)."""
    dialect = DIALECTS[dialect_key]
    found: list[Usage] = [usage for item in events if (usage := dialect.stream_usage(item)) is not None]
    input_tokens = next((u.input_tokens for u in reversed(found) if u.input_tokens is not None), None)
    output_tokens = next((u.output_tokens for u in reversed(found) if u.output_tokens is not None), None)
    model = next((u.model for u in reversed(found) if u.model), None)
    return input_tokens, output_tokens, model


@pytest.mark.parametrize(
    ("dialect_key", "body", "expected"),
    [
        ("openai-chat", {"model": "gpt-4o-mini-2024-07-18", "choices": [],
                         "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
                                   "prompt_tokens_details": {"cached_tokens": 4}}},
         Usage(12, 5, "gpt-4o-mini-2024-07-18")),
        ("openai-completions", {"model": "gpt-3.5-turbo-instruct", "usage": {"prompt_tokens": 3, "completion_tokens": 7}},
         Usage(3, 7, "gpt-3.5-turbo-instruct")),
        ("openai-embeddings", {"model": "text-embedding-3-small", "usage": {"prompt_tokens": 8, "total_tokens": 8}},
         Usage(8, None, "text-embedding-3-small")),
        ("openai-responses", {"model": "gpt-4.1", "usage": {"input_tokens": 20, "output_tokens": 9,
                                                            "output_tokens_details": {"reasoning_tokens": 4}}},
         Usage(20, 9, "gpt-4.1")),
        ("gemini", {"modelVersion": "gemini-2.5-flash-001",
                    "usageMetadata": {"promptTokenCount": 6, "candidatesTokenCount": 10, "thoughtsTokenCount": 30,
                                      "totalTokenCount": 46}},
         Usage(6, 40, "gemini-2.5-flash-001")),
        ("anthropic-messages", {"model": "claude-sonnet-4-6", "usage": {
            "input_tokens": 10, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000,
            "output_tokens": 25}},
         Usage(1110, 25, "claude-sonnet-4-6")),
        ("openai-chat", {"model": "gpt-4o", "usage": {"prompt_tokens": "12", "completion_tokens": -1}},
         Usage(None, None, "gpt-4o")),
        ("openai-chat", {"usage": {"prompt_tokens": True}}, Usage(None, None, None)),
        ("openai-chat", {"choices": []}, None),
        ("openai-chat", ["not", "an", "object"], None),
        ("anthropic-count-tokens", {"input_tokens": 42}, None),
        ("gemini-countTokens", {"totalTokens": 42, "usageMetadata": {"promptTokenCount": 42}}, None),
        ("openai-moderations", {"model": "omni-moderation-latest", "results": []},
         Usage(None, None, "omni-moderation-latest")),
    ],
)
def test_json_reply_usage(dialect_key: str, body: Any, expected: Usage | None) -> None:
    assert DIALECTS[dialect_key].usage(body) == expected


def test_openai_chat_stream_states_usage_in_its_last_chunk_only() -> None:
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini", "usage": None,
             "choices": [{"index": 0, "delta": {"content": "prompt_tokens is a word here"}}]}
    final = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18", "choices": [],
             "usage": {"prompt_tokens": 9, "completion_tokens": 4}}
    assert OPENAI_CHAT.stream_usage(event({**chunk, "usage": None, "choices": []})) is None
    assert stream_usage("openai-chat", [event(chunk), event(final), event("[DONE]")]) == (9, 4, "gpt-4o-mini-2024-07-18")


def test_openai_responses_stream_states_usage_on_completion() -> None:
    created = {"type": "response.created", "response": {"model": "gpt-4.1", "usage": None}}
    delta = {"type": "response.output_text.delta", "delta": "the word usage"}
    completed = {"type": "response.completed",
                 "response": {"model": "gpt-4.1-2025-04-14", "usage": {"input_tokens": 11, "output_tokens": 3}}}
    events = [event(created, "response.created"), event(delta, "response.output_text.delta"),
              event(completed, "response.completed")]
    assert stream_usage("openai-responses", events) == (11, 3, "gpt-4.1-2025-04-14")


def test_anthropic_stream_states_input_at_start_and_output_in_message_delta() -> None:
    start = {"type": "message_start", "message": {"model": "claude-sonnet-4-6", "content": [],
                                                  "usage": {"input_tokens": 15, "cache_read_input_tokens": 5,
                                                            "output_tokens": 1}}}
    text = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": '"usage"'}}
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}}
    events = [event(start, "message_start"), event(text, "content_block_delta"), event(delta, "message_delta")]
    assert stream_usage("anthropic-messages", events) == (20, 42, "claude-sonnet-4-6")


def test_gemini_stream_chunks_carry_the_usage_so_far() -> None:
    first = {"candidates": [{"content": {"parts": [{"text": "a"}]}}], "modelVersion": "gemini-2.5-flash",
             "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}}
    last = {"candidates": [{"content": {"parts": [{"text": "b"}]}, "finishReason": "STOP"}],
            "modelVersion": "gemini-2.5-flash",
            "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 12, "totalTokenCount": 19}}
    assert stream_usage("gemini", [event(first), event(last)]) == (7, 12, "gemini-2.5-flash")


def test_events_without_usage_are_not_parsed_into_usage() -> None:
    relay = RelayDialect(OPENAI_CHAT, "models")
    assert relay.usage({"usage": {"prompt_tokens": 1}}) is None
    assert OPENAI_CHAT.stream_usage(StreamEvent(raw=b"", data='{"prompt_tokens": not json')) is None
    assert OPENAI_CHAT.stream_usage(StreamEvent(raw=b"", data='["prompt_tokens"]')) is None


@pytest.mark.parametrize(
    ("dialect_key", "operation"),
    [("openai-chat", "chat"), ("openai-responses", "chat"), ("openai-completions", "text_completion"),
     ("openai-embeddings", "embeddings"), ("openai-moderations", ""), ("gemini", "generate_content"),
     ("gemini-embedContent", "embeddings"), ("gemini-batchEmbedContents", "embeddings"), ("gemini-countTokens", ""),
     ("anthropic-messages", "chat"), ("anthropic-count-tokens", "")],
)
def test_each_api_names_its_genai_operation(dialect_key: str, operation: str) -> None:
    assert DIALECTS[dialect_key].operation == operation
