"""Every reply carries ``x-capsem-request-id`` and gets exactly one log line naming it.

The Exchange is born at the ASGI entry, before the guard, the route table or
the key: so a 431 for too many headers, a 401 for a missing key, a 400 for
malformed JSON and a 404 from the control plane carry an id as well as a
proxied 200 or a stream does.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from capsem_proxyd.config import Settings
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import ANTHROPIC_AUTH, GEMINI_AUTH, OPENAI_AUTH, Proxy

REQUEST_ID = re.compile(r"req_[0-9a-f]{16}")
BEARER = OPENAI_AUTH
CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]
PREFLIGHT = {"origin": "https://app.example", "access-control-request-method": "POST"}

# (name, method, path, headers, JSON body or raw bytes, upstream reply, expected status)
CASES: list[tuple[str, str, str, dict[str, str], Any, Reply | None, int]] = [
    ("proxied json", "POST", CHAT, BEARER, {"model": "m", "messages": USER}, Reply(text="hello"), 200),
    ("proxied stream", "POST", CHAT, BEARER, {"model": "m", "stream": True, "messages": USER}, Reply(chunks=["a", "b"]), 200),
    ("blocked prompt", "POST", CHAT, BEARER, {"model": "m", "messages": [{"role": "user", "content": "capsem_block"}]},
     None, 400),
    ("malformed json", "POST", CHAT, BEARER, b"{nope", None, 400),
    ("missing key", "POST", CHAT, {}, {"model": "m", "messages": USER}, None, 401),
    ("body too large", "POST", CHAT, BEARER, {"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]},
     None, 413),
    ("too many headers", "POST", CHAT, {**BEARER, **{f"x-h{i}": "v" for i in range(120)}},
     {"model": "m", "messages": USER}, None, 431),
    ("unknown provider path", "POST", "/v1/nope", BEARER, {"a": 1}, None, 404),
    ("invalid gemini model", "POST", "/v1beta/models/.hidden:generateContent", GEMINI_AUTH,
     {"contents": []}, None, 400),
    ("model lookup with a body", "GET", "/v1/models", ANTHROPIC_AUTH,
     {"a": 1}, None, 400),
    ("health", "GET", "/health", {}, None, None, 200),
    ("metrics", "GET", "/metrics", {}, None, None, 200),
    ("control plane 404", "GET", "/nothing-here", {}, None, None, 404),
    ("control plane 405", "POST", "/health", {}, None, None, 405),
    ("preflight", "OPTIONS", CHAT, PREFLIGHT, None, None, 204),
]


@pytest.mark.parametrize(("name", "method", "path", "headers", "body", "reply", "status"), CASES, ids=[c[0] for c in CASES])
async def test_every_reply_carries_a_request_id_and_one_log_line(
    name: str, method: str, path: str, headers: dict[str, str], body: Any, reply: Reply | None, status: int,
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, caplog: pytest.LogCaptureFixture,
) -> None:
    proxy: Proxy = await start_proxy(proxy_settings, max_body_size=4096)
    if reply is not None:
        fake.script(reply)
    content = body if isinstance(body, bytes) else None
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        response = await client.request(method, path, headers=headers, content=content,
                                        json=None if content is not None or body is None else body)
    assert response.status_code == status, response.text
    request_id = response.headers.get("x-capsem-request-id", "")
    assert REQUEST_ID.fullmatch(request_id), response.headers
    lines = [r for r in caplog.records if r.name == "capsem_proxyd.request" and request_id in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert f"status={status}" in lines[0].getMessage()
    if status >= 400:
        assert lines[0].levelno >= logging.INFO


async def test_request_ids_are_unique(proxy: Proxy, fake: FakeUpstream) -> None:
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        ids = {(await client.get("/health")).headers["x-capsem-request-id"] for _ in range(50)}
    assert len(ids) == 50


async def test_a_browser_request_is_served_by_the_data_plane_with_cors(proxy: Proxy, fake: FakeUpstream) -> None:
    """With an Origin, a stream gets the same bytes and CAPSEM headers as without, plus CORS headers."""
    body = {"model": "m", "stream": True, "messages": USER}
    replies = []
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        for origin in ({}, {"origin": "https://app.example"}):
            fake.script(Reply(chunks=["hel", "lo"]))
            replies.append(await client.post(CHAT, json=body, headers={**BEARER, **origin}))
    plain, browser = replies
    assert browser.status_code == plain.status_code == 200
    assert browser.headers["access-control-allow-origin"] == "*"
    assert "x-capsem-request-id" in browser.headers["access-control-expose-headers"]
    assert "access-control-allow-origin" not in plain.headers
    for header in ("content-type", "x-capsem-decision", "x-capsem-policies", "cache-control"):
        assert browser.headers[header] == plain.headers[header]
    assert _texts(browser.text) == _texts(plain.text) == "hello"


def _texts(sse: str) -> str:
    import json

    return "".join(
        choice["delta"].get("content") or ""
        for line in sse.splitlines() if line.startswith("data: {")
        for choice in json.loads(line[6:])["choices"]
    )
