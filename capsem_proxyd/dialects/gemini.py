"""Google Gemini ``generateContent`` / ``streamGenerateContent`` (v1 and v1beta).

Deny-by-default like every dialect (``content.py``). The REST API reads
camelCase and snake_case field names alike, so every declaration covers both
spellings, and a request giving one field under both is refused: which one
the provider reads is its choice, and we would check the other.

In a request, ``systemInstruction`` is the system instructions,
``functionResponse`` parts are tool results (name, response and parts), each
``functionDeclarations`` entry (and every other tool) is a tool definition,
and every other part or field the model reads (text, the model's earlier
calls, code and its results, file references, response schemas, stop
sequences...) is the prompt; ``inlineData`` is media.

In a reply each candidate is its own text (``candidateCount >= 2``): text
parts grow it, thought parts its thoughts, a ``functionCall`` is a tool call
(streamed arguments, ``partialArgs``, are assembled by their JSON path), and
everything else a candidate carries (code-execution results, grounding and
citation metadata, URL context) is text the client receives.
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
    DURATION,
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
    refuse_double_spellings,
    spelled_tokens,
)
from capsem_proxyd.dialects.framing import (
    JSONArrayDecoder,
    SSEDecoder,
    StreamDecoder,
    StreamEvent,
    encode_json_array_error,
)
from capsem_proxyd.dialects.media_text import Inline, tool_reader
from capsem_proxyd.dialects.query import FLAG, KeyCarriers, QueryParams, known
from capsem_proxyd.dialects.text_runs import TextRun
from capsem_proxyd.errors import ProxyError, decision_fields
from capsem_proxyd.views import (
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

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def snake(name: str) -> str:
    return "".join(f"_{char.lower()}" if char.isupper() else char for char in name)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def spellings(pattern: str) -> tuple[str, str]:
    """A declared path in camelCase and in snake_case (every segment): the REST API reads both."""
    segments = pattern.split(".")
    return ".".join(camel(segment) for segment in segments), ".".join(snake(segment) for segment in segments)


def both_spellings(*groups: dict[str, Shape], tokens: dict[str, str] | None = None) -> Paths:
    """``Paths`` declared in camelCase, walked in both spellings."""
    return Paths(*groups, tokens=tokens, spellings=spellings)


def _under(prefix: str, fields: dict[str, Shape]) -> dict[str, Shape]:
    return {f"{prefix}.{path}": shape for path, shape in fields.items()}


# snake_case field name -> its camelCase twin, for refusing a field given both ways.
CAMEL_TWINS = {snake(word): word for word in vocabulary.GEMINI if snake(word) != word}

_MODALITY = Enum(*api_values.GEMINI_MODALITIES)
_VOICE = Enum("Zephyr", "Puck", "Charon", "Kore", "Fenrir", "Leda", "Orus", "Aoede", "Callirrhoe", "Autonoe",
              "Enceladus", "Iapetus", "Umbriel", "Algieba", "Despina", "Erinome", "Algenib", "Rasalgethi",
              "Laomedeia", "Achernar", "Alnilam", "Schedar", "Gacrux", "Pulcherrima", "Achird", "Zubenelgenubi",
              "Vindemiatrix", "Sadachbia", "Sadaltager", "Sulafat", name="a prebuilt voice's name")
_LANGUAGE = Id(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}", "a language tag")
_TASK_TYPES = Enum("TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY",
                   "CLASSIFICATION", "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY")
# A part's own fields: flags, the signature the provider sealed, media types, enums, a video's clip. A
# client's ids (``functionCall.id``, ``functionResponse.id``) are content: the API takes any string there.
_PART = {
    "thought": BOOLEAN, "thoughtSignature": ENCRYPTED, "inlineData.mimeType": MIME_TYPE, "fileData.mimeType": MIME_TYPE,
    "functionResponse.willContinue": BOOLEAN, "functionResponse.scheduling": Enum(*api_values.GEMINI_SCHEDULINGS),
    "executableCode.language": Enum(*api_values.GEMINI_LANGUAGES),
    "codeExecutionResult.outcome": Enum(*api_values.GEMINI_OUTCOMES),
    "videoMetadata.startOffset": DURATION, "videoMetadata.endOffset": DURATION, "videoMetadata.fps": NUMBER,
    "mediaResolution.level": Enum(*api_values.GEMINI_MEDIA_RESOLUTIONS),
}
_CONTENT = {"role": Enum("user", "model"), **_under("parts.*", _PART)}
_VOICE_CONFIG = {"prebuiltVoiceConfig.voiceName": _VOICE}
_GENERATION = {
    **{field: NUMBER for field in ("temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "presencePenalty",
                                   "frequencyPenalty", "seed", "logprobs", "thinkingConfig.thinkingBudget")},
    "responseMimeType": MIME_TYPE, "responseModalities.*": _MODALITY, "responseLogprobs": BOOLEAN,
    "enableEnhancedCivicAnswers": BOOLEAN, "thinkingConfig.includeThoughts": BOOLEAN,
    "thinkingConfig.thinkingLevel": Enum(*api_values.GEMINI_THINKING_LEVELS),
    "mediaResolution": Enum(*api_values.GEMINI_MEDIA_RESOLUTIONS), "speechConfig.languageCode": _LANGUAGE,
    **_under("speechConfig.voiceConfig", _VOICE_CONFIG),
    **_under("speechConfig.multiSpeakerVoiceConfig.speakerVoiceConfigs.*.voiceConfig", _VOICE_CONFIG),
    "imageConfig.aspectRatio": Enum("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"),
    "imageConfig.imageSize": Enum("1K", "2K", "4K"),
}
REQUEST_NOT_CONTENT = both_spellings({
    "model": MODEL, "cachedContent": REFERENCE, "safetySettings.*.category": Enum(*api_values.GEMINI_HARM_CATEGORIES),
    "safetySettings.*.threshold": Enum(*api_values.GEMINI_HARM_THRESHOLDS),
    "safetySettings.*.method": Enum(*api_values.GEMINI_HARM_METHODS),
    "toolConfig.functionCallingConfig.mode": Enum(*api_values.GEMINI_CALLING_MODES),
    **_under("generationConfig", _GENERATION), **_under("contents.*", _CONTENT), **_under("systemInstruction", _CONTENT),
    "tools.*.functionDeclarations.*.behavior": Enum(*api_values.GEMINI_BEHAVIORS),
    # countTokens / embedContent / batchEmbedContents
    "taskType": _TASK_TYPES, "outputDimensionality": NUMBER, "requests.*.model": MODEL,
    "requests.*.taskType": _TASK_TYPES, "requests.*.outputDimensionality": NUMBER, **_under("content", _CONTENT),
    **_under("requests.*.content", _CONTENT),
})
_RATING = {"category": Enum(*api_values.GEMINI_HARM_CATEGORIES), "probability": Enum(*api_values.GEMINI_HARM_PROBABILITIES),
           "severity": Enum(*api_values.GEMINI_HARM_SEVERITIES), "blocked": BOOLEAN, "probabilityScore": NUMBER,
           "severityScore": NUMBER}
# A reply's parts: the provider's own call ids are issued ids. Its logprobs are its text token by token
# and their alternatives: content (the numbers are not).
_REPLY_PART = {**_PART, "functionCall.id": ISSUED_ID}
_CANDIDATE = {
    "index": NUMBER, "finishReason": Enum(*api_values.GEMINI_FINISH_REASONS), **_under("safetyRatings.*", _RATING),
    "avgLogprobs": NUMBER, "tokenCount": NUMBER, "content.role": Enum("user", "model"),
    **_under("content.parts.*", _REPLY_PART), "logprobsResult.logProbabilitySum": NUMBER,
    "logprobsResult.chosenCandidates.*.logProbability": NUMBER, "logprobsResult.chosenCandidates.*.tokenId": NUMBER,
    "logprobsResult.topCandidates.*.candidates.*.logProbability": NUMBER,
    "logprobsResult.topCandidates.*.candidates.*.tokenId": NUMBER,
    "urlContextMetadata.urlMetadata.*.urlRetrievalStatus": Enum(*api_values.GEMINI_URL_STATUSES),
}
_USAGE = {f"{details}.*.modality": _MODALITY for details in (
    "promptTokensDetails", "cacheTokensDetails", "candidatesTokensDetails", "toolUsePromptTokensDetails")}
REPLY_NOT_CONTENT = both_spellings({
    **_under("usageMetadata", _USAGE), "usageMetadata.trafficType": Enum(*api_values.GEMINI_TRAFFIC_TYPES),
    "modelVersion": MODEL, "responseId": ISSUED_ID, "createTime": TIMESTAMP,
    "promptFeedback.blockReason": Enum(*api_values.GEMINI_BLOCKED_REASONS),
    **_under("promptFeedback.safetyRatings.*", _RATING), **_under("candidates.*", _CANDIDATE),
}, tokens={"candidates.*.logprobsResult.chosenCandidates": "token"})
# Some request fields pull stored content into the model's context, see ``references``: cached content,
# files uploaded to the Files API (``fileData`` naming one), File Search stores.
SORTER = Sorter(vocabulary.GEMINI)
_CALL_NODE = REPLY_NOT_CONTENT.at("candidates", 0, "content", "parts", 0, "functionCall")  # a reply's call
_FUNCTION_RESPONSE = ("functionResponse", "function_response")
_FUNCTION_CALL = ("functionCall", "function_call")
_LOGPROBS = ("logprobsResult", "logprobs_result")
_INLINE = ("inlineData", "inline_data")
_NOT_TEXT = frozenset({*_FUNCTION_RESPONSE, *_INLINE})  # a part with these is no text part, whatever text it has
_FILE_DATA = ("fileData", "file_data")
_REFERRING = frozenset({*_FILE_DATA, *_FUNCTION_RESPONSE})  # the part fields a reference is found in
_SYSTEM = ("systemInstruction", "system_instruction")
_DECLARATIONS = ("functionDeclarations", "function_declarations")


def field(container: dict[str, Any], camel_name: str, snake_name: str) -> Any:
    value = container.get(camel_name)
    return container.get(snake_name) if value is None else value


# Where Google's front end reads a credential: the API key (header or ?key=) and an OAuth token.
KEY_CARRIERS = KeyCarriers(("x-goog-api-key", "authorization"), ("key", "$key", "access_token", "$access_token"))
# Google's system parameters that carry no content, also under their $-names. A field mask is strict
# lowerCamelCase JSON names, so a free string (capsem_block) is outside it and checked.
QUERY_PARAMS = QueryParams(known({
    "alt": Id(r"(json|sse|proto|media)(;enum-encoding=int)?", "a reply format"),
    "fields": Id(r"\*|[a-z][A-Za-z0-9]*(?:[./,()*]+[a-z][A-Za-z0-9]*)*[)*]*", "a field mask"),
    "prettyPrint": FLAG,
    ".xgafv": Enum("1", "2"),  # Google's name is $.xgafv
}, dollar=True), keys=KEY_CARRIERS.params)


class GeminiDialect(Dialect):
    provider = "gemini"
    operation = "generate_content"
    key_carriers = KEY_CARRIERS
    query_params = QUERY_PARAMS
    request_not_content = REQUEST_NOT_CONTENT
    reply_not_content = event_not_content = REPLY_NOT_CONTENT
    # The JS SDK (so Gemini CLI) tests JSON.parse on each read fetch hands it, and Node's fetch
    # joins HTTP chunks that wait in the socket together: an error read together with the text
    # before it is "Incomplete JSON segment", which Gemini CLI retries, sending the blocked turn to
    # the model again. A pause before the error lets the client read the text first; a client slower
    # than this still retries (seen on a loaded 2-core machine with no pause; never with it).
    stream_error_gap = 0.3
    double_spellings = CAMEL_TWINS
    surfaces = (
        Surface("request", "systemInstruction (system_instruction)", "on_model_call (system)"),
        Surface("request", "functionResponse parts: name, response, parts", "on_tool_response"),
        Surface("request", "tools[]: each functionDeclarations entry whole (parameters, response schemas), "
                           "every other tool", "on_tool_call (definition)"),
        Surface("request", "every other part (text, functionCall history, code and results, fileData) and field "
                           "(responseJsonSchema, stopSequences, labels...); inlineData as media, text types and PDFs as text too",
                "on_model_call (prompt)"),
        Surface("reply", "functionCall parts, partialArgs assembled by JSON path", "on_tool_call"),
        Surface("reply", "parts with thought: true", "on_model_response (thoughts)"),
        Surface("reply", "everything else a candidate carries (text, code-execution results, grounding, "
                         "citations, URL context); each candidate its own text", "on_model_response"),
    )

    def usage(self, body: Any) -> Usage | None:
        """``usageMetadata``: ``promptTokenCount`` (cached included); output is the candidates'
        tokens plus ``thoughtsTokenCount`` (billed as output); ``modelVersion`` is the model."""
        body = as_dict(body)
        usage = as_dict(body.get("usageMetadata"))
        model = as_str(body.get("modelVersion")) or None
        if not usage and model is None:
            return None
        output = sum_counts(usage.get("candidatesTokenCount"), usage.get("thoughtsTokenCount"))
        return Usage(token_count(usage.get("promptTokenCount")), output, model)

    def stream_usage(self, event: StreamEvent) -> Usage | None:
        """Each chunk carries the usage so far; the last one's is the reply's."""
        chunk = parse_usage_event(event, '"usageMetadata"')
        return self.usage(chunk) if chunk is not None else None

    endpoint = "generateContent"

    def __init__(self, endpoint: str | None = None) -> None:
        if endpoint is not None:
            self.endpoint = endpoint

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return headers.get("x-goog-api-key") or query.get("key") or None

    def wants_stream(self, body: dict[str, Any], query: Mapping[str, str], path_stream: bool) -> bool:
        return path_stream

    def stream_decoder(self, content_type: str) -> StreamDecoder | None:
        """By the reply's own content type (SSE or the streamed JSON array), whatever ``alt`` said."""
        if content_type.startswith("text/event-stream"):
            return SSEDecoder()
        if content_type.startswith("application/json") or not content_type:
            return JSONArrayDecoder()
        return None

    def stream_error(self, error: ProxyError, started: bool, media_type: str) -> bytes:
        """In an SSE reply the bare error object on a line of its own, not an SSE ``data:`` frame; in the
        streamed JSON array, an element closing the array.

        The reply's own media type decides, not the request's ``alt``: an SSE
        reply to a request without ``alt=sse`` ends in SSE too.

        The JS SDK (@google/genai, so Gemini CLI) raises only on a network read
        that parses as JSON ``{"error": {"code": 4xx/5xx}}``; it hands a
        ``data:`` frame on as a reply without candidates, and Gemini CLI then
        retries ("Model stream ended without a finish reason"). google-genai
        (Python) reads a bare JSON object in an SSE stream too and raises.
        """
        body = self.error_body(error)
        if media_type == SSEDecoder.media_type:
            return orjson.dumps(body) + b"\r\n"
        return encode_json_array_error(body, started)

    def error_body(self, error: ProxyError) -> dict[str, Any]:
        """``{"error": {code, message, status}}``; "error" must stay the first key
        (google-genai recognises an error chunk in a stream by that prefix)."""
        inner: dict[str, Any] = {
            "code": error.status,
            "message": error.message,
            "status": _STATUS_NAMES.get(error.status, "UNKNOWN"),
        }
        body: dict[str, Any] = {"error": inner}
        if error.decision is not None:
            inner["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": error.code.upper(),
                    "domain": "capsem-proxyd",
                    "metadata": decision_fields(error.decision),
                }
            ]
            body["detail"] = f"Request blocked by security policy: {error.decision.details}"
        return body

    def references(self, body: dict[str, Any]) -> list[StoredReference]:
        return references(body)

    def request_view(self, body: dict[str, Any], model: str) -> RequestView:
        refuse_double_spellings(body, CAMEL_TWINS)
        return self.request_view_of_parsed(body, model)

    def request_view_of_parsed(self, body: dict[str, Any], model: str) -> RequestView:
        view = RequestView(model=model)
        prompt: list[str] = []
        system: list[str] = []
        for key, value, node in SORTER.fields(body, REQUEST_NOT_CONTENT.root, prompt):
            if key == "contents":
                for _, content, below in SORTER.items(value, node, prompt):
                    read_content(content, below, prompt, view)
            elif key in _SYSTEM:
                read_content(value, node, system, view, "system")
            elif key == "tools":
                for _, tool, below in SORTER.items(value, node, prompt):
                    _tool_definitions(tool, below, view)
            else:
                SORTER.add(prompt, value, node)
        view.set_prompt(prompt)
        view.set_system(system)
        return view

    def response_view(self, body: Any) -> ResponseView:
        view = ResponseView()
        texts: list[str] = []
        thoughts: list[str] = []
        for key, value, node in SORTER.fields(body, REPLY_NOT_CONTENT.root, texts):
            if key != "candidates":
                SORTER.add(texts, value, node)
                continue
            for _, candidate, below in SORTER.items(value, node, texts):
                own: list[str] = []
                for name, item, at in SORTER.fields(candidate, below, own):
                    if name == "content":
                        _reply_content(item, at, own, thoughts, view)
                    else:
                        SORTER.add(own, item, at)
                texts.append("".join(own))
        view.text = "\n\n".join(text for text in texts if text)
        view.thoughts = joined(thoughts)
        return view

    def stream_view(self, event: StreamEvent) -> StreamView:
        chunk = json_object_event(event)
        if chunk is None:
            return self._bare_lines_view(event) if event.raw.strip() else EMPTY_STREAM_VIEW
        view = StreamView()
        for key, value, below in SORTER.fields(chunk, REPLY_NOT_CONTENT.root, view.content):
            if key == "candidates":
                for _, candidate, at in SORTER.items(value, below, view.content):
                    _candidate_delta(candidate, at, view)
            else:
                SORTER.add(view.content, value, below)  # an ``error`` object among them
        if is_error_chunk(chunk):
            return upstream_error(view, chunk["error"])
        return view

    def _bare_lines_view(self, event: StreamEvent) -> StreamView:
        """An SSE event without data: google-genai reads every line that is no ``data: `` line as JSON
        (the API sends its in-stream errors so, over several lines), and yields it as a chunk.

        So the lines are read as that client reads them: a JSON object is a
        chunk (an error chunk, or candidates it shows); anything else is
        checked as text (the SDK raises with it in the message).
        """
        lines = [line for line in event.raw.decode("utf-8", "replace").splitlines()
                 if line.strip() and not line.startswith("data: ")]
        text = "".join(lines)
        try:
            chunk = orjson.loads(text)
        except orjson.JSONDecodeError:
            chunk = None
        if isinstance(chunk, dict):
            return self.stream_view(StreamEvent(raw=event.raw, data=text))
        return StreamView(content=[text]) if text else EMPTY_STREAM_VIEW


