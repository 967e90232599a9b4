"""OpenAI Chat Completions (``POST /v1/chat/completions``), JSON and SSE.

Content is found deny-by-default (``content.py``): the paths below are the
fields that are *not* content; every other string, and every key that is not
one of the API's field names, goes to a hook. The structure only says which:
system and developer messages are system instructions, ``tool`` and legacy
``function`` messages are tool results, tool definitions (function, custom,
legacy ``functions``) go to ``on_tool_call`` whole, everything else the model
reads is the prompt. In a reply each choice is its own text (with ``n >= 2``
the SDK keeps them apart, so a term split between two choices is never seen
whole and is never checked as one); a choice's tool calls close with its
own ``finish_reason``.
"""

from __future__ import annotations

from typing import Any

import orjson

from capsem_proxyd.dialects import vocabulary
from capsem_proxyd.dialects.base import (
    as_dict,
    as_str,
    json_object_event,
    parse_arguments,
    stream_key,
    upstream_error,
)
from capsem_proxyd.dialects.content import (
    BOOLEAN,
    ISSUED_ID,
    MODEL,
    NUMBER,
    OBFUSCATION,
    REFERENCE,
    Enum,
    Node,
    Paths,
    Sorter,
    Surface,
    joined,
    spelled_tokens,
)
from capsem_proxyd.dialects.framing import StreamEvent
from capsem_proxyd.dialects.media_text import Inline, tool_reader
from capsem_proxyd.dialects.openai_common import OpenAIDialect, add_parts, openai_stream_usage, openai_usage
from capsem_proxyd.views import (
    ALL_CHANNELS,
    EMPTY_STREAM_VIEW,
    RequestView,
    ResponseView,
    StoredReference,
    StreamView,
    TokenView,
    ToolCall,
    ToolDefinition,
    ToolFragment,
    ToolResult,
    Usage,
)

SYSTEM_ROLES = ("system", "developer")
TOOL_ROLES = ("tool", "function")

_ROLES = Enum("system", "developer", "user", "assistant", "tool", "function")
_TOOL_TYPES = Enum("function", "custom")
SERVICE_TIERS = Enum("auto", "default", "flex", "scale", "priority")
EFFORTS = Enum("none", "minimal", "low", "medium", "high", "xhigh")
LEVELS = Enum("low", "medium", "high")
VOICES = Enum("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse",
              "marin", "cedar")
CACHE_RETENTIONS = Enum("in-memory", "in_memory", "24h")
REQUEST_NOT_CONTENT = Paths({
    "model": MODEL, "stream": BOOLEAN, "store": BOOLEAN, "logprobs": BOOLEAN, "parallel_tool_calls": BOOLEAN,
    "n": NUMBER, "seed": NUMBER, "temperature": NUMBER, "top_p": NUMBER, "frequency_penalty": NUMBER,
    "presence_penalty": NUMBER, "top_logprobs": NUMBER, "max_tokens": NUMBER, "max_completion_tokens": NUMBER,
    "logit_bias.*": NUMBER, "service_tier": SERVICE_TIERS, "reasoning_effort": EFFORTS, "verbosity": LEVELS,
    "modalities.*": Enum("text", "audio"), "prompt_cache_retention": CACHE_RETENTIONS,
    "stream_options.include_usage": BOOLEAN, "stream_options.include_obfuscation": BOOLEAN,
    "audio.voice": VOICES, "audio.format": Enum("wav", "aac", "mp3", "flac", "opus", "pcm16"),
    "response_format.type": Enum("text", "json_object", "json_schema"), "response_format.json_schema.strict": BOOLEAN,
    "tool_choice": Enum("none", "auto", "required"), "tool_choice.type": Enum("function", "allowed_tools", "custom"),
    "tool_choice.allowed_tools.mode": Enum("auto", "required"),
    "web_search_options.search_context_size": LEVELS, "web_search_options.user_location.type": Enum("approximate"),
    "messages.*.role": _ROLES, "messages.*.tool_calls.*.type": _TOOL_TYPES, "messages.*.audio.id": REFERENCE,
    "messages.*.content.*.type": Enum("text", "image_url", "input_audio", "file", "refusal"),
    "messages.*.content.*.image_url.detail": Enum("auto", "low", "high"),
    "messages.*.content.*.input_audio.format": Enum("wav", "mp3"), "messages.*.content.*.file.file_id": REFERENCE,
    "tools.*.type": _TOOL_TYPES, "tools.*.function.strict": BOOLEAN, "tools.*.custom.format.type": Enum("text", "grammar"),
    "tools.*.custom.format.grammar.syntax": Enum("lark", "regex"),
})
# Two of those ids pull stored content into the model's context, see ``references``: a file's, an audio reply's.
# A client's own ids (``tool_call_id``, ``tool_calls[].id``) are content: the provider takes any string there.
# A reply's logprobs are its text token by token, and their alternatives: content (the numbers are not).
# Token counts (numbers: no content; declared so their names are the API's words, which its vocabulary lacks).
USAGE = {f"usage.{field}": NUMBER for field in (
    "prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details.cached_tokens",
    "prompt_tokens_details.audio_tokens", "completion_tokens_details.reasoning_tokens",
    "completion_tokens_details.audio_tokens", "completion_tokens_details.accepted_prediction_tokens",
    "completion_tokens_details.rejected_prediction_tokens")}
