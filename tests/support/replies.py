"""Provider replies and stream events the tests hand to the proxy's parts directly (no fake provider).

The fake provider (``tests/support/fake_upstream``) builds whole, realistic
replies for tests through a socket; a test that drives a dialect or the stream
pump alone needs single events, and they are built here once.
"""

from __future__ import annotations

import json
from typing import Any


def chat_chunk(delta: dict[str, Any] | None = None, *, index: int = 0, finish: str | None = None,
               model: str = "m", **fields: Any) -> dict[str, Any]:
    """One OpenAI ``chat.completion.chunk``: ``delta`` for choice ``index`` (and any top-level ``fields``)."""
    return {"id": "c", "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": index, "delta": delta or {}, "finish_reason": finish}], **fields}


def chat_chunk_sse(text: str) -> bytes:
    """A chat chunk carrying ``text`` as one server-sent event, ``data: {...}\\n\\n`` (json.dumps spacing:
    tests that count bytes of the stream rely on it)."""
    return b"data: " + json.dumps(chat_chunk({"content": text})).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