def is_error_chunk(chunk: dict[str, Any]) -> bool:
    """Whether a client ends the stream on ``chunk`` as an error, so that nothing it held back follows.

    google-genai raises only on a chunk whose JSON begins ``{"error":``, and
    @google/genai only on an error object with a ``code``: an ``error`` key
    elsewhere, or one of any other value (``null``, ``{}``), is read past and
    the candidates next to it are text the client shows. Either way every
    string the chunk carries is checked before it goes.
    """
    error = chunk.get("error")
    return isinstance(error, dict) and "code" in error and next(iter(chunk)) == "error"


def read_content(content: Any, node: Node | None, sink: list[str], view: RequestView, reader: str = "prompt") -> None:
    """A ``Content`` (or a bare string) into ``sink``: inline data as media, function responses as tool results.

    Adjacent text parts are one text (``text_runs.py``); the text of
    text-typed inline data joins ``sink``, a PDF's is extracted later for
    ``reader`` (``media_text.py``).
    """
    for key, value, below in SORTER.fields(content, node, sink):
        if key != "parts" or not isinstance(value, list):
            SORTER.add(sink, value, below)
            continue
        _request_parts(value, below, sink, view, reader)


def _request_parts(parts: list[Any], node: Node | None, sink: list[str], view: RequestView, reader: str | int) -> None:
    run = TextRun(sink)
    for _, part, at in SORTER.items(parts, node, sink):
        text = part.get("text") if isinstance(part, dict) else None
        if isinstance(text, str) and _NOT_TEXT.isdisjoint(part):
            run.add(text)
            if len(part) > 1:  # thought, thoughtSignature, fields added next month
                SORTER.add(sink, {k: v for k, v in part.items() if k != "text"}, at)
            continue
        run.end()
        _request_part(part, at, sink, view, reader)
    run.end()


