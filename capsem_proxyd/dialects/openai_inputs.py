"""OpenAI endpoints whose only content is an ``input``: embeddings and moderations.

Their replies are vectors or category scores, nothing a policy reads, so only
the input is checked; neither endpoint streams.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from capsem_proxyd.dialects.base import text_of
from capsem_proxyd.dialects.framing import StreamEvent
from capsem_proxyd.dialects.openai_chat import content_text
from capsem_proxyd.dialects.openai_common import OpenAIDialect, openai_usage
from capsem_proxyd.errors import bad_request
from capsem_proxyd.views import EMPTY_STREAM_VIEW, MediaPart, RequestView, ResponseView, StreamView, Usage


def openai_text_input(value: Any, what: str, media: list[MediaPart] | None = None) -> str:
    """Text of an ``input`` or ``prompt``: a string, a list of strings or of content parts.

    Token-id arrays are refused: no policy can read them, and content must not
    leave unchecked.
    """
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        return text_of(value) if value is not None else ""
    texts: list[str] = []
    parts: list[Any] = []
    for item in value:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict):
            parts.append(item)
        elif isinstance(item, (int, list)):
            raise bad_request(
                f"{what} is given as token ids, which capsem-proxyd cannot check; send it as text instead."
            )
    if parts:
        texts.append(content_text(parts, media))
    return "\n".join(text for text in texts if text)


class OpenAIInputDialect(OpenAIDialect):
    """``input`` is text, a list of texts or (moderations) a list of text/image parts."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        # Moderation is no GenAI operation of the conventions: its spans carry no gen_ai.* attributes.
        self.operation = "embeddings" if endpoint == "embeddings" else ""

    def usage(self, body: Any) -> Usage | None:
        return openai_usage(body)

    def wants_stream(self, body: dict[str, Any], query: Mapping[str, str], path_stream: bool) -> bool:
        return False

    def request_view(self, body: dict[str, Any], model: str) -> RequestView:
        view = RequestView(model=model)
        view.prompt = openai_text_input(body.get("input"), "input", view.media)
        return view

    def response_view(self, body: Any) -> ResponseView:
        return ResponseView()

    def stream_view(self, event: StreamEvent) -> StreamView:
        return EMPTY_STREAM_VIEW
