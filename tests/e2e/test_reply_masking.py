"""A credential the model itself writes is masked before the client gets it (issue 23, item 6).

A Rules ``redact`` rule under ``[on_model_response]`` finds an AWS access key
id in what the model writes. Through the real proxy and each API's official
SDK, JSON and streamed: the client never receives the value, receives its
placeholder where the value was, and every other character of the answer as
the provider wrote it. In a stream the key arrives cut across events; the
hold-back keeps its pieces until the match is complete, and the placeholder
goes out in the first piece's text field: the answer still streams (its first
text reaches the SDK before the upstream has sent its last event).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from capsem_proxyd.config import Settings
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import GEMINI_AUTH, OPENAI_AUTH, Proxy, in_thread
from tests.support.sdk import policy_proxy

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
RULES = """
[on_model_response]
redact = [{ name = "aws-key-id", regex = 'AKIA[0-9A-Z]{16}', case_sensitive = true }]
"""
PLACEHOLDER = re.compile(r"CAPSEM-MASKED-AWSKEYID-[A-Z2-7]{20}")
# The key cut across events, as a model streams it; text before and after it streams on.
CHUNKS = ["Here is the key you asked for: AK", "IAIOSFO", "DNN7EXAMPLE, in ", "us-east-1. ", "Keep it safe."]
TEXT = "".join(CHUNKS)


def _chat(proxy: Proxy, stream: bool, got: Callable[[str | None], None]) -> None:
    with proxy.openai() as client:
        messages = [{"role": "user", "content": "my AWS key?"}]
        if not stream:
            got(client.chat.completions.create(model="gpt-4o-mini", messages=messages).choices[0].message.content)
            return
        for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True):
            for choice in chunk.choices:
                got(choice.delta.content)


def _responses(proxy: Proxy, stream: bool, got: Callable[[str | None], None]) -> None:
    with proxy.openai() as client:
        if not stream:
            got(client.responses.create(model="gpt-4o-mini", input="my AWS key?").output_text)
            return
        pieces = []
        for event in client.responses.create(model="gpt-4o-mini", input="my AWS key?", stream=True):
            if event.type == "response.output_text.delta":
                got(event.delta)
                pieces.append(event.delta)
            elif event.type == "response.completed":  # the text restated whole is masked too
                assert event.response.output_text == "".join(pieces)


def _anthropic(proxy: Proxy, stream: bool, got: Callable[[str | None], None]) -> None:
    with proxy.anthropic() as client:
        messages = [{"role": "user", "content": "my AWS key?"}]
        if not stream:
            reply = client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=messages)
            got("".join(block.text for block in reply.content if block.type == "text"))
            return
        with client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=messages) as events:
            pieces = []
            for text in events.text_stream:
                got(text)
                pieces.append(text)
            final = events.get_final_message()
            assert "".join(block.text for block in final.content if block.type == "text") == "".join(pieces)


def _gemini(proxy: Proxy, stream: bool, got: Callable[[str | None], None]) -> None:
    with proxy.gemini() as client:
        if not stream:
            got(client.models.generate_content(model="gemini-2.5-flash", contents="my AWS key?").text)
            return
        for chunk in client.models.generate_content_stream(model="gemini-2.5-flash", contents="my AWS key?"):
            got(chunk.text)


APIS: dict[str, Callable[[Proxy, bool, Callable[[str | None], None]], None]] = {
    "chat": _chat, "responses": _responses, "anthropic": _anthropic, "gemini": _gemini,
}


def read_answer(api: str, stream: bool, proxy: Proxy, fake: FakeUpstream) -> tuple[str, int | None]:
    """The answer's text as the SDK reads it, and (streamed) how many events the upstream had sent when
    its first text reached the SDK."""
    first: list[int] = []
    pieces: list[str] = []

    def got(text: str | None) -> None:
        if text:
            if not first and fake.streams:
                first.append(fake.streams[-1].events_sent)
            pieces.append(text)

    APIS[api](proxy, stream, got)
    return "".join(pieces), first[0] if first else None


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("api", APIS)
async def test_a_credential_the_model_writes_is_masked_before_the_client_gets_it(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path, api: str,
    stream: bool,
) -> None:
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", rules=RULES)
    fake.script(Reply(chunks=CHUNKS, chunk_delay=0.3 if stream else 0.0))
    text, first_text_at = await in_thread(read_answer, api, stream, proxy, fake)
    assert KEY_ID not in text
    (placeholder,) = PLACEHOLDER.findall(text)
    assert text == TEXT.replace(KEY_ID, placeholder)  # everything else as the model wrote it
    if stream:
        record = fake.streams[-1]
        # the answer still streams: its first text was in the SDK's hands before the upstream's last event
        assert record.completed and first_text_at is not None and first_text_at < record.events_sent - 1


async def test_a_masked_json_reply_is_the_providers_byte_for_byte_elsewhere_and_says_redact(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path,
) -> None:
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", rules=RULES)
    # The provider's own spelling: the key written with escapes, odd spacing, a number spelled its way.
    raw = (b'{"id":"chatcmpl-1", "object":"chat.completion","created":1.0e9,"model":"gpt-4o-mini",\n "choices":[{'
           b'"index":0,"message":{"role":"assistant","content":"key: \\u0041KIAIOSFODNN7EXAMPLE \\ud83d\\ude00 done"},'
           b'"finish_reason":"stop"}]}')
    fake.script(Reply(raw_body=raw))
    async with httpx.AsyncClient(timeout=20) as client:
        reply = await client.post(proxy.url + "/v1/chat/completions", headers=dict(OPENAI_AUTH),
                                  json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200 and reply.headers["x-capsem-decision"] == "redact"
    (placeholder,) = PLACEHOLDER.findall(reply.text)
    assert reply.content == raw.replace(b"\\u0041KIAIOSFODNN7EXAMPLE", placeholder.encode())
    assert int(reply.headers["content-length"]) == len(reply.content)
    assert json.loads(reply.content)["choices"][0]["message"]["content"] == f"key: {placeholder} \U0001f600 done"


async def test_the_same_value_gets_the_same_placeholder_in_a_reply_and_in_a_request(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path,
) -> None:
    rules = RULES + RULES.replace("on_model_response", "on_model_call")
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", rules=rules)
    fake.script(Reply(text=TEXT))
    answer, _ = await in_thread(read_answer, "chat", False, proxy, fake)
    async with httpx.AsyncClient(timeout=20) as client:
        reply = await client.post(proxy.url + "/v1/chat/completions", headers=dict(OPENAI_AUTH),
                                  json={"model": "gpt-4o-mini", "messages": [
                                      {"role": "user", "content": f"is {KEY_ID} still valid?"}]})
    assert reply.status_code == 200
    assert PLACEHOLDER.findall(answer) == PLACEHOLDER.findall(fake.requests[-1].body.decode())


async def test_a_masked_choices_logprobs_are_masked_too(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path,
) -> None:
    """The logprobs spell the key token by token, in no one string: the tokens of the masked stretch
    spell the placeholder instead, their bytes are their new tokens' and their alternatives are gone;
    every other byte of the reply is the provider's."""
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", rules=RULES)
    tokens = ["key: ", "AKIA", "IOSFODNN", "7EXAMPLE", " ok"]
    entries = [{"token": token, "logprob": -0.1, "bytes": list(token.encode()),
                "top_logprobs": [{"token": token, "logprob": -0.1, "bytes": list(token.encode())}]} for token in tokens]
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini", "choices": [{
        "index": 0, "message": {"role": "assistant", "content": "".join(tokens)}, "finish_reason": "stop",
        "logprobs": {"content": entries, "refusal": None}}]}
    raw = json.dumps(body).encode()
    fake.script(Reply(raw_body=raw))
    async with httpx.AsyncClient(timeout=20) as client:
        reply = await client.post(proxy.url + "/v1/chat/completions", headers=dict(OPENAI_AUTH),
                                  json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200 and KEY_ID not in reply.text and "IOSFODNN" not in reply.text
    (placeholder,) = PLACEHOLDER.findall(reply.json()["choices"][0]["message"]["content"])
    got = reply.json()["choices"][0]["logprobs"]["content"]
    assert [entry["token"] for entry in got] == ["key: ", placeholder, "", "", " ok"]
    assert all(entry["bytes"] == list(entry["token"].encode()) for entry in got)
    assert [len(entry["top_logprobs"]) for entry in got] == [1, 0, 0, 0, 1]
    expected = raw.decode().replace('"key: AKIAIOSFODNN7EXAMPLE ok"', f'"key: {placeholder} ok"')
    for before, after in zip(entries, got):
        if before["token"] != after["token"]:  # only its token, bytes and alternatives are written over
            written = (json.dumps(before).replace(json.dumps(before["token"]), json.dumps(after["token"]), 1)
                       .replace(json.dumps(before["bytes"]), json.dumps(after["bytes"], separators=(",", ":")), 1)
                       .replace(json.dumps(before["top_logprobs"]), "[]", 1))
            expected = expected.replace(json.dumps(before), written, 1)
    assert reply.text == expected  # the provider's spacing and order elsewhere


async def test_a_reply_whose_legacy_logprobs_spell_the_value_is_refused(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path,
) -> None:
    """Completions' ``logprobs.tokens`` (plain strings, alternatives keyed by token) are not rewritten:
    rather than release the value token by token, the reply is refused, without the value."""
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", rules=RULES)
    tokens = ["key: ", "AKIA", "IOSFODNN", "7EXAMPLE"]
    body = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "gpt-3.5-turbo-instruct", "choices": [{
        "index": 0, "text": "".join(tokens), "finish_reason": "stop",
        "logprobs": {"tokens": tokens, "token_logprobs": [-0.1] * 4, "top_logprobs": None, "text_offset": [0, 5, 9, 17]}}]}
    fake.script(Reply(raw_body=json.dumps(body).encode()))
    async with httpx.AsyncClient(timeout=20) as client:
        reply = await client.post(proxy.url + "/v1/completions", headers=dict(OPENAI_AUTH),
                                  json={"model": "gpt-3.5-turbo-instruct", "prompt": "hi"})
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "capsem_blocked"
    assert "IOSFODNN" not in reply.text and "logprobs" in reply.json()["error"]["message"]


