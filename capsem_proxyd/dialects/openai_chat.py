"""OpenAI Chat Completions (``POST /v1/chat/completions``), JSON and SSE."""

from __future__ import annotations

import mimetypes
from typing import Any

from capsem_proxyd.dialects.base import (
    as_dict,
    as_list,
    as_str,
    decode_base64,
    is_data_url,
    media_from_data_url,
    parse_arguments,
    parse_json_event,
    stream_key,
    text_of,
)
from capsem_proxyd.dialects.framing import StreamEvent
from capsem_proxyd.dialects.openai_common import OpenAIDialect, openai_stream_usage, openai_usage
from capsem_proxyd.errors import upstream_unavailable
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
    Usage,
)

SYSTEM_ROLES = ("system", "developer")


def content_text(content: Any, media: list[MediaPart] | None = None) -> str:
    """Text of a message ``content``: a string or a list of typed parts.

    Inline images, files and audio are decoded into ``media`` when a list is
    given (the request side) and skipped otherwise; remote URLs and file ids
    stay in the text, since the proxy never fetches anything.
    """
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for part in as_list(content):
        part = as_dict(part)
        kind = as_str(part.get("type"))
        if kind in ("text", "input_text", "output_text"):
            texts.append(as_str(part.get("text")))
        elif kind == "refusal":
            texts.append(as_str(part.get("refusal")))
        elif kind in _MEDIA_PARTS:
            texts.extend(_media_part(kind, part, media))
        elif part:
            texts.append(text_of({k: v for k, v in part.items() if k != "type"}))
    return "\n".join(text for text in texts if text)


_MEDIA_PARTS = frozenset({"image_url", "input_image", "input_audio", "file", "input_file"})
_AUDIO_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav"}


def _media_part(kind: str, part: dict[str, Any], media: list[MediaPart] | None) -> list[str]:
    """Decode one media part into ``media``; return the text it carries (URLs, names, ids)."""
    if kind == "image_url":  # Chat: {"image_url": {"url": ...}}
        image = part.get("image_url")
        url = image if isinstance(image, str) else as_str(as_dict(image).get("url"))
        return _inline_or_url(url, media, "image_url.url")
    if kind == "input_image":  # Responses: {"image_url": "...", "file_id": "..."}
        return [as_str(part.get("file_id")), *_inline_or_url(as_str(part.get("image_url")), media, "input_image.image_url")]
    if kind == "input_audio":  # Chat: {"input_audio": {"data": base64, "format": "wav"}}
        audio = as_dict(part.get("input_audio"))
        if media is not None:
            audio_format = as_str(audio.get("format")).lower()
            data = decode_base64(as_str(audio.get("data")), "input_audio.data")
            media.append(MediaPart(data=data, mime_type=_AUDIO_TYPES.get(audio_format, f"audio/{audio_format or 'unknown'}")))
        return []
    # Chat {"file": {"file_data", "filename", "file_id"}}; Responses input_file has them flat.
    file = as_dict(part.get("file")) if kind == "file" else part
    filename = as_str(file.get("filename"))
    file_data = as_str(file.get("file_data"))
    if file_data and media is not None:
        if is_data_url(file_data):
            media.append(media_from_data_url(file_data, "file_data"))
        else:
            mime_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
            media.append(MediaPart(data=decode_base64(file_data, "file_data"), mime_type=mime_type))
    return [filename, as_str(file.get("file_id")), as_str(file.get("file_url"))]


def _inline_or_url(url: str, media: list[MediaPart] | None, what: str) -> list[str]:
    if not is_data_url(url):
        return [url]
    if media is not None:
        media.append(media_from_data_url(url, what))
    return []


