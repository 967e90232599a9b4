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
from capsem_proxyd.dialects.openai_common import OpenAIDialect
from capsem_proxyd.dialects.token_ids import decode_token_ids, is_token_ids
from capsem_proxyd.errors import bad_request
from capsem_proxyd.views import EMPTY_STREAM_VIEW, MediaPart, RequestView, ResponseView, StreamView


def openai_text_input(value: Any, what: str, media: list[MediaPart] | None = None, model: str = "") -> str:
    """Text of an ``input`` or ``prompt``: a string, a list of strings or of content parts.

    Token ids (a list of ints, or a list of such lists) are decoded with the
    model's encoding (``token_ids``); ids that cannot be decoded are refused:
    no policy could read them, and content must not leave unchecked.
    """
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        return text_of(value) if value is not None else ""
    if is_token_ids(value):
        return decode_token_ids(value, model, what)
    texts: list[str] = []
    parts: list[Any] = []
    for item in value:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict):
            parts.append(item)
        elif is_token_ids(item):
            texts.append(decode_token_ids(item, model, what))
        elif isinstance(item, (int, list)):
            raise bad_request(f"{what} mixes token ids with other items, which capsem-proxyd cannot check; "
                              "send it as text instead.")
    if parts:
        texts.append(content_text(parts, media))
    return "\n".join(text for text in texts if text)


class OpenAIInputDialect(OpenAIDialect):
    """``input`` is text, a list of texts or (moderations) a list of text/image parts."""


    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def wants_stream(self, body: dict[str, Any], query: Mapping[str, str], path_stream: bool) -> bool:
        return False

    def request_view(self, body: dict[str, Any], model: str) -> RequestView:
        view = RequestView(model=model)
        view.prompt = openai_text_input(body.get("input"), "input", view.media, model)
        return view

    def response_view(self, body: Any) -> ResponseView:
        return ResponseView()

    def stream_view(self, event: StreamEvent) -> StreamView:
        return EMPTY_STREAM_VIEW
