"""Images, files and audio in prompts reach ``on_model_call`` as CAPSEM Media (bytes + MIME type).

A recording policy (tests/media_policy.py) is loaded from a policy folder the
way an operator would load their own class.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google.genai import types

from tests.support.fake_upstream import FakeUpstream
from tests.support.policies import MediaRecorder
from tests.support.proxy import ANTHROPIC_AUTH, GEMINI_AUTH, OPENAI_KEY, Proxy, in_thread

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))  # every byte value, to catch alphabet mix-ups
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00\xff" * 20


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(mime_type: str, data: bytes) -> str:
    return f"data:{mime_type};base64,{b64(data)}"


@pytest.fixture
async def media_proxy(start_proxy, proxy_settings, tmp_path: Path) -> Proxy:
    (tmp_path / "media.toml").write_text('class = "tests.support.policies:MediaRecorder"\n')
    MediaRecorder.seen.clear()
    MediaRecorder.prompts.clear()
    return await start_proxy(proxy_settings, policy_dir=str(tmp_path))


# -- OpenAI ----------------------------------------------------------------------


async def test_openai_chat_image_file_and_audio_parts(media_proxy: Proxy, fake: FakeUpstream) -> None:
    content = [
        {"type": "text", "text": "what is in these?"},
        {"type": "image_url", "image_url": {"url": data_url("image/png", PNG), "detail": "low"}},
        {"type": "file", "file": {"filename": "report.pdf", "file_data": data_url("application/pdf", PDF)}},
        {"type": "input_audio", "input_audio": {"data": b64(WAV), "format": "wav"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    await in_thread(lambda: media_proxy.openai().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": content}]))
    assert MediaRecorder.seen == [("image/png", PNG), ("application/pdf", PDF), ("audio/wav", WAV)]
    (prompt,) = MediaRecorder.prompts
    assert "https://example.com/cat.png" in prompt and "report.pdf" in prompt
    assert "base64" not in prompt  # inline payloads are media, not prompt text
    assert fake.requests[0].json["messages"][0]["content"] == content  # forwarded untouched


async def test_openai_responses_input_image_and_file(media_proxy: Proxy, fake: FakeUpstream) -> None:
    content = [
        {"type": "input_text", "text": "summarise"},
        {"type": "input_image", "image_url": data_url("image/png", PNG)},
        {"type": "input_file", "filename": "report.pdf", "file_data": data_url("application/pdf", PDF)},
        {"type": "input_file", "file_url": "https://example.com/remote.pdf"},
    ]
    await in_thread(lambda: media_proxy.openai().responses.create(
        model="gpt-4o", input=[{"role": "user", "content": content}]))
    assert MediaRecorder.seen == [("image/png", PNG), ("application/pdf", PDF)]
    assert "https://example.com/remote.pdf" in MediaRecorder.prompts[0]
    assert len(fake.requests) == 1


async def test_openai_moderations_image_input(media_proxy: Proxy, fake: FakeUpstream) -> None:
    items = [{"type": "text", "text": "is this ok?"}, {"type": "image_url", "image_url": {"url": data_url("image/png", PNG)}}]
    await in_thread(lambda: media_proxy.openai().moderations.create(model="omni-moderation-latest", input=items))
    assert MediaRecorder.seen == [("image/png", PNG)]


# -- Gemini ----------------------------------------------------------------------


@pytest.mark.parametrize("api_version", ["v1beta", "v1"])
async def test_gemini_inline_data(media_proxy: Proxy, fake: FakeUpstream, api_version: str) -> None:
    parts = [types.Part.from_bytes(data=PNG, mime_type="image/png"), types.Part.from_bytes(data=PDF, mime_type="application/pdf")]
    client = media_proxy.gemini(api_version=api_version)
    await in_thread(lambda: client.models.generate_content(model="gemini-2.5-flash", contents=["describe", *parts]))
    assert MediaRecorder.seen == [("image/png", PNG), ("application/pdf", PDF)]


async def test_gemini_url_safe_unpadded_base64_is_read_like_the_provider_reads_it(media_proxy: Proxy, fake: FakeUpstream) -> None:
    data = base64.urlsafe_b64encode(PNG).decode().rstrip("=")
    body = {"contents": [{"parts": [{"inline_data": {"mime_type": "image/png", "data": data}}]}]}
    async with httpx.AsyncClient() as client:
        response = await client.post(
            media_proxy.url + "/v1beta/models/gemini-2.5-flash:generateContent", json=body, headers=GEMINI_AUTH
        )
    assert response.status_code == 200
    assert MediaRecorder.seen == [("image/png", PNG)]


async def test_gemini_count_tokens_media_is_checked(media_proxy: Proxy, fake: FakeUpstream) -> None:
    client = media_proxy.gemini()
    part = types.Part.from_bytes(data=PDF, mime_type="application/pdf")
    await in_thread(lambda: client.models.count_tokens(model="gemini-2.5-flash", contents=["count", part]))
    assert MediaRecorder.seen == [("application/pdf", PDF)]


# -- Anthropic -------------------------------------------------------------------


async def test_anthropic_image_and_document_blocks(media_proxy: Proxy, fake: FakeUpstream) -> None:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(PNG)}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": b64(PDF)}, "title": "Q3 report"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/chart.png"}},
        {"type": "text", "text": "compare them"},
    ]
    await in_thread(lambda: media_proxy.anthropic().messages.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": content}]))
    assert MediaRecorder.seen == [("image/png", PNG), ("application/pdf", PDF)]
    (prompt,) = MediaRecorder.prompts
    assert "https://example.com/chart.png" in prompt and "Q3 report" in prompt and "compare them" in prompt
    assert len(fake.requests) == 1


async def test_anthropic_image_inside_a_tool_result(media_proxy: Proxy, fake: FakeUpstream) -> None:
    messages = [
        {"role": "user", "content": "take a screenshot"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(PNG)}},
        ]}]},
    ]
    await in_thread(lambda: media_proxy.anthropic().messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=messages))
    assert MediaRecorder.seen == [("image/png", PNG)]


# -- a verdict on media is enforced ---------------------------------------------


async def test_policy_blocking_media_blocks_the_request(media_proxy: Proxy, fake: FakeUpstream) -> None:
    bad = b"GIF89a..." + b"capsem_block" + b"..."
    content = [{"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": b64(bad)}}]
    with pytest.raises(anthropic.BadRequestError, match="MediaRecorder"):
        await in_thread(lambda: media_proxy.anthropic().messages.create(
            model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": content}]))
    assert MediaRecorder.seen == [("image/gif", bad)]
    assert fake.requests == []


# -- invalid base64: 400 in each provider's shape, nothing forwarded ---------------

NOT_BASE64 = "this is *not* base64!"


def _raise_openai_chat(proxy: Proxy) -> None:
    proxy.openai().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + NOT_BASE64}}]}])


def _raise_openai_responses(proxy: Proxy) -> None:
    proxy.openai().responses.create(model="gpt-4o", input=[{"role": "user", "content": [
        {"type": "input_file", "filename": "a.pdf", "file_data": NOT_BASE64}]}])


def _raise_anthropic(proxy: Proxy) -> None:
    proxy.anthropic().messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": NOT_BASE64}}]}])


@pytest.mark.parametrize(
    ("send", "exception", "status_of"),
    [
        (_raise_openai_chat, openai.BadRequestError, lambda e: e.status_code),
        (_raise_openai_responses, openai.BadRequestError, lambda e: e.status_code),
        (_raise_anthropic, anthropic.BadRequestError, lambda e: e.status_code),
    ],
    ids=["openai-chat", "openai-responses", "anthropic"],
)
async def test_invalid_base64_is_400_in_the_providers_shape(
    media_proxy: Proxy, fake: FakeUpstream, send: Any, exception: type, status_of: Any
) -> None:
    with pytest.raises(exception, match="not valid base64") as raised:
        await in_thread(send, media_proxy)
    assert status_of(raised.value) == 400
    assert fake.requests == []
    assert MediaRecorder.seen == []


async def test_invalid_base64_in_gemini_inline_data_is_400(media_proxy: Proxy, fake: FakeUpstream) -> None:
    # google-genai encodes bytes itself, so a broken payload can only come from a raw client.
    body = {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": NOT_BASE64}}]}]}
    async with httpx.AsyncClient() as client:
        response = await client.post(
            media_proxy.url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            json=body,
            headers=GEMINI_AUTH,
        )
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "not valid base64" in response.json()["error"]["message"]
    assert fake.requests == []


async def test_invalid_base64_is_refused_even_under_the_default_policy(proxy: Proxy, fake: FakeUpstream) -> None:
    """Decoding is the proxy's, not the policy's: a payload it cannot read never leaves."""
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "@@@@"}}]}]}
    async with httpx.AsyncClient() as client:
        response = await client.post(
            proxy.url + "/v1/messages", json=body, headers=ANTHROPIC_AUTH
        )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "document.source.data" in response.json()["error"]["message"]
    assert fake.requests == []
    assert OPENAI_KEY not in response.text
