"""Gemini endpoints that only take content: ``countTokens``, ``embedContent``, ``batchEmbedContents``.

Each request is folded into the shape of a ``generateContent`` body so the
Gemini dialect reads it (parts, inline data, camelCase and snake_case alike);
the replies are counts or vectors and are not checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from capsem_proxyd.dialects.base import as_dict, as_list, as_str
from capsem_proxyd.dialects.framing import StreamEvent
from capsem_proxyd.dialects.gemini import GeminiDialect, field
from capsem_proxyd.views import EMPTY_STREAM_VIEW, RequestView, ResponseView, StreamView, Usage


class GeminiInputDialect(GeminiDialect):
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        # Counting tokens is no model call; embedding is.
        self.operation = "" if endpoint == "countTokens" else "embeddings"

    def usage(self, body: Any) -> Usage | None:
        return None  # counts and vectors: no usage stated

    def stream_usage(self, event: StreamEvent) -> Usage | None:
        return None

    def wants_stream(self, body: dict[str, Any], query: Mapping[str, str], path_stream: bool) -> bool:
        return False

    def request_view(self, body: dict[str, Any], model: str) -> RequestView:
        inner = as_dict(field(body, "generateContentRequest", "generate_content_request"))
        contents = [*as_list(body.get("contents")), *as_list(inner.get("contents"))]
        for request in [body, *(as_dict(item) for item in as_list(body.get("requests")))]:
            if request.get("content") is not None:
                contents.append(request["content"])
            title = as_str(request.get("title"))
            if title:
                contents.append({"parts": [{"text": title}]})
        folded = {
            "contents": contents,
            "systemInstruction": field(inner, "systemInstruction", "system_instruction"),
            "tools": inner.get("tools"),
        }
        return super().request_view(folded, model)

    def response_view(self, body: Any) -> ResponseView:
        return ResponseView()

    def stream_view(self, event: StreamEvent) -> StreamView:
        return EMPTY_STREAM_VIEW
