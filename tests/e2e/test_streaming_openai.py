"""OpenAI Chat Completions streams under policy, with the openai SDK and raw httpx."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import trio

from tests.support.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.support.proxy import OPENAI_KEY, Proxy, in_thread
from tests.support.streams import LONG_TEXT, assert_upstream_closed_at_once, endless_blocked_reply, split_marker_chunks

USER = [{"role": "user", "content": "tell me a story"}]


def stream_chat(proxy: Proxy, **kwargs: object) -> tuple[str, list, object]:
    """Iterate a stream fully; returns (text, tool-call deltas, last chunk)."""
    text, deltas, last = [], [], None
    stream = proxy.openai().chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True, **kwargs)
    for chunk in stream:
        last = chunk
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            deltas.extend(choice.delta.tool_calls or [])
    return "".join(text), deltas, last


def collect_until_error(proxy: Proxy) -> tuple[str, BaseException | None]:
    received: list[str] = []
    try:
        stream = proxy.openai().chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
        for chunk in stream:
            for choice in chunk.choices:
                received.append(choice.delta.content or "")
    except openai.APIError as error:
        return "".join(received), error
    return "".join(received), None


async def test_streamed_text_equals_non_streamed_text(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(text=LONG_TEXT), Reply(text=LONG_TEXT))
    streamed, _, _ = await in_thread(stream_chat, proxy)
    whole = await in_thread(lambda: proxy.openai().chat.completions.create(model="m", messages=USER))
    assert streamed == whole.choices[0].message.content == LONG_TEXT
    assert fake.streams[0].completed


async def test_usage_chunk_is_passed_through(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(text="short answer"))
    text, _, last = await in_thread(lambda: stream_chat(proxy, stream_options={"include_usage": True}))
    assert text == "short answer"
    assert last.usage is not None and last.usage.total_tokens > 0
    assert fake.requests[0].json["stream_options"] == {"include_usage": True}


async def test_streamed_tool_calls_round_trip(proxy: Proxy, fake: FakeUpstream) -> None:
    calls = [ToolCall("get_weather", {"city": "Paris", "units": "metric"}), ToolCall("get_time", {"tz": "Europe/Paris"})]
    fake.script(Reply(tool_calls=calls, args_chunk_size=3))
    _, deltas, _ = await in_thread(stream_chat, proxy)
    assembled: dict[int, dict] = {}
    for delta in deltas:
        entry = assembled.setdefault(delta.index, {"name": "", "arguments": ""})
        entry["name"] += delta.function.name or ""
        entry["arguments"] += delta.function.arguments or ""
    assert [(e["name"], json.loads(e["arguments"])) for e in assembled.values()] == [
        ("get_weather", {"city": "Paris", "units": "metric"}),
        ("get_time", {"tz": "Europe/Paris"}),
    ]


@split_marker_chunks
async def test_term_split_across_chunks_is_blocked_and_never_delivered_whole(
    proxy: Proxy, fake: FakeUpstream, chunks: list[str]
) -> None:
    fake.script(Reply(chunks=chunks))
    received, error = await in_thread(collect_until_error, proxy)
    assert isinstance(error, openai.APIError)
    assert "capsem_block" in str(error).lower() and "Debug" in str(error)
    assert error.body["capsem"]["hook"] == "on_model_response"
    assert "capsem_block" not in received.lower()


async def test_blocked_stream_closes_the_upstream_at_once(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(endless_blocked_reply())
    received, error = await in_thread(collect_until_error, proxy)
    assert error is not None
    await assert_upstream_closed_at_once(fake)


async def test_streamed_tool_call_blocked_before_any_of_it_is_released(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(text="let me run that", tool_calls=[ToolCall("shell", {"cmd": "rm -rf capsem_block"})], args_chunk_size=4))
    raw = await _raw_stream(proxy)
    assert b"\"name\":\"shell\"" not in raw and b"rm -rf" not in raw
    assert b'"capsem_blocked"' in raw and b"on_tool_call" in raw


async def _raw_stream(proxy: Proxy, **body: object) -> bytes:
    payload = {"model": "m", "messages": USER, "stream": True, **body}
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            proxy.url + "/v1/chat/completions", json=payload, headers={"authorization": f"Bearer {OPENAI_KEY}"}
        )
    return response.content


async def test_client_hang_up_closes_the_upstream_stream(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(chunks=["word "] * 5000, chunk_delay=0.002))
    async with httpx.AsyncClient(timeout=10) as client, client.stream(
        "POST",
        proxy.url + "/v1/chat/completions",
        json={"model": "m", "messages": USER, "stream": True},
        headers={"authorization": f"Bearer {OPENAI_KEY}"},
    ) as response:
        async for _ in response.aiter_bytes():
            break
    with trio.fail_after(1):
        await fake.streams[0].closed.wait()
    assert fake.streams[0].client_closed and not fake.streams[0].completed


async def test_upstream_error_before_first_byte_keeps_status_and_body(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(status=429, error_message="slow down, stream"))
    with pytest.raises(openai.RateLimitError, match="slow down, stream"):
        await in_thread(stream_chat, proxy)


@pytest.mark.parametrize("fault", ["reset_mid_stream", "malformed_sse", "truncated_chunked"])
async def test_broken_upstream_stream_ends_with_a_clean_error_event(proxy: Proxy, fake: FakeUpstream, fault: str) -> None:
    fake.script(Reply(chunks=["part one. "] * 40, fault=fault, fault_after_events=3))
    with trio.fail_after(10):
        received, error = await in_thread(collect_until_error, proxy)
    assert isinstance(error, openai.APIError)
    assert error.body["code"] in ("upstream_unavailable", "upstream_timeout")


async def test_request_side_checks_run_before_upstream_for_streams(proxy: Proxy, fake: FakeUpstream) -> None:
    def blocked() -> None:
        proxy.openai().chat.completions.create(
            model="m", messages=[{"role": "user", "content": "capsem_block"}], stream=True
        )

    with pytest.raises(openai.BadRequestError):
        await in_thread(blocked)
    assert fake.requests == []
