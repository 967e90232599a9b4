"""OpenAI Responses API (``POST /v1/responses``), JSON and SSE.

Streams are named events (``event: response.output_text.delta``); the proxy's
own error event carries an ``error`` object too, so the openai SDK raises
``APIError`` while iterating instead of handing the caller a silent event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from capsem_proxyd.dialects.base import (
    as_dict,
    as_list,
    as_str,
    parse_arguments,
    parse_json_event,
    stream_key,
    text_of,
)
from capsem_proxyd.dialects.framing import StreamEvent, encode_sse
from capsem_proxyd.dialects.openai_chat import content_text
from capsem_proxyd.dialects.openai_common import OpenAIDialect, openai_error_body
from capsem_proxyd.errors import ProxyError, upstream_unavailable
from capsem_proxyd.views import (
    EMPTY_STREAM_VIEW,
    RequestView,
    ResponseView,
    StreamView,
    ToolCall,
    ToolDefinition,
    ToolFragment,
    ToolResult,
)

# ``response.failed`` error codes (the API's own enum), by error kind: final for Codex only when it knows them.
_FAILED_CODE = {"policy": "invalid_prompt", "invalid_request": "invalid_prompt", "upstream_timeout": "server_error"}
_TEXT_DELTAS = {"response.output_text.delta", "response.refusal.delta"}
_THOUGHT_DELTAS = {"response.reasoning_summary_text.delta", "response.reasoning_text.delta"}


class OpenAIResponsesDialect(OpenAIDialect):
    endpoint = "responses"

    def stream_error(self, error: ProxyError, started: bool, query: Mapping[str, str]) -> bytes:
        """``event: error``, then ``event: response.failed``: the SDKs raise on the first, agents end on the second.

        The openai SDKs raise on the first event whose data has an ``error``
        object. Codex reads only ``response.failed`` as the end of a turn (it
        takes a stream closed without it for a dropped connection and sends the
        request again, five times) and treats its error as final only for codes
        it knows: ``invalid_prompt`` is the one that says the input was refused.
        """
        body = openai_error_body(error)
        payload = {
            "type": "error",
            "code": error.code,
            "message": error.message,
            "param": None,
            "sequence_number": 0,
            **body,
        }
        failed = {
            "type": "response.failed",
            "sequence_number": 1,
            "response": {
                "object": "response",
                "status": "failed",
                "error": {"code": _FAILED_CODE.get(error.kind, "server_error"), "message": error.message},
            },
        }
        return encode_sse(payload, event="error") + encode_sse(failed, event="response.failed")

    def request_view(self, body: dict[str, Any], model: str) -> RequestView:
        view = RequestView(model=model, system=as_str(body.get("instructions")))
        prompt: list[str] = []
        call_names: dict[str, str] = {}
        items = body.get("input")
        if isinstance(items, str):
            prompt.append(items)
        for item in as_list(items):
            item = as_dict(item)
            kind = item.get("type", "message")
            if kind == "message" or "role" in item and kind not in ("function_call", "function_call_output"):
                text = content_text(item.get("content"), view.media)
                if item.get("role") in ("system", "developer"):
                    view.system = "\n".join(filter(None, (view.system, text)))
                else:
                    prompt.append(text)
            elif kind == "function_call":
                call_names[as_str(item.get("call_id"))] = as_str(item.get("name"))
                prompt.append(as_str(item.get("name")) + " " + as_str(item.get("arguments")))
            elif kind in ("function_call_output", "custom_tool_call_output", "computer_call_output"):
                call_id = as_str(item.get("call_id"))
                view.tool_results.append(
                    ToolResult(name=call_names.get(call_id, "unknown"), content=item.get("output"), call_id=call_id)
                )
            else:
                prompt.append(text_of({k: v for k, v in item.items() if k not in ("type", "id")}))
        view.prompt = "\n".join(text for text in prompt if text)
        for tool in as_list(body.get("tools")):
            tool = as_dict(tool)
            view.tools.append(
                ToolDefinition(
                    name=as_str(tool.get("name")) or as_str(tool.get("type")) or "unknown",
                    description=as_str(tool.get("description")),
                    parameters=as_dict(tool.get("parameters")),
                )
            )
        return view

    def response_view(self, body: Any) -> ResponseView:
        view = ResponseView()
        texts: list[str] = []
        thoughts: list[str] = []
        for item in as_list(as_dict(body).get("output")):
            item = as_dict(item)
            kind = item.get("type")
            if kind == "message":
                texts.append(content_text(item.get("content")))
            elif kind == "function_call":
                view.tool_calls.append(_call(item))
            elif kind == "reasoning":
                thoughts.extend(as_str(as_dict(part).get("text")) for part in as_list(item.get("summary")))
                thoughts.extend(as_str(as_dict(part).get("text")) for part in as_list(item.get("content")))
        view.text = "".join(texts)
        view.thoughts = "".join(thoughts)
        return view

    def stream_view(self, event: StreamEvent) -> StreamView:
        payload = parse_json_event(event)
        if payload is None:
            return EMPTY_STREAM_VIEW
        if not isinstance(payload, dict):
            raise upstream_unavailable("The upstream sent a stream event that is not a JSON object.")
        kind = as_str(payload.get("type")) or event.event
        if kind in _TEXT_DELTAS:
            return StreamView(text=as_str(payload.get("delta")))
        if kind in _THOUGHT_DELTAS:
            return StreamView(thoughts=as_str(payload.get("delta")))
        if kind == "response.output_item.added":
            item = as_dict(payload.get("item"))
            if item.get("type") == "function_call":
                return StreamView(tool_fragments=[_fragment(payload, item, as_str(item.get("arguments")))])
        elif kind == "response.function_call_arguments.delta":
            key = stream_key(payload.get("output_index"))
            return StreamView(tool_fragments=[ToolFragment(key=key, arguments=as_str(payload.get("delta")))])
        elif kind == "response.function_call_arguments.done":
            key = stream_key(payload.get("output_index"))
            whole = ToolFragment(key=key, name=as_str(payload.get("name")) or None, arguments=as_str(payload.get("arguments")), replace=True)
            return StreamView(tool_fragments=[whole], tool_closes=[key])
        elif kind == "response.output_item.done":
            item = as_dict(payload.get("item"))
            if item.get("type") == "function_call":
                whole = _fragment(payload, item, as_str(item.get("arguments")))
                whole.replace = True
                return StreamView(tool_fragments=[whole], tool_closes=[whole.key])
        elif kind in ("response.completed", "response.incomplete"):
            return StreamView(finished=True)
        elif kind in ("error", "response.failed"):
            error = as_dict(as_dict(payload.get("response")).get("error")) or payload
            return StreamView(error=as_str(error.get("message")) or "upstream stream error")
        return EMPTY_STREAM_VIEW


def _call(item: dict[str, Any]) -> ToolCall:
    return ToolCall(
        name=as_str(item.get("name")),
        arguments=parse_arguments(item.get("arguments")),
        call_id=as_str(item.get("call_id")),
    )


def _fragment(payload: dict[str, Any], item: dict[str, Any], arguments: str) -> ToolFragment:
    return ToolFragment(
        key=stream_key(payload.get("output_index")),
        name=as_str(item.get("name")) or None,
        call_id=as_str(item.get("call_id")) or None,
        arguments=arguments,
    )
