"""What every provider dialect provides to the one pipeline."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from capsem_proxyd.dialects.content import Paths, Surface
from capsem_proxyd.dialects.framing import SSEDecoder, StreamDecoder, StreamEvent, encode_sse
from capsem_proxyd.dialects.query import KeyCarriers, QueryParams
from capsem_proxyd.errors import ProxyError, bad_request, upstream_unavailable
from capsem_proxyd.views import MediaPart, RequestView, ResponseView, StoredItem, StoredReference, StreamView, Usage


class Dialect(ABC):
    """One provider API: how to read it and how to refuse in it.

    ``provider`` names the upstream it goes to (``openai``, ``gemini``,
    ``anthropic``); ``endpoint`` names the API for logs and metrics;
    ``operation`` is its OpenTelemetry GenAI operation name (``chat``,
    ``generate_content``, ``embeddings``...), empty for APIs that are no model
    call (model lists, token counts, pass-through).
    """

    provider: str
    endpoint: str
    operation: str = ""
    # What is declared NOT content in requests, replies and stream events (see content.py);
    # the README's content-surface table is checked against these.
    request_not_content: Paths = Paths()
    reply_not_content: Paths = Paths()
    event_not_content: Paths = Paths()
    # Where this API's content goes, for the README (tests/dialects/test_surfaces.py checks each).
    surfaces: tuple[Surface, ...] = ()
    # Where the provider reads a key from, and the query parameters it knows (query.py): every other
    # parameter, or a known one outside its shape, is content.
    key_carriers: KeyCarriers = KeyCarriers(("authorization",))
    query_params: QueryParams = QueryParams()
    # Seconds between the last write of a stream and the error event that cuts it, for clients
    # that recognise the error only when it arrives in a network read of its own (see GeminiDialect).
    stream_error_gap: float = 0.0
    # An API that reads a field under two spellings (Gemini: snake_case name -> camelCase twin): an
    # object giving one field both ways is refused, by the proxy's parse as it builds the object.
    double_spellings: Mapping[str, str] | None = None

    @abstractmethod
    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """The tenant's key as the client sent it, or None."""

    @abstractmethod
    def request_view(self, body: dict[str, Any], model: str) -> RequestView:
        """The security-relevant content of a request body."""

    def request_view_of_parsed(self, body: dict[str, Any], model: str) -> RequestView:
        """``request_view`` of a body read by ``proxy/body.py``'s parse with this dialect's
        ``double_spellings``, which refused what they would: not looked for again here."""
        return self.request_view(body, model)

    @abstractmethod
    def response_view(self, body: Any) -> ResponseView:
        """The security-relevant content of a complete JSON reply."""

    @abstractmethod
    def stream_view(self, event: StreamEvent) -> StreamView:
        """What one stream event adds to the reply."""

    @abstractmethod
    def error_body(self, error: ProxyError) -> dict[str, Any]:
        """The provider's JSON error object for ``error``."""

    def model(self, body: dict[str, Any], path_model: str | None) -> str:
        if path_model:
            return path_model
        model = body.get("model")
        return model if isinstance(model, str) else ""

    def wants_stream(self, body: dict[str, Any], query: Mapping[str, str], path_stream: bool) -> bool:
        return body.get("stream") is True

    def stream_decoder(self, content_type: str) -> StreamDecoder | None:
        """The decoder for a streamed reply of ``content_type`` (None: not a stream of this API).

        The reply's own content type decides, never the request: an SSE decoder
        fed something else would find no events and release nothing checked.
        """
        return SSEDecoder() if content_type.startswith("text/event-stream") else None

    def stream_error(self, error: ProxyError, started: bool, media_type: str) -> bytes:
        """The final event that ends a stream cut by the proxy, framed for the reply's ``media_type``
        (the decoder's: ``StreamDecoder.media_type``); ``started``: an event already went out."""
        return encode_sse(self.error_body(error))

    def for_request(self, body: dict[str, Any]) -> Dialect:
        """The dialect that reads the reply to ``body``: this one, unless the API's reply echoes the request
        (see ``OpenAIResponsesDialect.for_request``). Dialects are shared; what is per request is a copy."""
        return self

    def references(self, body: dict[str, Any]) -> list[StoredReference]:
        """Every place ``body`` pulls content the provider stores into the model's context.

        Declared by each API next to its non-content paths (ids are not text,
        but some ids are content the proxy never sees). No I/O and no verdict
        here: whether a reference may go is the pipeline's decision
        (``proxy/stored_content.py``). Never raises on odd shapes.

        A walk of the parsed body's structure only, never of its text: where
        the API puts references (top-level fields, parts, tools), so its cost
        follows the number of messages and parts (microseconds for a
        conversation, not the megabytes of an image). A byte search for the
        field names was tried first and dropped: it scans every byte once per
        name, slower than this walk on any body, and blind to ``\\u`` escapes.
        """
        return []

    def stores_reply(self, body: dict[str, Any]) -> bool:
        """Whether the provider keeps this request's reply under an id later requests may reference."""
        return False

    def stored_reply(self, reply: Any) -> str | None:
        """The id under which the provider keeps this complete JSON reply for later references (None: none)."""
        return None

    def stored_items(self, reply: Any) -> tuple[StoredItem, ...]:
        """What else a stored reply delivers that later requests may name (its items, sealed blobs):
        recorded with its id, admitted like it (``proxy/stored_content.py``)."""
        return ()

    def usage(self, body: Any) -> Usage | None:
        """Token usage and answering model a complete JSON reply states (None: this API states none).

        Called only when a recorder asks for usage; never raises on odd shapes.
        """
        return None

    def stream_usage(self, event: StreamEvent) -> Usage | None:
        """What one stream event states of usage and model, or None (most events: nothing).

        Called on every event only when a recorder asks for usage, after
        ``stream_view`` accepted the event; a cheap look at the event's text
        decides whether it is parsed. Later events' values replace earlier ones.
        """
        return None


