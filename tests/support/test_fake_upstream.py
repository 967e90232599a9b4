"""Self-test of the fake provider: the official SDKs, pointed straight at it, must parse it.

If these pass, a proxy test that fails is about the proxy, not the fake. The
SDKs are used through their sync clients in worker threads (they are not trio
libraries); every wait is bounded with `trio.fail_after`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import httpx
import httpx2  # the transport the SDKs use (an httpx fork); some of its errors escape the SDKs
import openai
import pytest
import trio
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.support.fake_upstream import DEFAULT_TEXT, FakeUpstream, Reply, ToolCall, run_fake_upstream

T = TypeVar("T")

WEATHER = ToolCall("get_weather", {"city": "Paris", "days": 3, "units": {"temp": "C"}, "note": "a \"quoted\" é"})
SEARCH = ToolCall("search", {"query": "trio nurseries", "limit": 5})


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with run_fake_upstream() as server:
        yield server


async def in_thread(fn: Callable[[], T], timeout: float = 10) -> T:
    """Run a blocking SDK call off the trio loop, bounded."""
    with trio.fail_after(timeout):
        return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


def openai_client(fake: FakeUpstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-test", max_retries=0, timeout=5)


def genai_client(fake: FakeUpstream, api_version: str = "v1beta") -> genai.Client:
    options = genai_types.HttpOptions(base_url=fake.url, api_version=api_version, timeout=5000)
    return genai.Client(api_key="g-test", http_options=options)


def anthropic_client(fake: FakeUpstream) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.url, api_key="a-test", max_retries=0, timeout=5)


USER = [{"role": "user", "content": "Hi there"}]
CLAUDE = "claude-sonnet-4-6"


# --- OpenAI Chat Completions ------------------------------------------------


async def test_openai_chat_json(fake: FakeUpstream) -> None:
    client = openai_client(fake)
    fake.script(Reply(text="Bonjour."))
    completion = await in_thread(lambda: client.chat.completions.create(model="gpt-4o", messages=USER))
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Bonjour."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0

    (request,) = fake.requests_to("/chat/completions")
    assert request.method == "POST" and request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.json["model"] == "gpt-4o" and request.json["messages"] == USER
    assert request.status == 200 and not request.client_closed


async def test_openai_chat_default_reply_and_echo(fake: FakeUpstream) -> None:
    client = openai_client(fake)
    first = await in_thread(lambda: client.chat.completions.create(model="gpt-4o", messages=USER))
    assert first.choices[0].message.content == DEFAULT_TEXT
    echo = [{"role": "user", "content": "please echo: the magic words"}]
    second = await in_thread(lambda: client.chat.completions.create(model="gpt-4o", messages=echo))
    assert second.choices[0].message.content == "the magic words"


async def test_openai_chat_stream_text_and_usage(fake: FakeUpstream) -> None:
    client = openai_client(fake)
    fake.script(Reply(chunks=["Hel", "lo, ", "wor", "ld!"]))

    def run() -> list[Any]:
        stream = client.chat.completions.create(
            model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        return list(stream)

    chunks = await in_thread(run)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert pieces == ["Hel", "lo, ", "wor", "ld!"]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert fake.streams[0].completed and not fake.streams[0].client_closed
    assert fake.streams[0].events_sent == len(chunks) + 1  # + data: [DONE]


async def test_openai_chat_tool_calls_json_and_stream(fake: FakeUpstream) -> None:
    client = openai_client(fake)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    fake.script(Reply(tool_calls=[WEATHER, SEARCH]), Reply(text="Let me check.", tool_calls=[WEATHER, SEARCH]))

    completion = await in_thread(lambda: client.chat.completions.create(model="gpt-4o", messages=USER, tools=tools))
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls" and message.content is None
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        (WEATHER.id, "get_weather", WEATHER.arguments),
        (SEARCH.id, "search", SEARCH.arguments),
    ]

    def run() -> tuple[Any, list[Any]]:
        raw: list[Any] = []
        with client.chat.completions.stream(model="gpt-4o", messages=USER, tools=tools) as stream:
            for event in stream:
                if event.type == "chunk":
                    raw.append(event.chunk)
            return stream.get_final_completion(), raw

    final, raw = await in_thread(run)
    message = final.choices[0].message
    assert message.content == "Let me check."
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        (WEATHER.id, "get_weather", WEATHER.arguments),
        (SEARCH.id, "search", SEARCH.arguments),
    ]
    argument_deltas = [
        tc for c in raw for tc in (c.choices[0].delta.tool_calls or []) if tc.function and tc.function.arguments
    ]
    assert len(argument_deltas) > 4  # arguments really arrive split across chunks


@pytest.mark.parametrize(
    ("status", "exception", "code"),
    [
        (400, openai.BadRequestError, None),
        (401, openai.AuthenticationError, "invalid_api_key"),
        (429, openai.RateLimitError, "rate_limit_exceeded"),
        (500, openai.InternalServerError, None),
    ],
)
async def test_openai_errors(fake: FakeUpstream, status: int, exception: type[Exception], code: str | None) -> None:
    client = openai_client(fake)
    fake.script(Reply(status=status, error_message="scripted failure"))
    with pytest.raises(exception) as info:
        await in_thread(lambda: client.chat.completions.create(model="gpt-4o", messages=USER))
    assert info.value.status_code == status
    assert info.value.code == code
    assert info.value.body["message"] == "scripted failure"
    assert set(info.value.body) == {"message", "type", "param", "code"}


async def test_openai_error_mid_stream_raises_api_error(fake: FakeUpstream) -> None:
    client = openai_client(fake)
    fake.script(Reply(fault="error_mid_stream", fault_after_events=3, status=429, error_message="slow down"))
    received: list[Any] = []

    def run() -> None:
        for chunk in client.chat.completions.create(model="gpt-4o", messages=USER, stream=True):
            received.append(chunk)

    with pytest.raises(openai.APIError) as info:
        await in_thread(run)
    # Not a status error: the HTTP status was 200; the SDK raises a bare APIError from `data: {"error": ...}`.
    assert not isinstance(info.value, openai.APIStatusError)
    assert info.value.message == "slow down" and info.value.code == "rate_limit_exceeded"
    assert len(received) == 3


# --- OpenAI Responses -------------------------------------------------------


async def test_openai_responses_json(fake: FakeUpstream) -> None:
    client = openai_client(fake)
    fake.script(Reply(text="Plain answer."), Reply(text="Calling.", tool_calls=[WEATHER]))
    response = await in_thread(lambda: client.responses.create(model="gpt-4o", input="hello"))
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "Plain answer."
    assert response.usage is not None and response.usage.total_tokens > 0

    response = await in_thread(lambda: client.responses.create(model="gpt-4o", input="hello"))
    message, call = response.output
    assert message.type == "message" and message.content[0].annotations == []
    assert response.output_text == "Calling."
    assert call.type == "function_call" and call.call_id == WEATHER.id and call.name == "get_weather"
    assert json.loads(call.arguments) == WEATHER.arguments


async def test_openai_responses_stream_events(fake: FakeUpstream) -> None:
    client = openai_client(fake)
    fake.script(Reply(chunks=["One ", "two ", "three."], tool_calls=[WEATHER]))
    events = await in_thread(lambda: list(client.responses.create(model="gpt-4o", input="hi", stream=True)))
    types = [e.type for e in events]
    assert types[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert types[-1] == "response.completed"
    assert {"response.function_call_arguments.delta", "response.function_call_arguments.done"} <= set(types)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "One two three."
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(arguments) == WEATHER.arguments
    assert events[-1].response.output_text == "One two three."
    assert len({e.response.id for e in events if hasattr(e, "response")}) == 1


async def test_openai_responses_stream_helper(fake: FakeUpstream) -> None:
    """The `responses.stream()` helper checks the event lifecycle strictly."""
    client = openai_client(fake)
    fake.script(Reply(text="Helper text.", tool_calls=[WEATHER, SEARCH]))

    def run() -> Any:
        with client.responses.stream(model="gpt-4o", input="hi") as stream:
            for _ in stream:
                pass
            return stream.get_final_response()

    final = await in_thread(run)
    assert final.output_text == "Helper text."
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.call_id, json.loads(c.arguments)) for c in calls] == [
        (WEATHER.id, WEATHER.arguments),
        (SEARCH.id, SEARCH.arguments),
    ]


async def test_openai_responses_error_event_is_yielded(fake: FakeUpstream) -> None:
    client = openai_client(fake)
    fake.script(Reply(fault="error_mid_stream", fault_after_events=4, error_message="boom"))
    events = await in_thread(lambda: list(client.responses.create(model="gpt-4o", input="hi", stream=True)))
    # `event: error` has no "error" key in its data, so the SDK yields it rather than raising.
    assert len(events) == 5
    assert events[-1].type == "error" and events[-1].message == "boom" and events[-1].sequence_number == 4


# --- OpenAI side endpoints --------------------------------------------------


async def test_openai_side_endpoints(fake: FakeUpstream) -> None:
    client = openai_client(fake)

    def run() -> dict[str, Any]:
        return {
            "models": [m.id for m in client.models.list()],
            "model": client.models.retrieve("gpt-4o"),
            "embedding_b64": client.embeddings.create(model="text-embedding-3-small", input=["a", "b"]),
            "embedding_float": client.embeddings.create(
                model="text-embedding-3-small", input="a", encoding_format="float"
            ),
            "moderation": client.moderations.create(input=["fine", "FLAG_ME please"]),
            "completion": client.completions.create(model="gpt-3.5-turbo-instruct", prompt="echo: legacy"),
            "completion_stream": [
                c.choices[0].text
                for c in client.completions.create(model="gpt-3.5-turbo-instruct", prompt="x", stream=True)
                if c.choices
            ],
        }

    out = await in_thread(run)
    assert "gpt-4o" in out["models"]
    assert out["model"].id == "gpt-4o" and out["model"].object == "model"
    b64 = out["embedding_b64"]
    assert [d.index for d in b64.data] == [0, 1] and len(b64.data[0].embedding) == 8
    assert out["embedding_float"].data[0].embedding == b64.data[0].embedding  # deterministic, base64 decoded
    assert [r.flagged for r in out["moderation"].results] == [False, True]
    assert out["completion"].choices[0].text == "legacy"
    assert "".join(out["completion_stream"]) == DEFAULT_TEXT
    assert fake.requests_to("/embeddings")[0].json["encoding_format"] == "base64"


# --- Gemini -----------------------------------------------------------------


async def test_gemini_generate_content_json(fake: FakeUpstream) -> None:
    client = genai_client(fake)
    fake.script(Reply(text="Gemini says hi.", thoughts="Thinking hard.", tool_calls=[WEATHER]))
    response = await in_thread(
        lambda: client.models.generate_content(model="gemini-2.5-flash", contents="Hi there")
    )
    parts = response.candidates[0].content.parts
    assert parts[0].thought is True and parts[0].text == "Thinking hard."
    assert response.text == "Gemini says hi."
    assert [(c.name, c.args) for c in response.function_calls] == [("get_weather", WEATHER.arguments)]
    assert response.candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert response.usage_metadata.thoughts_token_count > 0
    assert response.model_version == "gemini-2.5-flash"

    (request,) = fake.requests
    assert request.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert request.headers["x-goog-api-key"] == "g-test"
    assert request.json["contents"][0]["parts"][0]["text"] == "Hi there"


async def test_gemini_stream_sse(fake: FakeUpstream) -> None:
    client = genai_client(fake)
    fake.script(Reply(chunks=["Str", "eam", "ed!"], thoughts="Hmm, let me think.", tool_calls=[SEARCH]))

    def run() -> list[Any]:
        return list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="Hi"))

    chunks = await in_thread(run)
    parts = [p for c in chunks for p in c.candidates[0].content.parts]
    assert "".join(p.text for p in parts if p.text and not p.thought) == "Streamed!"
    assert "".join(p.text for p in parts if p.thought) == "Hmm, let me think."
    assert [(p.function_call.name, p.function_call.args) for p in parts if p.function_call] == [
        ("search", SEARCH.arguments)
    ]
    assert chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.STOP
    assert fake.requests[0].query == {"alt": "sse"}
    assert fake.streams[0].completed


async def test_gemini_v1_and_stream_without_alt_sse(fake: FakeUpstream) -> None:
    client = genai_client(fake, api_version="v1")
    response = await in_thread(lambda: client.models.generate_content(model="gemini-2.0-flash", contents="Hi"))
    assert response.text == DEFAULT_TEXT and fake.requests[0].path.startswith("/v1/models/")

    # Without ?alt=sse the REST API streams one JSON array, element by element.
    fake.script(Reply(chunks=["Arr", "ay ", "mode"]))
    url = f"{fake.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    with trio.fail_after(30):
        async with httpx.AsyncClient() as http:
            async with http.stream("POST", url, json={"contents": []}, headers={"x-goog-api-key": "k"}) as resp:
                pieces = [piece async for piece in resp.aiter_bytes()]
    assert resp.headers["content-type"].startswith("application/json")
    elements = json.loads(b"".join(pieces))
    assert isinstance(elements, list) and len(elements) == 3
    assert "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in elements) == "Array mode"


@pytest.mark.parametrize(
    ("status", "exception", "rpc_status"),
    [
        (400, genai_errors.ClientError, "INVALID_ARGUMENT"),
        (403, genai_errors.ClientError, "PERMISSION_DENIED"),
        (429, genai_errors.ClientError, "RESOURCE_EXHAUSTED"),
        (500, genai_errors.ServerError, "INTERNAL"),
    ],
)
async def test_gemini_errors(fake: FakeUpstream, status: int, exception: type[Exception], rpc_status: str) -> None:
    client = genai_client(fake)
    fake.script(Reply(status=status, error_message="scripted failure"))
    with pytest.raises(exception) as info:
        await in_thread(lambda: client.models.generate_content(model="gemini-2.5-flash", contents="Hi"))
    assert info.value.code == status and info.value.status == rpc_status
    assert info.value.message == "scripted failure"


async def test_gemini_error_inside_stream_raises(fake: FakeUpstream) -> None:
    client = genai_client(fake)
    fake.script(Reply(fault="error_mid_stream", fault_after_events=2, status=503, error_message="overloaded"))
    received: list[Any] = []

    def run() -> None:
        for chunk in client.models.generate_content_stream(model="gemini-2.5-flash", contents="Hi"):
            received.append(chunk)

    with pytest.raises(genai_errors.ServerError) as info:
        await in_thread(run)
    assert info.value.code == 503 and info.value.status == "UNAVAILABLE" and len(received) == 2


async def test_gemini_side_endpoints(fake: FakeUpstream) -> None:
    client = genai_client(fake)

    def run() -> dict[str, Any]:
        return {
            "models": [m.name for m in client.models.list()],
            "model": client.models.get(model="gemini-2.5-pro"),
            "tokens": client.models.count_tokens(model="gemini-2.5-flash", contents="count me"),
            "embed": client.models.embed_content(model="gemini-embedding-001", contents=["a", "b", "c"]),
        }

    out = await in_thread(run)
    assert "models/gemini-2.5-flash" in out["models"]
    assert out["model"].name == "models/gemini-2.5-pro"
    assert out["tokens"].total_tokens > 0
    assert [len(e.values) for e in out["embed"].embeddings] == [8, 8, 8]
    assert fake.requests_to(":batchEmbedContents")

    embed = await in_thread(
        lambda: httpx.post(
            f"{fake.url}/v1beta/models/text-embedding-004:embedContent",
            json={"content": {"parts": [{"text": "a"}]}},
            headers={"x-goog-api-key": "k"},
        )
    )
    assert embed.json()["embedding"]["values"] == out["embed"].embeddings[0].values


# --- Anthropic --------------------------------------------------------------


async def test_anthropic_messages_json(fake: FakeUpstream) -> None:
    client = anthropic_client(fake)
    fake.script(Reply(text="Claude here.", tool_calls=[WEATHER]))
    message = await in_thread(lambda: client.messages.create(model=CLAUDE, max_tokens=100, messages=USER))
    text, tool = message.content
    assert message.type == "message" and message.role == "assistant" and message.stop_reason == "tool_use"
    assert text.type == "text" and text.text == "Claude here."
    assert (tool.type, tool.id, tool.name, tool.input) == ("tool_use", WEATHER.id, "get_weather", WEATHER.arguments)
    assert message.usage.input_tokens > 0

    (request,) = fake.requests
    # This SDK generation sends the key as a bearer token, not x-api-key.
    assert request.headers["authorization"] == "Bearer a-test" and "anthropic-version" in request.headers


async def test_anthropic_stream(fake: FakeUpstream) -> None:
    client = anthropic_client(fake)
    fake.script(Reply(chunks=["Stre", "amed ", "Claude."]), Reply(text="Using tools.", tool_calls=[WEATHER, SEARCH]))
    events = await in_thread(
        lambda: list(client.messages.create(model=CLAUDE, max_tokens=100, messages=USER, stream=True))
    )
    types = [e.type for e in events]  # the SDK drops `ping`
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    assert [e.delta.text for e in events if e.type == "content_block_delta"] == ["Stre", "amed ", "Claude."]

    def run() -> tuple[Any, list[str]]:
        with client.messages.stream(model=CLAUDE, max_tokens=100, messages=USER) as stream:
            partials = [e.partial_json for e in stream if e.type == "input_json"]
            return stream.get_final_message(), partials

    final, partials = await in_thread(run)
    text, weather, search = final.content
    assert text.text == "Using tools." and final.stop_reason == "tool_use"
    assert (weather.id, weather.input) == (WEATHER.id, WEATHER.arguments)
    assert (search.name, search.input) == ("search", SEARCH.arguments)
    assert len(partials) > 4

    raw = await in_thread(
        lambda: httpx.post(
            f"{fake.url}/v1/messages", json={"model": CLAUDE, "messages": USER, "stream": True}, timeout=5
        ).text
    )
    assert "event: ping\n" in raw and raw.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')


@pytest.mark.parametrize(
    ("status", "exception", "error_type"),
    [
        (401, anthropic.AuthenticationError, "authentication_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
async def test_anthropic_errors(fake: FakeUpstream, status: int, exception: type[Exception], error_type: str) -> None:
    client = anthropic_client(fake)
    fake.script(Reply(status=status))
    with pytest.raises(exception) as info:
        await in_thread(lambda: client.messages.create(model=CLAUDE, max_tokens=10, messages=USER))
    assert info.value.status_code == status
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == error_type


async def test_anthropic_error_event_mid_stream(fake: FakeUpstream) -> None:
    client = anthropic_client(fake)
    fake.script(Reply(fault="error_mid_stream", fault_after_events=3, status=529))
    received: list[Any] = []

    def run() -> None:
        for event in client.messages.create(model=CLAUDE, max_tokens=10, messages=USER, stream=True):
            received.append(event)

    with pytest.raises(anthropic.APIStatusError) as info:
        await in_thread(run)
    # The HTTP status was 200, so the SDK cannot map it to OverloadedError: a plain APIStatusError.
    assert type(info.value) is anthropic.APIStatusError and info.value.status_code == 200
    assert info.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert [e.type for e in received] == ["message_start", "content_block_start"]  # the ping is not yielded


async def test_anthropic_side_endpoints(fake: FakeUpstream) -> None:
    client = anthropic_client(fake)
    count = await in_thread(lambda: client.messages.count_tokens(model=CLAUDE, messages=USER))
    models = await in_thread(lambda: [m.id for m in client.models.list()])
    model = await in_thread(lambda: client.models.retrieve(CLAUDE))
    assert count.input_tokens > 0
    assert CLAUDE in models and model.display_name == "Claude Sonnet 4.6"
    # Same path as OpenAI's model list, told apart by the anthropic-version header.
    assert fake.requests[-1].path == "/v1/models/" + CLAUDE


# --- Server mechanics and faults --------------------------------------------


async def test_client_closing_stream_early_is_seen_promptly(fake: FakeUpstream) -> None:
    fake.script(Reply(text="x" * 80, repeat_events=2000, chunk_delay=0.01))  # 20 s whole: the margin
    body = {"model": "gpt-4o", "messages": USER, "stream": True}
    with trio.fail_after(30):
        async with httpx.AsyncClient() as http:
            async with http.stream("POST", f"{fake.url}/v1/chat/completions", json=body) as response:
                async for _ in response.aiter_bytes():
                    break
    with trio.fail_after(30):  # a cap against hanging, not a measure
        await fake.streams[0].closed.wait()
    record = fake.streams[0]
    assert record.client_closed and not record.completed and 0 < record.events_sent < 1000
    with trio.fail_after(30):  # a cap against hanging, not a measure
        await fake.wait_for_open_connections(0)


async def test_sdk_stream_close_is_seen(fake: FakeUpstream) -> None:
    client = openai_client(fake)
    fake.script(Reply(text="y" * 80, repeat_events=2000, chunk_delay=0.01))  # 20 s whole: the margin

    def run() -> str | None:
        stream = client.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
        first = next(iter(stream))
        stream.close()
        return first.choices[0].delta.role

    assert await in_thread(run) == "assistant"
    with trio.fail_after(30):  # a cap against hanging, not a measure
        await fake.wait_for_streams(1)
        await fake.streams[0].closed.wait()
    assert fake.streams[0].client_closed and not fake.streams[0].completed


async def test_keep_alive_and_connection_count(fake: FakeUpstream) -> None:
    with trio.fail_after(30):
        async with httpx.AsyncClient() as http:
            for _ in range(3):
                response = await http.post(f"{fake.url}/v1/chat/completions", json={"messages": USER})
                assert response.json()["choices"][0]["message"]["content"] == DEFAULT_TEXT
            streamed = await http.post(f"{fake.url}/v1/messages", json={"messages": USER, "stream": True})
            assert streamed.headers["transfer-encoding"] == "chunked"
            assert fake.open_connections == 1
        await fake.wait_for_open_connections(0)
    assert fake.total_connections == 1 and len(fake.requests) == 4


async def test_script_is_fifo_then_default(fake: FakeUpstream) -> None:
    fake.script(Reply(text="first"), Reply(status=401))
    assert fake.pending_replies == 2
    with trio.fail_after(30):
        async with httpx.AsyncClient() as http:
            url = f"{fake.url}/v1/chat/completions?api-version=2024&x=1"
            replies = [await http.post(url, json={"messages": USER}, headers={"X-Custom": "A"}) for _ in range(3)]
    assert [r.status_code for r in replies] == [200, 401, 200]
    assert replies[1].json()["error"]["code"] == "invalid_api_key"
    assert replies[2].json()["choices"][0]["message"]["content"] == DEFAULT_TEXT
    request = fake.requests[0]
    assert request.query == {"api-version": "2024", "x": "1"} and request.headers["x-custom"] == "A"
    assert request.json == {"messages": USER} and request.body.startswith(b"{")


async def test_raw_body_and_extra_headers(fake: FakeUpstream) -> None:
    client = openai_client(fake)
    fake.script(
        Reply(raw_body=b"{not json", headers={"x-extra": "1"}),
        Reply(raw_body=b"teapot", status=418, content_type="text/plain"),
    )
    with pytest.raises(json.JSONDecodeError):  # the SDK does not wrap a broken JSON body
        await in_thread(lambda: client.chat.completions.create(model="gpt-4o", messages=USER))
    with pytest.raises(openai.APIStatusError) as info:
        await in_thread(lambda: client.chat.completions.create(model="gpt-4o", messages=USER))
    assert info.value.status_code == 418 and info.value.body == "teapot"


async def test_delay(fake: FakeUpstream) -> None:
    fake.script(Reply(delay=0.3))
    with trio.fail_after(30):
        async with httpx.AsyncClient() as http:
            start = trio.current_time()
            await http.post(f"{fake.url}/v1/chat/completions", json={})
            assert trio.current_time() - start >= 0.3


async def test_long_stream_reassembles(fake: FakeUpstream) -> None:
    client = openai_client(fake)
    reply = Reply(chunks=["abc", "défg", "h"], repeat_events=2000)
    fake.script(reply)

    def run() -> str:
        stream = client.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream)

    assert await in_thread(run) == reply.expected_text() == "abcdéfgh" * 2000


async def _stream_until_error(fake: FakeUpstream, path: str, body: dict[str, Any]) -> tuple[bytes, Exception | None]:
    """POST a streaming request with httpx, return what arrived and the transport error, if any."""
    received = bytearray()
    with trio.fail_after(30):
        async with httpx.AsyncClient() as http:
            try:
                async with http.stream("POST", fake.url + path, json=body) as response:
                    async for piece in response.aiter_bytes():
                        received += piece
            except httpx.HTTPError as exc:
                return bytes(received), exc
    return bytes(received), None


STREAM_BODY = {"model": "gpt-4o", "messages": USER, "stream": True}


async def test_fault_reset_before_headers(fake: FakeUpstream) -> None:
    fake.script(Reply(fault="reset_before_headers"))
    received, error = await _stream_until_error(fake, "/v1/chat/completions", STREAM_BODY)
    assert isinstance(error, httpx.RemoteProtocolError) and received == b""
    client = openai_client(fake)
    fake.script(Reply(fault="reset_before_headers"))
    with pytest.raises(openai.APIConnectionError):
        await in_thread(lambda: client.chat.completions.create(model="gpt-4o", messages=USER))


async def test_fault_reset_mid_stream(fake: FakeUpstream) -> None:
    fake.script(Reply(fault="reset_mid_stream", fault_after_events=3))
    received, error = await _stream_until_error(fake, "/v1/chat/completions", STREAM_BODY)
    assert isinstance(error, httpx.RemoteProtocolError)  # incomplete chunked read
    assert received.count(b"\n\n") == 3 and received.endswith(b"\n\n")
    record = fake.streams[0]
    assert record.closed.is_set() and record.events_sent == 3 and not record.completed and not record.client_closed

    client = openai_client(fake)
    fake.script(Reply(fault="reset_mid_stream", fault_after_events=3))
    received_chunks: list[Any] = []

    def run() -> None:
        for chunk in client.chat.completions.create(model="gpt-4o", messages=USER, stream=True):
            received_chunks.append(chunk)

    with pytest.raises(openai.APIConnectionError):
        await in_thread(run)
    assert len(received_chunks) == 3


async def test_fault_reset_mid_body_and_truncated_chunked(fake: FakeUpstream) -> None:
    for fault in ("reset_mid_body", "truncated_chunked"):
        fake.script(Reply(fault=fault), Reply(fault=fault, fault_after_events=1))
        received, error = await _stream_until_error(fake, "/v1/chat/completions", {"messages": USER})
        assert isinstance(error, httpx.RemoteProtocolError), fault
        assert received and not received.endswith(b"}\n}")  # JSON body cut short
        received, error = await _stream_until_error(fake, "/v1/chat/completions", STREAM_BODY)
        assert isinstance(error, httpx.RemoteProtocolError), fault
        assert received.count(b"\n\n") == 1 and not received.endswith(b"\n\n")  # half of the 2nd event


async def test_fault_malformed_sse(fake: FakeUpstream) -> None:
    fake.script(Reply(fault="malformed_sse"))
    received, error = await _stream_until_error(fake, "/v1/chat/completions", STREAM_BODY)
    assert error is None and received.endswith(b"data: {not json\n\n")  # body ends cleanly
    client = openai_client(fake)
    fake.script(Reply(fault="malformed_sse"))
    with pytest.raises(json.JSONDecodeError):
        await in_thread(lambda: list(client.chat.completions.create(model="gpt-4o", messages=USER, stream=True)))
    anthropic_sdk = anthropic_client(fake)
    fake.script(Reply(fault="malformed_sse"))
    with pytest.raises(json.JSONDecodeError):
        await in_thread(
            lambda: list(anthropic_sdk.messages.create(model=CLAUDE, max_tokens=5, messages=USER, stream=True))
        )


async def test_fault_never_answer(fake: FakeUpstream) -> None:
    fake.script(Reply(fault="never_answer"))
    with trio.fail_after(30):
        async with httpx.AsyncClient() as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post(f"{fake.url}/v1/messages", json={"messages": USER}, timeout=0.3)
    with trio.fail_after(30):  # a cap against hanging, not a measure
        await fake.streams[0].closed.wait()
    assert fake.streams[0].client_closed and fake.requests[0].client_closed and fake.requests[0].status is None


async def test_client_leaving_during_delay_is_seen(fake: FakeUpstream) -> None:
    fake.script(Reply(delay=5))
    with trio.fail_after(30):
        async with httpx.AsyncClient() as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post(f"{fake.url}/v1/chat/completions", json={"messages": USER}, timeout=0.2)
    with trio.fail_after(30):  # a cap against hanging, not a measure
        await fake.requests[0].done.wait()
    assert fake.requests[0].client_closed and fake.requests[0].status is None and fake.streams == []


def _stream_call(sdk: str, fake: FakeUpstream) -> Callable[[], Any]:
    if sdk == "openai":
        client = openai_client(fake)
        return lambda: list(client.chat.completions.create(model="gpt-4o", messages=USER, stream=True))
    if sdk == "anthropic":
        claude = anthropic_client(fake)
        return lambda: list(claude.messages.create(model=CLAUDE, max_tokens=5, messages=USER, stream=True))
    gemini = genai_client(fake)
    return lambda: list(gemini.models.generate_content_stream(model="gemini-2.5-flash", contents="Hi"))


@pytest.mark.parametrize(
    ("sdk", "fault", "exception"),
    [
        ("openai", "reset_mid_stream", openai.APIConnectionError),
        ("openai", "truncated_chunked", openai.APIConnectionError),
        ("openai", "malformed_sse", json.JSONDecodeError),
        # Anthropic and google-genai do not wrap transport errors raised while reading a stream.
        ("anthropic", "reset_mid_stream", httpx2.RemoteProtocolError),
        ("anthropic", "truncated_chunked", httpx2.RemoteProtocolError),
        ("anthropic", "malformed_sse", json.JSONDecodeError),
        ("gemini", "reset_mid_stream", httpx2.RemoteProtocolError),
        ("gemini", "reset_before_headers", httpx2.RemoteProtocolError),
        ("gemini", "malformed_sse", genai_errors.UnknownApiResponseError),
    ],
)
async def test_what_sdks_raise_on_stream_faults(
    fake: FakeUpstream, sdk: str, fault: str, exception: type[Exception]
) -> None:
    fake.script(Reply(fault=fault))
    with pytest.raises(exception):
        await in_thread(_stream_call(sdk, fake))


async def test_unknown_path_is_404_in_provider_shape(fake: FakeUpstream) -> None:
    with trio.fail_after(30):
        async with httpx.AsyncClient() as http:
            openai_404 = await http.post(f"{fake.url}/v1/nope", json={})
            gemini_404 = await http.post(f"{fake.url}/v1beta/models/gemini-2.5-flash:nope", json={})
    assert openai_404.status_code == 404 and "message" in openai_404.json()["error"]
    assert gemini_404.status_code == 404 and gemini_404.json()["error"]["status"] == "NOT_FOUND"


def test_the_fake_provider_runs_on_its_own() -> None:
    """``python -m tests.support.fake_upstream`` serves until stopped, for trying a client by hand."""
    process = subprocess.Popen([sys.executable, "-m", "tests.support.fake_upstream"], stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[2])
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        reply = httpx.post(url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                           timeout=30)
        assert reply.json()["choices"][0]["message"]["content"] == DEFAULT_TEXT
    finally:
        process.terminate()
        process.wait(10)
