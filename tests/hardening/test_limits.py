"""Limits: body size (413), JSON depth and item counts (400), headers (431), reply size (502 / error event).

Each is refused before any policy runs and before anything goes upstream, in
the caller's provider shape: the official SDKs raise their own typed exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio

from capsem_proxyd.config import Settings
from capsem_proxyd.errors import ProxyError
from capsem_proxyd.http.guard import HeaderLimits, framing_problem, header_problem
from capsem_proxyd.proxy.limits import Limits, check_request_body, nesting_exceeds
from tests.support.bodies import minimal_body
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import (
    ANTHROPIC_AUTH,
    GEMINI_AUTH,
    OPENAI_AUTH,
    Proxy,
    in_thread,
)
from tests.support.sdk import (
    PROVIDERS,
    expected_error,
    message_of,
    raw_exchange,
    sdk_call,
    sdk_error,
    sdk_errors,
    status_of,
)

AUTH = {
    "openai": OPENAI_AUTH,
    "anthropic": ANTHROPIC_AUTH,
    "gemini": GEMINI_AUTH,
}
PATHS = {
    "openai": "/v1/chat/completions",
    "anthropic": "/v1/messages",
    "gemini": "/v1beta/models/gemini-2.5-flash:generateContent",
}


def deep(levels: int) -> Any:
    """A JSON value nested ``levels`` deep (an array counts one level)."""
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value



# --- body size ---------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_oversized_body_is_413_in_the_providers_shape(
    provider: str, start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(proxy_settings, max_body_size=64 * 1024)
    error = await sdk_error(provider, proxy, prompt="x" * (64 * 1024))
    assert isinstance(error, expected_error(provider, 413)) and status_of(error) == 413
    assert "larger than this proxy accepts" in message_of(error)
    assert fake.requests == []
    assert await in_thread(lambda: sdk_call(provider, proxy, prompt="x" * 1000))  # under the limit: passes


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_chunked_body_without_length_is_cut_at_the_limit(
    provider: str, start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream
) -> None:
    """No Content-Length to refuse up front: the body is counted as it arrives."""
    proxy = await start_proxy(proxy_settings, max_body_size=64 * 1024)
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"padding": "'
        for _ in range(400):  # 400 KiB, far past the limit
            sent += 1024
            yield b"x" * 1024
        yield b'"}'

    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(proxy.url + PATHS[provider], content=chunks(), headers=AUTH[provider])
    assert response.status_code == 413
    assert "content-length" not in {name.lower() for name in response.request.headers}
    body = response.json()
    assert "larger than this proxy accepts" in (body["error"]["message"])
    assert fake.requests == []


async def test_default_body_limit_is_32_mib(proxy: Proxy, fake: FakeUpstream) -> None:
    assert proxy.settings.max_body_size == 32 * 1024 * 1024
    body = b'{"model":"m","messages":[{"role":"user","content":"' + b"x" * (32 * 1024 * 1024) + b'"}]}'
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(proxy.url + PATHS["openai"], content=body, headers=AUTH["openai"])
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    assert fake.requests == []


# --- JSON depth and item counts ----------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_json_nested_past_the_limit_is_400(provider: str, proxy: Proxy, fake: FakeUpstream) -> None:
    # The body is level 1 and "x_nested" adds its own levels: 63 more fit in the default 64.
    assert await in_thread(lambda: sdk_call(provider, proxy, extra_body={"x_nested": deep(63)}))
    assert len(fake.requests) == 1
    error = await sdk_error(provider, proxy, extra_body={"x_nested": deep(64)})
    assert isinstance(error, expected_error(provider, 400)) and status_of(error) == 400
    assert "deeper than 64 levels" in message_of(error)
    assert len(fake.requests) == 1


@pytest.mark.parametrize("levels", [65, 1000, 1023, 5000])
async def test_depth_beyond_orjson_and_pythons_stack_is_a_clean_400(proxy: Proxy, fake: FakeUpstream, levels: int) -> None:
    """Past orjson's own 1,024 levels the parse fails; in between, our check does: never a 500."""
    body = b'{"model": "m", "messages": ' + b"[" * levels + b"]" * levels + b"}"
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(proxy.url + PATHS["openai"], content=body, headers=AUTH["openai"])
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert fake.requests == []


async def test_depth_limit_is_configurable(start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream) -> None:
    proxy = await start_proxy(proxy_settings, max_json_depth=8)
    error = await sdk_error("anthropic", proxy, extra_body={"metadata": {"user_id": "u", "x": deep(7)}})
    assert status_of(error) == 400 and "deeper than 8 levels" in message_of(error)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_too_many_messages_is_400(provider: str, proxy: Proxy, fake: FakeUpstream) -> None:
    field = "contents" if provider == "gemini" else "messages"
    item = {"role": "user", "parts": [{"text": "a"}]} if provider == "gemini" else {"role": "user", "content": "a"}
    async with httpx.AsyncClient(timeout=30) as client:
        ok = await client.post(proxy.url + PATHS[provider], headers=AUTH[provider],
                               json=minimal_body(provider, **{field: [item] * 10_000}))
        refused = await client.post(proxy.url + PATHS[provider], headers=AUTH[provider],
                                    json=minimal_body(provider, **{field: [item] * 10_001}))
    assert ok.status_code == 200
    assert refused.status_code == 400
    assert f"'{field}' has 10001 items; at most 10000" in refused.text
    assert len(fake.requests) == 1


