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

import anthropic as anthropic_sdk
import httpx
import openai
import orjson
import pytest
from google.genai import errors as genai_errors
from google.genai import types as genai_types

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
    in_thread,
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
    # Issue 20, class 9: ids a client chooses freely are content.
    "chat tool_call_id": (CHAT, chat(messages=[USER, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": M, "content": "ok"}])),
    "chat tool_calls id in history": (CHAT, chat(messages=[USER, {"role": "assistant", "tool_calls": [
        {"id": M, "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, USER])),
    "responses call_id": (RESPONSES, responses(input=[USER, {"type": "function_call_output", "call_id": M,
                                                             "output": "ok"}])),
    "responses input item id": (RESPONSES, responses(input=[{"type": "message", "id": M, "role": "user",
                                                             "content": "hi"}])),
    "anthropic tool_use id": (ANTHROPIC, anthropic(messages=[USER, {"role": "assistant", "content": [
        {"type": "tool_use", "id": M, "name": "f", "input": {}}]}, USER])),
    "anthropic tool_use_id": (ANTHROPIC, anthropic(messages=[USER, {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": M, "content": "ok"}]}])),
    "gemini functionCall id": (GEMINI, gemini(contents=[{"role": "model", "parts": [
        {"functionCall": {"id": M, "name": "f", "args": {}}}]}, {"role": "user", "parts": [{"text": "go"}]}])),
    "gemini functionResponse id": (GEMINI, gemini(contents=[{"role": "user", "parts": [
        {"functionResponse": {"id": M, "name": "f", "response": {}}}]}])),
    # Issue 20, class 10: no object is declared whole, no free string is declared; a value outside its shape is content.
    "gemini speechConfig speaker name": (GEMINI, gemini(generationConfig={"speechConfig": {"multiSpeakerVoiceConfig": {
        "speakerVoiceConfigs": [{"speaker": M, "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}}}]}}})),
    "gemini speechConfig languageCode": (GEMINI, gemini(generationConfig={"speechConfig": {"languageCode": f"en {M}"}})),
    "gemini imageConfig new field": (GEMINI, gemini(generationConfig={"imageConfig": {"aspectRatio": "1:1",
                                                                                      "caption": M}})),
    "gemini thinkingConfig new field": (GEMINI, gemini(generationConfig={"thinkingConfig": {"thinkingBudget": 10,
                                                                                            "hint": M}})),
    "gemini safetySettings new field": (GEMINI, gemini(safetySettings=[{"category": "HARM_CATEGORY_HARASSMENT",
                                                                        "threshold": "BLOCK_NONE", "note": M}])),
    "gemini videoMetadata new field": (GEMINI, gemini(contents=[{"role": "user", "parts": [
        {"fileData": {"mimeType": "video/mp4", "fileUri": "https://www.youtube.com/watch?v=x"},
         "videoMetadata": {"startOffset": "1s", "label": M}}]}])),
    "gemini mediaResolution outside its enum": (GEMINI, gemini(generationConfig={"mediaResolution": M})),
    "chat stream_options new field": (CHAT, chat(stream_options={"include_usage": True, "tag": M})),
    "chat logit_bias key": (CHAT, chat(logit_bias={M: 1})),
    "chat audio.voice outside its enum": (CHAT, chat(modalities=["text", "audio"], audio={"voice": M,
                                                                                          "format": "wav"})),
    "chat prompt_cache_key": (CHAT, chat(prompt_cache_key=M)),
    "anthropic context_management new field": (ANTHROPIC, anthropic(context_management={"edits": [
        {"type": "clear_tool_uses_20250919", "reason": M}]})),
    "anthropic metadata.user_id": (ANTHROPIC, anthropic(metadata={"user_id": M})),
    "responses role outside its enum": (RESPONSES, responses(input=[{"role": M, "content": "hi"}])),
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
    # Issue 20, class 7: logprobs are the reply's text token by token, and its alternatives.
    "chat logprobs token": (CHAT, chat(), orjson.dumps({"id": "c", "object": "chat.completion", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "fine"},
         "logprobs": {"content": [{"token": M, "logprob": -0.1, "bytes": [1], "top_logprobs": []}]}}]}),
        "application/json"),
    "chat streamed top_logprobs": (CHAT, chat(stream=True), sse(
        chunk({"role": "assistant", "content": "fine"}),
        (None, {**chat_chunk({}, finish="stop"), "choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
            "logprobs": {"content": [{"token": "fine", "logprob": -0.1, "top_logprobs": [
                {"token": M, "logprob": -2.0}]}]}}]}),
    ) + b"data: [DONE]\n\n", "text/event-stream"),
    "responses output_text logprobs": (RESPONSES, responses(), orjson.dumps({"id": "r", "object": "response",
        "status": "completed", "output": [{"type": "message", "id": "msg_1", "role": "assistant", "content": [
            {"type": "output_text", "text": "fine", "annotations": [], "logprobs": [
                {"token": "fine", "logprob": -0.1, "top_logprobs": [{"token": M, "logprob": -3.0}]}]}]}]}),
        "application/json"),
    "responses streamed delta logprobs": (RESPONSES, responses(stream=True), sse(
        resp_event("response.created", response={"id": "r", "object": "response", "output": []}),
        resp_event("response.output_text.delta", item_id="msg_1", output_index=0, content_index=0, delta="fine",
                   logprobs=[{"token": M, "logprob": -0.1}]),
        resp_event("response.completed", response={"id": "r", "object": "response", "output": []}),
    ), "text/event-stream"),
    "gemini logprobsResult topCandidates": (GEMINI, gemini(), orjson.dumps({"candidates": [{"index": 0, "content": {
        "role": "model", "parts": [{"text": "fine"}]}, "logprobsResult": {"topCandidates": [{"candidates": [
            {"token": M, "logProbability": -1.5}]}], "chosenCandidates": [{"token": "fine", "logProbability": -0.1}]}}]}),
        "application/json"),
    "gemini streamed logprobsResult chosenCandidates": (GEMINI_STREAM, gemini(), sse(
        (None, {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "fine"}]},
                                "logprobsResult": {"chosenCandidates": [{"token": M, "logProbability": -0.1}]},
                                "finishReason": "STOP"}]}),
    ), "text/event-stream"),
    "chat logprobs tokens split across chunks": (CHAT, chat(stream=True), sse(
        chunk({"role": "assistant", "content": ""}),
        *((None, {**chat_chunk({"content": "ok "}), "choices": [{"index": 0, "delta": {"content": "ok "},
                                                                 "finish_reason": None, "logprobs": {"content": [
                                                                     {"token": piece, "logprob": -0.1}]}}]})
          for piece in ("caps", "em_bl", "ock")),
        chunk({}, finish="stop"),
    ) + b"data: [DONE]\n\n", "text/event-stream"),
    "responses logprobs tokens split across deltas": (RESPONSES, responses(stream=True), sse(
        resp_event("response.created", response={"id": "r", "object": "response", "output": []}),
        *(resp_event("response.output_text.delta", item_id="msg_1", output_index=0, content_index=0, delta="ok ",
                     logprobs=[{"token": piece, "logprob": -0.1}]) for piece in ("caps", "em_bl", "ock")),
        resp_event("response.completed", response={"id": "r", "object": "response", "output": []}),
    ), "text/event-stream"),
    "gemini logprobs tokens split across chunks": (GEMINI_STREAM, gemini(), sse(
        *((None, {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "ok "}]},
                                  "logprobsResult": {"chosenCandidates": [{"token": piece, "logProbability": -0.1}]}}]})
          for piece in ("caps", "em_bl", "ock")),
        (None, {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "."}]},
                                "finishReason": "STOP"}]}),
    ), "text/event-stream"),
    # Issue 20, class 10, reply side: a declared field outside its shape.
    "anthropic stop_reason outside its enum": (ANTHROPIC, anthropic(), orjson.dumps({"id": "m", "type": "message",
        "role": "assistant", "content": [{"type": "text", "text": "ok"}], "stop_reason": f"end {M}"}),
        "application/json"),
    "gemini streamed finishReason outside its enum": (GEMINI_STREAM, gemini(), sse(
        (None, {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "ok"}]},
                                "finishReason": M}]}),
    ), "text/event-stream"),
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


