"""OpenAI legacy Completions (``POST /v1/completions``), JSON and SSE.

The prompt is plain text (or a list of texts); the reply is ``choices[].text``
whole or, streamed, in ``data:`` chunks of the same shape ending ``[DONE]``.
"""

from __future__ import annotations

from typing import Any

from capsem_proxyd.dialects.base import as_dict, as_list, as_str, parse_json_event
from capsem_proxyd.dialects.framing import StreamEvent
from capsem_proxyd.dialects.openai_common import OpenAIDialect
from capsem_proxyd.dialects.openai_inputs import openai_text_input
from capsem_proxyd.errors import upstream_unavailable
from capsem_proxyd.views import EMPTY_STREAM_VIEW, RequestView, ResponseView, StreamView


class OpenAICompletionsDialect(OpenAIDialect):
    endpoint = "completions"

    def request_view(self, body: dict[str, Any], model: str) -> RequestView:
        prompt = openai_text_input(body.get("prompt"), "prompt", model=model)
        suffix = as_str(body.get("suffix"))
        return RequestView(model=model, prompt="\n".join(text for text in (prompt, suffix) if text))

    def response_view(self, body: Any) -> ResponseView:
        return ResponseView(text=_choices_text(as_dict(body)))

    def stream_view(self, event: StreamEvent) -> StreamView:
        if event.data.startswith("[DONE]"):
            return StreamView(finished=True)
        chunk = parse_json_event(event)
        if chunk is None:
            return EMPTY_STREAM_VIEW
        if not isinstance(chunk, dict):
            raise upstream_unavailable("The upstream sent a stream event that is not a JSON object.")
        if chunk.get("error"):
            return StreamView(error=as_str(as_dict(chunk["error"]).get("message")) or "upstream stream error")
        return StreamView(text=_choices_text(chunk))


def _choices_text(body: dict[str, Any]) -> str:
    return "".join(as_str(as_dict(choice).get("text")) for choice in as_list(body.get("choices")))