_LOGPROBS = {f"{kind}.*.{field}": NUMBER for kind in ("content", "refusal") for field in
             ("logprob", "bytes.*", "top_logprobs.*.logprob", "top_logprobs.*.bytes.*")}
REPLY_NOT_CONTENT = Paths({
    "id": ISSUED_ID, "object": Enum("chat.completion", "chat.completion.chunk"), "created": NUMBER, "model": MODEL,
    "system_fingerprint": ISSUED_ID, "service_tier": SERVICE_TIERS, "obfuscation": OBFUSCATION, **USAGE,
    "choices.*.index": NUMBER,
    "choices.*.finish_reason": Enum("stop", "length", "tool_calls", "content_filter", "function_call"),
    **{f"choices.*.logprobs.{path}": shape for path, shape in _LOGPROBS.items()},
    "choices.*.message.role": Enum("assistant"), "choices.*.message.tool_calls.*.id": ISSUED_ID,
    "choices.*.message.tool_calls.*.type": _TOOL_TYPES, "choices.*.message.audio.id": ISSUED_ID,
    "choices.*.message.audio.expires_at": NUMBER, "choices.*.message.annotations.*.type": Enum("url_citation"),
    "choices.*.message.annotations.*.url_citation.start_index": NUMBER,
    "choices.*.message.annotations.*.url_citation.end_index": NUMBER,
    "choices.*.delta.role": _ROLES, "choices.*.delta.tool_calls.*.index": NUMBER,
    "choices.*.delta.tool_calls.*.id": ISSUED_ID, "choices.*.delta.tool_calls.*.type": _TOOL_TYPES,
    "choices.*.delta.audio.id": ISSUED_ID, "choices.*.delta.audio.expires_at": NUMBER,
}, tokens={"choices.*.logprobs.content": "token", "choices.*.logprobs.refusal": "token"})
SORTER = Sorter(vocabulary.OPENAI_CHAT)
_DELTA_CALL = REPLY_NOT_CONTENT.at("choices", 0, "delta", "tool_calls", 0)  # a streamed tool call's own fields
_DELTA_TEXT = ("content", "refusal")
_DELTA_THOUGHTS = ("reasoning_content", "reasoning")


