"""OpenAI legacy Completions (``POST /v1/completions``), JSON and SSE.

The prompt is plain text (or a list of texts), read deny-by-default with every
other field; the reply is ``choices[].text`` whole or, streamed, in ``data:``
chunks of the same shape ending ``[DONE]``, each choice its own text.
"""

from __future__ import annotations

from typing import Any

from capsem_proxyd.dialects.base import json_object_event, stream_key, upstream_error
from capsem_proxyd.dialects.content import BOOLEAN, ISSUED_ID, MODEL, NUMBER, Enum, Paths, joined
from capsem_proxyd.dialects.framing import StreamEvent
from capsem_proxyd.dialects.openai_chat import SORTER, USAGE
from capsem_proxyd.dialects.openai_common import OpenAIDialect, openai_stream_usage, openai_usage
from capsem_proxyd.dialects.openai_inputs import token_ids_as_text
from capsem_proxyd.views import ALL_CHANNELS, EMPTY_STREAM_VIEW, RequestView, ResponseView, StreamView, Usage

REQUEST_NOT_CONTENT = Paths({
    "model": MODEL, "stream": BOOLEAN, "echo": BOOLEAN, "stream_options.include_usage": BOOLEAN,
    "stream_options.include_obfuscation": BOOLEAN, "n": NUMBER, "best_of": NUMBER, "logprobs": NUMBER,
    "max_tokens": NUMBER, "temperature": NUMBER, "top_p": NUMBER, "frequency_penalty": NUMBER,
    "presence_penalty": NUMBER, "seed": NUMBER, "logit_bias.*": NUMBER,
})
# ``logprobs.tokens`` and the keys of ``logprobs.top_logprobs`` are the text token by token: content.
REPLY_NOT_CONTENT = Paths({
    "id": ISSUED_ID, "object": Enum("text_completion"), "created": NUMBER, "model": MODEL,
    "system_fingerprint": ISSUED_ID, **USAGE, "choices.*.index": NUMBER,
    "choices.*.finish_reason": Enum("stop", "length", "content_filter"),
    "choices.*.logprobs.token_logprobs.*": NUMBER, "choices.*.logprobs.text_offset.*": NUMBER,
    "choices.*.logprobs.top_logprobs.*.*": NUMBER,
}, tokens={"choices.*.logprobs.tokens": ""})


class OpenAICompletionsDialect(OpenAIDialect):
    endpoint = "completions"
    operation = "text_completion"
    request_not_content = REQUEST_NOT_CONTENT
    reply_not_content = event_not_content = REPLY_NOT_CONTENT

    def usage(self, body: Any) -> Usage | None:
        return openai_usage(body)

    def stream_usage(self, event: StreamEvent) -> Usage | None:
        return openai_stream_usage(event)

    def request_view(self, body: dict[str, Any], model: str) -> RequestView:
        prompt: list[str] = []
        for key, value, node in SORTER.fields(body, REQUEST_NOT_CONTENT.root, prompt):
            if key == "prompt":
                value = token_ids_as_text(value, model, "prompt")
            SORTER.add(prompt, value, node)
        return RequestView(model=model, prompt=joined(prompt))

    def response_view(self, body: Any) -> ResponseView:
        texts: list[str] = []
        SORTER.add(texts, body, REPLY_NOT_CONTENT.root)
        return ResponseView(text="\n\n".join(text for text in texts if text))

    def stream_view(self, event: StreamEvent) -> StreamView:
        if event.data.startswith("[DONE]"):
            return StreamView(finished=[ALL_CHANNELS])
        chunk = json_object_event(event)
        if chunk is None:
            return EMPTY_STREAM_VIEW
        view = StreamView()
        for key, value in chunk.items():
            if key == "choices" and isinstance(value, list):
                for choice in value:
                    if not isinstance(choice, dict):
                        SORTER.add(view.content, choice, None)
                        continue
                    text = choice.get("text")
                    if isinstance(text, str) and text:
                        view.text.append((stream_key(choice.get("index", 0)), text))
                    rest = {k: v for k, v in choice.items() if k != "text"}
                    SORTER.add(view.content, {"choices": [rest]}, REPLY_NOT_CONTENT.root)
            else:
                SORTER.add(view.content, {key: value}, REPLY_NOT_CONTENT.root)  # an ``error`` object among them
        if chunk.get("error"):  # the openai SDKs raise on it; what else it carries was read above
            return upstream_error(view, chunk["error"])
        return view
