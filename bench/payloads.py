"""The fixed provider-shaped bodies the upstream serves and the load sends.

Bodies avoid ``'``, ``$``, ``\\`` and ``{``-after-``$`` so they can sit verbatim
inside an nginx ``return 200 '...'`` directive (nginx would expand ``$name``).
"""

from __future__ import annotations

import json
from typing import Any

MODEL = "gpt-4o-mini"
STREAM_EVENTS = 50
BENCH_KEY = "sk-bench-0000000000000000"
BLOCK_MARKER = "capsem_block"
REPLY_TEXT = "Hello from the benchmark upstream. It answers instantly, so every millisecond is proxy cost."


def chat_request(*, stream: bool, prompt: str = "Say hello to the benchmark.") -> bytes:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def chat_completion() -> bytes:
    """A Chat Completions reply as OpenAI shapes it."""
    body = {
        "id": "chatcmpl-bench0001",
        "object": "chat.completion",
        "created": 1735689600,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": REPLY_TEXT, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 18, "total_tokens": 30},
        "system_fingerprint": "fp_bench",
    }
    return json.dumps(body, separators=(",", ":")).encode()


def stream_deltas() -> list[str]:
    """The text pieces of the stream: one short word per event, like real tokens."""
    return [f"word{index:02d} " for index in range(STREAM_EVENTS - 1)]


def chat_stream() -> bytes:
    """``STREAM_EVENTS`` chunk events (text deltas, then the finish) and ``[DONE]``."""

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        event = {
            "id": "chatcmpl-bench0002",
            "object": "chat.completion.chunk",
            "created": 1735689600,
            "model": MODEL,
            "system_fingerprint": "fp_bench",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"

    deltas = stream_deltas()
    events = [chunk({"role": "assistant", "content": deltas[0]}, None)]
    events += [chunk({"content": text}, None) for text in deltas[1:]]
    events.append(chunk({}, "stop"))
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


def stream_text() -> str:
    return "".join(stream_deltas())


# Streams of a given size for the cost-per-byte comparison: same event shape, more events.
SIZED_STREAMS = {"10k": 10_000, "1m": 1_000_000}


def sized_stream(size: int) -> bytes:
    """A Chat Completions stream of at least ``size`` bytes: short text deltas, then the finish and [DONE]."""
    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        event = {"id": "chatcmpl-bench0003", "object": "chat.completion.chunk", "created": 1735689600, "model": MODEL,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"

    events = [chunk({"role": "assistant", "content": "word00000 "}, None)]
    total = len(events[0])
    index = 1
    while total < size:
        events.append(chunk({"content": f"word{index:05d} "}, None))
        total += len(events[-1])
        index += 1
    events.append(chunk({}, "stop"))
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


def nginx_safe(body: bytes) -> str:
    text = body.decode()
    for forbidden in ("'", "$", "\\"):
        if forbidden in text:
            raise ValueError(f"body contains {forbidden!r}, which nginx would interpret")
    return text
