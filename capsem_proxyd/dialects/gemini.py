"""Google Gemini ``generateContent`` / ``streamGenerateContent`` (v1 and v1beta).

The REST API accepts camelCase and snake_case field names alike, so both are
read: a field the proxy did not look at is a field that leaves unchecked.
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
    decode_base64,
    parse_json_event,
    text_of,
)
from capsem_proxyd.dialects.framing import JSONArrayDecoder, SSEDecoder, StreamEvent, encode_json_array_error
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


def field(container: dict[str, Any], camel: str, snake: str) -> Any:
    value = container.get(camel)
    return container.get(snake) if value is None else value


def parts_of(content: Any) -> list[dict[str, Any]]:
    return [as_dict(part) for part in as_list(as_dict(content).get("parts"))]


class GeminiDialect(Dialect):
    provider = "gemini"
    endpoint = "generateContent"

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return headers.get("x-goog-api-key") or query.get("key") or None

    def wants_stream(self, body: dict[str, Any], query: Mapping[str, str], path_stream: bool) -> bool:
        return path_stream

    def stream_decoder(self, query: Mapping[str, str]) -> Any:
        return SSEDecoder() if query.get("alt") == "sse" else JSONArrayDecoder()

    def stream_error(self, error: ProxyError, started: bool, query: Mapping[str, str]) -> bytes:
        """With ``alt=sse`` the bare error object on a line of its own, not an SSE ``data:`` frame.

        The JS SDK (@google/genai, so Gemini CLI) raises only on a network read
        that parses as JSON ``{"error": {"code": 4xx/5xx}}``; it hands a
        ``data:`` frame on as a reply without candidates, and Gemini CLI then
        retries ("Model stream ended without a finish reason"). google-genai
        (Python) reads a bare JSON object in an SSE stream too and raises.
        """
        body = self.error_body(error)
        if query.get("alt") == "sse":
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

    def request_view(self, body: dict[str, Any], model: str) -> RequestView:
        view = RequestView(model=model)
        prompt: list[str] = []
        for content in as_list(body.get("contents")):
            for part in parts_of(content):
                self._read_request_part(part, prompt, view)
        view.prompt = "\n".join(text for text in prompt if text)
        system = field(body, "systemInstruction", "system_instruction")
        if isinstance(system, str):
            view.system = system
        else:
            view.system = "\n".join(text_of(part.get("text")) for part in parts_of(system) if part.get("text"))
        for tool in as_list(body.get("tools")):
            declarations = field(as_dict(tool), "functionDeclarations", "function_declarations")
            for declaration in as_list(declarations):
                declaration = as_dict(declaration)
                parameters = field(declaration, "parameters", "parametersJsonSchema") or declaration.get(
                    "parameters_json_schema"
                )
                view.tools.append(
                    ToolDefinition(
                        name=as_str(declaration.get("name")) or "unknown",
                        description=as_str(declaration.get("description")),
                        parameters=as_dict(parameters),
                    )
                )
        return view

    def _read_request_part(self, part: dict[str, Any], prompt: list[str], view: RequestView) -> None:
        if "text" in part:
            prompt.append(as_str(part.get("text")))
        response = field(part, "functionResponse", "function_response")
        if response is not None:
            response = as_dict(response)
            view.tool_results.append(
                ToolResult(
                    name=as_str(response.get("name")) or "unknown",
                    content=response.get("response"),
                    call_id=as_str(response.get("id")),
                )
            )
        call = field(part, "functionCall", "function_call")
        if call is not None:
            call = as_dict(call)
            prompt.append(as_str(call.get("name")) + " " + text_of(call.get("args")))
        inline = field(part, "inlineData", "inline_data")
        if inline is not None:
            inline = as_dict(inline)
            view.media.append(_decode_inline(inline))
        file_data = field(part, "fileData", "file_data")
        if file_data is not None:
            prompt.append(text_of(file_data))
        for key in ("executableCode", "executable_code", "codeExecutionResult", "code_execution_result"):
            if key in part:
                prompt.append(text_of(part[key]))

    def response_view(self, body: Any) -> ResponseView:
        view = ResponseView()
        texts: list[str] = []
        thoughts: list[str] = []
        for candidate in as_list(as_dict(body).get("candidates")):
            for part in parts_of(as_dict(candidate).get("content")):
                self._read_reply_part(part, texts, thoughts, view.tool_calls)
        view.text = "".join(texts)
        view.thoughts = "".join(thoughts)
        return view

    def _read_reply_part(
        self, part: dict[str, Any], texts: list[str], thoughts: list[str], calls: list[ToolCall]
    ) -> None:
        text = part.get("text")
        if isinstance(text, str):
            (thoughts if part.get("thought") else texts).append(text)
        call = field(part, "functionCall", "function_call")
        if call is not None:
            call = as_dict(call)
            calls.append(
                ToolCall(name=as_str(call.get("name")), arguments=as_dict(call.get("args")), call_id=as_str(call.get("id")))
            )
        code = field(part, "executableCode", "executable_code")
        if code is not None:
            texts.append(text_of(code))

    def stream_view(self, event: StreamEvent) -> StreamView:
        chunk = parse_json_event(event)
        if chunk is None:
            return EMPTY_STREAM_VIEW
        if not isinstance(chunk, dict):
            raise upstream_unavailable("The upstream sent a stream event that is not a JSON object.")
        if "error" in chunk:
            return StreamView(error=as_str(as_dict(chunk["error"]).get("message")) or "upstream stream error")
        reply = self.response_view(chunk)
        view = StreamView(text=reply.text, thoughts=reply.thoughts)
        for number, call in enumerate(reply.tool_calls):
            key = ("gemini", id(event), number)
            view.tool_fragments.append(
                ToolFragment(key=key, name=call.name, call_id=call.call_id, arguments=orjson.dumps(call.arguments).decode())
            )
            view.tool_closes.append(key)
        return view


def _decode_inline(inline: dict[str, Any]) -> MediaPart:
    raw = decode_base64(as_str(inline.get("data")), "inlineData.data")
    mime_type = as_str(field(inline, "mimeType", "mime_type")) or "application/octet-stream"
    return MediaPart(data=raw, mime_type=mime_type)
