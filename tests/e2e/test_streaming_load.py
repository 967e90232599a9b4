"""Streams at scale: many concurrent streams lose nothing; a slow client applies back-pressure."""

from __future__ import annotations

import json

import httpx
import trio

from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import OPENAI_KEY, Proxy

HEADERS = {"authorization": f"Bearer {OPENAI_KEY}"}


def sse_text(raw: bytes) -> str:
    """Reassemble the text of an OpenAI chat SSE body."""
    text = []
    for block in raw.decode().split("\n\n"):
        if not block.startswith("data: ") or block == "data: [DONE]":
            continue
        chunk = json.loads(block[len("data: "):])
        assert "error" not in chunk, chunk
        for choice in chunk["choices"]:
            text.append(choice["delta"].get("content") or "")
    return "".join(text)


async def test_200_concurrent_streams_complete_without_loss(proxy: Proxy, fake: FakeUpstream) -> None:
    results: dict[int, str] = {}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)

    async def one_stream(client: httpx.AsyncClient, number: int) -> None:
        prompt = f"echo: stream number {number} says hello, " + "lorem ipsum " * (number % 7 + 1)
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": prompt}]}
        response = await client.post(proxy.url + "/v1/chat/completions", json=body, headers=HEADERS)
        assert response.status_code == 200
        results[number] = sse_text(response.content)

    with trio.fail_after(60):
        async with httpx.AsyncClient(timeout=30, limits=limits) as client, trio.open_nursery() as nursery:
            for number in range(200):
                nursery.start_soon(one_stream, client, number)
    assert len(results) == 200
    for number, text in results.items():
        assert text == f"stream number {number} says hello, " + "lorem ipsum " * (number % 7 + 1)
    assert all(stream.completed for stream in fake.streams)


async def test_slow_client_stalls_the_upstream_instead_of_buffering(proxy: Proxy, fake: FakeUpstream) -> None:
    """Back-pressure: while the client reads nothing, the upstream may only run ahead by a bounded amount."""
    event_text = "x" * 1000
    total_events = 50_000  # about 50 MB of text if it were all buffered
    fake.script(Reply(chunks=[event_text], repeat_events=total_events))
    async with httpx.AsyncClient(timeout=30) as client, client.stream(
        "POST",
        proxy.url + "/v1/chat/completions",
        json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "go"}]},
        headers=HEADERS,
    ) as response:
        received = 0
        async for chunk in response.aiter_raw():
            received += len(chunk)
            if received > 200_000:
                break
        # The client now stops reading. Wait until the upstream has stalled.
        previous = -1
        with trio.fail_after(20):
            while fake.streams[0].events_sent != previous:
                previous = fake.streams[0].events_sent
                await trio.sleep(0.3)
        stalled_at = fake.streams[0].events_sent
        assert not fake.streams[0].completed
        # Bounded: socket buffers + a small channel, far below the reply size.
        assert stalled_at * len(event_text) < 16_000_000, stalled_at
        assert stalled_at < total_events // 3
