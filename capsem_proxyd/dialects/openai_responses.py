"""OpenAI Responses API (``POST /v1/responses``), JSON and SSE.

Deny-by-default like every dialect (``content.py``). In a request,
``instructions`` and system/developer messages are system instructions, the
``*_output`` items (function, custom, computer, shell, patch tool outputs) are
tool results, ``tools`` (function, custom, MCP, built-in) are tool
definitions, and every other input item (the model's earlier calls, reasoning
summaries, references, items of types added next month) is the prompt.

A reply is read the way the SDK reads it: ``output_text`` joins every message's
text, so the text is one channel; reasoning is its thoughts; function, custom
and MCP calls are tool calls; every other output item (shell and patch calls,
code-interpreter logs, file-search results...) is text the client receives.
In a stream, deltas grow the text; every event that carries text whole (an
``output_item.done``, a ``*.done`` event, ``response.completed`` with the
whole output, an event type we do not know) is checked whole before it goes.
The request's own fields that a reply echoes (``tools``, ``instructions``,
``metadata``...) are not read again where they equal the request's (see
``OpenAIResponsesDialect.for_request``); an echo that differs is the
provider's, and read like any reply field (only scalar settings are declared:
no object is declared whole).

The API stores replies (``store`` defaults to true) and lets later requests
pull stored content back in: ``references`` finds where a request does, and
a reply states the id it is stored under (``stored_reply``; in a stream, the
lifecycle events' ``response.id``), which the pipeline records once the
reply is delivered whole.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from capsem_proxyd.dialects import api_values, vocabulary
from capsem_proxyd.dialects.base import (
    as_dict,
    as_str,
    decode_base64,
    json_object_event,
    parse_arguments,
    parse_usage_event,
    reply_usage,
    sealed_digest,
    stream_key,
    upstream_error,
)
from capsem_proxyd.dialects.content import (
    BASE64,
    BOOLEAN,
    ENCRYPTED,
    ISSUED_ID,
    MODEL,
    NUMBER,
    OBFUSCATION,
    REFERENCE,
    Enum,
    Id,
    Node,
    Paths,
    Sorter,
    Surface,
    joined,
    spelled_tokens,
)
from capsem_proxyd.dialects.framing import StreamEvent, encode_sse
from capsem_proxyd.dialects.media_text import Inline, tool_reader
from capsem_proxyd.dialects.openai_chat import CACHE_RETENTIONS, EFFORTS, LEVELS, SERVICE_TIERS
from capsem_proxyd.dialects.openai_common import OpenAIDialect, add_parts, openai_error_body
from capsem_proxyd.errors import ErrorKind, ProxyError
from capsem_proxyd.views import (
    ALL_CHANNELS,
    EMPTY_STREAM_VIEW,
    MediaPart,
    RequestView,
    ResponseView,
    StoredItem,
    StoredReference,
    StreamView,
    ToolCall,
    ToolDefinition,
    ToolFragment,
    ToolResult,
    Usage,
)

SORTER = Sorter(vocabulary.OPENAI_RESPONSES)
TYPES = Enum(*api_values.OPENAI_TYPES, name="a type name of the openai SDK")
_STATUS = Enum("in_progress", "completed", "incomplete", "failed", "cancelled", "queued", "searching",
               "generating", "interpreting", "calling")
_INCLUDES = Enum("file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
                 "message.input_image.image_url", "computer_call_output.output.image_url",
                 "code_interpreter_call.outputs", "reasoning.encrypted_content", "message.output_text.logprobs")
# The settings a request takes and a reply echoes (an echo that differs from the request is checked).
_SETTINGS = {
    "model": MODEL, "stream": BOOLEAN, "store": BOOLEAN, "background": BOOLEAN, "parallel_tool_calls": BOOLEAN,
    "temperature": NUMBER, "top_p": NUMBER, "top_logprobs": NUMBER, "max_output_tokens": NUMBER,
    "max_tool_calls": NUMBER, "service_tier": SERVICE_TIERS, "truncation": Enum("auto", "disabled"),
    "prompt_cache_retention": CACHE_RETENTIONS, "reasoning.effort": EFFORTS,
    "reasoning.summary": Enum("auto", "concise", "detailed"), "reasoning.generate_summary": Enum("auto", "concise", "detailed"),
    "text.format.type": Enum("text", "json_schema", "json_object"), "text.format.strict": BOOLEAN,
    "text.verbosity": LEVELS, "tool_choice": Enum("none", "auto", "required"), "tool_choice.type": TYPES,
    "tool_choice.mode": Enum("auto", "required"), "prompt.version": Id(r"[0-9]{1,12}", "a version number"),
    **{f"tools.*.{field}": shape for field, shape in {
        "type": TYPES, "strict": BOOLEAN, "container.type": TYPES, "container.file_ids.*": REFERENCE,
        "container.memory_limit": Enum("1g", "4g", "16g", "64g"), "vector_store_ids.*": REFERENCE,
        "display_width": NUMBER, "display_height": NUMBER,
        "environment": Enum("windows", "mac", "linux", "ubuntu", "browser"), "environment.type": TYPES,
        "max_num_results": NUMBER, "search_context_size": LEVELS, "user_location.type": Enum("approximate"),
        "format.type": Enum("text", "grammar"), "format.syntax": Enum("lark", "regex"),
        "require_approval": Enum("always", "never"),
    }.items()},
}
# An input item's own fields: its type, status and role, the blob the provider sealed. A client's ids
# (an item's ``id``, ``call_id``, ``approval_request_id``) are content: the API takes any string there.
_PARTS = {"type": TYPES, "detail": Enum("auto", "low", "high", "original"), "file_id": REFERENCE,
          "annotations.*.type": TYPES, "logprobs.*.logprob": NUMBER, "logprobs.*.top_logprobs.*.logprob": NUMBER}
_ITEM = {"type": TYPES, "status": _STATUS, "role": Enum("user", "assistant", "system", "developer"),
         "encrypted_content": ENCRYPTED, **{f"content.*.{path}": shape for path, shape in _PARTS.items()},
         "summary.*.type": TYPES, **{f"output.*.{path}": shape for path, shape in _PARTS.items()}}
REQUEST_NOT_CONTENT = Paths(_SETTINGS, {
    "previous_response_id": REFERENCE, "include.*": _INCLUDES, "stream_options.include_obfuscation": BOOLEAN,
    "conversation": REFERENCE, "conversation.id": REFERENCE, "prompt.id": REFERENCE,
    **{f"input.*.{path}": shape for path, shape in _ITEM.items()},
})
# Some of those ids pull stored content into the model's context, see ``references``: the previous
# response, a conversation, an item by id, a stored prompt, uploaded files, vector stores, containers and
# skills, provider-run MCP servers. They are no text to check; they are references.

# The request's fields a reply states again; where equal to the request's, not read again (``for_request``).
_ECHOED = ("instructions", "tools", "metadata", "text", "reasoning", "prompt", "tool_choice", "user",
           "safety_identifier", "prompt_cache_key", "truncation", "max_output_tokens", "max_tool_calls",
           "parallel_tool_calls", "temperature", "top_p", "top_logprobs", "service_tier", "background",
           "previous_response_id", "conversation", "store", "prompt_cache_retention")

# A reply the provider keeps and later requests may reference, once it is whole.
_DELIVERED = frozenset({"completed", "incomplete"})
# The stream events that carry the response object (its id, its status).
_LIFECYCLE = frozenset({"response.created", "response.queued", "response.in_progress", "response.completed",
                        "response.incomplete"})
# A reply: its ids, status and the settings it echoes; an output item's ids (the provider's own, in a reply).
# Its logprobs are its text token by token, and their alternatives: content (the numbers are not).
_REPLY = {
    **_SETTINGS, "id": ISSUED_ID, "object": Enum("response"), "created_at": NUMBER, "completed_at": NUMBER,
    "status": _STATUS, "incomplete_details.reason": Enum("max_output_tokens", "content_filter"),
    "previous_response_id": ISSUED_ID, "conversation.id": ISSUED_ID, "prompt.id": ISSUED_ID,
    "billing.payer": Enum("developer", "openai"),
    **{f"usage.{field}": NUMBER for field in ("input_tokens", "output_tokens", "total_tokens",
                                              "input_tokens_details.cached_tokens",
                                              "output_tokens_details.reasoning_tokens")},
}
_OUTPUT = {**_ITEM, "id": ISSUED_ID, "call_id": ISSUED_ID, "approval_request_id": ISSUED_ID, "role": Enum("assistant"),
           "content.*.id": ISSUED_ID, "content.*.annotations.*.start_index": NUMBER,
           "content.*.annotations.*.end_index": NUMBER, "content.*.annotations.*.index": NUMBER}
REPLY_NOT_CONTENT = Paths(_REPLY, {f"output.*.{path}": shape for path, shape in _OUTPUT.items()},
                          tokens={"output.*.content.*.logprobs": "token"})
EVENT_NOT_CONTENT = Paths({
    "type": TYPES, "sequence_number": NUMBER, "item_id": ISSUED_ID, "output_index": NUMBER, "content_index": NUMBER,
    "summary_index": NUMBER, "obfuscation": OBFUSCATION, "partial_image_index": NUMBER, "partial_image_b64": BASE64,
    "annotation_index": NUMBER, "logprobs.*.logprob": NUMBER, "logprobs.*.top_logprobs.*.logprob": NUMBER,
    **{f"response.{path}": shape for path, shape in _REPLY.items()},
    **{f"response.output.*.{path}": shape for path, shape in _OUTPUT.items()},
    **{f"item.{path}": shape for path, shape in _OUTPUT.items()},
    **{f"part.{path}": shape for path, shape in _PARTS.items()}, "part.id": ISSUED_ID,
    "annotation.type": TYPES,
}, tokens={"logprobs": "token", "response.output.*.content.*.logprobs": "token", "item.content.*.logprobs": "token",
           "part.logprobs": "token"})
_RESULT_ITEMS = frozenset({"function_call_output", "custom_tool_call_output", "computer_call_output",
                           "local_shell_call_output", "shell_call_output", "apply_patch_call_output"})
_CALL_ITEMS = frozenset({"function_call", "custom_tool_call", "mcp_call"})
_TEXT_DELTAS = frozenset({"response.output_text.delta", "response.refusal.delta"})
_THOUGHT_DELTAS = frozenset({"response.reasoning_summary_text.delta", "response.reasoning_text.delta"})
# An audio reply's transcript, streamed in pieces: a text of its own, read whole by the client.
_TRANSCRIPT_DELTAS = frozenset({"response.audio.transcript.delta", "response.output_audio_transcript.delta"})
_ARGUMENT_DELTAS = frozenset({"response.function_call_arguments.delta", "response.custom_tool_call_input.delta",
                              "response.mcp_call_arguments.delta"})
_ARGUMENT_DONE = frozenset({"response.function_call_arguments.done", "response.custom_tool_call_input.done",
                            "response.mcp_call_arguments.done"})
_FINAL = frozenset({"response.completed", "response.incomplete"})
TEXT = 0  # the one text channel: the SDK's output_text joins every message
TRANSCRIPT = "audio.transcript"  # the audio transcript's channel: a text apart from output_text
# The channel each delta event grows; a transcript is held back like output_text (two deltas make one word).
_DELTA_CHANNELS = {kind: TRANSCRIPT if kind in _TRANSCRIPT_DELTAS else TEXT
                   for kind in (*_TEXT_DELTAS, *_THOUGHT_DELTAS, *_TRANSCRIPT_DELTAS)}
# ``response.failed`` error codes (the API's own enum), by error kind: final for Codex only when it knows them.
_FAILED_CODE: dict[ErrorKind, str] = {
    ErrorKind.INVALID_REQUEST: "invalid_prompt",
    ErrorKind.AUTHENTICATION: "server_error",
    ErrorKind.POLICY: "invalid_prompt",
    ErrorKind.NOT_FOUND: "server_error",
    ErrorKind.TOO_LARGE: "server_error",
    ErrorKind.UPSTREAM_ERROR: "server_error",
    ErrorKind.UPSTREAM_TIMEOUT: "server_error",
}


class OpenAIResponsesDialect(OpenAIDialect):
    endpoint = "responses"
    operation = "chat"
    request_not_content = REQUEST_NOT_CONTENT
    reply_not_content = REPLY_NOT_CONTENT
    event_not_content = EVENT_NOT_CONTENT
    surfaces = (
        Surface("request", "instructions; input[] messages of role system, developer", "on_model_call (system)"),
        Surface("request", "input[] items *_output (function, custom, computer, shell, patch): every field",
                "on_tool_response"),
        Surface("request", "tools[]: each definition whole (function, custom, mcp, built-in)",
                "on_tool_call (definition)"),
        Surface("request", "every other input item (messages, earlier calls, reasoning, references, unknown "
                           "types) and every other field (prompt.variables, text.format, metadata...); image and file data as "
                           "media, text types and PDFs as text too", "on_model_call (prompt)"),
        Surface("reply", "output[] function_call, custom_tool_call, mcp_call; their argument deltas",
                "on_tool_call"),
        Surface("reply", "output[] reasoning; reasoning text deltas", "on_model_response (thoughts)"),
        Surface("reply", "every other output item and event (messages, shell and patch calls, code-interpreter "
                         "logs, file-search results, response.completed...); generated images as media",
                "on_model_response"),
    )

    def usage(self, body: Any) -> Usage | None:
        """``usage.input_tokens`` (cached included) and ``output_tokens`` (reasoning included)."""
        return reply_usage(body, "input_tokens", "output_tokens")

    def stream_usage(self, event: StreamEvent) -> Usage | None:
        """The response object of ``response.created`` / ``response.completed`` (usage on the last)."""
        payload = parse_usage_event(event, '"usage"')
        response = payload.get("response") if payload is not None else None
        return self.usage(response) if isinstance(response, dict) else None

    def stream_error(self, error: ProxyError, started: bool, media_type: str) -> bytes:
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
            "param": error.param,
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

    def references(self, body: dict[str, Any]) -> list[StoredReference]:
        return references(body)

    def stores_reply(self, body: dict[str, Any]) -> bool:
        return body.get("store") is not False  # the API stores replies unless told not to

    def stored_reply(self, reply: Any) -> str | None:
        """A reply whose output is whole (not ``queued`` or ``in_progress`` in the background, not failed)."""
        reply = as_dict(reply)
        if reply.get("store") is False or reply.get("status") not in _DELIVERED:
            return None
        return as_str(reply.get("id")) or None

    def stored_items(self, reply: Any) -> tuple[StoredItem, ...]:
        return delivered_items(as_dict(reply).get("output"))

    def request_view(self, body: dict[str, Any], model: str) -> RequestView:
        view = RequestView(model=model)
        prompt: list[str] = []
        system: list[str] = []
        call_names: dict[str, str] = {}
        for key, value, node in SORTER.fields(body, REQUEST_NOT_CONTENT.root, prompt):
            if key == "instructions":
                SORTER.add(system, value, node)
            elif key == "input" and isinstance(value, list):
                for _, item, below in SORTER.items(value, node, prompt):
                    _input_item(item, below, view, prompt, system, call_names)
            elif key == "tools":
                for _, tool, below in SORTER.items(value, node, prompt):
                    view.tools.append(_definition(tool, below))
            else:
                SORTER.add(prompt, value, node)
        view.set_prompt(prompt)
        view.set_system(system)
        return view

    echo: dict[str, Any] = {}  # the request's fields its reply echoes (``for_request``)

    def for_request(self, body: dict[str, Any]) -> OpenAIResponsesDialect:
        """A reader of this request's reply that knows what the reply echoes back.

        A Responses reply repeats the request's ``instructions``, ``tools``,
        ``metadata``... in every lifecycle event. Where the echo equals what the
        client sent (checked as the request, by the request's hooks), it is the
        client's own words, not the model's: checking it again as reply content
        would check it twice (a long system prompt three times a stream), and
        a reply policy matching a word of the instructions would refuse every
        reply. An echo that differs in any way is the provider's, and checked.
        """
        echo = {key: body[key] for key in _ECHOED if key in body}
        if not echo:
            return self
        reader = copy.copy(self)
        reader.echo = echo
        return reader

    def _without_echo(self, response: Any) -> Any:
        """``response`` less the fields that echo the request exactly."""
        echo = self.echo
        if not echo or not isinstance(response, dict):
            return response
        return {key: value for key, value in response.items() if key not in echo or echo[key] != value}

    def response_view(self, body: Any) -> ResponseView:
        body = self._without_echo(body)
        view = ResponseView()
        texts: list[str] = []
        thoughts: list[str] = []
        for key, value, node in SORTER.fields(body, REPLY_NOT_CONTENT.root, texts):
            if key == "output":
                for _, item, below in SORTER.items(value, node, texts):
                    _output_item(item, below, view, texts, thoughts)
            else:
                SORTER.add(texts, value, node)
        view.text = "".join(texts)  # as the SDK's output_text joins every message's parts
        view.thoughts = joined(thoughts)
        return view

    def stream_view(self, event: StreamEvent) -> StreamView:
        payload = json_object_event(event)
        if payload is None:
            return EMPTY_STREAM_VIEW
        kind = as_str(payload.get("type")) or event.event or ""
        if self.echo and isinstance(payload.get("response"), dict):
            payload = {**payload, "response": self._without_echo(payload["response"])}
        if kind == "response.failed":
            return upstream_error(self._failed_view(payload), as_dict(payload.get("response")).get("error"))
        channel = _DELTA_CHANNELS.get(kind)
        if channel is not None:
            view = StreamView()
            delta = payload.get("delta")
            if isinstance(delta, str) and delta:
                (view.thoughts if kind in _THOUGHT_DELTAS else view.text).append((channel, delta))
            if payload.get("logprobs"):  # the tokens: a text of their own across events (and whole, in _rest)
                view.text.extend(((TEXT, "logprobs"), text)
                                 for _, text in spelled_tokens(payload["logprobs"], _EVENT_FIELDS.get("logprobs")) if text)
            _rest(payload, ("delta",), view)
            return view
        key = (TEXT, stream_key(payload.get("output_index")))
        if kind in _ARGUMENT_DELTAS:
            view = StreamView(tool_fragments=[ToolFragment(key=key, arguments=as_str(payload.get("delta")))])
            _rest(payload, ("delta",), view)
            return view
        if kind in _ARGUMENT_DONE:
            whole = payload.get("arguments", payload.get("input"))
            view = StreamView(tool_fragments=[ToolFragment(
                key=key, name=as_str(payload.get("name")) or None, arguments=as_str(whole), replace=True,
            )], tool_closes=[key])
            _rest(payload, ("arguments", "input", "name"), view)
            return view
        if kind in ("response.output_item.added", "response.output_item.done"):
            item = as_dict(payload.get("item"))
            if as_str(item.get("type")) in _CALL_ITEMS:
                view = StreamView(tool_fragments=[_fragment(key, item, replace=kind.endswith(".done"))])
                if kind.endswith(".done"):
                    view.tool_closes.append(key)
                extra = {k: v for k, v in item.items() if k not in _CALL_FIELDS}
                if extra:  # whatever else the call item carries: whole in this event
                    SORTER.add(view.content, {"item": extra}, EVENT_NOT_CONTENT.root)
                _rest(payload, ("item",), view)
                return view
        return _whole_event_view(kind, payload)

    def _failed_view(self, payload: dict[str, Any]) -> StreamView:
        """``response.failed``, read as the SDK reads it: its output as a reply (``output_text`` joins
        the messages' text; calls are calls), then its error (the message the client is shown),
        then whatever else it carries."""
        view = StreamView()
        response = payload.get("response")
        if not isinstance(response, dict):
            SORTER.add(view.content, payload, EVENT_NOT_CONTENT.root)
            return view
        reply = self.response_view(response)
        view.content += [text for text in (reply.text, reply.thoughts) if text]
        for number, call in enumerate(reply.tool_calls):
            key = (TEXT, "failed", number)
            view.tool_fragments.append(ToolFragment(key=key, name=call.name, call_id=call.call_id,
                                                    arguments=orjson.dumps(call.arguments).decode()))
            view.tool_closes.append(key)
        SORTER.add(view.content, response.get("error"), None)
        SORTER.add(view.content, {k: v for k, v in payload.items() if k != "response"}, EVENT_NOT_CONTENT.root)
        return view


def references(body: dict[str, Any]) -> list[StoredReference]:
    """Every reference of a Responses request, in the order of the body."""
    found: list[StoredReference] = []
    if body.get("previous_response_id") is not None:
        found.append(StoredReference("previous_response_id", "response", _id(body["previous_response_id"])))
    conversation = body.get("conversation")
    if isinstance(conversation, dict):
        found.append(StoredReference("conversation.id", "conversation", _id(conversation.get("id"))))
    elif conversation is not None:
        found.append(StoredReference("conversation", "conversation", _id(conversation)))
    if isinstance(body.get("prompt"), dict):  # a stored prompt; any other value is no prompt of this API (text)
        found.append(StoredReference("prompt.id", "prompt", _id(body["prompt"].get("id"))))
    inputs = body.get("input")
    for number, item in enumerate(inputs if isinstance(inputs, list) else ()):
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "item_reference" or (kind is None and "role" not in item and "id" in item):
            found.append(StoredReference(f"input[{number}].id", "item", _id(item.get("id"))))
        elif kind in _SEALED_ITEMS and item.get("encrypted_content") is None and item.get("id") is not None:
            # Reasoning or a compaction named by id alone: the provider puts the stored item back.
            found.append(StoredReference(f"input[{number}].id", "item", _id(item.get("id"))))
        elif kind == "compaction" and item.get("encrypted_content") is not None:
            # A compaction's sealed summary of a conversation: only one this proxy delivered.
            found.append(StoredReference(f"input[{number}].encrypted_content", "sealed",
                                         sealed_digest(item.get("encrypted_content"))))
        for key in ("content", "output"):  # a message's parts; a tool output's parts
            parts = item.get(key)
            for index, part in enumerate(parts if isinstance(parts, list) else ()):
                if isinstance(part, dict) and part.get("file_id") is not None:
                    found.append(StoredReference(f"input[{number}].{key}[{index}].file_id", "file", _id(part["file_id"])))
    tools = body.get("tools")
    for number, tool in enumerate(tools if isinstance(tools, list) else ()):
        if isinstance(tool, dict):
            _tool_references(tool, f"tools[{number}]", found)
    return found


def _tool_references(tool: dict[str, Any], where: str, found: list[StoredReference]) -> None:
    """A provider-run tool's references: an MCP server or connector, vector stores, containers, files, skills."""
    if tool.get("type") == "mcp":
        key = next((key for key in ("server_url", "connector_id", "tunnel_id") if tool.get(key) is not None), None)
        found.append(StoredReference(f"{where}.{key}" if key else where, "mcp_server",
                                     _id(tool[key]) if key else as_str(tool.get("server_label"))))
    stores = tool.get("vector_store_ids")
    for index, store in enumerate(stores if isinstance(stores, list) else ()):
        found.append(StoredReference(f"{where}.vector_store_ids[{index}]", "vector_store", _id(store)))
    for key in ("container", "environment"):  # code interpreter's container; the hosted shell's environment
        if tool.get(key) is not None:
            _container_references(tool[key], f"{where}.{key}", found)
    mask = tool.get("input_image_mask")  # image generation's mask
    if isinstance(mask, dict) and mask.get("file_id") is not None:
        found.append(StoredReference(f"{where}.input_image_mask.file_id", "file", _id(mask["file_id"])))


def _container_references(value: Any, where: str, found: list[StoredReference]) -> None:
    """A container by id, or a new one with uploaded files and skills (a ``local`` environment runs at the client)."""
    if isinstance(value, str):
        found.append(StoredReference(where, "container", value))
        return
    if not isinstance(value, dict) or value.get("type") == "local":
        return
    if value.get("container_id") is not None:
        found.append(StoredReference(f"{where}.container_id", "container", _id(value["container_id"])))
    files = value.get("file_ids")
    for index, file_id in enumerate(files if isinstance(files, list) else ()):
        found.append(StoredReference(f"{where}.file_ids[{index}]", "file", _id(file_id)))
    skills = value.get("skills")
    for index, skill in enumerate(skills if isinstance(skills, list) else ()):
        skill = as_dict(skill)
        found.append(StoredReference(f"{where}.skills[{index}]", "skill",
                                     as_str(skill.get("skill_id")) or as_str(skill.get("name"))))


# Output items a later request may name by id alone, the provider then putting the stored item back;
# a compaction also travels sealed (``encrypted_content``), a summary of the conversation it replaces.
_SEALED_ITEMS = frozenset({"reasoning", "compaction"})


def delivered_items(output: Any) -> tuple[StoredItem, ...]:
    """What a reply's output delivers that a later request may name: its reasoning's and compactions'
    ids, and each compaction's sealed summary (by digest). Recorded only once the reply went out whole
    and checked. (Other items named by id, ``item_reference``, stay refused in checked mode.)"""
    items: list[StoredItem] = []
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, dict) or item.get("type") not in _SEALED_ITEMS:
            continue
        if isinstance(item.get("id"), str) and item["id"]:
            items.append(StoredItem("item", item["id"]))
        if item.get("type") == "compaction" and item.get("encrypted_content") is not None:
            items.append(StoredItem("sealed", sealed_digest(item["encrypted_content"])))
    return tuple(items)


def _id(value: Any) -> str:
    """An id as the request gives it (anything but a string: no usable id)."""
    return value if isinstance(value, str) else ""


def _stored(kind: str, response: dict[str, Any], view: StreamView) -> None:
    """The id a lifecycle event states for the stored reply, and whether the event ends it whole."""
    if response.get("store") is False:
        return
    view.stored_id = as_str(response.get("id"))
    view.stored_final = kind in _FINAL and response.get("status") in _DELIVERED
    if view.stored_final:
        view.stored_items = delivered_items(response.get("output"))


def _input_item(item: Any, node: Node | None, view: RequestView, prompt: list[str], system: list[str],
                call_names: dict[str, str]) -> None:
    data = as_dict(item)
    kind = as_str(data.get("type")) or ("message" if "role" in data else "")
    if kind in _RESULT_ITEMS:
        result: list[str] = []
        for key, value, below in SORTER.fields(item, node, result):
            add_parts(SORTER, result, value, below, Inline(view, tool_reader(view))) if key == "output" else (
                SORTER.add(result, value, below))
        call_id = as_str(data.get("call_id"))
        view.tool_results.append(ToolResult(name=call_names.get(call_id, "unknown"), content=joined(result),
                                            call_id=call_id))
        return
    if kind in _CALL_ITEMS:
        call_names[as_str(data.get("call_id"))] = as_str(data.get("name"))
        if isinstance(data.get("arguments"), str):
            item = {**data, "arguments": parse_arguments(data["arguments"])}  # read as the model reads it
    sink = system if kind == "message" and as_str(data.get("role")) in ("system", "developer") else prompt
    inline = Inline(view, "system" if sink is system else "prompt")
    for key, value, below in SORTER.fields(item, node, sink):
        add_parts(SORTER, sink, value, below, inline) if key == "content" else SORTER.add(sink, value, below)


def _definition(tool: Any, node: Node | None) -> ToolDefinition:
    data = as_dict(tool)
    return ToolDefinition(
        name=as_str(data.get("name")) or as_str(data.get("server_label")) or as_str(data.get("type")) or "unknown",
        description=as_str(data.get("description")) or as_str(data.get("server_description")),
        parameters=as_dict(data.get("parameters")),
        content=SORTER.text(tool, node),
    )


def _output_item(item: Any, node: Node | None, view: ResponseView, texts: list[str], thoughts: list[str]) -> None:
    data = as_dict(item)
    kind = as_str(data.get("type"))
    if kind in _CALL_ITEMS:
        view.tool_calls.append(_call(data, node))
    elif kind == "reasoning":
        SORTER.add(thoughts, item, node)
    elif kind == "image_generation_call" and isinstance(data.get("result"), str):
        view.media.append(MediaPart(decode_base64(data["result"], "image_generation_call.result"), "image/png"))
        SORTER.add(texts, {k: v for k, v in data.items() if k != "result"}, node)
    else:
        SORTER.add(texts, item, node)


def _call(item: dict[str, Any], node: Node | None) -> ToolCall:
    raw = item.get("arguments", item.get("input"))
    arguments = parse_arguments(raw) if "arguments" in item else ({"input": raw} if isinstance(raw, str) else {})
    extra = {k: v for k, v in item.items() if k not in _CALL_FIELDS}
    text = SORTER.text(extra, node) if extra else ""  # its ids and type, when they fit their shapes, are not
    if text:
        arguments = {**arguments, "_other": text}
    return ToolCall(name=as_str(item.get("name")), arguments=arguments, call_id=as_str(item.get("call_id")))


def _fragment(key: Any, item: dict[str, Any], *, replace: bool) -> ToolFragment:
    whole = item.get("arguments", item.get("input"))
    return ToolFragment(key=key, name=as_str(item.get("name")) or None, call_id=as_str(item.get("call_id")) or None,
                        arguments=as_str(whole), replace=replace)


def _whole_event_view(kind: str, payload: dict[str, Any]) -> StreamView:
    """An event that carries its text whole (an output item, the response, an error, a type we do not know)."""
    view = StreamView()
    SORTER.add(view.content, payload, EVENT_NOT_CONTENT.root)
    if kind == "error":  # the SDKs raise on it, with its message: checked whole like any event
        return upstream_error(view, payload)
    if "item" in payload or "response" in payload:  # an output item, or the response, given whole
        output_text = _output_text(payload)
        if output_text:
            view.content.append(output_text)
    if kind in _FINAL:
        view.finished.append(ALL_CHANNELS)
    if kind in _LIFECYCLE:
        _stored(kind, as_dict(payload.get("response")), view)
    return view


def _output_text(payload: dict[str, Any]) -> str:
    """The text of the messages an event gives whole (``item``, or ``response.output``), joined as the
    SDK's ``output_text`` joins it: every ``output_text`` part, first to last, with nothing between.

    Each part is checked as a piece of the event's content too; joined, a term
    split across parts (``cap``, ``sem_bl``, ``ock``) is seen as the client
    reads it.
    """
    items = [payload["item"]] if "item" in payload else as_dict(payload.get("response")).get("output")
    texts: list[str] = []
    for item in items if isinstance(items, list) else ():
        parts = item.get("content") if isinstance(item, dict) and item.get("type") == "message" else None
        for part in parts if isinstance(parts, list) else ():
            if isinstance(part, dict) and part.get("type") == "output_text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
    return "".join(texts) if len(texts) > 1 else ""


_CALL_FIELDS = ("arguments", "input", "name")  # what a call item's tool call is made of
_EVENT_FIELDS = EVENT_NOT_CONTENT.root.children  # an event's own fields, by name (no ``*`` at its top)


def _rest(payload: dict[str, Any], taken: tuple[str, ...], view: StreamView) -> None:
    """Whatever else an event we read carries is checked whole (ids, indexes and the like, when they fit
    their declared shapes, are not content: an event of only those is not walked at all)."""
    for key, value in payload.items():
        if key in taken:
            continue
        node = _EVENT_FIELDS.get(key)  # None: a key the events do not have, content itself
        if node is not None and (not isinstance(value, (str, list, dict)) or not value):
            continue  # numbers, booleans, null and empty values (the usual logprobs list) are never content
        fits = node.fits if node is not None else None
        if fits is None or type(value) is not str or not fits(value):
            rest = {key: value for key, value in payload.items() if key not in taken}
            SORTER.add(view.content, rest, EVENT_NOT_CONTENT.root)
            return
