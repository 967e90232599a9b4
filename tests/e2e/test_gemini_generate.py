"""Gemini generateContent through the proxy, non-streaming, with google-genai."""

from __future__ import annotations

import httpx
import pytest
from google.genai import errors, types

from tests.support.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.support.proxy import GEMINI_AUTH, GEMINI_KEY, Proxy, in_thread

WEATHER = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_weather",
            description="Weather for a city",
            parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING")}),
        )
    ]
)


def generate(proxy: Proxy, contents: object, config: types.GenerateContentConfig | None = None, api_version: str = "v1beta"):
    client = proxy.gemini(api_version=api_version)  # keep a reference: the client closes when collected
    return client.models.generate_content(model="gemini-2.0-flash", contents=contents, config=config)


@pytest.mark.parametrize("api_version", ["v1beta", "v1"])
async def test_allowed_prompt_keeps_the_clients_api_version(proxy: Proxy, fake: FakeUpstream, api_version: str) -> None:
    fake.script(Reply(text="Bonjour."))
    reply = await in_thread(lambda: generate(proxy, "Say hello in French", api_version=api_version))
    assert reply.text == "Bonjour."
    (received,) = fake.requests
    assert received.path == f"/{api_version}/models/gemini-2.0-flash:generateContent"
    assert received.headers["x-goog-api-key"] == GEMINI_KEY


async def test_key_in_query_string_is_accepted_and_passed_on(proxy: Proxy, fake: FakeUpstream) -> None:
    body = b'{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}'
    async with httpx.AsyncClient() as client:
        response = await client.post(
            proxy.url + f"/v1beta/models/gemini-2.0-flash:generateContent?key={GEMINI_KEY}", content=body
        )
    assert response.status_code == 200
    (received,) = fake.requests
    assert received.query["key"] == GEMINI_KEY
    assert received.body == body


def contents_with_tool_result(result: dict) -> list[types.Content]:
    return [
        types.Content(role="user", parts=[types.Part(text="weather?")]),
        types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(name="get_weather", args={"city": "Paris"}))]),
        types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(name="get_weather", response=result))]),
    ]


@pytest.mark.parametrize(
    ("contents", "config", "hook"),
    [
        ("tell me about Capsem_Block", None, "on_model_call"),
        ("hi", types.GenerateContentConfig(system_instruction="capsem_block rules"), "on_model_call"),
        (
            "hi",
            types.GenerateContentConfig(
                tools=[types.Tool(function_declarations=[types.FunctionDeclaration(name="capsem_block_fn", description="x")])]
            ),
            "on_tool_call",
        ),
        (contents_with_tool_result({"forecast": "capsem_block"}), types.GenerateContentConfig(tools=[WEATHER]), "on_tool_response"),
    ],
    ids=["prompt", "system-instruction", "tool-declaration", "function-response"],
)
async def test_request_side_block_never_reaches_upstream(
    proxy: Proxy, fake: FakeUpstream, contents: object, config: object, hook: str
) -> None:
    with pytest.raises(errors.ClientError) as raised:
        await in_thread(lambda: generate(proxy, contents, config))
    assert raised.value.code == 400
    assert "Debug" in str(raised.value) and "capsem_block" in str(raised.value)
    details = raised.value.details["error"]["details"][0]["metadata"]
    assert details["hook"] == hook
    assert fake.requests == []


@pytest.mark.parametrize(
    ("reply", "hook"),
    [
        (Reply(text="the answer is capsem_block"), "on_model_response"),
        (Reply(text="fine", thoughts="secretly thinking capsem_block"), "on_model_response"),
        (Reply(tool_calls=[ToolCall("capsem_block_delete", {})]), "on_tool_call"),
        (Reply(tool_calls=[ToolCall("shell", {"cmd": "capsem_block"})]), "on_tool_call"),
    ],
    ids=["text", "thoughts", "function-call-name", "function-call-args"],
)
async def test_response_side_block(proxy: Proxy, fake: FakeUpstream, reply: Reply, hook: str) -> None:
    fake.script(reply)
    with pytest.raises(errors.ClientError) as raised:
        await in_thread(generate, proxy, "go")
    assert raised.value.code == 400
    assert raised.value.details["error"]["details"][0]["metadata"]["hook"] == hook


async def test_function_calls_and_thoughts_pass_when_allowed(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(text="ok", thoughts="thinking quietly", tool_calls=[ToolCall("get_weather", {"city": "Oslo"})]))
    reply = await in_thread(lambda: generate(proxy, "weather?", types.GenerateContentConfig(tools=[WEATHER])))
    (call,) = reply.function_calls
    assert call.name == "get_weather" and call.args == {"city": "Oslo"}


@pytest.mark.parametrize("status", [400, 403, 429, 500])
async def test_upstream_errors_keep_status_and_body(proxy: Proxy, fake: FakeUpstream, status: int) -> None:
    fake.script(Reply(status=status, error_message=f"gemini says {status}"))
    with pytest.raises(errors.APIError) as raised:
        await in_thread(generate, proxy, "hi")
    assert raised.value.code == status
    assert f"gemini says {status}" in str(raised.value)


async def test_missing_key_and_bad_json_are_gemini_shaped(proxy: Proxy, fake: FakeUpstream) -> None:
    url = proxy.url + "/v1beta/models/gemini-2.0-flash:generateContent"
    async with httpx.AsyncClient() as client:
        no_key = await client.post(url, json={"contents": []})
        bad_json = await client.post(url, content=b"{oops", headers=GEMINI_AUTH)
        bad_model = await client.post(
            proxy.url + "/v1beta/models/..%2F..%2Fetc:generateContent", json={}, headers=GEMINI_AUTH
        )
        unknown_action = await client.post(
            proxy.url + "/v1beta/models/gemini-2.0-flash:tuneSomething", json={}, headers=GEMINI_AUTH
        )
    assert no_key.status_code == 401 and no_key.json()["error"]["status"] == "UNAUTHENTICATED"
    assert bad_json.status_code == 400 and bad_json.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert bad_model.status_code in (400, 404) and "error" in bad_model.json()
    assert unknown_action.status_code == 404 and "not proxied by capsem-proxyd" in unknown_action.json()["error"]["message"]
    assert fake.requests == []


async def test_unreachable_and_timeout(start_proxy, proxy_settings, fake: FakeUpstream) -> None:
    down = await start_proxy(proxy_settings, gemini_upstream="http://127.0.0.1:9")
    with pytest.raises(errors.ServerError) as raised:
        await in_thread(generate, down, "hi")
    assert raised.value.code == 502
    slow = await start_proxy(proxy_settings, upstream_timeout=0.3)
    fake.script(Reply(delay=3))
    with pytest.raises(errors.ServerError) as raised:
        await in_thread(generate, slow, "hi")
    assert raised.value.code == 504