def _request_part(part: Any, node: Node | None, sink: list[str], view: RequestView, reader: str | int) -> None:
    data = as_dict(part)
    response = field(data, *_FUNCTION_RESPONSE)
    if isinstance(response, dict):
        result: list[str] = []
        own = tool_reader(view)
        for key, value, below in SORTER.fields(response, node.child(_FUNCTION_RESPONSE[0]) if node else None, result):
            if key == "parts" and isinstance(value, list):
                _request_parts(value, below, result, view, own)
            else:
                SORTER.add(result, value, below)
        view.tool_results.append(ToolResult(name=as_str(response.get("name")) or "unknown", content=joined(result),
                                            call_id=as_str(response.get("id"))))
        part = {key: value for key, value in data.items() if key not in _FUNCTION_RESPONSE}
        if not part:  # the function response was all the part held (an agent's every tool result)
            return
    inline = field(data, *_INLINE)
    if isinstance(inline, dict) and isinstance(inline.get("data"), str):
        mime_type = as_str(field(inline, "mimeType", "mime_type")) or "application/octet-stream"
        Inline(view, reader).take(MediaPart(data=decode_base64(inline["data"], "inlineData.data"), mime_type=mime_type),
                                  sink)
        part = _without_inline_data(as_dict(part))
    SORTER.add(sink, part, node)


