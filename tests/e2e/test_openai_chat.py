"""OpenAI Chat Completions through the proxy, non-streaming, with the openai SDK."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.support.bodies import chat_body
from tests.support.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.support.proxy import OPENAI_AUTH, OPENAI_KEY, Proxy, in_thread
from tests.support.sdk import chat

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


async def test_allowed_prompt_gets_the_upstream_reply(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(text="The sky is blue."))
    completion = await in_thread(chat, proxy, [{"role": "user", "content": "What colour is the sky?"}])
    assert completion.choices[0].message.content == "The sky is blue."
    (received,) = fake.requests_to("/chat/completions")
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert received.json["messages"] == [{"role": "user", "content": "What colour is the sky?"}]


async def test_body_and_key_reach_upstream_byte_for_byte(proxy: Proxy, fake: FakeUpstream) -> None:
    body = b'{"model":"gpt-4o",  "messages":[{"role":"user","content":"hi \\u00e9"}],"x_unknown_field":{"kept":[1,2]}}'
    async with httpx.AsyncClient() as client:
        response = await client.post(
            proxy.url + "/v1/chat/completions",
            content=body,
            headers={"authorization": f"Bearer {OPENAI_KEY}", "content-type": "application/json", "openai-organization": "org-x"},
        )
    assert response.status_code == 200
    (received,) = fake.requests
    assert received.body == body
    assert received.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert received.headers["openai-organization"] == "org-x"
    assert received.headers["content-length"] == str(len(body))
    assert "x-capsem-request-id" in response.headers


@pytest.mark.parametrize(
    ("messages", "extra", "hook"),
    [
        ([{"role": "user", "content": "please CAPSEM_BLOCK this"}], {}, "on_model_call"),
        ([{"role": "system", "content": "capsem_block"}, {"role": "user", "content": "hi"}], {}, "on_model_call"),
        ([{"role": "user", "content": [{"type": "text", "text": "multi capsem_block part"}]}], {}, "on_model_call"),
        (
            [{"role": "user", "content": "hi"}],
            {"tools": [{"type": "function", "function": {"name": "capsem_block_tool", "parameters": {"type": "object"}}}]},
            "on_tool_call",
        ),
        (
            [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"forecast\": \"capsem_block\"}"},
            ],
            {"tools": [WEATHER_TOOL]},
            "on_tool_response",
        ),
    ],
    ids=["prompt", "system", "content-part", "tool-definition", "tool-result"],
)
async def test_request_side_block_never_reaches_upstream(
    proxy: Proxy, fake: FakeUpstream, messages: list, extra: dict, hook: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await in_thread(lambda: chat(proxy, messages, **extra))
    error = raised.value
    assert error.status_code == 400
    assert "Debug" in str(error) and "capsem_block" in str(error)
    assert error.body["code"] == "capsem_blocked"
    assert error.body["capsem"]["hook"] == hook
    assert error.body["capsem"]["verdict"] == "BLOCK"
    assert fake.requests == []


async def test_block_body_carries_detail_like_the_original_proxy(proxy: Proxy, fake: FakeUpstream) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            proxy.url + "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "capsem_block"}]},
            headers=OPENAI_AUTH,
        )
    assert response.status_code == 400
    assert response.json()["detail"] == "Request blocked by security policy: Detected 'capsem_block' in prompt"


@pytest.mark.parametrize(
    ("reply", "hook"),
    [
        (Reply(text="here is capsem_block for you"), "on_model_response"),
        (Reply(tool_calls=[ToolCall("capsem_block_exec", {"cmd": "ls"})]), "on_tool_call"),
        (Reply(tool_calls=[ToolCall("run", {"cmd": "echo CAPSEM_BLOCK"})]), "on_tool_call"),
    ],
    ids=["response-text", "tool-call-name", "tool-call-arguments"],
)
async def test_response_side_block(proxy: Proxy, fake: FakeUpstream, reply: Reply, hook: str) -> None:
    fake.script(reply)
    with pytest.raises(openai.BadRequestError) as raised:
        await in_thread(chat, proxy, [{"role": "user", "content": "go"}])
    assert raised.value.body["capsem"]["hook"] == hook
    assert len(fake.requests) == 1


async def test_tool_calls_pass_through_when_allowed(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"})]))
    completion = await in_thread(lambda: chat(proxy, [{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL]))
    (call,) = completion.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (401, openai.AuthenticationError),
        (429, openai.RateLimitError),
        (400, openai.BadRequestError),
        (500, openai.InternalServerError),
    ],
)
async def test_upstream_errors_keep_status_and_body(
    proxy: Proxy, fake: FakeUpstream, status: int, exception: type
) -> None:
    fake.script(Reply(status=status, error_message=f"provider says {status}"))
    with pytest.raises(exception) as raised:
        await in_thread(chat, proxy, [{"role": "user", "content": "hi"}])
    assert raised.value.status_code == status
    assert f"provider says {status}" in str(raised.value)


async def test_upstream_invalid_json_is_502(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(raw_body=b"<html>gateway</html>", content_type="text/html"))
    with pytest.raises(openai.APIStatusError) as raised:
        await in_thread(chat, proxy, [{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 502
    assert "not valid JSON" in str(raised.value)


async def test_unreachable_upstream_is_502(start_proxy, proxy_settings) -> None:
    proxy = await start_proxy(proxy_settings, openai_upstream="http://127.0.0.1:9/v1")
    with pytest.raises(openai.APIStatusError) as raised:
        await in_thread(chat, proxy, [{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 502
    assert "unreachable" in str(raised.value)


async def test_upstream_timeout_is_504(start_proxy, proxy_settings, fake: FakeUpstream) -> None:
    proxy = await start_proxy(proxy_settings, upstream_timeout=0.3)
    fake.script(Reply(delay=3))
    with pytest.raises(openai.APIStatusError) as raised:
        await in_thread(chat, proxy, [{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 504
    assert raised.value.body["code"] == "upstream_timeout"


async def test_malformed_json_from_client_is_400(proxy: Proxy, fake: FakeUpstream) -> None:
    async with httpx.AsyncClient() as client:
        for body in (b"{not json", b"[1,2]", b""):
            response = await client.post(
                proxy.url + "/v1/chat/completions", content=body, headers=OPENAI_AUTH
            )
            assert response.status_code == 400, body
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error" and error["message"]
    assert fake.requests == []


async def test_missing_key_is_401(proxy: Proxy, fake: FakeUpstream) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(proxy.url + "/v1/chat/completions", json={"model": "m", "messages": []})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"
    assert fake.requests == []


async def test_wrong_key_gets_the_providers_401(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(status=401, error_message="Incorrect API key provided"))
    with pytest.raises(openai.AuthenticationError, match="Incorrect API key provided"):
        await in_thread(lambda: proxy.openai(api_key="sk-wrong-key-000000").chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]))


async def test_upstream_cookies_never_travel_between_tenants(proxy: Proxy, fake: FakeUpstream) -> None:
    """The pooled client is shared by all tenants: it must not keep a Set-Cookie from one for another."""
    fake.script(Reply(text="first", headers={"set-cookie": "session=tenant-a-secret; Path=/"}), Reply(text="second"))
    async with httpx.AsyncClient() as client:
        first = await client.post(
            proxy.url + "/v1/chat/completions",
            json=chat_body(model="m"),
            headers={"authorization": f"Bearer {OPENAI_KEY}", "cookie": "client=should-not-pass"},
        )
        second = await client.post(
            proxy.url + "/v1/chat/completions",
            json=chat_body(model="m"),
            headers={"authorization": "Bearer sk-another-tenant-0000000000"},
        )
    assert first.status_code == second.status_code == 200
    assert "set-cookie" not in first.headers
    assert all("cookie" not in received.headers for received in fake.requests)