class OpenAIChatDialect(OpenAIDialect):
    endpoint = "chat.completions"
    operation = "chat"
    request_not_content = REQUEST_NOT_CONTENT
    reply_not_content = event_not_content = REPLY_NOT_CONTENT
    surfaces = (
        Surface("request", "messages[] of role system, developer: every field", "on_model_call (system)"),
        Surface("request", "messages[] of role tool, function: every field", "on_tool_response"),
        Surface("request", "messages[] of every other role: content, tool_calls, function_call, refusal, name, "
                           "any other field; image and file data as media, text types and PDFs as text too", "on_model_call (prompt)"),
        Surface("request", "tools[], functions[]: each definition whole (function, custom, grammar, schema)",
                "on_tool_call (definition)"),
        Surface("request", "every other field (prediction, response_format, metadata, stop, user...)",
                "on_model_call (prompt)"),
        Surface("reply", "choices[].message.tool_calls[], function_call; streamed tool_calls deltas",
                "on_tool_call"),
        Surface("reply", "choices[].message.reasoning_content, reasoning (and their deltas)",
                "on_model_response (thoughts)"),
        Surface("reply", "everything else: content, refusal, audio.transcript, annotations, any other field; "
                         "each choice its own text", "on_model_response"),
    )

    def usage(self, body: Any) -> Usage | None:
        return openai_usage(body)

    def stream_usage(self, event: StreamEvent) -> Usage | None:
        return openai_stream_usage(event)

    def references(self, body: dict[str, Any]) -> list[StoredReference]:
        """``file.file_id`` parts, and an assistant message's ``audio.id`` (the provider's stored audio reply)."""
        found: list[StoredReference] = []
        messages = body.get("messages")
        for number, message in enumerate(messages if isinstance(messages, list) else ()):
            message = as_dict(message)
            audio = message.get("audio")
            if isinstance(audio, dict) and audio.get("id") is not None:
                found.append(StoredReference(f"messages[{number}].audio.id", "audio", as_str(audio["id"])))
            parts = message.get("content")
            for index, part in enumerate(parts if isinstance(parts, list) else ()):
                file = as_dict(as_dict(part).get("file"))
                if file.get("file_id") is not None:
                    found.append(StoredReference(f"messages[{number}].content[{index}].file.file_id", "file",
                                                 as_str(file["file_id"])))
        return found

    def request_view(self, body: dict[str, Any], model: str) -> RequestView:
        view = RequestView(model=model)
        prompt: list[str] = []
        system: list[str] = []
        call_names: dict[str, str] = {}
        for key, value, node in SORTER.fields(body, REQUEST_NOT_CONTENT.root, prompt):
            if key == "messages":
                for _, message, below in SORTER.items(value, node, prompt):
                    self._message(message, below, view, prompt, system, call_names)
            elif key in ("tools", "functions"):
                for _, tool, below in SORTER.items(value, node, prompt):
                    view.tools.append(_definition(tool, below))
            else:
                SORTER.add(prompt, value, node)
        view.set_prompt(prompt)
        view.set_system(system)
        return view

    def _message(
        self, message: Any, node: Node | None, view: RequestView, prompt: list[str], system: list[str],
        call_names: dict[str, str],
    ) -> None:
        role = as_str(as_dict(message).get("role"))
        if role in TOOL_ROLES:
            result: list[str] = []
            for key, value, below in SORTER.fields(message, node, result):
                add_parts(SORTER, result, value, below, Inline(view, tool_reader(view))) if key == "content" else (
                    SORTER.add(result, value, below))
            call_id = as_str(as_dict(message).get("tool_call_id"))
            name = call_names.get(call_id, "unknown") if role == "tool" else as_str(as_dict(message).get("name"))
            view.tool_results.append(ToolResult(name=name or "unknown", content=joined(result), call_id=call_id))
            return
        sink = system if role in SYSTEM_ROLES else prompt
        inline = Inline(view, "system" if role in SYSTEM_ROLES else "prompt")
        for key, value, below in SORTER.fields(message, node, sink):
            if key == "content":
                add_parts(SORTER, sink, value, below, inline)
            elif key in ("tool_calls", "function_call"):  # the model's own calls, read back as history
                calls = value if isinstance(value, list) else [value]
                for call in calls:
                    call = as_dict(call)
                    function = as_dict(call.get("function")) or as_dict(call.get("custom")) or call
                    call_names[as_str(call.get("id"))] = as_str(function.get("name"))
                SORTER.add(sink, _decoded_arguments(value), below)
            else:
                SORTER.add(sink, value, below)

    def response_view(self, body: Any) -> ResponseView:
        view = ResponseView()
        texts: list[str] = []
        thoughts: list[str] = []
        for key, value, node in SORTER.fields(body, REPLY_NOT_CONTENT.root, texts):
            if key != "choices":
                SORTER.add(texts, value, node)
                continue
            for _, choice, below in SORTER.items(value, node, texts):
                for field, item, at in SORTER.fields(choice, below, texts):
                    if field == "message":
                        self._reply_message(item, at, view, texts, thoughts)
                    else:
                        SORTER.add(texts, item, at)
        view.text = "\n\n".join(text for text in texts if text)
        view.thoughts = joined(thoughts)
        return view

    def _reply_message(self, message: Any, node: Node | None, view: ResponseView, texts: list[str],
                       thoughts: list[str]) -> None:
        own: list[str] = []
        for key, value, below in SORTER.fields(message, node, own):
            if key in _DELTA_THOUGHTS:
                SORTER.add(thoughts, value, below)
            elif key == "tool_calls":
                for _, call, at in SORTER.items(value, below, own):
                    if isinstance(call, dict):
                        view.tool_calls.append(_tool_call(call, at))
                    else:
                        SORTER.add(own, call, at)
            elif key == "function_call":
                view.tool_calls.append(_tool_call({"function": value}, below))
            elif key == "audio":
                add_parts(SORTER, own, [{"type": "output_audio", "output_audio": value}], below, None)
            else:
                add_parts(SORTER, own, value, below, None)
        texts.append(joined(own))

    def stream_view(self, event: StreamEvent) -> StreamView:
        data = event.data
        if data.startswith("[DONE]"):
            return StreamView(finished=[ALL_CHANNELS])
        if data.startswith("{"):  # an object: read here, as ``json_object_event`` reads one
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                chunk = json_object_event(event)  # raises as it does
        else:
            chunk = json_object_event(event)
        if chunk is None:
            return EMPTY_STREAM_VIEW
        return one_delta_view(chunk) or walked_view(chunk)


