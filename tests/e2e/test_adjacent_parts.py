"""Adjacent text parts of one message are read side by side, as the model reads them (issue 20, class 13).

Providers put a message's text parts next to each other in the model's
context: ``caps`` + ``em_block`` is ``capsem_block`` to the model, so it is
to the policies. Through the real proxy with the default Debug policy (the
marker blocks), raw bodies and the official SDKs; the split point is a
property. A part that is not text between them, or two messages, still
separate them. The per-piece verdict cache keeps working: a resent
conversation's runs are not analysed again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio
from google.genai import types
from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.config import Settings
from tests.support.bodies import USER, user
from tests.support.bodies import chat_body as chat
from tests.support.bodies import messages_body as anthropic_body
from tests.support.bodies import responses_body as responses
from tests.support.fake_upstream import FakeUpstream
from tests.support.policies import CountingPolicy
from tests.support.proxy import ANTHROPIC_AUTH, GEMINI_AUTH, OPENAI_AUTH, Proxy, in_thread

M = "capsem_block"
CHAT = ("/v1/chat/completions", OPENAI_AUTH)
RESPONSES = ("/v1/responses", OPENAI_AUTH)
ANTHROPIC = ("/v1/messages", ANTHROPIC_AUTH)
GEMINI = ("/v1beta/models/gemini-2.5-flash:generateContent", GEMINI_AUTH)
PNG = "iVBORw0KGgo="


def chat_parts(*texts: str) -> dict[str, Any]:
    return chat(user([{"type": "text", "text": text} for text in texts]))


def chat_system_parts(*texts: str) -> dict[str, Any]:
    return chat({"role": "system", "content": [{"type": "text", "text": text} for text in texts]}, USER)


def chat_tool_parts(*texts: str) -> dict[str, Any]:
    return chat(USER, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "read", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": text} for text in texts]})


def responses_parts(*texts: str) -> dict[str, Any]:
    return responses([{"role": "user", "content": [{"type": "input_text", "text": text} for text in texts]}])


def responses_history_parts(*texts: str) -> dict[str, Any]:
    return responses([{"type": "message", "role": "assistant", "content": [
        {"type": "output_text", "text": text, "annotations": []} for text in texts]},
        {"role": "user", "content": "go on"}])


def anthropic_parts(*texts: str) -> dict[str, Any]:
    return anthropic_body([{"type": "text", "text": text} for text in texts])


def anthropic_cached_parts(*texts: str) -> dict[str, Any]:
    return anthropic_body([{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}} for text in texts])


def anthropic_system_parts(*texts: str) -> dict[str, Any]:
    return anthropic_body("hi", system=[{"type": "text", "text": text} for text in texts])


def anthropic_tool_parts(*texts: str) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 10, "messages": [
        USER, {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {}}]},
        user([{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": text}
                                                                        for text in texts]}])]}


def gemini_parts(*texts: str) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text} for text in texts]}]}


def gemini_system_parts(*texts: str) -> dict[str, Any]:
    return {"systemInstruction": {"parts": [{"text": text} for text in texts]},
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def gemini_tool_parts(*texts: str) -> dict[str, Any]:
    return {"contents": [{"role": "model", "parts": [{"functionCall": {"name": "read", "args": {}}}]},
                         {"role": "user", "parts": [{"functionResponse": {
                             "name": "read", "response": {}, "parts": [{"text": text} for text in texts]}}]}]}


SHAPES: dict[str, tuple[tuple[str, Any], Callable[..., dict[str, Any]]]] = {
    "chat content parts": (CHAT, chat_parts),
    "chat system parts": (CHAT, chat_system_parts),
    "chat tool message parts": (CHAT, chat_tool_parts),
    "responses input_text parts": (RESPONSES, responses_parts),
    "responses output_text parts in history": (RESPONSES, responses_history_parts),
    "anthropic text blocks": (ANTHROPIC, anthropic_parts),
    "anthropic text blocks with cache_control": (ANTHROPIC, anthropic_cached_parts),
    "anthropic system blocks": (ANTHROPIC, anthropic_system_parts),
    "anthropic tool_result blocks": (ANTHROPIC, anthropic_tool_parts),
    "gemini parts": (GEMINI, gemini_parts),
    "gemini systemInstruction parts": (GEMINI, gemini_system_parts),
    "gemini functionResponse parts": (GEMINI, gemini_tool_parts),
}


async def post(proxy: Proxy, route: tuple[str, Any], body: dict[str, Any]) -> httpx.Response:
    path, headers = route
    async with httpx.AsyncClient(base_url=proxy.url, timeout=60) as client:
        return await client.post(path, json=body, headers=headers)


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_marker_split_across_adjacent_parts_is_caught(shape: str, proxy: Proxy, fake: FakeUpstream) -> None:
    route, build = SHAPES[shape]
    response = await post(proxy, route, build("we say caps", "em_block here"))
    assert response.status_code == 400, response.text
    assert "CAPSEM policy 'Debug'" in response.text
    assert fake.requests == []
    clean = build("we say caps", "ule here")
    assert (await post(proxy, route, clean)).status_code == 200
    assert fake.requests[0].json == clean  # forwarded as sent: the join is the proxy's reading only


async def test_a_marker_split_anywhere_across_parts_is_caught(proxy: Proxy, fake: FakeUpstream) -> None:
    """Any shape, any cut points (two or more parts), any text around the marker."""
    words = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=6)

    @st.composite
    def cases(draw: st.DrawFn) -> tuple[str, list[str]]:
        text = draw(words) + M + draw(words)
        start = text.index(M)
        cuts = sorted(draw(st.sets(st.integers(start + 1, start + len(M) - 1), min_size=1, max_size=3)))
        return draw(st.sampled_from(sorted(SHAPES))), [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]

    with httpx.Client(base_url=proxy.url, timeout=60) as client:

        @given(cases())
        def refused(case: tuple[str, list[str]]) -> None:
            shape, parts = case
            (path, headers), build = SHAPES[shape]
            response = client.post(path, json=build(*parts), headers=dict(headers))
            assert response.status_code == 400, (case, response.text)

        with trio.fail_after(600):  # a hang guard only
            await trio.to_thread.run_sync(refused)
    assert fake.requests == []


# -- the official SDKs ------------------------------------------------------------------------------------


async def test_openai_sdk_chat_parts(proxy: Proxy, fake: FakeUpstream) -> None:
    content = [{"type": "text", "text": "caps"}, {"type": "text", "text": "em_block"}]
    with pytest.raises(openai.BadRequestError, match="Debug"):
        await in_thread(lambda: proxy.openai().chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": content}]))
    assert fake.requests == []


async def test_openai_sdk_responses_parts(proxy: Proxy, fake: FakeUpstream) -> None:
    content = [{"type": "input_text", "text": "caps"}, {"type": "input_text", "text": "em_block"}]
    with pytest.raises(openai.BadRequestError, match="Debug"):
        await in_thread(lambda: proxy.openai().responses.create(
            model="gpt-4o", input=[{"role": "user", "content": content}]))
    assert fake.requests == []


async def test_anthropic_sdk_text_blocks(proxy: Proxy, fake: FakeUpstream) -> None:
    content = [{"type": "text", "text": "caps"}, {"type": "text", "text": "em_block"}]
    with pytest.raises(anthropic.BadRequestError, match="Debug"):
        await in_thread(lambda: proxy.anthropic().messages.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": content}]))
    assert fake.requests == []


async def test_google_genai_parts(proxy: Proxy, fake: FakeUpstream) -> None:
    from google.genai import errors

    contents = [types.Content(role="user", parts=[types.Part(text="caps"), types.Part(text="em_block")])]
    client = proxy.gemini()  # held: a client collected mid-call closes its connection
    with pytest.raises(errors.ClientError, match="Debug"):
        await in_thread(lambda: client.models.generate_content(model="gemini-2.5-flash", contents=contents))
    assert fake.requests == []


# -- what still separates texts ---------------------------------------------------------------------------


@pytest.mark.parametrize(("route", "body"), [
    (CHAT, chat(user([{"type": "text", "text": "caps"}, {"type": "image_url", "image_url": {"url": "https://x/i.png"}},
                      {"type": "text", "text": "em_block"}]))),
    (GEMINI, {"contents": [{"role": "user", "parts": [
        {"text": "caps"}, {"inlineData": {"mimeType": "image/png", "data": PNG}}, {"text": "em_block"}]}]}),
    (ANTHROPIC, chat(user("caps"), user("em_block"), model="m") | {"max_tokens": 10}),
], ids=["chat: an image between", "gemini: inline data between", "anthropic: two messages"])
async def test_texts_apart_in_the_models_context_stay_apart(
    route: tuple[str, Any], body: dict[str, Any], proxy: Proxy, fake: FakeUpstream
) -> None:
    assert (await post(proxy, route, body)).status_code == 200


# -- the per-piece verdict cache --------------------------------------------------------------------------


async def test_a_resent_run_of_parts_is_analysed_once(
    start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "counting.toml").write_text('class = "tests.support.policies:CountingPolicy"\n')
    proxy = await start_proxy(proxy_settings, policy_dir=str(tmp_path))
    CountingPolicy.seen.clear()
    # each message of an agent's length: a piece of its own (short texts join the next, ``pieces.grouped``)
    asked = "what does this module do, and how is each of its handlers tested? " * 2
    messages = [{"role": "user", "content": [{"type": "text", "text": f"<reminder {turn}>"},
                                             {"type": "text", "text": f"question {turn}: {asked}"}]}
                for turn in range(3)]
    body = anthropic_body("x") | {"messages": messages}
    assert (await post(proxy, ANTHROPIC, body)).status_code == 200
    first = list(CountingPolicy.seen)
    assert ("on_model_call", f"<reminder 0>question 0: {asked}") in first  # one run, one piece
    assert (await post(proxy, ANTHROPIC, body)).status_code == 200
    assert CountingPolicy.seen == first  # resent: nothing analysed again
    body["messages"].append({"role": "user", "content": [{"type": "text", "text": "<reminder 3>"},
                                                         {"type": "text", "text": "counting_"},
                                                         {"type": "text", "text": "block"}]})
    response = await post(proxy, ANTHROPIC, body)
    assert response.status_code == 400  # the policy's own term, split across the new message's parts
    new = CountingPolicy.seen[len(first):]
    assert not any("question 0" in text for _, text in new)

