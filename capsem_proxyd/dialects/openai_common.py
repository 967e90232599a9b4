"""What OpenAI's APIs (Chat Completions, Responses, Completions, embeddings...) share.

The Bearer key, the error shape, and the content parts both Chat and
Responses carry: a part's inline media (data URLs, base64 audio and files) is
decoded for the policies as CAPSEM ``Media`` (and, when its type is text,
read as text too: ``media_text.py``); adjacent text parts are one text
(``text_runs.py``); every other field of a part is content like any other.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from typing import Any

from capsem_proxyd.dialects.base import (
    Dialect,
    as_str,
    bearer_token,
    decode_base64,
    is_data_url,
    media_from_data_url,
    parse_usage_event,
    reply_usage,
)
from capsem_proxyd.dialects.content import Id, Node, Sorter
from capsem_proxyd.dialects.framing import StreamEvent
from capsem_proxyd.dialects.media_text import Inline
from capsem_proxyd.dialects.query import KeyCarriers, QueryParams
from capsem_proxyd.dialects.text_runs import TextRun
from capsem_proxyd.errors import ErrorKind, ProxyError, decision_fields
from capsem_proxyd.views import MediaPart, Usage

_ERROR_TYPES: dict[ErrorKind, str] = {
    ErrorKind.INVALID_REQUEST: "invalid_request_error",
    ErrorKind.AUTHENTICATION: "invalid_request_error",
    # A policy block: "invalid_request_error", the type OpenAI refuses flagged content with. Clients that derive a
    # status from an in-stream error's type (Vercel AI SDK) then see a final 400, not a retryable 500.
    ErrorKind.POLICY: "invalid_request_error",
    ErrorKind.NOT_FOUND: "invalid_request_error",
    ErrorKind.TOO_LARGE: "invalid_request_error",
    ErrorKind.UPSTREAM_ERROR: "api_error",
    ErrorKind.UPSTREAM_TIMEOUT: "timeout_error",
}
API_VERSION = Id(r"\d{4}-\d{2}-\d{2}(-preview)?|preview|latest|v1", "an Azure API version")
_AUDIO_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav"}


def openai_api_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    return bearer_token(headers)


def openai_error_body(error: ProxyError) -> dict[str, Any]:
    """``{"error": {message, type, param, code}}`` as the openai SDK parses it."""
    inner: dict[str, Any] = {
        "message": error.message,
        "type": _ERROR_TYPES.get(error.kind, "api_error"),
        "param": error.param,
        "code": error.code,
    }
    body: dict[str, Any] = {"error": inner}
    if error.decision is not None:
        inner["capsem"] = decision_fields(error.decision)
        body["detail"] = f"Request blocked by security policy: {error.decision.details}"
    return body


def openai_usage(body: Any) -> Usage | None:
    """``usage`` of a Chat Completions, Completions or Embeddings reply (or of a chunk).

    ``prompt_tokens`` already counts cached tokens, ``completion_tokens`` reasoning tokens.
    """
    return reply_usage(body, "prompt_tokens", "completion_tokens")


def openai_stream_usage(event: StreamEvent) -> Usage | None:
    """The usage chunk a stream ends with when the client asked for it (``stream_options.include_usage``)."""
    chunk = parse_usage_event(event, '"prompt_tokens"')
    return openai_usage(chunk) if chunk is not None else None


class OpenAIDialect(Dialect):
    """What every OpenAI API dialect shares: the Bearer key and the error shape."""

    provider = "openai"
    key_carriers = KeyCarriers(("authorization",))
    # Azure OpenAI's v1 API (an OpenAI-compatible upstream; the AzureOpenAI SDK client sends it on every call).
    query_params = QueryParams({"api-version": API_VERSION})

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return openai_api_key(headers, query)

    def error_body(self, error: ProxyError) -> dict[str, Any]:
        return openai_error_body(error)


def add_parts(sorter: Sorter, sink: list[str], content: Any, node: Node | None, media: Inline | None) -> None:
    """A message's ``content`` (a string or typed parts) into ``sink``, inline media to ``media``.

    ``media`` None (a reply): inline data is skipped, never read as text. In
    a request, adjacent text parts are one text (``text_runs.py``) and the
    text of text-typed media joins ``sink`` (``media_text.py``).
    """
    if not isinstance(content, list):
        sorter.add(sink, content, node)
        return
    run = TextRun(sink) if media is not None else None
    for _, part, below in sorter.items(content, node, sink):
        if run is not None:
            text = part.get("text") if isinstance(part, dict) else None
            if isinstance(text, str) and as_str(part.get("type")) in _TEXT_PARTS:
                run.add(text)
                if len(part) > 2:  # whatever else a text part carries
                    sorter.add(sink, {k: v for k, v in part.items() if k != "text"}, below)
                continue
            run.end()
        if isinstance(part, dict) and as_str(part.get("type")) in _MEDIA_PARTS:
            part = _without_media(part, media, sink)
        sorter.add(sink, part, below)
    if run is not None:
        run.end()


_MEDIA_PARTS = frozenset({"image_url", "input_image", "input_audio", "file", "input_file", "output_audio"})
_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})


def _without_media(part: dict[str, Any], media: Inline | None, sink: list[str]) -> dict[str, Any]:
    """The part minus its inline data, which is decoded into ``media`` (URLs and ids stay, as text)."""
    part = dict(part)
    kind = part["type"]
    if kind == "image_url":  # Chat: {"image_url": {"url": ..., "detail": ...}} or a bare URL string
        image = part.get("image_url")
        url = image if isinstance(image, str) else (image.get("url") if isinstance(image, dict) else None)
        if isinstance(url, str) and is_data_url(url):
            _append(media, sink, lambda: media_from_data_url(url, "image_url.url"))
            part["image_url"] = {k: v for k, v in image.items() if k != "url"} if isinstance(image, dict) else None
    elif kind == "input_image":  # Responses: {"image_url": "...", "file_id": ..., "detail": ...}
        if is_data_url(part.get("image_url")):
            url = part.pop("image_url")
            _append(media, sink, lambda: media_from_data_url(url, "input_image.image_url"))
    elif kind in ("input_audio", "output_audio"):  # {"input_audio": {"data": base64, "format": "wav"}}
        audio = part.get(kind)
        if isinstance(audio, dict) and isinstance(audio.get("data"), str):
            data, audio_format = audio["data"], str(audio.get("format") or "").lower()
            _append(media, sink, lambda: MediaPart(
                decode_base64(data, f"{kind}.data"), _AUDIO_TYPES.get(audio_format, f"audio/{audio_format or 'unknown'}")
            ))
            part[kind] = {k: v for k, v in audio.items() if k != "data"}
    else:  # Chat {"file": {"file_data", "filename", "file_id"}}; Responses input_file has them flat
        holder = part.get("file") if kind == "file" else part
        if isinstance(holder, dict) and isinstance(holder.get("file_data"), str):
            holder = dict(holder)
            file_data, filename = holder.pop("file_data"), str(holder.get("filename") or "")
            _append(media, sink, lambda: _file_media(file_data, filename))
            if kind == "file":
                part["file"] = holder
            else:
                part = holder
    return part


def _file_media(file_data: str, filename: str) -> MediaPart:
    if is_data_url(file_data):
        return media_from_data_url(file_data, "file_data")
    mime_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return MediaPart(data=decode_base64(file_data, "file_data"), mime_type=mime_type)


def _append(media: Inline | None, sink: list[str], decode: Any) -> None:
    if media is not None:
        media.take(decode(), sink)
