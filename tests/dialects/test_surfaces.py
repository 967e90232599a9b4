"""The content-surface tables (docs/content-surfaces.md) are the dialects' declarations, and each row is true.

The tables are generated (``capsem_proxyd.dialects.surfaces``); docs/content-surfaces.md must
hold exactly that text. Each declared surface has an example here: a body with
the marker at that surface, sent through a real proxy; the refusal's CAPSEM
decision must name the hook the table says.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from capsem_proxyd.dialects.surfaces import APIS, markdown
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import ANTHROPIC_AUTH, GEMINI_AUTH, OPENAI_AUTH, Proxy

TABLES = Path(__file__).resolve().parents[2] / "docs" / "content-surfaces.md"
M = "capsem_block"
ROUTES = {
    "Chat Completions": ("/v1/chat/completions", OPENAI_AUTH),
    "Responses": ("/v1/responses", OPENAI_AUTH),
    "Anthropic Messages": ("/v1/messages", ANTHROPIC_AUTH),
    "Gemini generateContent": ("/v1beta/models/gemini-2.5-flash:generateContent", GEMINI_AUTH),
}
U = {"role": "user", "content": "hi"}
A = {"model": "claude-sonnet-4-6", "max_tokens": 10}
G = {"role": "user", "parts": [{"text": "hi"}]}
# (API, side, surface number within its side) -> a request body with the marker there, or a reply carrying it.
REQUESTS: dict[tuple[str, int], dict[str, Any]] = {
    ("Chat Completions", 0): {"model": "m", "messages": [{"role": "developer", "content": M}, U]},
    ("Chat Completions", 1): {"model": "m", "messages": [U, {"role": "tool", "tool_call_id": "t", "content": M}]},
    ("Chat Completions", 2): {"model": "m", "messages": [{"role": "user", "content": "hi", "name": M}]},
    ("Chat Completions", 3): {"model": "m", "messages": [U], "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {"q": {"type": "string", "description": M}}}}}]},
    ("Chat Completions", 4): {"model": "m", "messages": [U], "stop": [M]},
    ("Responses", 0): {"model": "m", "instructions": M, "input": "hi"},
    ("Responses", 1): {"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": M}]},
    ("Responses", 2): {"model": "m", "input": "hi", "tools": [{"type": "function", "name": "f",
                                                               "parameters": {"type": "object", "title": M}}]},
    ("Responses", 3): {"model": "m", "input": "hi", "metadata": {"k": M}},
    ("Anthropic Messages", 0): {**A, "system": M, "messages": [U]},
    ("Anthropic Messages", 1): {**A, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": M}]}]}]},
    ("Anthropic Messages", 2): {**A, "messages": [U], "tools": [{"name": "f", "input_schema": {"type": "object"},
                                                                 "input_examples": [{"q": M}]}]},
    ("Anthropic Messages", 3): {**A, "messages": [U], "stop_sequences": [M]},
    ("Gemini generateContent", 0): {"contents": [G], "systemInstruction": {"parts": [{"text": M}]}},
    ("Gemini generateContent", 1): {"contents": [G, {"role": "user", "parts": [
        {"functionResponse": {"name": "f", "response": {"r": M}}}]}]},
    ("Gemini generateContent", 2): {"contents": [G], "tools": [{"functionDeclarations": [
        {"name": "f", "description": M}]}]},
    ("Gemini generateContent", 3): {"contents": [G], "generationConfig": {"stopSequences": [M]}},
}
CLEAN = {
    "Chat Completions": {"model": "m", "messages": [U]},
    "Responses": {"model": "m", "input": "hi"},
    "Anthropic Messages": {**A, "messages": [U]},
    "Gemini generateContent": {"contents": [G]},
}
REPLIES: dict[tuple[str, int], dict[str, Any]] = {
    ("Chat Completions", 0): {"choices": [{"index": 0, "message": {"role": "assistant", "tool_calls": [
        {"id": "t", "type": "function", "function": {"name": "f", "arguments": f'{{"q": "{M}"}}'}}]}}]},
    ("Chat Completions", 1): {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok",
                                                                   "reasoning_content": M}}]},
    ("Chat Completions", 2): {"choices": [{"index": 0, "message": {"role": "assistant", "content": M}}]},
    ("Responses", 0): {"output": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": f'"{M}"'}]},
    ("Responses", 1): {"output": [{"type": "reasoning", "id": "r", "summary": [{"type": "summary_text", "text": M}]}]},
    ("Responses", 2): {"output": [{"type": "shell_call", "id": "s", "call_id": "c", "action": {"commands": [M]}}]},
    ("Anthropic Messages", 0): {"content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"q": M}}]},
    ("Anthropic Messages", 1): {"content": [{"type": "thinking", "thinking": M, "signature": "s"},
                                            {"type": "text", "text": "ok"}]},
    ("Anthropic Messages", 2): {"content": [{"type": "text", "text": M}]},
    ("Gemini generateContent", 0): {"candidates": [{"index": 0, "content": {"role": "model", "parts": [
        {"functionCall": {"name": "f", "args": {"q": M}}}]}}]},
    ("Gemini generateContent", 1): {"candidates": [{"index": 0, "content": {"role": "model", "parts": [
        {"text": M, "thought": True}, {"text": "ok"}]}}]},
    ("Gemini generateContent", 2): {"candidates": [{"index": 0, "content": {"role": "model", "parts": [
        {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": M}}]}}]},
}


def test_the_docs_show_exactly_the_generated_tables() -> None:
    text = TABLES.read_text()
    shown = re.search(r"<!-- content-surfaces:start -->\n(.*?)<!-- content-surfaces:end -->", text, re.S)
    assert shown is not None, "docs/content-surfaces.md lacks the content-surfaces markers"
    assert shown.group(1) == markdown(), "the tables drifted: python -m capsem_proxyd.dialects.surfaces"


def _cases(side: str, examples: dict[tuple[str, int], dict[str, Any]]) -> list[tuple[str, int, str]]:
    cases = []
    for api, dialect in APIS.items():
        rows = [surface for surface in dialect.surfaces if surface.side == side]
        for number, surface in enumerate(rows):
            cases.append((api, number, surface.hook))
            assert (api, number) in examples, f"no {side} example for {api}: {surface.where}"
    return cases


@pytest.mark.parametrize(("api", "number", "hook"), _cases("request", REQUESTS))
async def test_each_request_surface_reaches_its_hook(
    api: str, number: int, hook: str, proxy: Proxy, fake: FakeUpstream
) -> None:
    path, headers = ROUTES[api]
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.post(path, json=REQUESTS[(api, number)], headers=headers)
    assert response.status_code == 400, response.text
    assert f'"hook":"{hook.split()[0]}"' in response.text.replace(" ", "")
    assert fake.requests == []


@pytest.mark.parametrize(("api", "number", "hook"), _cases("reply", REPLIES))
async def test_each_reply_surface_reaches_its_hook(
    api: str, number: int, hook: str, proxy: Proxy, fake: FakeUpstream
) -> None:
    path, headers = ROUTES[api]
    fake.script(Reply(raw_body=orjson.dumps(REPLIES[(api, number)]), content_type="application/json"))
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.post(path, json=CLEAN[api], headers=headers)
    assert response.status_code == 400, response.text
    assert f'"hook":"{hook.split()[0]}"' in response.text.replace(" ", "")
    if "thoughts" in hook:
        assert "model thoughts" in response.text
