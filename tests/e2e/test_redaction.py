"""Masking through a real proxy (issue 23): a credential in a tool result is masked, and the session goes on.

A Rules ``redact`` rule finds an AWS access key id and, by its label, the
secret access key in a tool result; the proxy writes a placeholder over each
and forwards the request. Every turn resends the conversation: every turn
succeeds, the fake provider never receives either value, and each value gets
the same placeholder in every turn. A later request that quotes the secret
bare (no label, no tool result) is masked by the tenant's memory.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from google.genai import types

from capsem_proxyd.config import Settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.metrics import scrape
from tests.support.proxy import OPENAI_AUTH, Proxy, in_thread
from tests.support.sdk import conversation_turn, policy_proxy

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOOL_OUTPUT = f"$ cat .env\nAWS_ACCESS_KEY_ID={KEY_ID}\nAWS_SECRET_ACCESS_KEY={SECRET}\nREGION=eu-west-1\n"
RULES = r"""
[on_tool_response]
redact = [
    { name = "aws-key-id", regex = 'AKIA[0-9A-Z]{16}', case_sensitive = true },
    { name = "aws-secret", regex = 'AWS_SECRET_ACCESS_KEY\s*=\s*(?P<value>[A-Za-z0-9/+]{40})', group = "value" },
]
[on_model_call]
redact = [
    { name = "aws-key-id", regex = 'AKIA[0-9A-Z]{16}', case_sensitive = true },
    { name = "aws-secret", regex = 'AWS_SECRET_ACCESS_KEY\s*=\s*(?P<value>[A-Za-z0-9/+]{40})', group = "value" },
]
"""
PLACEHOLDER = re.compile(r"CAPSEM-MASKED-[A-Z0-9]+-[A-Z2-7]{20}")
TURNS = 4


def chat_messages(turn: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Set up the deployment."},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_env", "type": "function", "function": {"name": "shell", "arguments": '{"cmd": "cat .env"}'},
        }]},
        {"role": "tool", "tool_call_id": "call_env", "content": TOOL_OUTPUT},
    ]
    for number in range(turn):
        messages += [{"role": "assistant", "content": f"Step {number} done."},
                     {"role": "user", "content": f"Go on with step {number + 1}."}]
    return messages


def responses_input(turn: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [
        {"role": "user", "content": "Set up the deployment."},
        {"type": "function_call", "call_id": "call_env", "name": "shell", "arguments": '{"cmd": "cat .env"}'},
        {"type": "function_call_output", "call_id": "call_env", "output": TOOL_OUTPUT},
    ]
    for number in range(turn):
        items += [{"role": "assistant", "content": f"Step {number} done."},
                  {"role": "user", "content": f"Go on with step {number + 1}."}]
    return items


def anthropic_messages(turn: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Set up the deployment."},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_env", "name": "shell", "input": {"cmd": "cat .env"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_env", "content": TOOL_OUTPUT}]},
    ]
    for number in range(turn):
        messages += [{"role": "assistant", "content": f"Step {number} done."},
                     {"role": "user", "content": f"Go on with step {number + 1}."}]
    return messages


def gemini_contents(turn: int) -> list[types.Content]:
    contents = [
        types.Content(role="user", parts=[types.Part(text="Set up the deployment.")]),
        types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(name="shell", args={"cmd": "cat .env"}))]),
        types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
            name="shell", response={"output": TOOL_OUTPUT}))]),
    ]
    for number in range(turn):
        contents += [types.Content(role="model", parts=[types.Part(text=f"Step {number} done.")]),
                     types.Content(role="user", parts=[types.Part(text=f"Go on with step {number + 1}.")])]
    return contents


def call(api: str, stream: bool, proxy: Proxy, turn: int) -> None:
    """Turn ``turn`` of the session through the API's official SDK; raises if refused."""
    build = {"chat": chat_messages, "responses": responses_input, "anthropic": anthropic_messages,
             "gemini": gemini_contents}[api]
    conversation_turn(api, stream, proxy, build(turn))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("api", ["chat", "responses", "anthropic", "gemini"])
async def test_a_credential_in_a_tool_result_is_masked_every_turn_and_the_session_goes_on(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path, api: str,
    stream: bool,
) -> None:
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", rules=RULES)
    for turn in range(TURNS):
        await in_thread(call, api, stream, proxy, turn)  # raises if refused: every turn succeeds
    sent = fake.generation_requests
    assert len(sent) == TURNS
    seen: list[set[str]] = []
    for request in sent:
        body = request.body.decode()
        assert KEY_ID not in body and SECRET not in body
        assert SECRET.replace("/", "\\/") not in body
        seen.append(set(PLACEHOLDER.findall(body)))
    assert len(seen[0]) == 2 and all(placeholders == seen[0] for placeholders in seen)  # the same every turn
    # what is around the values reached the provider unchanged
    assert "AWS_ACCESS_KEY_ID=CAPSEM-MASKED-AWSKEYID-" in json.dumps(sent[-1].json)
    assert "AWS_SECRET_ACCESS_KEY=CAPSEM-MASKED-AWSSECRET-" in json.dumps(sent[-1].json)


