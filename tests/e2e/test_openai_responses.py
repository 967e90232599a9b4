"""OpenAI Responses API through the proxy: JSON and streaming, all four hooks."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import trio

from tests.support.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.support.proxy import OPENAI_AUTH, Proxy, in_thread

TOOL = {"type": "function", "name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {}}}


def create(proxy: Proxy, **kwargs: object) -> object:
    return proxy.openai().responses.create(model="gpt-4.1", **kwargs)


def stream(proxy: Proxy, **kwargs: object) -> tuple[str, list, BaseException | None]:
    text, events = [], []
    try:
        for event in proxy.openai().responses.create(model="gpt-4.1", stream=True, **kwargs):
            events.append(event)
            if event.type == "response.output_text.delta":
                text.append(event.delta)
    except openai.APIError as error:
        return "".join(text), events, error
    return "".join(text), events, None


async def test_json_reply_text(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(text="Responses work."))
    response = await in_thread(lambda: create(proxy, input="hi", instructions="be brief"))
    assert response.output_text == "Responses work."
    assert fake.requests[0].path == "/v1/responses"


@pytest.mark.parametrize(
    ("kwargs", "hook"),
    [
        ({"input": "please capsem_block"}, "on_model_call"),
        ({"input": "hi", "instructions": "CAPSEM_BLOCK"}, "on_model_call"),
        ({"input": [{"role": "user", "content": [{"type": "input_text", "text": "x capsem_block"}]}]}, "on_model_call"),
        ({"input": "hi", "tools": [{**TOOL, "name": "capsem_block_tool"}]}, "on_tool_call"),
        (
            {
                "input": [
                    {"role": "user", "content": "weather?"},
                    {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "c1", "output": "capsem_block sunny"},
                ],
                "tools": [TOOL],
            },
            "on_tool_response",
        ),
    ],
    ids=["string-input", "instructions", "item-list", "tool-definition", "function-call-output"],
)
async def test_request_side_blocks(proxy: Proxy, fake: FakeUpstream, kwargs: dict, hook: str) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await in_thread(lambda: create(proxy, **kwargs))
    assert raised.value.body["capsem"]["hook"] == hook
    assert fake.requests == []


@pytest.mark.parametrize(
    ("reply", "hook"),
    [
        (Reply(text="output with capsem_block"), "on_model_response"),
        (Reply(tool_calls=[ToolCall("capsem_block_fn", {})]), "on_tool_call"),
    ],
)
async def test_response_side_blocks(proxy: Proxy, fake: FakeUpstream, reply: Reply, hook: str) -> None:
    fake.script(reply)
    with pytest.raises(openai.BadRequestError) as raised:
        await in_thread(lambda: create(proxy, input="go"))
    assert raised.value.body["capsem"]["hook"] == hook


async def test_streamed_text_equals_json_text(proxy: Proxy, fake: FakeUpstream) -> None:
    text = "Streaming through the Responses API, checked as it goes. " * 10
    fake.script(Reply(text=text))
    streamed, events, error = await in_thread(lambda: stream(proxy, input="go"))
    assert error is None and streamed == text
    assert events[-1].type == "response.completed"


async def test_streamed_function_call_round_trips(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(tool_calls=[ToolCall("get_weather", {"city": "Lima"})], args_chunk_size=2))
    _, events, error = await in_thread(lambda: stream(proxy, input="weather?", tools=[TOOL]))
    assert error is None
    done = [e.item for e in events if e.type == "response.output_item.done" and e.item.type == "function_call"]
    assert [(item.name, json.loads(item.arguments)) for item in done] == [("get_weather", {"city": "Lima"})]


@pytest.mark.parametrize(
    ("reply", "hook"),
    [
        (Reply(chunks=["fine so far, caps", "em_blo", "ck and beyond"]), "on_model_response"),
        (Reply(tool_calls=[ToolCall("run", {"cmd": "capsem_block"})], args_chunk_size=3), "on_tool_call"),
    ],
    ids=["split-text", "function-call-args"],
)
async def test_stream_block_raises_in_the_sdk(proxy: Proxy, fake: FakeUpstream, reply: Reply, hook: str) -> None:
    fake.script(reply)
    received, events, error = await in_thread(lambda: stream(proxy, input="go"))
    assert isinstance(error, openai.APIError)
    assert error.body["capsem"]["hook"] == hook
    assert "capsem_block" not in received.lower()
    assert not any(getattr(e, "type", "") == "response.completed" for e in events)


async def test_stream_block_closes_upstream(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(chunks=["capsem_block first"] + ["more "] * 3000, chunk_delay=0.002))
    _, _, error = await in_thread(lambda: stream(proxy, input="go"))
    assert error is not None
    # The reply runs 3,000 x 2 ms = 6 s: closed and not completed is the proxy cutting it, early.
    with trio.fail_after(30):  # a cap against hanging, not a measure (what is asserted is below)
        await fake.streams[0].closed.wait()
    assert fake.streams[0].client_closed and not fake.streams[0].completed


async def test_stream_block_ends_with_error_then_response_failed(proxy: Proxy, fake: FakeUpstream) -> None:
    """The SDKs raise on ``event: error``; Codex ends its turn only on ``response.failed``, final for ``invalid_prompt``."""
    fake.script(Reply(chunks=["a harmless start that is long enough to be released, ", "then capsem_", "block"]))
    async with httpx.AsyncClient() as client:
        response = await client.post(proxy.url + "/v1/responses", headers=OPENAI_AUTH,
                                     json={"model": "gpt-4.1", "input": "go", "stream": True})
    *_, error, failed = response.content.decode().strip().split("\n\n")
    assert error.startswith("event: error\ndata: ") and failed.startswith("event: response.failed\ndata: ")
    error_data, failed_data = (json.loads(event.split("data: ", 1)[1]) for event in (error, failed))
    assert error_data["error"]["type"] == "invalid_request_error" and error_data["code"] == "capsem_blocked"
    assert failed_data["response"]["status"] == "failed"
    assert failed_data["response"]["error"] == {"code": "invalid_prompt", "message": error_data["message"]}
    assert "Debug" in error_data["message"]
