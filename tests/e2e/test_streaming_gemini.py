"""Gemini streamGenerateContent under policy: SSE (google-genai) and the streamed JSON array."""

from __future__ import annotations

import json

import httpx
import pytest
import trio
from google.genai import errors

from tests.support.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.support.proxy import GEMINI_KEY, Proxy, in_thread

LONG_TEXT = "The quick brown fox jumps over the lazy dog. " * 30
STREAM_PATH = "/v1beta/models/gemini-2.0-flash:streamGenerateContent"


def stream_generate(proxy: Proxy, contents: str = "tell me") -> tuple[str, list, BaseException | None]:
    client = proxy.gemini()
    text, calls = [], []
    try:
        for chunk in client.models.generate_content_stream(model="gemini-2.0-flash", contents=contents):
            text.append(chunk.text or "")
            calls.extend(chunk.function_calls or [])
    except errors.APIError as error:
        return "".join(text), calls, error
    return "".join(text), calls, None


async def test_sse_stream_text_equals_non_streamed(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(text=LONG_TEXT), Reply(text=LONG_TEXT))
    streamed, _, error = await in_thread(stream_generate, proxy)
    client = proxy.gemini()
    whole = await in_thread(lambda: client.models.generate_content(model="gemini-2.0-flash", contents="tell me"))
    assert error is None
    assert streamed == whole.text == LONG_TEXT
    assert fake.requests[0].query.get("alt") == "sse"


async def test_streamed_function_call_round_trips(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(text="checking", tool_calls=[ToolCall("get_weather", {"city": "Rome"})]))
    _, calls, error = await in_thread(stream_generate, proxy)
    assert error is None
    assert [(c.name, c.args) for c in calls] == [("get_weather", {"city": "Rome"})]


@pytest.mark.parametrize(
    ("reply", "hook"),
    [
        (Reply(chunks=["All fine until caps", "em_b", "lock shows up", " and more"]), "on_model_response"),
        (Reply(text="ok", thoughts="I will capsem_block this"), "on_model_response"),
        (Reply(text="calling", tool_calls=[ToolCall("wipe", {"target": "capsem_block"})]), "on_tool_call"),
    ],
    ids=["split-text", "thoughts", "function-call"],
)
async def test_block_mid_stream_raises_in_the_sdk(proxy: Proxy, fake: FakeUpstream, reply: Reply, hook: str) -> None:
    fake.script(reply)
    received, calls, error = await in_thread(stream_generate, proxy)
    assert isinstance(error, errors.ClientError) and error.code == 400
    assert "capsem_block" in str(error).lower()
    assert error.details["error"]["details"][0]["metadata"]["hook"] == hook
    assert "capsem_block" not in received.lower()
    assert calls == []


async def test_block_closes_the_upstream_stream(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(chunks=["capsem_block now"] + ["filler text "] * 3000, chunk_delay=0.002))
    _, _, error = await in_thread(stream_generate, proxy)
    assert error is not None
    with trio.fail_after(1):
        await fake.streams[0].closed.wait()
    assert fake.streams[0].client_closed and not fake.streams[0].completed


async def _raw_json_array_stream(proxy: Proxy) -> httpx.Response:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(proxy.url + STREAM_PATH, json=body, headers={"x-goog-api-key": GEMINI_KEY})


async def test_json_array_stream_is_forwarded_intact(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(text=LONG_TEXT))
    response = await _raw_json_array_stream(proxy)
    assert response.status_code == 200
    elements = json.loads(response.content)
    text = "".join(p.get("text", "") for e in elements for c in e.get("candidates", []) for p in c["content"]["parts"])
    assert text == LONG_TEXT
    assert "alt" not in fake.requests[0].query


async def test_json_array_stream_block_ends_with_an_error_element(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(chunks=["safe start, then capsem", "_block and the rest"]))
    response = await _raw_json_array_stream(proxy)
    elements = json.loads(response.content)  # still one valid JSON array
    assert elements[-1]["error"]["code"] == 400
    assert elements[-1]["error"]["status"] == "INVALID_ARGUMENT"
    assert "capsem_block" not in json.dumps(elements[:-1]).lower()


async def test_upstream_error_before_first_byte(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(status=429, error_message="quota exhausted"))
    _, _, error = await in_thread(stream_generate, proxy)
    assert isinstance(error, errors.ClientError) and error.code == 429
    assert "quota exhausted" in str(error)


async def test_upstream_dying_mid_stream_gives_a_clean_error(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(chunks=["piece "] * 50, fault="reset_mid_stream", fault_after_events=3))
    _, _, error = await in_thread(stream_generate, proxy)
    assert isinstance(error, errors.APIError) and error.code == 502


async def test_sse_stream_block_ends_with_the_bare_error_object(proxy: Proxy, fake: FakeUpstream) -> None:
    """Not a ``data:`` frame: @google/genai (Gemini CLI) raises only on a read that parses as the error JSON."""
    fake.script(Reply(chunks=["a harmless start, released piece by piece. "] * 6 + ["then capsem_", "block"]))
    async with httpx.AsyncClient() as client:
        response = await client.post(proxy.url + STREAM_PATH, params={"alt": "sse"}, headers={"x-goog-api-key": GEMINI_KEY},
                                     json={"contents": [{"role": "user", "parts": [{"text": "go"}]}]})
    released, _, last = response.content.rstrip(b"\r\n").rpartition(b"\n")
    assert released.startswith(b"data: ") and b"capsem_block" not in released
    error = json.loads(last)
    assert list(error) == ["error", "detail"] and error["error"]["code"] == 400
    assert error["error"]["status"] == "INVALID_ARGUMENT" and "Debug" in error["error"]["message"]


def _sse_frame(text: str) -> bytes:
    chunk = {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}]}
    return b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"


async def test_block_error_is_a_chunk_of_its_own(proxy: Proxy, fake: FakeUpstream) -> None:
    """The error never shares an HTTP chunk with text released before it, even from one upstream read.

    @google/genai (so Gemini CLI) parses each chunk ``fetch`` hands it as JSON;
    text and error in one chunk end in "Incomplete JSON segment at the end",
    which Gemini CLI retries, sending the blocked turn to the model again.
    """
    frames = ["The first words go out at once. ", "A harmless sentence, released. " + LONG_TEXT, "Then capsem_block arrives."]
    upstream = b"".join(_sse_frame(text) for text in frames)  # one upstream read: one batch for the proxy
    fake.script(Reply(raw_body=upstream, content_type="text/event-stream"))
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    async with httpx.AsyncClient(timeout=10) as client:
        request = client.build_request(
            "POST", proxy.url + STREAM_PATH, params={"alt": "sse"}, json=body, headers={"x-goog-api-key": GEMINI_KEY}
        )
        response = await client.send(request, stream=True)
        chunks = [chunk async for chunk in response.aiter_raw()]  # h11 hands on each HTTP chunk, as fetch does
    released, error = chunks[:-1], json.loads(chunks[-1])
    assert b"A harmless sentence" in b"".join(released) and b"capsem_block" not in b"".join(released)
    assert error["error"]["code"] == 400 and "capsem_block" in error["error"]["message"].lower()