async def test_a_bare_value_masked_before_is_masked_again_and_the_body_is_kept_byte_for_byte(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path,
) -> None:
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", rules=RULES)
    async with httpx.AsyncClient(timeout=20) as client:
        first = await client.post(proxy.url + "/v1/chat/completions", headers=dict(OPENAI_AUTH),
                                  json={"model": "gpt-4o-mini", "messages": chat_messages(0)})
        assert first.status_code == 200
        assert first.headers["x-capsem-decision"] == "redact"
        (placeholder,) = {found for found in PLACEHOLDER.findall(fake.requests[-1].body.decode()) if "SECRET" in found}
        # A compacted history: the secret quoted bare, escaped as the client chose, in an odd layout.
        raw = ('{"model" : "gpt-4o-mini",\n  "messages":[{"role":"user","content":"the key \\u0077'
               + SECRET[1:].replace("/", "\\/") + ' \\ud83d\\ude00 was rotated"}], "n": 1.0e0}').encode()
        second = await client.post(proxy.url + "/v1/chat/completions", content=raw,
                                   headers={**OPENAI_AUTH, "content-type": "application/json"})
        assert second.status_code == 200
        assert second.headers["x-capsem-decision"] == "redact"
    expected = raw.replace(("\\u0077" + SECRET[1:].replace("/", "\\/")).encode(), placeholder.encode())
    assert fake.requests[-1].body == expected


async def test_a_masking_is_audited_counted_and_logged_without_the_value(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    audit = tmp_path / "audit.jsonl"
    folder = tmp_path / "policies"
    settings = replace(proxy_settings, audit_log=str(audit), audit_prompts=True)
    proxy = await policy_proxy(start_proxy, settings, folder, rules=RULES)
    caplog.set_level(logging.INFO, logger="capsem_proxyd.request")
    # the user pastes the secret too: the audit record of the prompt (--audit-prompts) must not hold it
    messages = [*chat_messages(1), {"role": "user", "content": f"is AWS_SECRET_ACCESS_KEY={SECRET} still valid?"}]
    async with httpx.AsyncClient(timeout=20) as client:
        reply = await client.post(proxy.url + "/v1/chat/completions", headers=dict(OPENAI_AUTH),
                                  json={"model": "gpt-4o-mini", "messages": messages})
        assert reply.status_code == 200 and reply.headers["x-capsem-decision"] == "redact"
        health = (await client.get(proxy.url + "/health")).json()
    metrics = await scrape(proxy.url)
    assert metrics("capsem_proxyd_redactions_total", hook="on_tool_response", policy="Rules") == 3
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    masked = [record for record in records if record["type"] == "redaction"]
    assert {(record["kind"], record["count"], record["policy"], record["hook"]) for record in masked} == {
        ("aws-key-id", 1, "Rules", "on_tool_response"), ("aws-secret", 2, "Rules", "on_tool_response")}
    prompts = [record["prompt"] for record in records if "prompt" in record]
    assert prompts and all("AWS_SECRET_ACCESS_KEY=[masked aws-secret]" in prompt for prompt in prompts)
    sent = fake.requests[-1].body.decode()
    assert all(record["placeholder"] in sent and record["key_id"] == health["masking"]["key_id"] for record in masked)
    assert KEY_ID not in audit.read_text() and SECRET not in audit.read_text()
    lines = [record.getMessage() for record in caplog.records if record.name == "capsem_proxyd.request"]
    assert any("decision=redact" in line for line in lines), lines
    assert not any(SECRET in record.getMessage() or KEY_ID in record.getMessage() for record in caplog.records)


async def test_a_value_that_cannot_be_masked_exactly_is_refused_not_forwarded(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path,
) -> None:
    """A key the client chose (an object key: never rewritten) carries the value: the SDK gets the
    provider-shaped refusal, which does not quote the value, and the provider nothing."""
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", rules=RULES)
    messages = [{"role": "user", "content": "hello"}]
    with pytest.raises(openai.BadRequestError) as refused:
        await in_thread(lambda: proxy.openai().chat.completions.create(
            model="gpt-4o-mini", messages=messages, metadata={KEY_ID: "x"}))
    assert "cannot be masked exactly" in str(refused.value) and KEY_ID not in str(refused.value)
    assert refused.value.body["capsem"]["policy"] == "Rules"
    assert fake.generation_requests == []
