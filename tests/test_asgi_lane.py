"""The ASGI lane and the Quart routes answer a request alike.

A request with an ``Origin`` header goes through Quart (CORS is Quart's); the
same request without one goes through the lane. Everything but the request id
and the CORS headers must match: status, body, the CAPSEM headers, the
upstream request, the stream bytes.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import ANTHROPIC_KEY, GEMINI_KEY, OPENAI_KEY, Proxy
from tests.fake_upstream import FakeUpstream, Reply

CHAT = "/v1/chat/completions"
USER = {"role": "user", "content": "hi"}
ORIGIN = {"origin": "https://app.example"}
COMPARED = ("content-type", "x-capsem-decision", "x-capsem-policies", "cache-control", "x-accel-buffering")

CASES: list[tuple[str, str, dict[str, str], Any, Reply | None]] = [
    ("chat json", CHAT, {"authorization": f"Bearer {OPENAI_KEY}"}, {"model": "m", "messages": [USER]}, Reply(text="hello")),
    ("chat stream", CHAT, {"authorization": f"Bearer {OPENAI_KEY}"},
     {"model": "m", "stream": True, "messages": [USER]}, Reply(chunks=["hel", "lo"])),
    ("blocked prompt", CHAT, {"authorization": f"Bearer {OPENAI_KEY}"},
     {"model": "m", "messages": [{"role": "user", "content": "capsem_block"}]}, None),
    ("blocked reply", CHAT, {"authorization": f"Bearer {OPENAI_KEY}"}, {"model": "m", "messages": [USER]},
     Reply(text="capsem_block")),
    ("blocked mid-stream", CHAT, {"authorization": f"Bearer {OPENAI_KEY}"},
     {"model": "m", "stream": True, "messages": [USER]}, Reply(chunks=["fine ", "capsem_", "block"])),
    ("no key", CHAT, {}, {"model": "m", "messages": [USER]}, None),
    ("not json", CHAT, {"authorization": f"Bearer {OPENAI_KEY}"}, b"{nope", None),
    ("provider error", CHAT, {"authorization": f"Bearer {OPENAI_KEY}"}, {"model": "m", "messages": [USER]},
     Reply(status=429, error_message="slow down")),
    ("anthropic", "/v1/messages", {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"},
     {"model": "claude-x", "max_tokens": 10, "messages": [USER]}, Reply(text="hey")),
    ("gemini query key", f"/v1beta/models/gemini-2.0-flash:generateContent?key={GEMINI_KEY}", {},
     {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, Reply(text="hey")),
    ("gemini sse", "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", {"x-goog-api-key": GEMINI_KEY},
     {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, Reply(chunks=["a", "b"])),
]


async def _call(proxy: Proxy, path: str, headers: dict[str, str], body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else None
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        with trio.fail_after(20):
            return await client.post(path, headers=headers, content=content, json=None if content else body)


# Fields that differ between any two replies: the fake's random ids and clock, the proxy's ids.
_PER_REPLY = re.compile(rb'("(?:id|created|created_at|responseId|request_id|decision_id)"\s*:\s*)("[^"]*"|\d+)')


def _comparable(response: httpx.Response) -> tuple[int, dict[str, str | None], bytes]:
    body = response.content
    request_id = response.headers.get("x-capsem-request-id")
    if request_id:
        body = body.replace(request_id.encode(), b"<request id>")
    body = _PER_REPLY.sub(rb"\1<varies>", body)
    return response.status_code, {name: response.headers.get(name) for name in COMPARED}, body


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
async def test_lane_and_quart_give_the_same_answer(proxy: Proxy, fake: FakeUpstream, case: Any) -> None:
    _, path, headers, body, reply = case
    answers = []
    for extra in ({}, ORIGIN):  # the lane, then Quart
        if reply is not None:
            fake.script(reply)
        before = len(fake.requests)
        response = await _call(proxy, path, {**headers, **extra}, body)
        forwarded = fake.requests[before:]
        answers.append((_comparable(response), [(r.path, r.json) for r in forwarded]))
        assert ("access-control-allow-origin" in response.headers) is bool(extra)
        if response.status_code == 200 or response.status_code >= 403:
            assert response.headers.get("x-capsem-request-id", "").startswith("req_")
    assert answers[0][0] == answers[1][0], (answers[0][0], answers[1][0])
    assert answers[0][1] == answers[1][1], (answers[0][1], answers[1][1])


async def test_an_oversized_chunked_body_is_413_in_the_provider_shape(start_proxy, proxy_settings, fake) -> None:
    proxy = await start_proxy(proxy_settings, max_body_size=1000)

    async def chunks():
        for _ in range(5):
            yield b'{"pad": "' + b"x" * 400 + b'"}'

    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.post(
            "/v1/messages", content=chunks(), headers={"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
        )
    assert response.status_code == 413
    assert response.json()["type"] == "error"  # Anthropic's error shape
    assert fake.requests == []


async def test_a_client_that_leaves_cancels_its_upstream_call(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(fault="never_answer"))
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        with trio.move_on_after(0.5):
            await client.post(CHAT, headers={"authorization": f"Bearer {OPENAI_KEY}"},
                              json={"model": "m", "messages": [USER]})
    with trio.fail_after(10):
        await fake.wait_for_open_connections(0)  # the proxy dropped its upstream request