def _without_inline_data(part: dict[str, Any]) -> dict[str, Any]:
    """The part with its inline bytes (now media) taken out, everything else it carries kept."""
    return {key: ({k: v for k, v in value.items() if k != "data"} if key in _INLINE and isinstance(value, dict) else value)
            for key, value in part.items()}


def references(body: dict[str, Any], prefix: str = "") -> list[StoredReference]:
    """Every reference of a ``generateContent`` request (``prefix``: where it sits in a larger body)."""
    found: list[StoredReference] = []
    cached = field(body, "cachedContent", "cached_content")
    if cached is not None:
        found.append(StoredReference(f"{prefix}cachedContent", "cached_content", as_str(cached)))
    contents = body.get("contents")
    where = f"{prefix}contents"
    for number, content in enumerate(contents if isinstance(contents, list) else ()):
        content_references(content, where, number, found)
    content_references(field(body, *_SYSTEM), f"{prefix}systemInstruction", None, found)
    tools = body.get("tools")
    for number, tool in enumerate(tools if isinstance(tools, list) else ()):
        search = as_dict(field(as_dict(tool), "fileSearch", "file_search"))
        stores = field(search, "fileSearchStoreNames", "file_search_store_names")
        for index, store in enumerate(stores if isinstance(stores, list) else ()):
            found.append(StoredReference(f"{prefix}tools[{number}].fileSearch.fileSearchStoreNames[{index}]",
                                         "file_search_store", as_str(store)))
    return found


