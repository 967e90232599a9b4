"""Anthropic Messages (``POST /v1/messages`` and ``/v1/messages/count_tokens``), JSON and SSE.

Replies are lists of typed content blocks; a stream opens each block with
``content_block_start``, grows it with ``content_block_delta`` (``text_delta``,
``thinking_delta``, ``input_json_delta``) and ends it with
``content_block_stop``. A ``tool_use`` block maps onto the pump's tool-call
assembly by its block index: the start opens the call, each
``input_json_delta`` extends its arguments, the stop closes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from capsem_proxyd.dialects.base import (
    Dialect,
    as_dict,
    as_list,
    as_str,
    bearer_token,
    decode_base64,
    parse_json_event,
    stream_key,
    text_of,
)
from capsem_proxyd.dialects.framing import StreamEvent, encode_sse
from capsem_proxyd.errors import ProxyError, decision_fields, upstream_unavailable
from capsem_proxyd.views import (
    EMPTY_STREAM_VIEW,
    MediaPart,
    RequestView,
    ResponseView,
    StreamView,
    ToolCall,
    ToolDefinition,
    ToolFragment,
    ToolResult,
)

_ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "policy": "invalid_request_error",
    "not_found": "not_found_error",
    "too_large": "request_too_large",
    "upstream_error": "api_error",
    "upstream_timeout": "timeout_error",
}
# Blocks in which the model calls a tool (client-side, server-side or on an MCP server).
_CALL_BLOCKS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})
_RESULT_BLOCKS = frozenset({"tool_result", "mcp_tool_result"})
# Keys that carry identifiers or opaque tokens, not content worth checking.
_OPAQUE_KEYS = frozenset({"type", "id", "tool_use_id", "cache_control", "signature", "citations"})


def anthropic_api_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """``x-api-key``, or ``Authorization: Bearer`` (what recent SDK releases send)."""
    return headers.get("x-api-key") or bearer_token(headers)


def anthropic_error_body(error: ProxyError) -> dict[str, Any]:
    """``{"type": "error", "error": {type, message}}`` as the anthropic SDK parses it."""
    inner: dict[str, Any] = {"type": _ERROR_TYPES.get(error.kind, "api_error"), "message": error.message}
    body: dict[str, Any] = {"type": "error", "error": inner}
    if error.decision is not None:
        inner["capsem"] = decision_fields(error.decision)
        # Claude Code's code for a data-loss-prevention refusal: final, shown as "API Error: <message>", no retry and
        # no fallback to a non-streamed request (without it: "Failed to authenticate" and a second upstream call).
        inner["details"] = {"error_code": "dlp_request_denied"}
        body["detail"] = f"Request blocked by security policy: {error.decision.details}"
    return body


class AnthropicMessagesDialect(Dialect):
    provider = "anthropic"
    endpoint = "messages"

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return anthropic_api_key(headers, query)

    def error_body(self, error: ProxyError) -> dict[str, Any]:
        return anthropic_error_body(error)

    def stream_error(self, error: ProxyError, started: bool, query: Mapping[str, str]) -> bytes:
        """``event: error``: the SDKs raise on it while iterating (Claude Code reads ``details.error_code`` too)."""
        return encode_sse(anthropic_error_body(error), event="error")

    def request_view(self, body: dict[str, Any], model: str) -> RequestView:
        view = RequestView(model=model)
        call_names: dict[str, str] = {}
        system: list[str] = []
        _read_content(body.get("system"), system, view, call_names)
        view.system = "\n".join(text for text in system if text)
        prompt: list[str] = []
        for message in as_list(body.get("messages")):
            _read_content(as_dict(message).get("content"), prompt, view, call_names)
        view.prompt = "\n".join(text for text in prompt if text)
        for tool in as_list(body.get("tools")):
            tool = as_dict(tool)
            view.tools.append(
                ToolDefinition(
                    name=as_str(tool.get("name")) or as_str(tool.get("type")) or "unknown",
                    description=as_str(tool.get("description")),
                    parameters=as_dict(tool.get("input_schema")),
                )
            )
        return view

    def response_view(self, body: Any) -> ResponseView:
        view = ResponseView()
        texts: list[str] = []
        thoughts: list[str] = []
        for block in as_list(as_dict(body).get("content")):
            block = as_dict(block)
            kind = as_str(block.get("type"))
            if kind == "text":
                texts.append(as_str(block.get("text")))
            elif kind == "thinking":
                thoughts.append(as_str(block.get("thinking")))
            elif kind in _CALL_BLOCKS:
                view.tool_calls.append(
                    ToolCall(name=as_str(block.get("name")), arguments=as_dict(block.get("input")), call_id=as_str(block.get("id")))
                )
            elif kind != "redacted_thinking" and block:
                texts.append(_other_block_text(block))
        view.text = "".join(texts)
        view.thoughts = "".join(thoughts)
        return view

    def stream_view(self, event: StreamEvent) -> StreamView:
        payload = parse_json_event(event)
        if payload is None:
            return EMPTY_STREAM_VIEW
        if not isinstance(payload, dict):
            raise upstream_unavailable("The upstream sent a stream event that is not a JSON object.")
        kind = payload.get("type") or event.event
        index = stream_key(payload.get("index"))
        if kind == "content_block_delta":
            return _delta_view(index, as_dict(payload.get("delta")))
        if kind == "content_block_start":
            return _block_start_view(index, as_dict(payload.get("content_block")))
        if kind == "content_block_stop":
            return StreamView(tool_closes=[index])
        if kind == "message_start":
            return self._message_start_view(as_dict(payload.get("message")))
        if kind == "message_stop":
            return StreamView(finished=True)
        if kind == "error":
            return StreamView(error=as_str(as_dict(payload.get("error")).get("message")) or "upstream stream error")
        return EMPTY_STREAM_VIEW

    def _message_start_view(self, message: dict[str, Any]) -> StreamView:
        """A message_start normally has no content; if it has, it is checked like a reply."""
        if not message.get("content"):
            return EMPTY_STREAM_VIEW
        reply = self.response_view(message)
        view = StreamView(text=reply.text, thoughts=reply.thoughts)
        for number, call in enumerate(reply.tool_calls):
            key = ("message_start", number)
            arguments = orjson.dumps(call.arguments).decode()
            view.tool_fragments.append(ToolFragment(key=key, name=call.name, call_id=call.call_id, arguments=arguments))
            view.tool_closes.append(key)
        return view


class AnthropicCountTokensDialect(AnthropicMessagesDialect):
    """``/v1/messages/count_tokens``: the request is a whole prompt; the reply only a number."""

    endpoint = "messages.count_tokens"

    def wants_stream(self, body: dict[str, Any], query: Mapping[str, str], path_stream: bool) -> bool:
        return False

    def response_view(self, body: Any) -> ResponseView:
        return ResponseView()


def _read_content(content: Any, texts: list[str], view: RequestView, call_names: dict[str, str]) -> None:
    """Text of a ``content`` (a string or blocks) into ``texts``; media, tool results into ``view``."""
    if isinstance(content, str):
        texts.append(content)
        return
    for block in as_list(content):
        block = as_dict(block)
        kind = as_str(block.get("type"))
        if kind == "text":
            texts.append(as_str(block.get("text")))
        elif kind in ("image", "document"):
            texts.extend(_source_text(kind, block, view, call_names))
        elif kind in _CALL_BLOCKS:
            call_names[as_str(block.get("id"))] = as_str(block.get("name"))
            texts.append(as_str(block.get("name")) + " " + text_of(block.get("input")))
        elif kind in _RESULT_BLOCKS:
            call_id = as_str(block.get("tool_use_id"))
            result: list[str] = []
            _read_content(block.get("content"), result, view, call_names)
            content_text = "\n".join(text for text in result if text)
            view.tool_results.append(ToolResult(name=call_names.get(call_id, "unknown"), content=content_text, call_id=call_id))
        elif kind == "thinking":
            texts.append(as_str(block.get("thinking")))
        elif kind != "redacted_thinking" and block:
            texts.append(_other_block_text(block))


def _source_text(kind: str, block: dict[str, Any], view: RequestView, call_names: dict[str, str]) -> list[str]:
    """An image or document block: inline data becomes media; everything else is text."""
    source = as_dict(block.get("source"))
    source_type = source.get("type")
    texts = [as_str(block.get("title")), as_str(block.get("context"))]
    if source_type == "base64":
        data = decode_base64(as_str(source.get("data")), f"{kind}.source.data")
        view.media.append(MediaPart(data=data, mime_type=as_str(source.get("media_type")).lower() or "application/octet-stream"))
    elif source_type == "text":
        texts.append(as_str(source.get("data")))
    elif source_type == "content":
        _read_content(source.get("content"), texts, view, call_names)
    elif source_type == "url":
        texts.append(as_str(source.get("url")))
    elif source_type == "file":
        texts.append(as_str(source.get("file_id")))
    elif source:
        texts.append(text_of(source))
    return texts


def _other_block_text(block: dict[str, Any]) -> str:
    """Any block type not known here (search results, server tool results...): all its text."""
    return text_of({key: value for key, value in block.items() if key not in _OPAQUE_KEYS})


def _delta_view(index: Any, delta: dict[str, Any]) -> StreamView:
    kind = delta.get("type")
    if kind == "text_delta":
        return StreamView(text=as_str(delta.get("text")))
    if kind == "thinking_delta":
        return StreamView(thoughts=as_str(delta.get("thinking")))
    if kind == "input_json_delta":
        return StreamView(tool_fragments=[ToolFragment(key=index, arguments=as_str(delta.get("partial_json")))])
    return EMPTY_STREAM_VIEW  # signature_delta, citations_delta: no new content


def _block_start_view(index: Any, block: dict[str, Any]) -> StreamView:
    kind = as_str(block.get("type"))
    if kind in _CALL_BLOCKS:
        tool_input = block.get("input")
        arguments = orjson.dumps(tool_input).decode() if tool_input else ""
        fragment = ToolFragment(key=index, name=as_str(block.get("name")), call_id=as_str(block.get("id")), arguments=arguments)
        return StreamView(tool_fragments=[fragment])
    if kind == "text":
        return StreamView(text=as_str(block.get("text")))
    if kind == "thinking":
        return StreamView(thoughts=as_str(block.get("thinking")))
    if kind == "redacted_thinking" or not block:
        return EMPTY_STREAM_VIEW
    return StreamView(text=_other_block_text(block))
