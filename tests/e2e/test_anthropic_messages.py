"""Anthropic Messages through the proxy, JSON and streamed, with the anthropic SDK and raw httpx."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.support.proxy import ANTHROPIC_AUTH, ANTHROPIC_KEY, Proxy, in_thread
from tests.support.streams import LONG_TEXT, assert_upstream_closed_at_once, endless_blocked_reply, split_marker_chunks

MODEL = "claude-sonnet-4-6"
USER = [{"role": "user", "content": "tell me a story"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
HEADERS = ANTHROPIC_AUTH


def create(proxy: Proxy, messages: list, **kwargs: object) -> anthropic.types.Message:
    return proxy.anthropic().messages.create(model=MODEL, max_tokens=256, messages=messages, **kwargs)


def stream_text(proxy: Proxy, messages: list = USER, **kwargs: object) -> tuple[str, anthropic.types.Message]:
    with proxy.anthropic().messages.stream(model=MODEL, max_tokens=256, messages=messages, **kwargs) as stream:
        text = "".join(stream.text_stream)
        return text, stream.get_final_message()


def collect_until_error(proxy: Proxy, messages: list = USER) -> tuple[str, BaseException | None]:
    received: list[str] = []
    try:
        with proxy.anthropic().messages.stream(model=MODEL, max_tokens=256, messages=messages) as stream:
            for text in stream.text_stream:
                received.append(text)
    except anthropic.APIError as error:
        return "".join(received), error
    return "".join(received), None


async def raw_post(proxy: Proxy, path: str, body: dict, headers: dict | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(proxy.url + path, json=body, headers=HEADERS if headers is None else headers)


# -- JSON ----------------------------------------------------------------------


async def test_allowed_message_gets_the_upstream_reply(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(text="Once upon a time."))
    sent = {"anthropic-version": "2023-06-01", "anthropic-beta": "tools-2024-04-04"}
    message = await in_thread(lambda: create(proxy, USER, extra_headers=sent))
    assert message.content[0].text == "Once upon a time."
    (received,) = fake.requests
    assert received.path == "/v1/messages"
    assert ANTHROPIC_KEY in (received.headers.get("x-api-key", "") + received.headers.get("authorization", ""))
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert received.headers["anthropic-beta"] == "tools-2024-04-04"
    assert received.json["messages"] == USER


@pytest.mark.parametrize(
    "headers",
    [
        ANTHROPIC_AUTH,
        {"authorization": f"Bearer {ANTHROPIC_KEY}", "anthropic-version": "2023-06-01"},
    ],
    ids=["x-api-key", "bearer"],
)
async def test_key_from_either_header_passes_through_byte_for_byte(
    proxy: Proxy, fake: FakeUpstream, headers: dict
) -> None:
    body = b'{"model":"claude-sonnet-4-6","max_tokens":5,  "messages":[{"role":"user","content":"hi \\u00e9"}]}'
    async with httpx.AsyncClient() as client:
        response = await client.post(proxy.url + "/v1/messages", content=body, headers=headers)
    assert response.status_code == 200
    assert response.json()["type"] == "message"
    (received,) = fake.requests
    assert received.body == body
    for name, value in headers.items():
        assert received.headers[name] == value


async def test_missing_key_is_401_in_anthropic_shape(proxy: Proxy, fake: FakeUpstream) -> None:
    response = await raw_post(proxy, "/v1/messages", {"model": MODEL, "messages": USER}, {"anthropic-version": "2023-06-01"})
    assert response.status_code == 401
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "authentication_error"
    assert fake.requests == []


TOOL_USE_HISTORY = [
    {"role": "user", "content": "weather?"},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
]


@pytest.mark.parametrize(
    ("messages", "extra", "hook"),
    [
        ([{"role": "user", "content": "please CAPSEM_BLOCK this"}], {}, "on_model_call"),
        ([{"role": "user", "content": [{"type": "text", "text": "a capsem_block block"}]}], {}, "on_model_call"),
        (USER, {"system": "be capsem_block"}, "on_model_call"),
        (USER, {"system": [{"type": "text", "text": "listed capsem_block system"}]}, "on_model_call"),
        (
            [{"role": "user", "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc capsem_block"}}]}],
            {},
            "on_model_call",
        ),
        (USER, {"tools": [{**WEATHER_TOOL, "name": "capsem_block_tool"}]}, "on_tool_call"),
        (USER, {"tools": [{**WEATHER_TOOL, "description": "does capsem_block things"}]}, "on_tool_call"),
        (
            [*TOOL_USE_HISTORY, {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "capsem_block rain"}]}],
            {"tools": [WEATHER_TOOL]},
            "on_tool_response",
        ),
        (
            [*TOOL_USE_HISTORY, {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny, capsem_block"}]}
            ]}],
            {"tools": [WEATHER_TOOL]},
            "on_tool_response",
        ),
    ],
    ids=["prompt", "text-block", "system", "system-blocks", "text-document", "tool-name", "tool-description",
         "tool-result", "tool-result-blocks"],
)
async def test_request_side_block_never_reaches_upstream(
    proxy: Proxy, fake: FakeUpstream, messages: list, extra: dict, hook: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        await in_thread(lambda: create(proxy, messages, **extra))
    error = raised.value
    assert error.status_code == 400
    assert "Debug" in str(error) and "capsem_block" in str(error)
    assert error.body["type"] == "error"
    assert error.body["error"]["type"] == "invalid_request_error"
    assert error.body["error"]["capsem"]["hook"] == hook
    assert error.body["error"]["capsem"]["verdict"] == "BLOCK"
    # Claude Code's data-loss-prevention code: a final refusal, not "Failed to authenticate", no retry.
    assert error.body["error"]["details"] == {"error_code": "dlp_request_denied"}
    assert error.body["detail"].startswith("Request blocked by security policy")
    assert fake.requests == []


async def test_tool_result_is_checked_under_the_tools_name(proxy: Proxy, fake: FakeUpstream) -> None:
    messages = [*TOOL_USE_HISTORY, {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "capsem_block"}]}]
    with pytest.raises(anthropic.BadRequestError, match="get_weather"):
        await in_thread(lambda: create(proxy, messages, tools=[WEATHER_TOOL]))


@pytest.mark.parametrize(
    ("reply", "hook"),
    [
        (Reply(text="here is capsem_block for you"), "on_model_response"),
        (Reply(tool_calls=[ToolCall("capsem_block_exec", {"cmd": "ls"})]), "on_tool_call"),
        (Reply(tool_calls=[ToolCall("run", {"cmd": "echo CAPSEM_BLOCK"})]), "on_tool_call"),
    ],
    ids=["response-text", "tool-use-name", "tool-use-input"],
)
async def test_response_side_block(proxy: Proxy, fake: FakeUpstream, reply: Reply, hook: str) -> None:
    fake.script(reply)
    with pytest.raises(anthropic.BadRequestError) as raised:
        await in_thread(create, proxy, USER)
    assert raised.value.body["error"]["capsem"]["hook"] == hook
    assert len(fake.requests) == 1


async def test_thinking_block_is_checked_as_thoughts(proxy: Proxy, fake: FakeUpstream) -> None:
    body = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": MODEL, "stop_reason": "end_turn",
        "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1},
        "content": [{"type": "thinking", "thinking": "secretly capsem_block", "signature": "sig"}, {"type": "text", "text": "ok"}],
    }
    fake.script(Reply(raw_body=json.dumps(body).encode()))
    with pytest.raises(anthropic.BadRequestError, match="model thoughts"):
        await in_thread(create, proxy, USER)


async def test_tool_use_passes_through_when_allowed(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"}, id="toolu_42")]))
    message = await in_thread(lambda: create(proxy, [{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL]))
    (block,) = message.content
    assert (block.type, block.name, block.id, block.input) == ("tool_use", "get_weather", "toolu_42", {"city": "Paris"})


@pytest.mark.parametrize(
    ("status", "exception"),
    [(401, anthropic.AuthenticationError), (429, anthropic.RateLimitError), (529, anthropic.APIStatusError)],
)
async def test_upstream_errors_keep_status_and_body(proxy: Proxy, fake: FakeUpstream, status: int, exception: type) -> None:
    fake.script(Reply(status=status, error_message=f"provider says {status}"))
    with pytest.raises(exception) as raised:
        await in_thread(create, proxy, USER)
    assert raised.value.status_code == status
    assert f"provider says {status}" in str(raised.value)


async def test_unreachable_upstream_is_502_in_anthropic_shape(start_proxy, proxy_settings) -> None:
    proxy = await start_proxy(proxy_settings, anthropic_upstream="http://127.0.0.1:9")
    with pytest.raises(anthropic.InternalServerError) as raised:
        await in_thread(create, proxy, USER)
    assert raised.value.status_code == 502
    assert raised.value.body["error"]["type"] == "api_error"


# -- count_tokens --------------------------------------------------------------


async def test_count_tokens_allowed(proxy: Proxy, fake: FakeUpstream) -> None:
    count = await in_thread(lambda: proxy.anthropic().messages.count_tokens(model=MODEL, messages=USER))
    assert count.input_tokens > 0
    assert fake.requests[0].path == "/v1/messages/count_tokens"


@pytest.mark.parametrize(
    "extra",
    [{"messages": [{"role": "user", "content": "count capsem_block"}]}, {"messages": USER, "system": "capsem_block"}],
    ids=["prompt", "system"],
)
async def test_count_tokens_is_checked_with_on_model_call(proxy: Proxy, fake: FakeUpstream, extra: dict) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        await in_thread(lambda: proxy.anthropic().messages.count_tokens(model=MODEL, **extra))
    assert raised.value.body["error"]["capsem"]["hook"] == "on_model_call"
    assert fake.requests == []


# -- streaming -----------------------------------------------------------------


async def test_streamed_text_equals_non_streamed_text(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(text=LONG_TEXT), Reply(text=LONG_TEXT))
    streamed, final = await in_thread(stream_text, proxy)
    whole = await in_thread(create, proxy, USER)
    assert streamed == whole.content[0].text == final.content[0].text == LONG_TEXT
    assert fake.streams[0].completed


async def test_streamed_tool_use_round_trips(proxy: Proxy, fake: FakeUpstream) -> None:
    calls = [ToolCall("get_weather", {"city": "Paris", "units": "metric"}), ToolCall("get_time", {"tz": "Europe/Paris"})]
    fake.script(Reply(text="checking", tool_calls=calls, args_chunk_size=3))
    text, final = await in_thread(lambda: stream_text(proxy, tools=[WEATHER_TOOL]))
    assert text == "checking"
    assert [(block.name, block.input) for block in final.content if block.type == "tool_use"] == [
        ("get_weather", {"city": "Paris", "units": "metric"}),
        ("get_time", {"tz": "Europe/Paris"}),
    ]


@split_marker_chunks
async def test_term_split_across_chunks_is_blocked_and_never_delivered_whole(
    proxy: Proxy, fake: FakeUpstream, chunks: list[str]
) -> None:
    fake.script(Reply(chunks=chunks))
    received, error = await in_thread(collect_until_error, proxy)
    assert isinstance(error, anthropic.APIStatusError)
    assert error.body["type"] == "error"
    assert error.body["error"]["type"] == "invalid_request_error"
    assert error.body["error"]["capsem"]["hook"] == "on_model_response"
    assert "capsem_block" not in received.lower()


async def test_blocked_stream_closes_the_upstream_at_once(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(endless_blocked_reply())
    _, error = await in_thread(collect_until_error, proxy)
    assert error is not None
    await assert_upstream_closed_at_once(fake)


async def _raw_stream(proxy: Proxy, **body: object) -> bytes:
    payload = {"model": MODEL, "max_tokens": 100, "messages": USER, "stream": True, **body}
    response = await raw_post(proxy, "/v1/messages", payload)
    assert response.status_code == 200
    return response.content


@pytest.mark.parametrize(
    "call",
    [ToolCall("shell", {"cmd": "rm -rf capsem_block"}), ToolCall("capsem_block_shell", {"cmd": "ls -la"})],
    ids=["input-split-across-deltas", "name"],
)
async def test_streamed_tool_use_blocked_before_any_of_it_is_released(proxy: Proxy, fake: FakeUpstream, call: ToolCall) -> None:
    fake.script(Reply(text="let me run that", tool_calls=[call], args_chunk_size=4))
    raw = await _raw_stream(proxy)
    released, error_event = raw.rstrip().rsplit(b"\n\n", 1)
    assert b"tool_use" not in released and b"input_json_delta" not in released and b"_shell" not in released
    assert error_event.startswith(b"event: error\ndata: ")
    final = json.loads(error_event.split(b"data: ", 1)[1])
    assert final["error"]["type"] == "invalid_request_error"
    assert final["error"]["details"] == {"error_code": "dlp_request_denied"}  # no non-streamed retry in Claude Code
    assert final["error"]["capsem"]["hook"] == "on_tool_call"


async def test_streamed_thinking_is_checked_as_thoughts(proxy: Proxy, fake: FakeUpstream) -> None:
    def sse(event: str, data: dict) -> bytes:
        return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()

    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL, "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}
    events = [
        sse("message_start", {"type": "message_start", "message": message}),
        sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "I will capsem_"}}),
        sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "block now"}}),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse("message_stop", {"type": "message_stop"}),
    ]
    fake.script(Reply(raw_body=b"".join(events), content_type="text/event-stream"))
    raw = await _raw_stream(proxy)
    assert b"capsem_" not in raw.split(b"event: error")[0]
    assert b'"model thoughts' in raw or b"model thoughts" in raw


async def test_upstream_error_event_mid_stream_reaches_the_sdk(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(chunks=["part one. "] * 10, fault="error_mid_stream", fault_after_events=4, status=529,
                      error_message="Overloaded right now"))
    _, error = await in_thread(collect_until_error, proxy)
    assert isinstance(error, anthropic.APIStatusError)
    assert "Overloaded right now" in str(error)


@pytest.mark.parametrize("fault", ["reset_mid_stream", "malformed_sse"])
async def test_broken_upstream_stream_ends_with_an_error_event(proxy: Proxy, fake: FakeUpstream, fault: str) -> None:
    fake.script(Reply(chunks=["part one. "] * 40, fault=fault, fault_after_events=3))
    _, error = await in_thread(collect_until_error, proxy)  # in_thread caps the wait (30 s)
    assert isinstance(error, anthropic.APIStatusError)
    assert error.body["error"]["type"] in ("api_error", "timeout_error")


async def test_streamed_request_side_block_never_reaches_upstream(proxy: Proxy, fake: FakeUpstream) -> None:
    _, error = await in_thread(collect_until_error, proxy, [{"role": "user", "content": "capsem_block"}])
    assert isinstance(error, anthropic.BadRequestError)
    assert fake.requests == []