def content_references(content: Any, where: str, number: int | None, found: list[StoredReference]) -> None:
    """``fileData`` parts naming a stored file, in a content (``where[number]``) and in the function
    responses inside it; the path is spelled out only for what is found."""
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return
    for index, part in enumerate(parts):
        if not isinstance(part, dict) or _REFERRING.isdisjoint(part):  # a text part, a call...: nothing to find
            continue
        data = field(part, *_FILE_DATA)
        if data is not None:
            uri = field(as_dict(data), "fileUri", "file_uri")
            if stored_file(uri):
                found.append(StoredReference(f"{_at(where, number)}.parts[{index}].fileData.fileUri", "file",
                                             as_str(uri)))
        response = field(part, *_FUNCTION_RESPONSE)
        if isinstance(response, dict) and isinstance(response.get("parts"), list):
            content_references(response, f"{_at(where, number)}.parts[{index}].functionResponse", None, found)


def _at(where: str, number: int | None) -> str:
    return where if number is None else f"{where}[{number}]"


def stored_file(uri: Any) -> bool:
    """Whether a ``fileUri`` names a file stored with Google (the Files API, Cloud Storage), not a public
    URL the provider fetches itself (a web page, a video), which is checked as text like any URL."""
    if not isinstance(uri, str):
        return True  # no URI we can read: what the provider makes of it is unknown
    scheme, separator, rest = uri.partition("://")
    if not separator or scheme.lower() not in ("http", "https"):
        return True  # files/abc, gs://bucket/object...
    host = rest.split("/", 1)[0].rpartition("@")[2].split(":", 1)[0].lower().rstrip(".")
    return host == "googleapis.com" or host.endswith(".googleapis.com")