def sealed_digest(blob: Any) -> str:
    """The name a sealed blob is recorded and admitted under: its SHA-256 (a blob that is no string: its JSON's)."""
    data = blob.encode() if isinstance(blob, str) else orjson.dumps(blob, option=orjson.OPT_SORT_KEYS)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_json_event(event: StreamEvent) -> Any:
    """An event's JSON data (None when it has none); a non-JSON event breaks the stream."""
    if not event.data:
        return None
    try:
        return orjson.loads(event.data)
    except orjson.JSONDecodeError:
        raise upstream_unavailable("The upstream sent a stream event that is not valid JSON.") from None


def json_object_event(event: StreamEvent) -> dict[str, Any] | None:
    """An event's JSON object (None when it carries no data); anything else breaks the stream."""
    payload = parse_json_event(event)
    if payload is not None and not isinstance(payload, dict):
        raise upstream_unavailable("The upstream sent a stream event that is not a JSON object.")
    return payload


def upstream_error(view: StreamView, error: Any) -> StreamView:
    """``view`` (all that the event carries, read as any event is read) marked as an error the upstream
    reported inside its stream, which ends the reply.

    The event is checked before it goes like any other, never relayed on its
    type alone: a client reads more of it than an error (google-genai yields
    the candidates of a chunk whose ``error`` is not its first key, the
    Responses SDK exposes ``response.failed``'s output as ``output_text``, a
    Chat chunk may carry ``choices`` next to ``error``), and shows its message.
    """
    view.error = as_str(as_dict(error).get("message")) or "upstream stream error"
    return view


def reply_usage(body: Any, input_field: str, output_field: str) -> Usage | None:
    """The token counts of a reply's ``usage`` object, under the API's names for them, and its model.

    None when the body states neither: nothing to record.
    """
    body = as_dict(body)
    usage = as_dict(body.get("usage"))
    model = as_str(body.get("model")) or None
    if not usage and model is None:
        return None
    return Usage(token_count(usage.get(input_field)), token_count(usage.get(output_field)), model)


def token_count(value: Any) -> int | None:
    """A token count as the provider stated it: a non-negative integer, else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def sum_counts(*values: Any) -> int | None:
    """The sum of the counts that are stated, None when none is."""
    counts = [count for count in map(token_count, values) if count is not None]
    return sum(counts) if counts else None


def parse_usage_event(event: StreamEvent, marker: str) -> dict[str, Any] | None:
    """An event's JSON object when its text contains ``marker`` (the cheap look first), else None."""
    if marker not in event.data:
        return None
    try:
        payload = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


def bearer_token(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def stream_key(value: Any) -> Any:
    """A JSON value usable as a key for a streamed tool call (arrays and objects become their JSON text)."""
    return orjson.dumps(value).decode() if isinstance(value, (list, dict)) else value


def parse_arguments(arguments: Any) -> dict[str, Any]:
    """Tool-call arguments as the tool will read them, decoded leniently.

    Strict JSON first (orjson); then what Python's json reads where orjson
    refuses (NaN, Infinity, numbers beyond 64 bits); text that is no JSON at
    all is kept with its JSON string escapes decoded, so ``\\u0063apsem`` is
    checked as the word a reader sees, not as its escape.
    """
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments:
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        try:
            parsed = json.loads(arguments)
        except (ValueError, RecursionError):
            return {"_raw_arguments": unescape_json(arguments)}
    return parsed if isinstance(parsed, dict) else {"_arguments": parsed}


_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/", "\\": "\\", '"': '"'}


def unescape_json(text: str) -> str:
    """``text`` with every JSON string escape replaced by the character it stands for."""

    def replace(match: re.Match[str]) -> str:
        escape = match.group(1)
        if escape[0] == "u" and len(escape) == 5:
            return chr(int(escape[1:], 16))
        return _SIMPLE_ESCAPES.get(escape, escape)

    return _ESCAPE.sub(replace, text) if "\\" in text else text


_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def decode_base64(data: str, what: str) -> bytes:
    """Standard or URL-safe base64, padding optional (what the providers accept).

    Strict on purpose: a lenient decoder that skips junk could read different
    bytes than the provider does, so anything else is refused with a 400.
    """
    try:
        return base64.b64decode(data, validate=True)  # the common case, without copies
    except (binascii.Error, ValueError):
        pass
    compact = "".join(data.split()).translate(_URLSAFE_TO_STANDARD)
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{what} is not valid base64.") from None


def is_data_url(url: Any) -> bool:
    return isinstance(url, str) and url[:5].lower() == "data:"


def media_from_data_url(url: str, what: str) -> MediaPart:
    """The bytes and MIME type of a ``data:`` URL (RFC 2397; base64 or percent-encoded)."""
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise bad_request(f"{what} is not a valid data URL.")
    mime_type, *parameters = (item.strip() for item in header.split(";"))
    if any(parameter.lower() == "base64" for parameter in parameters):
        data = decode_base64(payload, what)
    else:
        data = unquote_to_bytes(payload)
    charset = next((value.strip('"') for name, _, value in (item.partition("=") for item in parameters)
                    if name.strip().lower() == "charset"), "")
    return MediaPart(data=data, mime_type=mime_type.lower() or "text/plain", charset=charset)