def walked_view(chunk: dict[str, Any]) -> StreamView:
    """A chunk of any shape, every field read by the general walk (``Sorter``)."""
    view = StreamView()
    for key, value, below in SORTER.fields(chunk, REPLY_NOT_CONTENT.root, view.content):
        if key == "choices":
            for _, choice, at in SORTER.items(value, below, view.content):
                _choice_delta(choice, at, view)
        else:
            SORTER.add(view.content, value, below)  # an ``error`` object among them
    if chunk.get("error"):  # the openai SDKs raise on it; what else it carries was read above
        return upstream_error(view, chunk["error"])
    return view


def one_delta_view(chunk: dict[str, Any]) -> StreamView | None:
    """The chunk a model streams token by token, read without the general walk; None for any other shape.

    That chunk is one choice whose delta holds text (``content``) and declared fields only (a role),
    beside declared fields only (id, model, created, an index, a finish reason...): what the walk
    would find in it is that text, and the choice finished if it says so. The walk costs a generator
    per level and a shape test per field, paid per event when a provider sends them one by one
    (``bench/events.py``); this reads the same fields with the same shape tests
    (``_declared``) and gives the same view (``tests/dialects/test_openai_chat_fast.py`` compares them
    on any chunk). Anything else, even a null where a string was, goes the general way.
    """
    # A stream's chunks repeat all but their text: the fields around ``choices`` and around ``delta`` equal
    # to the last ones found declared are declared too (``_LAST_FOUND``); other fields ask ``_declared``'s
    # memory first, without the call.
    seen, scalars, last = _SEEN_DECLARED, _SCALARS, _LAST_FOUND
    envelope = chunk.copy()
    choices = envelope.pop("choices", None)
    if envelope != last[0]:
        for key, value in envelope.items():
            if not ((type(value) in scalars and (_ROOT, key, value) in seen) or _declared(_ROOT, key, value)):
                return None
        last[0] = envelope
    if type(choices) is not list or len(choices) != 1 or type(choice := choices[0]) is not dict:
        return None
    around = choice.copy()
    delta = around.pop("delta", None)
    if around != last[1]:
        for key, value in around.items():
            if not ((type(value) in scalars and (_CHOICE, key, value) in seen) or _declared(_CHOICE, key, value)):
                return None
        last[1] = around
    if type(delta) is not dict:
        return None
    index = choice.get("index", 0)
    channel = stream_key(index) if isinstance(index, (list, dict)) else index
    text = ""
    for key, value in delta.items():
        if key == "content" and type(value) is str and _CONTENT_IS_TEXT:
            text = value
        elif not ((type(value) in scalars and (_DELTA, key, value) in seen) or _declared(_DELTA, key, value)):
            return None
    if choice.get("finish_reason"):
        return StreamView(text=[(channel, text)] if text else [], finished=[channel])
    # A token's event (most of a stream): a view with no list but its text (``TokenView``).
    return TokenView(channel, text) if text else StreamView()