# -- the same, through the clients' own SDKs (issue 20, classes 7, 9, 10) ------------------------------------


async def test_the_sdks_own_ids_and_settings_are_checked(proxy: Proxy, fake: FakeUpstream) -> None:
    """A marker in a tool-call id (openai), a user id (anthropic), a speaker's name (google-genai)."""
    history = [USER, {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "f", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": f"call_{M}", "content": "ok"}]
    with pytest.raises(openai.BadRequestError, match="CAPSEM policy 'Debug'"):
        await in_thread(lambda: proxy.openai().chat.completions.create(model="gpt-4o-mini", messages=history))
    with pytest.raises(anthropic_sdk.BadRequestError, match="CAPSEM policy 'Debug'"):
        await in_thread(lambda: proxy.anthropic().messages.create(
            model="claude-sonnet-4-6", max_tokens=16, messages=[USER], metadata={"user_id": M}))
    speech = genai_types.SpeechConfig(multi_speaker_voice_config=genai_types.MultiSpeakerVoiceConfig(
        speaker_voice_configs=[genai_types.SpeakerVoiceConfig(speaker=M, voice_config=genai_types.VoiceConfig(
            prebuilt_voice_config=genai_types.PrebuiltVoiceConfig(voice_name="Kore")))]))

    def spoken() -> Any:
        client = proxy.gemini()
        return client.models.generate_content(model="gemini-2.5-flash", contents="hi",
                                              config=genai_types.GenerateContentConfig(speech_config=speech))

    with pytest.raises(genai_errors.ClientError) as raised:
        await in_thread(spoken)
    assert raised.value.code == 400 and "CAPSEM policy 'Debug'" in str(raised.value)
    assert fake.requests == []


async def test_logprobs_alternatives_reach_the_sdk_only_checked(proxy: Proxy, fake: FakeUpstream) -> None:
    """The openai SDK exposes ``choices[0].logprobs.content[0].top_logprobs[0].token``: a reply whose
    alternative token carries the marker is refused, one without it reaches the SDK whole."""
    def reply(alternative: str) -> Reply:
        return Reply(raw_body=orjson.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "fine"},
                         "logprobs": {"content": [{"token": "fine", "logprob": -0.1, "bytes": None, "top_logprobs": [
                             {"token": alternative, "logprob": -2.5, "bytes": None}]}]}}]}))

    def create() -> Any:
        return proxy.openai().chat.completions.create(model="gpt-4o-mini", messages=[USER], logprobs=True,
                                                      top_logprobs=1)

    fake.script(reply("good"))
    completion = await in_thread(create)
    assert completion.choices[0].logprobs.content[0].top_logprobs[0].token == "good"
    fake.script(reply(M))
    with pytest.raises(openai.BadRequestError, match="CAPSEM policy 'Debug'"):
        await in_thread(create)