class OpenAIChatDialect(OpenAIDialect):
    endpoint = "chat.completions"
    operation = "chat"

    def usage(self, body: Any) -> Usage | None:
        return openai_usage(body)

    def stream_usage(self, event: StreamEvent) -> Usage | None:
        return openai_stream_usage(event)

    def request_view(self, body: dict[str, Any], model: str) -> RequestView:
        view = RequestView(model=model)
        prompt: list[str] = []
        system: list[str] = []
        call_names: dict[str, str] = {}
        for message in as_list(body.get("messages")):
            message = as_dict(message)
            role = message.get("role")
            text = content_text(message.get("content"), view.media)
            if role in SYSTEM_ROLES:
                system.append(text)
            elif role == "tool":
                call_id = as_str(message.get("tool_call_id"))
                view.tool_results.append(
                    ToolResult(name=call_names.get(call_id, "unknown"), content=message.get("content"), call_id=call_id)
                )
            elif role == "function":
                view.tool_results.append(ToolResult(name=as_str(message.get("name")), content=message.get("content")))
            else:
                prompt.append(text)
                for call in as_list(message.get("tool_calls")):
                    call = as_dict(call)
                    function = as_dict(call.get("function"))
                    call_names[as_str(call.get("id"))] = as_str(function.get("name"))
                    prompt.append(as_str(function.get("name")) + " " + text_of(function.get("arguments")))
        view.prompt = "\n".join(text for text in prompt if text)
        view.system = "\n".join(text for text in system if text)
        for tool in as_list(body.get("tools")):
            tool = as_dict(tool)
            function = as_dict(tool.get("function")) if "function" in tool else tool
            view.tools.append(_definition(function, fallback=as_str(tool.get("type"))))
        for function in as_list(body.get("functions")):
            view.tools.append(_definition(as_dict(function)))
        return view

    def response_view(self, body: Any) -> ResponseView:
        view = ResponseView()
        texts: list[str] = []
        thoughts: list[str] = []
        for choice in as_list(as_dict(body).get("choices")):
            message = as_dict(as_dict(choice).get("message"))
            texts.append(content_text(message.get("content")))
            texts.append(as_str(message.get("refusal")))
            thoughts.append(as_str(message.get("reasoning_content")) or as_str(message.get("reasoning")))
            for call in as_list(message.get("tool_calls")):
                call = as_dict(call)
                function = as_dict(call.get("function"))
                view.tool_calls.append(
                    ToolCall(
                        name=as_str(function.get("name")),
                        arguments=parse_arguments(function.get("arguments")),
                        call_id=as_str(call.get("id")),
                    )
                )
            legacy = as_dict(message.get("function_call"))
            if legacy:
                view.tool_calls.append(
                    ToolCall(name=as_str(legacy.get("name")), arguments=parse_arguments(legacy.get("arguments")))
                )
        view.text = "".join(texts)
        view.thoughts = "".join(thoughts)
        return view

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
        choices = chunk.get("choices")
        if not choices:
            return EMPTY_STREAM_VIEW
        view = StreamView()
        texts: list[str] = []
        for choice in as_list(choices):
            choice = as_dict(choice)
            delta = as_dict(choice.get("delta"))
            content = delta.get("content")
            if content:
                texts.append(content_text(content))
            if delta.get("refusal"):
                texts.append(as_str(delta.get("refusal")))
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                view.thoughts += reasoning
            choice_index = stream_key(choice.get("index", 0))
            for call in as_list(delta.get("tool_calls")):
                call = as_dict(call)
                function = as_dict(call.get("function"))
                view.tool_fragments.append(
                    ToolFragment(
                        key=(choice_index, stream_key(call.get("index", 0))),
                        name=function.get("name") or None,
                        call_id=call.get("id") or None,
                        arguments=as_str(function.get("arguments")),
                    )
                )
            legacy = as_dict(delta.get("function_call"))
            if legacy:
                view.tool_fragments.append(
                    ToolFragment(
                        key=(choice_index, "function_call"),
                        name=legacy.get("name") or None,
                        arguments=as_str(legacy.get("arguments")),
                    )
                )
            if choice.get("finish_reason"):
                view.finished = True
        view.text = "".join(texts)
        return view


def _definition(function: dict[str, Any], fallback: str = "") -> ToolDefinition:
    return ToolDefinition(
        name=as_str(function.get("name")) or fallback or "unknown",
        description=as_str(function.get("description")),
        parameters=as_dict(function.get("parameters")),
    )