def _tool_definitions(tool: Any, node: Node | None, view: RequestView) -> None:
    """Each function declaration is a tool definition; any other tool (search, code execution...) too."""
    loose: list[str] = []  # content of no recognisable shape: a definition of its own
    for key, value, below in SORTER.fields(tool, node, loose):
        if key in _DECLARATIONS and isinstance(value, list):
            for _, declaration, at in SORTER.items(value, below, loose):
                data = as_dict(declaration)
                parameters = field(data, "parameters", "parametersJsonSchema") or data.get("parameters_json_schema")
                view.tools.append(ToolDefinition(
                    name=as_str(data.get("name")) or "unknown",
                    description=as_str(data.get("description")),
                    parameters=as_dict(parameters),
                    content=SORTER.text(declaration, at),
                ))
        else:
            view.tools.append(ToolDefinition(name=key, content=SORTER.text({key: value}, node)))
    if loose:
        view.tools.append(ToolDefinition(name="unknown", content=joined(loose)))


def _reply_content(content: Any, node: Node | None, texts: list[str], thoughts: list[str], view: ResponseView) -> None:
    for key, value, below in SORTER.fields(content, node, texts):
        if key != "parts" or not isinstance(value, list):
            SORTER.add(texts, value, below)
            continue
        for _, part, at in SORTER.items(value, below, texts):
            if not isinstance(part, dict):
                SORTER.add(texts, part, at)
                continue
            data = part
            call = field(data, *_FUNCTION_CALL)
            if isinstance(call, dict):
                view.tool_calls.append(_call(call))
                data = {k: v for k, v in data.items() if k not in _FUNCTION_CALL}
            inline = field(data, *_INLINE)
            if isinstance(inline, dict) and isinstance(inline.get("data"), str):
                mime_type = as_str(field(inline, "mimeType", "mime_type")) or "application/octet-stream"
                view.media.append(MediaPart(decode_base64(inline["data"], "inlineData.data"), mime_type))
                data = _without_inline_data(data)
            SORTER.add(thoughts if data.get("thought") else texts, data, at)