async def test_a_gemini_json_array_stream_is_masked_element_by_element(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path,
) -> None:
    """The streamed JSON array (no ``alt=sse``): each element is an event, edited in its own text field."""
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", rules=RULES)
    fake.script(Reply(chunks=CHUNKS))
    async with httpx.AsyncClient(timeout=20) as client:
        reply = await client.post(proxy.url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                                  json={"contents": [{"role": "user", "parts": [{"text": "my AWS key?"}]}]},
                                  headers=dict(GEMINI_AUTH))
    assert reply.status_code == 200
    elements = reply.json()  # still one JSON array
    text = "".join(part.get("text", "") for element in elements for candidate in element.get("candidates", [])
                   for part in candidate.get("content", {}).get("parts", []))
    (placeholder,) = PLACEHOLDER.findall(text)
    assert text == TEXT.replace(KEY_ID, placeholder)


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


THINKING = f"The key is {KEY_ID}; I will not repeat it."
ANTHROPIC_SIGNED_JSON = json.dumps({
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6", "stop_reason": "end_turn",
    "content": [{"type": "thinking", "thinking": THINKING, "signature": "c2lnbmVk"}, {"type": "text", "text": "Done."}],
    "usage": {"input_tokens": 1, "output_tokens": 1}}).encode()
ANTHROPIC_SIGNED_STREAM = b"".join([
    _sse("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6", "content": [],
        "stop_reason": None, "usage": {"input_tokens": 1, "output_tokens": 1}}}),
    _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
    _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "thinking_delta", "thinking": THINKING}}),
    _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "signature_delta", "signature": "c2lnbmVk"}}),
    _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
    _sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}),
    _sse("message_stop", {"type": "message_stop"}),
])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_value_in_a_replys_signed_thinking_is_refused_not_rewritten(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path, stream: bool,
) -> None:
    """The client sends the thinking block back with its signature; changed, the provider would refuse
    that turn and every later one. So the reply is refused (JSON) or cut (stream), never released with
    the value, and never rewritten."""
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", rules=RULES)
    if stream:
        fake.script(Reply(raw_body=ANTHROPIC_SIGNED_STREAM, content_type="text/event-stream"))
    else:
        fake.script(Reply(raw_body=ANTHROPIC_SIGNED_JSON))

    def ask() -> None:
        with proxy.anthropic() as client:
            messages = [{"role": "user", "content": "hi"}]
            if stream:
                with client.messages.stream(model="claude-sonnet-4-6", max_tokens=64, messages=messages) as events:
                    for _ in events:
                        pass
            else:
                client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=messages)

    with pytest.raises(anthropic.APIError) as caught:
        await in_thread(ask)
    assert "signed" in str(caught.value) and KEY_ID not in str(caught.value)