async def test_too_many_parts_across_messages_is_400(proxy: Proxy, fake: FakeUpstream) -> None:
    parts = [{"type": "text", "text": "a"}] * 2_001
    body = {"model": "m", "messages": [{"role": "user", "content": parts}] * 5}  # 10,005 parts in all
    error_body = await _post_json(proxy, "openai", body)
    assert error_body["error"]["code"] == "invalid_request"
    assert "hold 10005 parts" in error_body["error"]["message"]
    assert fake.requests == []


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_too_many_tools_is_400(provider: str, proxy: Proxy, fake: FakeUpstream) -> None:
    def tools(count: int) -> dict[str, Any]:
        if provider == "gemini":
            return {"tools": [{"functionDeclarations": [{"name": f"tool_{i}"} for i in range(count)]}]}
        if provider == "anthropic":
            return {"tools": [{"name": f"tool_{i}", "input_schema": {"type": "object"}} for i in range(count)]}
        return {"tools": [{"type": "function", "function": {"name": f"tool_{i}"}} for i in range(count)]}

    assert await in_thread(lambda: sdk_call(provider, proxy, extra_body=tools(1_000)))
    error = await sdk_error(provider, proxy, extra_body=tools(1_001))
    assert isinstance(error, expected_error(provider, 400))
    assert "defines 1001 tools; at most 1000" in message_of(error)
    assert len(fake.requests) == 1


async def _post_json(proxy: Proxy, provider: str, body: Any) -> Any:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(proxy.url + PATHS[provider], json=body, headers=AUTH[provider])
    assert response.status_code == 400, response.text
    return response.json()


def test_nesting_check_counts_levels_exactly() -> None:
    assert not nesting_exceeds({"a": deep(63)}, 64)
    assert nesting_exceeds({"a": deep(64)}, 64)
    assert not nesting_exceeds("scalar", 1) and not nesting_exceeds([], 1) and nesting_exceeds([[]], 1)
    assert not nesting_exceeds({"a": [{"b": "x" * 1_000_000}] * 1000}, 3)
    with pytest.raises(ProxyError, match="deeper than 1 levels"):
        check_request_body({"a": {"b": 1}}, Limits(max_json_depth=1))
    check_request_body({"a": {"b": 1}}, Limits(max_json_depth=2))


# --- headers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_too_many_headers_is_431(provider: str, proxy: Proxy, fake: FakeUpstream) -> None:
    headers = {f"x-extra-{i}": "v" for i in range(100)}
    error = await sdk_error(provider, proxy, headers=headers)
    assert isinstance(error, expected_error(provider, 431)) and status_of(error) == 431
    assert "at most 100 are accepted" in message_of(error)
    assert fake.requests == []


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_oversized_headers_are_431(provider: str, proxy: Proxy, fake: FakeUpstream) -> None:
    error = await sdk_error(provider, proxy, headers={"x-big": "v" * 40_000})
    assert isinstance(error, expected_error(provider, 431)) and status_of(error) == 431
    assert f"at most {32 * 1024} are accepted" in message_of(error)
    assert fake.requests == []


async def test_headers_past_the_parser_cap_are_cut_by_h11(proxy: Proxy, fake: FakeUpstream) -> None:
    """Beyond twice --max-header-size the head is never parsed: Hypercorn's bare 431, connection closed."""
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 70_000 + b"\r\n\r\n"
    answer = await trio.to_thread.run_sync(lambda: raw_exchange(proxy.url, head))
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert fake.requests == []


def test_header_checks_count_every_repetition() -> None:
    limits = HeaderLimits(max_count=3, max_bytes=100)
    assert header_problem([(b"a", b"1")] * 3, limits) is None
    assert header_problem([(b"a", b"1")] * 4, limits).status == 431
    assert header_problem([(b"a", b"v" * 200)], limits).status == 431
    assert framing_problem([(b"content-length", b"5"), (b"content-length", b"5")]).status == 400
    assert framing_problem([(b"Content-Length", b"5, 5")]).status == 400
    assert framing_problem([(b"transfer-encoding", b"chunked"), (b"content-length", b"5")]).status == 400
    assert framing_problem([(b"content-length", b"5")]) is None


# --- reply size --------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_stream_larger_than_the_limit_is_cut_with_an_error_event(
    provider: str, start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(proxy_settings, max_response_size=64 * 1024)
    fake.script(Reply(chunks=["lorem ipsum " * 10], repeat_events=2_000))  # about 600 KB of events
    received: list[str] = []

    def stream() -> None:
        received.append(sdk_call(provider, proxy, stream=True))

    with pytest.raises(sdk_errors(provider)) as raised:
        await in_thread(stream)
    assert "exceeds 65536 bytes" in message_of(raised.value)
    with trio.fail_after(30):  # a cap against hanging, not a measure (what is asserted is below)
        await fake.streams[0].closed.wait()
    assert not fake.streams[0].completed


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_reply_larger_than_the_limit_is_502(
    provider: str, start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(proxy_settings, max_response_size=64 * 1024)
    fake.script(Reply(text="lorem ipsum " * 10_000))
    error = await sdk_error(provider, proxy)
    assert isinstance(error, expected_error(provider, 502)) and status_of(error) == 502
    assert "exceeds 65536 bytes" in message_of(error)
    assert fake.requests[0].done.is_set()
