"""A value to mask inside content the provider signed is refused, never rewritten (issue 23, item 4).

An Anthropic ``thinking`` block of an earlier assistant turn, which the API
lets a client leave out, is dropped instead (the object and one comma cut,
every other byte kept).

An Anthropic ``thinking`` block carries a ``signature`` over its text, a
Gemini part a ``thoughtSignature``; the provider refuses a turn whose signed
block was changed, and every later turn resends it. The fake provider does
the same with the signatures it makes (``fake_upstream.script.sign``). So
when a value a policy asks to mask (an AWS key in a tool result) also sits
in the model's signed thinking, masking it by value there would break the
session for good: the request is refused instead, in the API's error shape,
and the provider receives nothing. The same conversation without the value
in the signed block is masked and goes through with the block unchanged.
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
from google.genai import errors as genai_errors
from google.genai import types

from capsem_proxyd.config import Settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.fake_upstream.script import compact_json, sign
from tests.support.proxy import Proxy, in_thread
from tests.support.sdk import policy_proxy

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
RULES = """
[on_tool_response]
redact = [{ name = "aws-key-id", regex = 'AKIA[0-9A-Z]{16}', case_sensitive = true }]
"""


def anthropic_messages(thinking: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Deploy it."},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": thinking, "signature": sign(thinking)},
            {"type": "tool_use", "id": "toolu_env", "name": "shell", "input": {"cmd": "cat .env"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_env",
                                      "content": f"AWS_ACCESS_KEY_ID={KEY_ID}\n"}]},
    ]


def gemini_contents(thought: str) -> list[dict[str, Any]]:
    signed_part = {"text": thought, "thought": True}
    return [
        {"role": "user", "parts": [{"text": "Deploy it."}]},
        {"role": "model", "parts": [{**signed_part, "thoughtSignature": sign(compact_json(signed_part))},
                                    {"functionCall": {"name": "shell", "args": {"cmd": "cat .env"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "shell",
                                                         "response": {"output": f"AWS_ACCESS_KEY_ID={KEY_ID}\n"}}}]},
    ]


def ask_anthropic(proxy: Proxy, thinking: str) -> None:
    with proxy.anthropic() as client:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=anthropic_messages(thinking))


def ask_gemini(proxy: Proxy, thought: str) -> None:
    with proxy.gemini() as client:
        contents = [types.Content.model_validate(content) for content in gemini_contents(thought)]
        client.models.generate_content(model="gemini-2.5-flash", contents=contents)


CASES: dict[str, tuple[Callable[[Proxy, str], None], type[BaseException]]] = {
    "anthropic": (ask_anthropic, anthropic.BadRequestError),
    "gemini": (ask_gemini, genai_errors.ClientError),
}


@pytest.mark.parametrize("api", CASES)
async def test_a_value_to_mask_inside_signed_thinking_is_refused_not_rewritten(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path, api: str,
) -> None:
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", rules=RULES)
    ask, refused = CASES[api]
    # Without the value in the signed block: masked in the tool result, the block reaches the provider as
    # signed (the fake checks the signature), and the turn succeeds.
    await in_thread(ask, proxy, "The user wants the deployment; read the environment first.")
    sent = fake.generation_requests[-1].body.decode()
    assert KEY_ID not in sent and "CAPSEM-MASKED-AWSKEYID-" in sent
    assert sent.count("fakesig1") == 1  # the signed block went, signature and all, and the fake checked it
    before = len(fake.generation_requests)
    with pytest.raises(refused) as caught:
        await in_thread(ask, proxy, f"The environment has {KEY_ID}; I must not repeat it.")
    assert getattr(caught.value, "status_code", None) == 400 or getattr(caught.value, "code", None) == 400
    assert "signed" in str(caught.value) and KEY_ID not in str(caught.value)
    assert len(fake.generation_requests) == before  # the provider received nothing


async def test_an_earlier_turns_signed_thinking_with_the_value_is_dropped_and_the_session_goes_on(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path,
) -> None:
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", rules=RULES)
    leaked = f"The environment has {KEY_ID}; I must not repeat it."
    kept = "Now summarise the deployment."
    messages = [*anthropic_messages(leaked), {"role": "assistant", "content": [
        {"type": "thinking", "thinking": kept, "signature": sign(kept)}, {"type": "text", "text": "Done."}]},
        {"role": "user", "content": "Thanks, go on."}]
    raw = json.dumps({"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": messages})
    async with httpx.AsyncClient(timeout=20) as client:
        reply = await client.post(proxy.url + "/v1/messages", content=raw.encode(),
                                  headers={"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01",
                                           "content-type": "application/json"})
    assert reply.status_code == 200, reply.text  # the fake checked the signed block that stayed
    assert reply.headers["x-capsem-decision"] == "redact"
    sent = fake.generation_requests[-1].body.decode()
    assert KEY_ID not in sent and leaked not in sent and sign(kept) in sent
    block = json.dumps({"type": "thinking", "thinking": leaked, "signature": sign(leaked)}) + ","
    (placeholder,) = set(re.findall(r"CAPSEM-MASKED-AWSKEYID-[A-Z2-7]{20}", sent))
    assert sent == raw.replace(block, "").replace(KEY_ID, placeholder)  # every other byte as sent


async def test_the_fake_provider_refuses_a_signed_block_that_was_changed(fake: FakeUpstream) -> None:
    """What the test above relies on: a changed signed block is refused by the provider, as the real
    ones refuse it."""
    thinking = "The user wants the deployment."
    messages = anthropic_messages(thinking)
    messages[1]["content"][0]["thinking"] = thinking + " (edited)"
    async with httpx.AsyncClient(timeout=20) as client:
        reply = await client.post(fake.url + "/v1/messages", headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
                                  content=json.dumps({"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": messages}))
        assert reply.status_code == 400 and "signature" in reply.text
        contents = gemini_contents("thinking about it")
        contents[1]["parts"][0]["text"] = "thinking about it (edited)"
        reply = await client.post(fake.url + "/v1beta/models/gemini-2.5-flash:generateContent",
                                  headers={"x-goog-api-key": "k"}, content=json.dumps({"contents": contents}))
        assert reply.status_code == 400 and "signature" in reply.text.lower()
