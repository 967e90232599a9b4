"""OpenAI endpoints whose only content is an ``input``: embeddings and moderations.

Their replies are vectors or category scores, nothing a policy reads, so only
the request is checked (deny-by-default: every field but the declared
settings); neither endpoint streams. Moderation inputs may be typed parts
with images (data URLs decoded as media).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from capsem_proxyd.dialects.content import MODEL, NUMBER, Enum, Paths
from capsem_proxyd.dialects.framing import StreamEvent
from capsem_proxyd.dialects.media_text import Inline
from capsem_proxyd.dialects.openai_chat import SORTER
from capsem_proxyd.dialects.openai_common import OpenAIDialect, add_parts, openai_usage
from capsem_proxyd.dialects.token_ids import decode_token_ids, is_token_ids
from capsem_proxyd.errors import bad_request
from capsem_proxyd.views import EMPTY_STREAM_VIEW, RequestView, ResponseView, StreamView, Usage

REQUEST_NOT_CONTENT = Paths({
    "model": MODEL, "encoding_format": Enum("float", "base64"), "dimensions": NUMBER,
    "input.*.type": Enum("text", "image_url"), "input.*.image_url.detail": Enum("auto", "low", "high"),
})


def token_ids_as_text(value: Any, model: str, what: str) -> Any:
    """``value`` with token ids (a list of ints, or a list of such lists) decoded into the text they
    stand for, with the model's encoding (``token_ids``), so they are checked like any text; ids that
    cannot be decoded, or ids mixed with other items, are refused: no policy could read them."""
    if not isinstance(value, list):
        return value
    if is_token_ids(value):
        return decode_token_ids(value, model, what)
    if not any(isinstance(item, (int, list)) for item in value):
        return value
    if all(is_token_ids(item) for item in value):
        return [decode_token_ids(item, model, what) for item in value]
    raise bad_request(f"{what} mixes token ids with other items, which capsem-proxyd cannot check; "
                      "send it as text instead.")


class OpenAIInputDialect(OpenAIDialect):
    """``input`` is text, a list of texts or (moderations) a list of text/image parts."""

    request_not_content = REQUEST_NOT_CONTENT

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
        prompt: list[str] = []
        for key, value, node in SORTER.fields(body, REQUEST_NOT_CONTENT.root, prompt):
            if key == "input":
                value = token_ids_as_text(value, model, "input")
                add_parts(SORTER, prompt, value, node, Inline(view, "prompt"))
            else:
                SORTER.add(prompt, value, node)
        view.set_prompt(prompt)
        return view

    def response_view(self, body: Any) -> ResponseView:
        return ResponseView()

    def stream_view(self, event: StreamEvent) -> StreamView:
        return EMPTY_STREAM_VIEW
