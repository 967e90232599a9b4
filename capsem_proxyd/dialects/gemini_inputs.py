"""Gemini endpoints that only take content: ``countTokens``, ``embedContent``, ``batchEmbedContents``.

Read like a ``generateContent`` request, deny-by-default: ``content``,
``contents``, each of ``requests`` and a ``generateContentRequest`` are read
as contents (inline data as media, function responses as tool results), any
other field (a ``title``...) is the prompt. The replies are counts or vectors
and are not checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from capsem_proxyd.dialects.base import as_dict
from capsem_proxyd.dialects.content import refuse_double_spellings
from capsem_proxyd.dialects.framing import StreamEvent
from capsem_proxyd.dialects.gemini import (
    CAMEL_TWINS,
    REQUEST_NOT_CONTENT,
    SORTER,
    GeminiDialect,
    content_references,
    field,
    read_content,
    references,
)
from capsem_proxyd.views import (
    EMPTY_STREAM_VIEW,
    Document,
    RequestView,
    ResponseView,
    StoredReference,
    StreamView,
    Usage,
)

_INNER = ("generateContentRequest", "generate_content_request")


class GeminiInputDialect(GeminiDialect):
    def __init__(self, endpoint: str) -> None:
        super().__init__(endpoint)
        # Counting tokens is no model call; embedding is.
        self.operation = "" if endpoint == "countTokens" else "embeddings"

    def usage(self, body: Any) -> Usage | None:
        return None  # counts and vectors: no usage stated

    def stream_usage(self, event: StreamEvent) -> Usage | None:
        return None

    def wants_stream(self, body: dict[str, Any], query: Mapping[str, str], path_stream: bool) -> bool:
        return False

    def references(self, body: dict[str, Any]) -> list[StoredReference]:
        """A generateContent body's references, those of ``content`` and each of ``requests``, and those
        of an inner ``generateContentRequest``."""
        found = references(body)
        content_references(body.get("content"), "content", None, found)
        requests = body.get("requests")
        for number, request in enumerate(requests if isinstance(requests, list) else ()):
            content_references(as_dict(request).get("content"), f"requests[{number}].content", None, found)
        inner = field(body, *_INNER)
        if isinstance(inner, dict):
            found.extend(references(inner, "generateContentRequest."))
        return found

    def request_view(self, body: dict[str, Any], model: str) -> RequestView:
        refuse_double_spellings(body, CAMEL_TWINS)
        return self.request_view_of_parsed(body, model)

    def request_view_of_parsed(self, body: dict[str, Any], model: str) -> RequestView:
        view = RequestView(model=model)
        prompt: list[str] = []
        for key, value, node in SORTER.fields(body, REQUEST_NOT_CONTENT.root, prompt):
            if key in _INNER and isinstance(value, dict):
                inner = super().request_view_of_parsed(value, model)  # its double spellings refused above
                prompt.extend(inner.prompt_pieces or [inner.prompt])
                view.system, view.system_pieces = inner.system, inner.system_pieces
                before = len(view.tool_results)  # results of ``contents`` read before it stay
                view.tools.extend(inner.tools)
                view.tool_results.extend(inner.tool_results)
                view.media.extend(inner.media)
                view.documents.extend(Document(document.media, before + document.reader)
                                      if isinstance(document.reader, int) else document
                                      for document in inner.documents)
            elif key == "contents":
                for _, content, below in SORTER.items(value, node, prompt):
                    read_content(content, below, prompt, view)
            elif key == "content":
                read_content(value, node, prompt, view)
            elif key == "requests":
                for _, request, below in SORTER.items(value, node, prompt):
                    for name, item, at in SORTER.fields(request, below, prompt):
                        read_content(item, at, prompt, view) if name == "content" else SORTER.add(prompt, item, at)
            else:
                SORTER.add(prompt, value, node)
        view.set_prompt(prompt)
        return view

    def response_view(self, body: Any) -> ResponseView:
        return ResponseView()

    def stream_view(self, event: StreamEvent) -> StreamView:
        return EMPTY_STREAM_VIEW