def _declared(node: Node, key: str, value: Any) -> bool:
    """``key: value`` is a field that holds no content, as ``Sorter.fields`` reads one: a word of the API
    whose value is null, or fits its declared leaf's shape (or is a number or boolean there)."""
    scalar = type(value) in _SCALARS
    if scalar and (node, key, value) in _SEEN_DECLARED:
        return True
    children = node.children
    below = children.get(key, children.get("*"))
    if key not in vocabulary.OPENAI_CHAT and (below is None or not below.named):
        return False  # the key itself is content
    if value is not None:  # a null holds nothing to read, wherever it is (``logprobs``, ``usage``, ``refusal``)
        if below is None or not below.leaf:
            return False
        if isinstance(value, str):
            if below.fits is None or not below.fits(value):
                return False
        elif isinstance(value, (dict, list)):
            return False
    if scalar:
        if len(_SEEN_DECLARED) >= _SEEN_MOST:
            _SEEN_DECLARED.clear()
        _SEEN_DECLARED.add((node, key, value))
    return True


# Declared fields already found to hold no content (a stream's id, model, object, creation time, a null
# finish reason, in each of its chunks): their tests run once per stream, not once per event. Only what
# fits a declared shape is kept, never content; a number, boolean or null at a declared leaf is never
# content, whatever its value (``True == 1`` sharing an entry is sound: both are declared there alike).
_SEEN_DECLARED: set[tuple[Node, str, Any]] = set()
_SCALARS = frozenset({str, int, float, bool, type(None)})
# The fields around ``choices`` and around a choice's ``delta`` of the last chunk whose fields there were all
# found declared (``one_delta_view``). Equal fields are declared alike: such fields hold only strings, numbers,
# booleans and nulls (a list or object there is never declared), and ``==`` equates no two of those that
# ``_declared`` tells apart (``True == 1 == 1.0`` are all numbers at a declared leaf; NaN equals nothing).
_LAST_FOUND: list[dict[str, Any] | None] = [None, None]
_SEEN_MOST = 4096
_ROOT = REPLY_NOT_CONTENT.root
_CHOICE = _ROOT.children["choices"].children["*"]
_DELTA = _CHOICE.children["delta"]
# The delta's text is read as text, its key no content, only while the declarations say so.
_CONTENT_IS_TEXT = "content" in _DELTA_TEXT and "content" in vocabulary.OPENAI_CHAT and _DELTA.child("content") is None


def _choice_delta(choice: Any, node: Node | None, view: StreamView) -> None:
    """One choice's part of a chunk: its text, thoughts and tool-call fragments on its own channel."""
    if not isinstance(choice, dict):
        SORTER.add(view.content, choice, node)
        return
    channel = stream_key(choice.get("index", 0))
    if choice.get("finish_reason"):
        view.finished.append(channel)  # this choice's calls are complete, no other choice's
    for key, value, below in SORTER.fields(choice, node, view.content):
        if key == "delta":
            _delta(channel, value, below, view)
        else:
            if key == "logprobs":  # the tokens: a text of their own across chunks; all of it, whole, here too
                view.text.extend(((channel, key, name), text) for name, text in spelled_tokens(value, below) if text)
            SORTER.add(view.content, value, below)


