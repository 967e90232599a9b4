"""Streams with several choices (Chat ``n``) or candidates (Gemini ``candidateCount``): one text per choice.

The SDK reassembles each choice on its own, so the proxy checks each on its
own: a marker split between two choices is no marker in anything a client
reads (it passes, at every split position), while a marker inside one choice
is caught however the other choice's deltas interleave with it. With one
buffer for all choices the proxy got both wrong: the first blocked for
nothing, the second passed.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import Proxy, in_thread

M = "capsem_block"
SPLITS = range(1, len(M))


def chat_stream(*deltas: tuple[int, str]) -> bytes:
    events = [
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": index, "delta": {"content": text}, "finish_reason": None}]}
        for index, text in deltas
    ]
    events.append({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [
        {"index": 0, "delta": {}, "finish_reason": "stop"}, {"index": 1, "delta": {}, "finish_reason": "stop"}]})
    return b"".join(b"data: " + orjson.dumps(event) + b"\n\n" for event in events) + b"data: [DONE]\n\n"


def gemini_stream(*deltas: tuple[int, str]) -> bytes:
    events = [{"candidates": [{"index": index, "content": {"role": "model", "parts": [{"text": text}]}}]}
              for index, text in deltas]
    events.append({"candidates": [{"index": 0, "finishReason": "STOP"}, {"index": 1, "finishReason": "STOP"}]})
    return b"".join(b"data: " + orjson.dumps(event) + b"\r\n\r\n" for event in events)


def chat_choices(proxy: Proxy) -> dict[int, str]:
    with proxy.openai() as client:
        texts: dict[int, str] = {}
        for chunk in client.chat.completions.create(
            model="gpt-4o-mini", n=2, stream=True, messages=[{"role": "user", "content": "hi"}]
        ):
            for choice in chunk.choices:
                texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
        return texts


def gemini_candidates(proxy: Proxy) -> dict[int, str]:
    texts: dict[int, str] = {}
    with proxy.gemini() as client:
        config = genai_types.GenerateContentConfig(candidate_count=2)
        for chunk in client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi", config=config):
            for candidate in chunk.candidates or []:
                parts = candidate.content.parts if candidate.content else None
                texts[candidate.index or 0] = texts.get(candidate.index or 0, "") + "".join(
                    part.text or "" for part in parts or [])
        return texts


@pytest.mark.parametrize("split", SPLITS)
async def test_a_marker_split_between_two_choices_is_no_marker(split: int, proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(raw_body=chat_stream((0, "one " + M[:split]), (1, M[split:] + " two")),
                      content_type="text/event-stream"))
    texts = await in_thread(chat_choices, proxy)
    assert texts == {0: "one " + M[:split], 1: M[split:] + " two"}


@pytest.mark.parametrize("split", SPLITS)
async def test_a_marker_in_one_choice_is_caught_whatever_interleaves(
    split: int, proxy: Proxy, fake: FakeUpstream
) -> None:
    fake.script(Reply(raw_body=chat_stream((0, "a " + M[:split]), (1, "other words"), (0, M[split:] + " b")),
                      content_type="text/event-stream"))
    import openai

    with pytest.raises(openai.APIError, match="CAPSEM policy 'Debug'"):
        await in_thread(chat_choices, proxy)


@pytest.mark.parametrize("split", SPLITS)
async def test_a_marker_split_between_two_candidates_is_no_marker(
    split: int, proxy: Proxy, fake: FakeUpstream
) -> None:
    fake.script(Reply(raw_body=gemini_stream((0, "one " + M[:split]), (1, M[split:] + " two")),
                      content_type="text/event-stream"))
    texts = await in_thread(gemini_candidates, proxy)
    assert texts == {0: "one " + M[:split], 1: M[split:] + " two"}


@pytest.mark.parametrize("split", SPLITS)
async def test_a_marker_in_one_candidate_is_caught_whatever_interleaves(
    split: int, proxy: Proxy, fake: FakeUpstream
) -> None:
    fake.script(Reply(raw_body=gemini_stream((0, "a " + M[:split]), (1, "other words"), (0, M[split:] + " b")),
                      content_type="text/event-stream"))
    with pytest.raises(genai_errors.APIError, match="CAPSEM policy 'Debug'"):
        await in_thread(gemini_candidates, proxy)


async def test_a_finish_closes_only_its_own_choices_tool_call(proxy: Proxy, fake: FakeUpstream) -> None:
    """Choice 1 finishes while choice 0's call is half streamed: the half call is not checked (nor released)
    then, and its whole arguments, marker included, are caught when choice 0 ends."""
    def call(index: int, arguments: str, **extra: Any) -> dict[str, Any]:
        return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [
            {"index": index, "delta": {"tool_calls": [{"index": 0, **extra, "function": {"arguments": arguments}}]},
             "finish_reason": None}]}

    events = [
        call(0, '{"q": "capsem_', id="t1", type="function"),
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 1, "delta": {"content": "done"}, "finish_reason": "stop"}]},
        call(0, 'block"}'),
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    events[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] = "search"
    fake.script(Reply(raw_body=b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n",
                      content_type="text/event-stream"))
    import openai

    with pytest.raises(openai.APIError, match="CAPSEM policy 'Debug'"):
        await in_thread(chat_choices, proxy)
