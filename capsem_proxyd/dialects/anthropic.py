"""Anthropic Messages (``POST /v1/messages`` and ``/v1/messages/count_tokens``), JSON and SSE.

Deny-by-default like every dialect (``content.py``). In a request, ``system``
is the system instructions, ``tool_result`` and ``mcp_tool_result`` blocks
are tool results, ``tools`` are tool definitions (``input_schema``,
``input_examples`` and all), and every other block (text with its citations,
the model's earlier tool calls, thinking, server-tool results, blocks added
next month) is the prompt; base64 images and documents are media. Opaque
provider blobs a client only hands back (thinking ``signature``,
``redacted_thinking`` data) are produced and verified by the provider and are
not content.

Replies are typed content blocks; the SDK's text stream joins every text
block of a message, so a message is one text channel (and one of thoughts).
A stream opens each block with ``content_block_start``, grows it with
``content_block_delta`` (``text_delta``, ``thinking_delta``,
``input_json_delta``, ``citations_delta``...) and ends it with
``content_block_stop``; a ``tool_use`` block maps onto the pump's tool-call
assembly by its block index.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from capsem_proxyd.dialects import api_values, vocabulary
from capsem_proxyd.dialects.base import (
    Dialect,
    as_dict,
    as_str,
    bearer_token,
    decode_base64,
    json_object_event,
    parse_usage_event,
    stream_key,
    sum_counts,
    token_count,
    upstream_error,
)
from capsem_proxyd.dialects.content import (
    BOOLEAN,
    ENCRYPTED,
    ISSUED_ID,
    MIME_TYPE,
    MODEL,
    NUMBER,
    REFERENCE,
    TIMESTAMP,
    Enum,
    Id,
    Node,
    Paths,
    Shape,
    Sorter,
    Surface,
    joined,
)
from capsem_proxyd.dialects.framing import StreamEvent, encode_sse
from capsem_proxyd.dialects.media_text import Inline, tool_reader
from capsem_proxyd.dialects.query import FLAG, KeyCarriers, QueryParams
from capsem_proxyd.dialects.text_runs import TextRun
from capsem_proxyd.errors import ErrorKind, ProxyError, decision_fields
from capsem_proxyd.views import (
    ALL_CHANNELS,
    EMPTY_STREAM_VIEW,
    MediaPart,
    RequestView,
    ResponseView,
    StoredReference,
    StreamView,
    ToolCall,
    ToolDefinition,
    ToolFragment,
    ToolResult,
    Usage,
)

_ERROR_TYPES: dict[ErrorKind, str] = {
    ErrorKind.INVALID_REQUEST: "invalid_request_error",
    ErrorKind.AUTHENTICATION: "authentication_error",
    ErrorKind.POLICY: "invalid_request_error",
    ErrorKind.NOT_FOUND: "not_found_error",
    ErrorKind.TOO_LARGE: "request_too_large",
    ErrorKind.UPSTREAM_ERROR: "api_error",
    ErrorKind.UPSTREAM_TIMEOUT: "timeout_error",
}
# Blocks in which the model calls a tool (client-side, server-side or on an MCP server).
_CALL_BLOCKS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})
_RESULT_BLOCKS = frozenset({"tool_result", "mcp_tool_result"})
TYPES = Enum(*api_values.ANTHROPIC_TYPES, name="a type name of the anthropic SDK")
_CACHE = {"cache_control.type": Enum("ephemeral"), "cache_control.ttl": Enum("5m", "1h")}
# A block's own fields: its type, flags, the blobs the provider signed or sealed, a source's kind. A
# client's ids (``tool_use.id``, ``tool_use_id``) are content: the API takes any string there.
_BLOCK = {"type": TYPES, "is_error": BOOLEAN, "signature": ENCRYPTED, "data": ENCRYPTED, **_CACHE,
          "source.type": Enum("base64", "url", "text", "content", "file"), "source.media_type": MIME_TYPE,
          "source.file_id": REFERENCE, "citations.enabled": BOOLEAN}
_CITATION = {"type": TYPES, "document_index": NUMBER, "start_char_index": NUMBER, "end_char_index": NUMBER,
             "start_page_number": NUMBER, "end_page_number": NUMBER, "start_block_index": NUMBER,
             "end_block_index": NUMBER, "search_result_index": NUMBER, "file_id": REFERENCE}
_STOP_REASONS = Enum("end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal",
                     "model_context_window_exceeded")
_EDIT = {"type": TYPES, "trigger.type": TYPES, "trigger.value": NUMBER, "keep.type": TYPES, "keep.value": NUMBER,
         "clear_at_least.type": TYPES, "clear_at_least.value": NUMBER, "clear_tool_inputs": BOOLEAN}
_CONTAINER = {"container": REFERENCE, "container.id": REFERENCE, "container.skills.*.type": Enum("anthropic", "custom"),
              "container.skills.*.skill_id": REFERENCE, "container.skills.*.version": Id(r"[0-9]{1,20}|latest", "a version")}


def _under(prefix: str, fields: dict[str, Shape]) -> dict[str, Shape]:
    return {f"{prefix}.{path}": shape for path, shape in fields.items()}


REQUEST_NOT_CONTENT = Paths({
    "model": MODEL, "max_tokens": NUMBER, "stream": BOOLEAN, "temperature": NUMBER, "top_p": NUMBER, "top_k": NUMBER,
    "service_tier": Enum("auto", "standard_only"), **_CONTAINER,
    "thinking.type": Enum("enabled", "disabled", "adaptive"), "thinking.budget_tokens": NUMBER,
    "tool_choice.type": Enum("auto", "any", "tool", "none"), "tool_choice.disable_parallel_tool_use": BOOLEAN,
    **_under("context_management.edits.*", _EDIT), "output_config.effort": Enum("low", "medium", "high", "max"),
    "output_config.format.type": Enum("json_schema"), "mcp_servers.*.type": Enum("url"),
    **_under("system.*", _BLOCK), **_under("system.*.citations.*", _CITATION),
    "messages.*.role": Enum("user", "assistant"), **_under("messages.*.content.*", _BLOCK),
    **_under("messages.*.content.*.citations.*", _CITATION), **_under("messages.*.content.*.content.*", _BLOCK),
    **_under("messages.*.content.*.content.*.citations.*", _CITATION),
    "tools.*.type": TYPES, **_under("tools.*", _CACHE), "tools.*.strict": BOOLEAN, "tools.*.max_uses": NUMBER,
    "tools.*.display_width_px": NUMBER, "tools.*.display_height_px": NUMBER, "tools.*.display_number": NUMBER,
    "tools.*.defer_loading": BOOLEAN,
})
# Some of those ids pull stored content into the model's context, see ``references``: uploaded files (a
# ``file`` source, a ``container_upload``, code-execution outputs), MCP servers, a container and its skills.
# A reply's blocks: the provider's own ids (a tool call's, a server tool's result's) are issued ids.
_REPLY_BLOCK = {**_BLOCK, "id": ISSUED_ID, "tool_use_id": ISSUED_ID, **_under("citations.*", _CITATION)}
_MESSAGE = {
    "id": ISSUED_ID, "type": Enum("message"), "role": Enum("assistant"), "model": MODEL, "stop_reason": _STOP_REASONS,
    "usage.service_tier": Enum("standard", "priority", "batch"), "container.id": ISSUED_ID,
    "container.expires_at": TIMESTAMP, "context_management.applied_edits.*.type": TYPES,
    **_under("content.*", _REPLY_BLOCK),
}
REPLY_NOT_CONTENT = Paths(_MESSAGE)
EVENT_NOT_CONTENT = Paths({
    "type": TYPES, "index": NUMBER, "delta.type": TYPES, "delta.stop_reason": _STOP_REASONS,
    "delta.signature": ENCRYPTED, "delta.container.id": ISSUED_ID, "delta.container.expires_at": TIMESTAMP,
    "usage.service_tier": Enum("standard", "priority", "batch"), "context_management.applied_edits.*.type": TYPES,
    **_under("content_block", _REPLY_BLOCK), **_under("delta.citation", _CITATION), **_under("message", _MESSAGE),
})
SORTER = Sorter(vocabulary.ANTHROPIC)
_REPLY_BLOCK_NODE = REPLY_NOT_CONTENT.at("content", 0)
_EVENT_BLOCK_NODE = EVENT_NOT_CONTENT.at("content_block")
TEXT = 0  # one text channel per message (the SDK joins its text blocks)


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


def anthropic_usage(message: dict[str, Any]) -> Usage | None:
    """A message's (or a ``message_delta``'s) ``usage`` and ``model``.

    Anthropic's ``input_tokens`` leaves out the tokens read from or written to
    the prompt cache: they are added, so the count means what it means for the
    other providers.
    """
    usage = as_dict(message.get("usage"))
    model = as_str(message.get("model")) or None
    if not usage and model is None:
        return None
    input_tokens = sum_counts(
        usage.get("input_tokens"), usage.get("cache_creation_input_tokens"), usage.get("cache_read_input_tokens")
    )
    return Usage(input_tokens, token_count(usage.get("output_tokens")), model)


class AnthropicMessagesDialect(Dialect):
    provider = "anthropic"
    key_carriers = KeyCarriers(("x-api-key", "authorization"))
    query_params = QueryParams({"beta": FLAG})  # ?beta=true: the SDKs' beta client (so Claude Code)
    endpoint = "messages"
    operation = "chat"
    request_not_content = REQUEST_NOT_CONTENT
    reply_not_content = REPLY_NOT_CONTENT
    event_not_content = EVENT_NOT_CONTENT
    surfaces = (
        Surface("request", "system (a string or blocks)", "on_model_call (system)"),
        Surface("request", "tool_result, mcp_tool_result blocks: every field, nested blocks too", "on_tool_response"),
        Surface("request", "tools[]: each definition whole (input_schema, input_examples...)",
                "on_tool_call (definition)"),
        Surface("request", "every other block (text and citations, tool_use history, thinking, server-tool "
                           "results, documents, unknown types) and field (output_config, stop_sequences...); "
                           "base64 images and documents as media; text documents and PDFs as text too", "on_model_call (prompt)"),
        Surface("reply", "tool_use, server_tool_use, mcp_tool_use blocks; input_json_delta", "on_tool_call"),
        Surface("reply", "thinking blocks; thinking_delta", "on_model_response (thoughts)"),
        Surface("reply", "every other block and delta (text, citations, server-tool results, unknown types)",
                "on_model_response"),
    )

    def usage(self, body: Any) -> Usage | None:
        return anthropic_usage(as_dict(body))

    def stream_usage(self, event: StreamEvent) -> Usage | None:
        """``message_start`` states the input (and the model), ``message_delta`` the output so far."""
        payload = parse_usage_event(event, '"usage"')
        if payload is None:
            return None
        kind = payload.get("type") or event.event
        if kind == "message_start":
            return anthropic_usage(as_dict(payload.get("message")))
        if kind == "message_delta":
            return anthropic_usage(payload)
        return None

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return anthropic_api_key(headers, query)

    def error_body(self, error: ProxyError) -> dict[str, Any]:
        return anthropic_error_body(error)

    def stream_error(self, error: ProxyError, started: bool, media_type: str) -> bytes:
        """``event: error``: the SDKs raise on it while iterating (Claude Code reads ``details.error_code`` too)."""
        return encode_sse(anthropic_error_body(error), event="error")

    def references(self, body: dict[str, Any]) -> list[StoredReference]:
        return references(body)

    def request_view(self, body: dict[str, Any], model: str) -> RequestView:
        view = RequestView(model=model)
        prompt: list[str] = []
        system: list[str] = []
        call_names: dict[str, str] = {}
        for key, value, node in SORTER.fields(body, REQUEST_NOT_CONTENT.root, prompt):
            if key == "system":
                _blocks(value, node, system, view, call_names, "system")
            elif key == "messages":
                for _, message, below in SORTER.items(value, node, prompt):
                    for field, item, at in SORTER.fields(message, below, prompt):
                        if field == "content":
                            _blocks(item, at, prompt, view, call_names, "prompt")
                        else:
                            SORTER.add(prompt, item, at)
            elif key == "tools":
                for _, tool, below in SORTER.items(value, node, prompt):
                    data = as_dict(tool)
                    view.tools.append(ToolDefinition(
                        name=as_str(data.get("name")) or as_str(data.get("type")) or "unknown",
                        description=as_str(data.get("description")),
                        parameters=as_dict(data.get("input_schema")),
                        content=SORTER.text(tool, below),
                    ))
            else:
                SORTER.add(prompt, value, node)
        view.set_prompt(prompt)
        view.set_system(system)
        return view

    def response_view(self, body: Any) -> ResponseView:
        view = ResponseView()
        texts: list[str] = []
        thoughts: list[str] = []
        plain: list[str] = []  # the text blocks' text alone
        for key, value, node in SORTER.fields(body, REPLY_NOT_CONTENT.root, texts):
            if key != "content":
                SORTER.add(texts, value, node)
                continue
            for _, block, below in SORTER.items(value, node, texts):
                kind = as_str(as_dict(block).get("type"))
                if kind in _CALL_BLOCKS:
                    view.tool_calls.append(_call(as_dict(block)))
                elif kind == "thinking":
                    SORTER.add(thoughts, block, below)
                else:
                    SORTER.add(texts, block, below)
                    if kind == "text" and isinstance(block.get("text"), str):
                        plain.append(block["text"])
        view.text = "".join(texts)  # as the SDK's text stream joins a message's blocks
        if len(plain) > 1 and (text := "".join(plain)) not in view.text:
            # A client joins the text blocks and skips the blocks between them (a server tool's call and
            # results, citations): that text is checked too.
            view.text += "\n" + text
        view.thoughts = joined(thoughts)
        return view

    def stream_view(self, event: StreamEvent) -> StreamView:
        payload = json_object_event(event)
        if payload is None:
            return EMPTY_STREAM_VIEW
        kind = as_str(payload.get("type")) or event.event
        index = (TEXT, stream_key(payload.get("index")))
        if kind == "content_block_delta":
            return _delta_view(index, payload)
        if kind == "content_block_start":
            return _block_start_view(index, payload)
        if kind == "content_block_stop":
            return _with_rest(StreamView(tool_closes=[index]), payload)
        if kind == "message_stop":
            return _with_rest(StreamView(finished=[ALL_CHANNELS]), payload)
        if kind == "ping":
            return _with_rest(StreamView(), payload)
        if kind == "message_start":
            return self._message_start_view(payload)
        view = StreamView()  # message_delta, error, and any event type we do not know
        SORTER.add(view.content, payload, EVENT_NOT_CONTENT.root)
        if kind == "error":  # the SDKs raise on it, with its message: checked whole like any event
            return upstream_error(view, payload.get("error"))
        return view

    def _message_start_view(self, payload: dict[str, Any]) -> StreamView:
        """A message_start normally has no content; if it has, it is checked like a reply."""
        view = StreamView()
        if not isinstance(payload.get("message"), dict):
            SORTER.add(view.content, payload, EVENT_NOT_CONTENT.root)
            return view
        message = payload["message"]
        rest = {key: value for key, value in payload.items() if key != "message"}
        rest["message"] = {key: value for key, value in message.items() if key != "content"}
        SORTER.add(view.content, rest, EVENT_NOT_CONTENT.root)
        if not message.get("content"):
            return view
        reply = self.response_view({"content": message["content"]})
        view.text.append((TEXT, reply.text)) if reply.text else None
        view.thoughts.append((TEXT, reply.thoughts)) if reply.thoughts else None
        for number, call in enumerate(reply.tool_calls):
            key = (TEXT, "message_start", number)
            arguments = orjson.dumps(call.arguments).decode()
            view.tool_fragments.append(ToolFragment(key=key, name=call.name, call_id=call.call_id, arguments=arguments))
            view.tool_closes.append(key)
        return view


class AnthropicCountTokensDialect(AnthropicMessagesDialect):
    """``/v1/messages/count_tokens``: the request is a whole prompt; the reply only a number."""

    endpoint = "messages.count_tokens"
    operation = ""  # counting tokens is no model call

    def usage(self, body: Any) -> Usage | None:
        return None  # the reply's input_tokens is the answer, not usage

    def wants_stream(self, body: dict[str, Any], query: Mapping[str, str], path_stream: bool) -> bool:
        return False

    def response_view(self, body: Any) -> ResponseView:
        return ResponseView()


def references(body: dict[str, Any]) -> list[StoredReference]:
    """Every reference of a Messages request, in the order of the body."""
    found: list[StoredReference] = []
    servers = body.get("mcp_servers")
    if isinstance(servers, list):
        for number, server in enumerate(servers):
            server = as_dict(server)
            found.append(StoredReference(f"mcp_servers[{number}]", "mcp_server",
                                         as_str(server.get("url")) or as_str(server.get("name"))))
    elif servers is not None:
        found.append(StoredReference("mcp_servers", "mcp_server", ""))
    container = body.get("container")
    if isinstance(container, dict):
        if container.get("id") is not None:
            found.append(StoredReference("container.id", "container", as_str(container["id"])))
        skills = container.get("skills")
        for number, skill in enumerate(skills if isinstance(skills, list) else ()):
            found.append(StoredReference(f"container.skills[{number}]", "skill", as_str(as_dict(skill).get("skill_id"))))
    elif container is not None:
        found.append(StoredReference("container", "container", as_str(container)))
    _block_references(body.get("system"), "system", found)
    messages = body.get("messages")
    for number, message in enumerate(messages if isinstance(messages, list) else ()):
        content = as_dict(message).get("content")
        if isinstance(content, list):  # a string content holds no block: no path built for it
            _block_references(content, f"messages[{number}].content", found)
    return found


def _block_references(blocks: Any, where: str, found: list[StoredReference]) -> None:
    """File ids in blocks, at any depth of their ``content`` and ``source`` (never in a tool call's input).

    Recursive: the depth is bounded by ``--max-json-depth``, checked before.
    """
    if not isinstance(blocks, list):
        return
    for index, block in enumerate(blocks):
        if not isinstance(block, dict):
            continue
        if block.get("file_id") is not None:  # container_upload, code-execution outputs
            found.append(StoredReference(f"{where}[{index}].file_id", "file", as_str(block["file_id"])))
        source = block.get("source")
        if isinstance(source, dict):
            if source.get("file_id") is not None:  # an image or document {"type": "file", "file_id": ...}
                found.append(StoredReference(f"{where}[{index}].source.file_id", "file", as_str(source["file_id"])))
            if isinstance(source.get("content"), list):
                _block_references(source["content"], f"{where}[{index}].source.content", found)
        inner = block.get("content")
        if isinstance(inner, list):  # a tool result's blocks
            _block_references(inner, f"{where}[{index}].content", found)
        elif isinstance(inner, dict):  # a server tool's result: {"type": ..., "content": [blocks]}
            if inner.get("file_id") is not None:
                found.append(StoredReference(f"{where}[{index}].content.file_id", "file", as_str(inner["file_id"])))
            _block_references(inner.get("content"), f"{where}[{index}].content.content", found)


def _blocks(content: Any, node: Node | None, sink: list[str], view: RequestView, call_names: dict[str, str],
            reader: str | int) -> None:
    """A ``content`` (a string or blocks) into ``sink``: media decoded, tool results to ``view``.

    Adjacent text blocks are one text (``text_runs.py``); the text of a
    text-typed source joins ``sink``, a PDF's is extracted later for ``reader``
    (``media_text.py``).
    """
    if not isinstance(content, list):
        SORTER.add(sink, content, node)
        return
    run = TextRun(sink)
    for _, block, below in SORTER.items(content, node, sink):
        data = as_dict(block)
        kind = as_str(data.get("type"))
        if kind == "text" and isinstance(data.get("text"), str):
            run.add(data["text"])
            if len(data) > 2:  # cache_control, citations, fields added next month
                SORTER.add(sink, {k: v for k, v in data.items() if k != "text"}, below)
            continue
        run.end()
        if kind in _CALL_BLOCKS:
            call_names[as_str(data.get("id"))] = as_str(data.get("name"))
            SORTER.add(sink, block, below)
        elif kind in _RESULT_BLOCKS:
            result: list[str] = []
            own = tool_reader(view)
            for key, value, at in SORTER.fields(block, below, result):
                _blocks(value, at, result, view, call_names, own) if key == "content" else SORTER.add(result, value, at)
            call_id = as_str(data.get("tool_use_id"))
            view.tool_results.append(ToolResult(name=call_names.get(call_id, "unknown"), content=joined(result),
                                                call_id=call_id))
        elif isinstance(data.get("source"), dict):  # image, document: inline data is media
            source = data["source"]
            if source.get("type") == "base64":
                Inline(view, reader).take(MediaPart(
                    decode_base64(as_str(source.get("data")), f"{kind}.source.data"),
                    as_str(source.get("media_type")).lower() or "application/octet-stream",
                ), sink)
                block = {**data, "source": {k: v for k, v in source.items() if k != "data"}}
            for key, value, at in SORTER.fields(block, below, sink):
                if key == "source" and isinstance(value, dict) and value.get("type") == "content":
                    for field, item, deeper in SORTER.fields(value, at, sink):
                        _blocks(item, deeper, sink, view, call_names, reader) if field == "content" else SORTER.add(
                            sink, item, deeper)
                else:
                    SORTER.add(sink, value, at)
        else:
            SORTER.add(sink, block, below)
    run.end()


def _call(block: dict[str, Any]) -> ToolCall:
    arguments = as_dict(block.get("input"))
    extra = {k: v for k, v in block.items() if k not in ("input", "name")}
    text = SORTER.text(extra, _REPLY_BLOCK_NODE) if extra else ""  # its id and type, fitting their shapes, are not
    if text:
        arguments = {**arguments, "_other": text}
    return ToolCall(name=as_str(block.get("name")), arguments=arguments, call_id=as_str(block.get("id")))


def _is_index(value: Any) -> bool:
    """An event's ``index`` as declared (a number; absent), so the event's other fields decide whether it is walked."""
    return value is None or type(value) is int


def _sealed(value: Any) -> bool:
    """A thinking block's ``signature`` as declared (a sealed blob; absent)."""
    return value is None or (isinstance(value, str) and ENCRYPTED.fits is not None and bool(ENCRYPTED.fits(value)))


def _with_rest(view: StreamView, payload: dict[str, Any]) -> StreamView:
    """An event we read by its type alone still has every other field checked (there normally is none)."""
    if any(key not in ("type", "index") for key in payload) or not _is_index(payload.get("index")):
        SORTER.add(view.content, payload, EVENT_NOT_CONTENT.root)
    return view


def _delta_view(index: Any, payload: dict[str, Any]) -> StreamView:
    view = StreamView()
    delta = payload.get("delta")
    if not isinstance(delta, dict):
        SORTER.add(view.content, payload, EVENT_NOT_CONTENT.root)
        return view
    kind = as_str(delta.get("type"))
    if kind == "text_delta":
        text = delta.get("text")
        if isinstance(text, str) and text:
            view.text.append((TEXT, text))
        taken: tuple[str, ...] = ("type", "text")
    elif kind == "thinking_delta":
        thinking = delta.get("thinking")
        if isinstance(thinking, str) and thinking:
            view.thoughts.append((TEXT, thinking))
        taken = ("type", "thinking")
    elif kind == "input_json_delta":
        view.tool_fragments.append(ToolFragment(key=index, arguments=as_str(delta.get("partial_json"))))
        taken = ("type", "partial_json")
    else:  # citations_delta, signature_delta, and kinds we do not know
        taken = ()
    if (any(key not in taken for key in delta) or any(key not in ("type", "index", "delta") for key in payload)
            or not _is_index(payload.get("index"))):
        SORTER.add(view.content, {**payload, "delta": {k: v for k, v in delta.items() if k not in taken}},
                   EVENT_NOT_CONTENT.root)
    return view


def _block_start_view(index: Any, payload: dict[str, Any]) -> StreamView:
    block = as_dict(payload.get("content_block"))
    kind = as_str(block.get("type"))
    view = StreamView()
    if any(key not in ("type", "index", "content_block") for key in payload) or not _is_index(payload.get("index")):
        SORTER.add(view.content, {k: v for k, v in payload.items() if k != "content_block"}, EVENT_NOT_CONTENT.root)
    if kind in _CALL_BLOCKS:
        tool_input = block.get("input")
        arguments = orjson.dumps(tool_input).decode() if tool_input else ""
        extra = {k: v for k, v in block.items() if k not in ("input", "name")}
        if extra:
            arguments += SORTER.text(extra, _EVENT_BLOCK_NODE)
        view.tool_fragments.append(ToolFragment(key=index, name=as_str(block.get("name")),
                                                call_id=as_str(block.get("id")), arguments=arguments))
        return view
    if kind == "text" and isinstance(block.get("text"), str):
        if block["text"]:
            view.text.append((TEXT, block["text"]))  # the message's text, which its deltas continue
        rest = {key: value for key, value in block.items() if key not in ("type", "text")}
        if rest:  # citations, fields we do not know: whole in this event
            SORTER.add(view.content, {"content_block": rest}, EVENT_NOT_CONTENT.root)
        return view
    if kind == "thinking" and set(block) <= {"type", "thinking", "signature"} and _sealed(block.get("signature")):
        if block.get("thinking"):
            view.thoughts.append((TEXT, as_str(block.get("thinking"))))
        return view
    SORTER.add(view.content, payload, EVENT_NOT_CONTENT.root)  # server-tool results, blocks we do not know
    return view