def _call(call: dict[str, Any]) -> ToolCall:
    arguments = as_dict(call.get("args"))
    extra = {k: v for k, v in call.items() if k not in ("args", "name")}
    text = SORTER.text(extra, _CALL_NODE) if extra else ""  # its id, fitting its shape, is not
    if text:
        arguments = {**arguments, "_other": text}
    return ToolCall(name=as_str(call.get("name")), arguments=arguments, call_id=as_str(call.get("id")))


def _candidate_delta(candidate: Any, node: Node | None, view: StreamView) -> None:
    """One candidate's part of a chunk, on its own channel."""
    if not isinstance(candidate, dict):
        SORTER.add(view.content, candidate, node)
        return
    channel = stream_key(candidate.get("index", 0))
    if field(candidate, "finishReason", "finish_reason"):
        view.finished.append(channel)
    for key, value, below in SORTER.fields(candidate, node, view.content):
        if key != "content":
            if key in _LOGPROBS:  # the tokens: a text of their own across chunks; all of it, whole, here too
                view.text.extend(((channel, key, name), text) for name, text in spelled_tokens(value, below) if text)
            SORTER.add(view.content, value, below)
            continue
        for name, item, at in SORTER.fields(value, below, view.content):
            if name != "parts" or not isinstance(item, list):
                SORTER.add(view.content, item, at)
                continue
            for number, part in enumerate(item):
                _part_delta(channel, number, part, at.child(0) if at is not None else None, view)


