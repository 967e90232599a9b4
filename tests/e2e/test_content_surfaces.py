"""Every content surface an attacker found unchecked on main is checked now, request and reply,
JSON and streamed, through a real proxy against the fake provider.

Requests: the marker never reaches the upstream (400, nothing sent). Replies:
the marker never reaches the client whole (a JSON reply is refused with 400; a
stream ends with the proxy's error event before the event carrying it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from capsem_proxyd.config import Settings
from tests.support.bodies import USER
from tests.support.bodies import chat_body as chat
from tests.support.bodies import gemini_body as gemini
from tests.support.bodies import messages_body as anthropic
from tests.support.bodies import responses_body as responses
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import (
    ANTHROPIC_AUTH,
    GEMINI_AUTH,
    OPENAI_AUTH,
    Proxy,
    split_at_refusal,
)
from tests.support.replies import chat_chunk

M = "capsem_block"
CHAT = ("/v1/chat/completions", OPENAI_AUTH)
RESPONSES = ("/v1/responses", OPENAI_AUTH)
ANTHROPIC = ("/v1/messages", ANTHROPIC_AUTH)
GEMINI = ("/v1beta/models/gemini-2.5-flash:generateContent", GEMINI_AUTH)
GEMINI_STREAM = ("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", GEMINI_AUTH)
SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "description": "the city"}}}


REQUEST_SURFACES: dict[str, tuple[tuple[str, dict[str, str]], dict[str, Any]]] = {
    "chat prediction.content": (CHAT, chat(prediction={"type": "content", "content": f"draft {M}"})),
    "chat response_format schema description": (CHAT, chat(response_format={"type": "json_schema", "json_schema": {
        "name": "out", "schema": {**SCHEMA, "description": M}}})),
    "chat custom tool grammar": (CHAT, chat(tools=[{"type": "custom", "custom": {"name": "sql", "format": {
        "type": "grammar", "grammar": {"syntax": "lark", "definition": f"start: '{M}'"}}}}])),
    "chat assistant refusal": (CHAT, chat(messages=[USER, {"role": "assistant", "refusal": M}, USER])),
    "chat legacy function_call in history": (CHAT, chat(messages=[
        USER, {"role": "assistant", "function_call": {"name": "f", "arguments": json.dumps({"q": M})}}, USER])),
    "chat custom tool call input in history": (CHAT, chat(messages=[USER, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "custom", "custom": {"name": "sql", "input": f"select {M}"}}]}, USER])),
    "chat message name": (CHAT, chat(messages=[{"role": "user", "name": M, "content": "hi"}])),
    "chat key of tool arguments": (CHAT, chat(messages=[USER, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": json.dumps({M: 1})}}]}, USER])),
    "chat escaped arguments": (CHAT, chat(messages=[USER, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"q": "\\u0063apsem_block"}'}}]},
        USER])),
    "chat schema property name": (CHAT, chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {M: {"type": "string"}}}}}])),
    "chat unknown top-level field": (CHAT, chat(some_future_field={"note": M})),
    "responses prompt.variables": (RESPONSES, responses(prompt={"id": "pmpt_1", "variables": {"x": M}})),
    "responses text.format schema": (RESPONSES, responses(text={"format": {"type": "json_schema", "name": "o",
                                                                            "schema": {**SCHEMA, "title": M}}})),
    "responses mcp tool description": (RESPONSES, responses(tools=[{"type": "mcp", "server_label": "kb",
                                                                     "server_description": M, "server_url": "https://x"}])),
    "responses unknown input item": (RESPONSES, responses(input=[{"type": "future_item", "payload": M}])),
    "anthropic input_schema description": (ANTHROPIC, anthropic(tools=[{"name": "f", "input_schema": {
        **SCHEMA, "description": M}}])),
    "anthropic input_examples": (ANTHROPIC, anthropic(tools=[{"name": "f", "input_schema": SCHEMA,
                                                              "input_examples": [{"city": M}]}])),
    "anthropic output_config schema": (ANTHROPIC, anthropic(output_config={"format": {"type": "json_schema",
                                                                                       "schema": {**SCHEMA, "title": M}}})),
    "anthropic citations cited_text in history": (ANTHROPIC, anthropic(messages=[USER, {"role": "assistant", "content": [
        {"type": "text", "text": "see", "citations": [{"type": "char_location", "cited_text": M,
                                                        "document_index": 0, "start_char_index": 0,
                                                        "end_char_index": 5}]}]}, USER])),
    "gemini functionResponse name": (GEMINI, gemini(contents=[{"role": "user", "parts": [
        {"functionResponse": {"name": M, "response": {"ok": True}}}]}])),
    "gemini functionResponse parts": (GEMINI, gemini(contents=[{"role": "user", "parts": [
        {"functionResponse": {"name": "f", "response": {}, "parts": [{"text": M}]}}]}])),
    "gemini declaration response schema": (GEMINI, gemini(tools=[{"functionDeclarations": [
        {"name": "f", "response": {"type": "object", "description": M}}]}])),
    "gemini responseJsonSchema": (GEMINI, gemini(generationConfig={"responseJsonSchema": {**SCHEMA, "title": M}})),
    "gemini fileData in systemInstruction": (GEMINI, gemini(systemInstruction={"parts": [
        {"fileData": {"mimeType": "text/plain", "fileUri": f"https://files/{M}"}}]})),
    "gemini key of functionCall.args": (GEMINI, gemini(contents=[{"role": "model", "parts": [
        {"functionCall": {"name": "f", "args": {M: 1}}}]}, {"role": "user", "parts": [{"text": "go"}]}])),
    "gemini fullwidth marker": (GEMINI, gemini(contents=[{"role": "user", "parts": [{"text": "ｃａｐｓｅｍ＿ｂｌｏｃｋ"}]}])),
}


@pytest.mark.parametrize("name", REQUEST_SURFACES)
async def test_a_marker_in_every_request_surface_never_reaches_the_upstream(
    name: str, start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream
) -> None:
    """Stored content allowed here (a stored prompt, a provider-run MCP server): the content
    they carry in the request is what is under test, and it is checked in every mode."""
    proxy = await start_proxy(proxy_settings, stored_content="allow")
    (path, headers), body = REQUEST_SURFACES[name]
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.post(path, json=body, headers=headers)
    assert response.status_code == 400, response.text
    assert "CAPSEM policy 'Debug'" in response.text
    assert fake.requests == []


def sse(*events: tuple[str | None, dict[str, Any]]) -> bytes:
    return b"".join((f"event: {name}\n" if name else "").encode() + b"data: " + orjson.dumps(data) + b"\n\n"
                    for name, data in events)


def chunk(delta: dict[str, Any], index: int = 0, finish: str | None = None) -> tuple[None, dict[str, Any]]:
    return None, chat_chunk(delta, index=index, finish=finish)


def resp_event(kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
    return kind, {"type": kind, "sequence_number": 1, **fields}


REPLY_SURFACES: dict[str, tuple[tuple[str, dict[str, str]], dict[str, Any], bytes, str]] = {
    "chat audio transcript": (CHAT, chat(), orjson.dumps({"id": "c", "object": "chat.completion", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": None,
                                                          "audio": {"id": "a1", "data": "", "transcript": M}}}]}),
        "application/json"),
    "chat custom tool call": (CHAT, chat(), orjson.dumps({"id": "c", "object": "chat.completion", "choices": [
        {"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "tool_calls": [
            {"id": "t", "type": "custom", "custom": {"name": "sql", "input": f"drop {M}"}}]}}]}), "application/json"),
    "chat streamed audio transcript": (CHAT, chat(stream=True), sse(
        chunk({"role": "assistant"}), chunk({"audio": {"id": "a1", "transcript": "capsem_"}}),
        chunk({"audio": {"transcript": "block"}}), chunk({}, finish="stop"),
    ) + b"data: [DONE]\n\n", "text/event-stream"),
    "responses shell_call command": (RESPONSES, responses(), orjson.dumps({"id": "r", "object": "response", "output": [
        {"type": "shell_call", "id": "s", "call_id": "c", "action": {"commands": [f"rm -rf /{M}"]}}]}),
        "application/json"),
    "responses apply_patch diff": (RESPONSES, responses(), orjson.dumps({"id": "r", "object": "response", "output": [
        {"type": "apply_patch_call", "id": "p", "call_id": "c", "operation": {"type": "update_file", "path": "a.py",
                                                                              "diff": f"+{M}"}}]}), "application/json"),
    "responses mcp_call output": (RESPONSES, responses(), orjson.dumps({"id": "r", "object": "response", "output": [
        {"type": "mcp_call", "id": "m", "name": "search", "server_label": "kb", "arguments": "{}", "output": M}]}),
        "application/json"),
    "responses code interpreter logs": (RESPONSES, responses(), orjson.dumps({"id": "r", "object": "response",
        "output": [{"type": "code_interpreter_call", "id": "ci", "code": "print()", "outputs": [
            {"type": "logs", "logs": M}]}]}), "application/json"),
    "responses file search results (stream, completed)": (RESPONSES, responses(stream=True), sse(
        resp_event("response.created", response={"id": "r", "object": "response", "output": []}),
        resp_event("response.completed", response={"id": "r", "object": "response", "output": [
            {"type": "file_search_call", "id": "f", "queries": ["q"], "results": [{"text": M, "filename": "a"}]}]}),
    ), "text/event-stream"),
    "anthropic citations": (ANTHROPIC, anthropic(), orjson.dumps({"id": "m", "type": "message", "role": "assistant",
        "content": [{"type": "text", "text": "see", "citations": [{"type": "web_search_result_location",
                                                                   "url": "https://x", "title": M,
                                                                   "cited_text": "t"}]}]}), "application/json"),
    "anthropic citations_delta": (ANTHROPIC, anthropic(stream=True), sse(
        ("message_start", {"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant",
                                                                  "content": [], "model": "m"}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text",
                                                                                                 "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "citations_delta", "citation": {"type": "char_location", "cited_text": M}}}),
        ("message_stop", {"type": "message_stop"}),
    ), "text/event-stream"),
    "gemini codeExecutionResult": (GEMINI, gemini(), orjson.dumps({"candidates": [{"index": 0, "content": {
        "role": "model", "parts": [{"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": M}}]}}]}),
        "application/json"),
    "gemini groundingMetadata": (GEMINI, gemini(), orjson.dumps({"candidates": [{"index": 0, "content": {
        "role": "model", "parts": [{"text": "ok"}]}, "groundingMetadata": {"searchEntryPoint": {
            "renderedContent": f"<b>{M}</b>"}}}]}), "application/json"),
    "gemini streamed partialArgs": (GEMINI_STREAM, gemini(), sse(
        (None, {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"functionCall": {
            "name": "f", "partialArgs": [{"jsonPath": "$.q", "stringValue": "capsem_", "willContinue": True}],
            "willContinue": True}}]}}]}),
        (None, {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"functionCall": {
            "partialArgs": [{"jsonPath": "$.q", "stringValue": "block"}]}}]}, "finishReason": "STOP"}]}),
    ), "text/event-stream"),
}


@pytest.mark.parametrize("name", REPLY_SURFACES)
async def test_a_marker_in_every_reply_surface_never_reaches_the_client_whole(
    name: str, proxy: Proxy, fake: FakeUpstream
) -> None:
    (path, headers), body, reply, content_type = REPLY_SURFACES[name]
    fake.script(Reply(raw_body=reply, content_type=content_type))
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.post(path, json=body, headers=headers)
    assert len(fake.requests) == 1
    if content_type == "application/json":
        assert response.status_code == 400, response.text
        assert "CAPSEM policy 'Debug'" in response.text
        return
    relayed, ending = split_at_refusal(response.content)
    assert M not in relayed.lower(), relayed
    assert "CAPSEM policy 'Debug'" in ending, ending