def _delta(channel: Any, delta: Any, node: Node | None, view: StreamView) -> None:
    for key, value, below in SORTER.fields(delta, node, view.content):
        if key in _DELTA_TEXT and isinstance(value, str):
            if value:
                view.text.append((channel, value))
        elif key in _DELTA_THOUGHTS and isinstance(value, str):
            if value:
                view.thoughts.append((channel, value))
        elif key == "tool_calls" and isinstance(value, list):
            for call in value:
                if isinstance(call, dict):
                    view.tool_fragments.append(_fragment(channel, call))
                else:
                    SORTER.add(view.content, call, None)
        elif key == "function_call" and isinstance(value, dict):
            legacy = value
            view.tool_fragments.append(ToolFragment(
                key=(channel, "function_call"), name=as_str(legacy.get("name")) or None,
                arguments=as_str(legacy.get("arguments")),
            ))
        elif key == "audio" and isinstance(value, dict):
            transcript = value.get("transcript")
            if isinstance(transcript, str) and transcript:
                view.text.append((channel, transcript))
            rest = {k: v for k, v in value.items() if k not in ("transcript", "data")}
            SORTER.add(view.content, rest, below)
        else:
            SORTER.add(view.content, value, below)


def _fragment(channel: Any, call: dict[str, Any]) -> ToolFragment:
    """A streamed piece of a function or custom tool call; whatever else it carries is checked with it."""
    function = as_dict(call.get("function")) or as_dict(call.get("custom"))
    arguments = function.get("arguments", function.get("input"))
    extra = {k: v for k, v in call.items() if k not in ("function", "custom")}
    extra.update({k: v for k, v in function.items() if k not in ("name", "arguments", "input")})
    text = as_str(arguments)
    if extra:  # fields we do not know, and an id or type outside its shape: part of what the call carries
        text += SORTER.text(extra, _DELTA_CALL)
    return ToolFragment(
        key=(channel, stream_key(call.get("index", 0))),
        name=function.get("name") or None,
        call_id=call.get("id") or None,
        arguments=text,
    )


def _definition(tool: Any, node: Node | None) -> ToolDefinition:
    """A tool definition, whole: its name and description, and every other content string as ``content``."""
    data = as_dict(tool)
    function = as_dict(data.get("function")) or as_dict(data.get("custom")) or data
    return ToolDefinition(
        name=as_str(function.get("name")) or as_str(data.get("type")) or "unknown",
        description=as_str(function.get("description")),
        parameters=as_dict(function.get("parameters")),
        content=SORTER.text(tool, node),
    )


def _tool_call(call: Any, node: Node | None) -> ToolCall:
    """A reply's tool call: arguments decoded leniently; anything else it carries checked with them."""
    call = as_dict(call)
    function = as_dict(call.get("function")) or as_dict(call.get("custom"))
    raw = function.get("arguments", function.get("input"))
    arguments = parse_arguments(raw) if "arguments" in function else ({"input": raw} if isinstance(raw, str) else {})
    extra: dict[str, Any] = {k: v for k, v in call.items() if k not in ("function", "custom")}
    extra.update({k: v for k, v in function.items() if k not in ("name", "arguments", "input")})
    text = SORTER.text(extra, node) if extra else ""  # its id and type, fitting their shapes, are not
    if text:
        arguments = {**arguments, "_other": text}
    return ToolCall(name=as_str(function.get("name")), arguments=arguments, call_id=as_str(call.get("id")))


def _decoded_arguments(value: Any) -> Any:
    """Calls as history, with their arguments decoded as the model reads them (escapes undone)."""
    calls = value if isinstance(value, list) else [value]
    decoded = []
    for call in calls:
        call = dict(as_dict(call)) or call
        if isinstance(call, dict):
            for holder in ("function", "custom"):
                inner = as_dict(call.get(holder))
                if isinstance(inner.get("arguments"), str):
                    call[holder] = {**inner, "arguments": parse_arguments(inner["arguments"])}
        decoded.append(call)
    return decoded if isinstance(value, list) else decoded[0]