def _part_delta(channel: Any, number: int, part: Any, node: Node | None, view: StreamView) -> None:
    if not isinstance(part, dict):
        SORTER.add(view.content, part, node)
        return
    data = part
    text = data.get("text")
    if isinstance(text, str) and set(data) <= {"text", "thought", "thoughtSignature", "thought_signature"}:
        if text:
            (view.thoughts if data.get("thought") else view.text).append((channel, text))
        if len(data) > 1:  # the flag and the signature, checked against their shapes
            SORTER.add(view.content, {k: v for k, v in data.items() if k != "text"}, node)
        return
    call = field(data, *_FUNCTION_CALL)
    if isinstance(call, dict):
        fragment, complete = _call_fragment(channel, number, call)
        view.tool_fragments.append(fragment)
        if complete:
            view.tool_closes.append(fragment.key)
        data = {k: v for k, v in data.items() if k not in _FUNCTION_CALL}
    SORTER.add(view.content, data, node)


def _call_fragment(channel: Any, number: int, call: dict[str, Any]) -> tuple[ToolFragment, bool]:
    """A whole call (complete with its chunk), or a piece of one streamed by ``partialArgs`` (complete
    when ``willContinue`` stops); returns the fragment and whether its call is complete."""
    partial = call.get("partialArgs", call.get("partial_args"))
    more = field(call, "willContinue", "will_continue")
    key: tuple[Any, ...]
    if isinstance(partial, list) or more:
        key = (channel, "partial")
        values = [(as_str(field(as_dict(arg), "jsonPath", "json_path")), _partial_value(as_dict(arg)))
                  for arg in (partial or [])]
        fragment = ToolFragment(key=key, name=as_str(call.get("name")) or None,
                                call_id=as_str(call.get("id")) or None, values=values)
    else:
        key = (channel, "call", number, id(call))
        whole = orjson.dumps(_call(call).arguments).decode()
        fragment = ToolFragment(key=key, name=as_str(call.get("name")), call_id=as_str(call.get("id")), arguments=whole)
    return fragment, not more


def _partial_value(arg: dict[str, Any]) -> str:
    for name in ("stringValue", "string_value", "numberValue", "number_value", "boolValue", "bool_value"):
        if name in arg:
            value = arg[name]
            return value if isinstance(value, str) else orjson.dumps(value).decode()
    return ""

