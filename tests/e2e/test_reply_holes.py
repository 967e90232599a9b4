"""Reply-side holes of issue 20 (classes 2, 3, 5 and 6), each through the real proxy against the fake provider.

* class 2: a Gemini chunk with an ``error`` key the client reads past (``null``,
  ``{}``, not its first key) is a chunk like any other: its candidates are checked;
* class 3: in-stream error events (Responses ``response.failed`` and ``error``,
  Anthropic ``event: error``, a Chat chunk with ``error`` and ``choices``,
  Gemini's error chunk) are checked whole before they go, and the tail held
  back before them goes only checked together with their text;
* class 5: an upstream reply with a status of 300 or more is checked (JSON,
  text, an event stream) and relayed unchanged when nothing is found;
* class 6: Responses audio transcript deltas are one held-back text; Anthropic
  text blocks around a server tool's blocks are checked joined.

The official SDK is the client where it reads the thing; raw httpx where the
bytes are the point. Then hypothesis, on the pump alone: a marker split at any
point between streamed text and an error event's text never goes out.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
import trio
from google.genai import errors as genai_errors
from hypothesis import given, settings
from hypothesis import strategies as st

from capsem_proxyd.dialects.anthropic import AnthropicCountTokensDialect, AnthropicMessagesDialect
from capsem_proxyd.dialects.base import Dialect
from capsem_proxyd.dialects.gemini import GeminiDialect
from capsem_proxyd.dialects.openai_chat import OpenAIChatDialect
from capsem_proxyd.dialects.openai_completions import OpenAICompletionsDialect
from capsem_proxyd.dialects.openai_responses import OpenAIResponsesDialect
from capsem_proxyd.proxy.pipeline import error_body_view
from tests.support.bodies import chat_body, gemini_body, messages_body, responses_body
from tests.support.engines import engine
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import ANTHROPIC_AUTH, GEMINI_AUTH, OPENAI_AUTH, Proxy, in_thread, split_at_refusal
from tests.support.replies import chat_chunk
from tests.support.streams import pump_writes

M = "capsem_block"
CHAT = ("/v1/chat/completions", OPENAI_AUTH)
RESPONSES = ("/v1/responses", OPENAI_AUTH)
ANTHROPIC = ("/v1/messages", ANTHROPIC_AUTH)
GEMINI = ("/v1beta/models/gemini-2.5-flash:generateContent", GEMINI_AUTH)
GEMINI_SSE = ("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", GEMINI_AUTH)
GEMINI_ARRAY = ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", GEMINI_AUTH)
BLOCKED = "CAPSEM policy 'Debug'"


def sse(*events: tuple[str | None, Any]) -> bytes:
    return b"".join((f"event: {name}\n" if name else "").encode() + b"data: " + orjson.dumps(data) + b"\n\n"
                    for name, data in events)


def candidate(text: str, **fields: Any) -> dict[str, Any]:
    return {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": text}]}}], **fields}


def message_start() -> tuple[str, dict[str, Any]]:
    return "message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [], "stop_reason": None,
        "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}}


def anthropic_text(index: int, text: str) -> list[tuple[str, dict[str, Any]]]:
    return [("content_block_start", {"type": "content_block_start", "index": index,
                                     "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"type": "content_block_delta", "index": index,
                                     "delta": {"type": "text_delta", "text": text}}),
            ("content_block_stop", {"type": "content_block_stop", "index": index})]


def responses_event(kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
    return kind, {"type": kind, "sequence_number": 1, **fields}


def output_message(*texts: str) -> dict[str, Any]:
    return {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []} for text in texts]}


async def post(proxy: Proxy, where: tuple[str, Any], body: dict[str, Any]) -> httpx.Response:
    path, headers = where
    async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
        return await client.post(path, json=body, headers=dict(headers))


def relayed_before_refusal(response: httpx.Response) -> str:
    relayed, ending = split_at_refusal(response.content)
    assert BLOCKED in ending, response.content
    return relayed


# -- class 2: Gemini chunks with an error key the client reads past ----------------------------------------


def gemini_stream(proxy: Proxy) -> tuple[str, BaseException | None]:
    received: list[str] = []
    client = proxy.gemini()  # held: the client closes its connections when it is collected
    try:
        for chunk in client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"):
            received.append(chunk.text or "")
    except genai_errors.APIError as error:
        return "".join(received), error
    return "".join(received), None


@pytest.mark.parametrize(
    "chunk",
    [candidate(f"then {M}", error=None), candidate(f"then {M}", error={}),
     candidate(f"then {M}", error={"code": 500, "message": "not the first key"})],
    ids=["error-null", "error-empty", "error-not-first"],
)
async def test_a_gemini_chunk_the_sdk_reads_past_its_error_key_is_checked(
    proxy: Proxy, fake: FakeUpstream, chunk: dict[str, Any]
) -> None:
    fake.script(Reply(raw_body=sse((None, candidate("A harmless start. ")), (None, chunk)),
                      content_type="text/event-stream"))
    received, error = await in_thread(gemini_stream, proxy)
    assert isinstance(error, genai_errors.ClientError) and error.code == 400 and BLOCKED in str(error)
    assert M not in received


async def test_a_gemini_chunk_with_an_error_key_in_the_json_array_stream_is_checked(
    proxy: Proxy, fake: FakeUpstream
) -> None:
    elements = [candidate("A harmless start. "), candidate(f"then {M}", error=None)]
    fake.script(Reply(raw_body=json.dumps(elements).encode(), content_type="application/json"))
    response = await post(proxy, GEMINI_ARRAY, gemini_body())
    released = json.loads(response.content)  # still one JSON array, ended by the proxy's error element
    assert released[-1]["error"]["code"] == 400 and BLOCKED in released[-1]["error"]["message"]
    assert M not in json.dumps(released[:-1])


async def test_a_gemini_error_chunk_goes_to_the_sdk_as_the_providers_error(proxy: Proxy, fake: FakeUpstream) -> None:
    error_chunk = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    fake.script(Reply(raw_body=sse((None, candidate("Partial answer. ")), (None, error_chunk)),
                      content_type="text/event-stream"))
    received, error = await in_thread(gemini_stream, proxy)
    assert received == "Partial answer. "
    assert isinstance(error, genai_errors.ServerError) and error.code == 503 and "overloaded" in str(error)


@pytest.mark.parametrize(
    "bare",
    [json.dumps(candidate(f"then {M}")), json.dumps({"error": {"code": 500, "message": f"failed: {M}"}}, indent=2)],
    ids=["candidates-line", "multi-line-error"],
)
async def test_bare_json_lines_google_genai_reads_in_an_sse_stream_are_checked(
    proxy: Proxy, fake: FakeUpstream, bare: str
) -> None:
    """google-genai reads every line that is no ``data: `` line as JSON (the API's errors come so);
    an SSE reader that drops them would relay them unchecked."""
    fake.script(Reply(raw_body=sse((None, candidate("A harmless start. "))) + bare.encode() + b"\n\n",
                      content_type="text/event-stream"))
    received, error = await in_thread(gemini_stream, proxy)
    assert isinstance(error, genai_errors.ClientError) and error.code == 400 and BLOCKED in str(error)
    assert M not in received


# -- class 3: in-stream error events, checked whole; the held tail only with the error's text -------------


async def test_a_gemini_error_chunk_carrying_the_marker_is_blocked(proxy: Proxy, fake: FakeUpstream) -> None:
    error_chunk = {"error": {"code": 500, "message": "failed", "details": [{"reason": M}]}}
    fake.script(Reply(raw_body=sse((None, candidate("Sure: ")), (None, error_chunk)), content_type="text/event-stream"))
    received, error = await in_thread(gemini_stream, proxy)
    assert isinstance(error, genai_errors.ClientError) and error.code == 400 and BLOCKED in str(error)
    assert M not in received


async def test_a_gemini_term_split_between_held_text_and_error_chunk_never_goes(
    proxy: Proxy, fake: FakeUpstream
) -> None:
    error_chunk = {"error": {"code": 500, "message": "em_block went wrong"}}
    fake.script(Reply(raw_body=sse((None, candidate("Sure: caps")), (None, error_chunk)),
                      content_type="text/event-stream"))
    received, error = await in_thread(gemini_stream, proxy)
    assert isinstance(error, genai_errors.ClientError) and error.code == 400 and BLOCKED in str(error)
    assert "caps" not in received


def responses_stream(proxy: Proxy) -> tuple[str, BaseException | None]:
    received: list[str] = []
    client = proxy.openai()
    try:
        for event in client.responses.create(model="gpt-4o", input="hi", stream=True):
            if event.type == "response.output_text.delta":
                received.append(event.delta)
            elif event.type == "response.failed":
                received.append(event.response.output_text)
    except openai.APIError as error:
        return "".join(received), error
    return "".join(received), None


@pytest.mark.parametrize(
    "ending",
    [
        responses_event("response.failed", response={
            "id": "resp_1", "object": "response", "status": "failed", "output": [output_message("Sure: cap", "sem_block")],
            "error": {"code": "server_error", "message": "The run failed."}}),
        responses_event("response.failed", response={
            "id": "resp_1", "object": "response", "status": "failed", "output": [],
            "error": {"code": "server_error", "message": f"The run failed on {M}."}}),
        responses_event("error", code="server_error", message=f"failed near {M}", param=None),
    ],
    ids=["failed-output-text-parts", "failed-error-message", "error-event"],
)
async def test_a_responses_error_event_is_checked_whole(
    proxy: Proxy, fake: FakeUpstream, ending: tuple[str, dict[str, Any]]
) -> None:
    created = responses_event("response.created", response={"id": "resp_1", "object": "response", "output": []})
    fake.script(Reply(raw_body=sse(created, responses_event("response.output_text.delta", delta="Sure: "), ending),
                      content_type="text/event-stream"))
    received, error = await in_thread(responses_stream, proxy)
    assert isinstance(error, openai.APIError) and BLOCKED in str(error)
    assert M not in received


async def test_a_responses_term_split_between_held_delta_and_response_failed_never_goes(
    proxy: Proxy, fake: FakeUpstream
) -> None:
    """``response.failed`` restates only what came after the last delta: the SDK's reader joins the two."""
    created = responses_event("response.created", response={"id": "resp_1", "object": "response", "output": []})
    failed = responses_event("response.failed", response={
        "id": "resp_1", "object": "response", "status": "failed", "output": [output_message("em_block")],
        "error": {"code": "server_error", "message": "The run failed."}})
    fake.script(Reply(raw_body=sse(created, responses_event("response.output_text.delta", delta="Sure: caps"), failed),
                      content_type="text/event-stream"))
    received, error = await in_thread(responses_stream, proxy)
    assert isinstance(error, openai.APIError) and BLOCKED in str(error)
    assert "caps" not in received


async def test_a_benign_responses_failure_still_reaches_the_sdk(proxy: Proxy, fake: FakeUpstream) -> None:
    created = responses_event("response.created", response={"id": "resp_1", "object": "response", "output": []})
    failed = responses_event("response.failed", response={
        "id": "resp_1", "object": "response", "status": "failed", "output": [output_message("Partial answer.")],
        "error": {"code": "server_error", "message": "The run failed."}})
    fake.script(Reply(raw_body=sse(created, responses_event("response.output_text.delta", delta="Partial answer."),
                                   failed), content_type="text/event-stream"))
    received, error = await in_thread(responses_stream, proxy)
    assert error is None and received == "Partial answer." * 2  # the delta, then the failed reply's output_text


def anthropic_stream(proxy: Proxy) -> tuple[str, BaseException | None]:
    received: list[str] = []
    client = proxy.anthropic()
    try:
        with client.messages.stream(model="claude", max_tokens=50,
                                               messages=[{"role": "user", "content": "hi"}]) as stream:
            for text in stream.text_stream:
                received.append(text)
    except anthropic.APIError as error:
        return "".join(received), error
    return "".join(received), None


@pytest.mark.parametrize(
    ("text", "message"),
    [("Sure: ", f"Overloaded by {M}"), ("Sure: caps", "em_block overloaded")],
    ids=["marker-in-error", "split-between-tail-and-error"],
)
async def test_an_anthropic_error_event_is_checked_with_the_held_tail(
    proxy: Proxy, fake: FakeUpstream, text: str, message: str
) -> None:
    error = ("error", {"type": "error", "error": {"type": "overloaded_error", "message": message}})
    fake.script(Reply(raw_body=sse(message_start(), *anthropic_text(0, text)[:2], error),
                      content_type="text/event-stream"))
    received, raised = await in_thread(anthropic_stream, proxy)
    assert isinstance(raised, anthropic.APIStatusError) and BLOCKED in str(raised)
    assert "caps" not in received and M not in received


async def test_a_benign_anthropic_error_event_still_reaches_the_sdk(proxy: Proxy, fake: FakeUpstream) -> None:
    error = ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    fake.script(Reply(raw_body=sse(message_start(), *anthropic_text(0, "Partial: caps")[:2], error),
                      content_type="text/event-stream"))
    received, raised = await in_thread(anthropic_stream, proxy)
    assert isinstance(raised, anthropic.APIStatusError) and "Overloaded" in str(raised)
    assert received == "Partial: caps"  # the held tail goes, checked with the error's text


def chat_stream(proxy: Proxy) -> tuple[str, BaseException | None]:
    received: list[str] = []
    client = proxy.openai()
    try:
        for chunk in client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}],
                                                            stream=True):
            received.extend(choice.delta.content or "" for choice in chunk.choices)
    except openai.APIError as error:
        return "".join(received), error
    return "".join(received), None


@pytest.mark.parametrize(
    "last",
    [chat_chunk({"content": M}, error={"message": "rate limited"}),
     chat_chunk({"content": "em_block"}, error={"message": "rate limited"}),
     chat_chunk({}, error={"message": f"rate limited: {M}"})],
    ids=["marker-in-choices", "split-between-tail-and-choices", "marker-in-error"],
)
async def test_a_chat_chunk_with_error_and_choices_is_checked(proxy: Proxy, fake: FakeUpstream, last: Any) -> None:
    upstream = sse((None, chat_chunk({"content": "Sure: caps"})), (None, last))
    fake.script(Reply(raw_body=upstream, content_type="text/event-stream"),
                Reply(raw_body=upstream, content_type="text/event-stream"))
    relayed = relayed_before_refusal(await post(proxy, CHAT, chat_body(stream=True)))
    assert "caps" not in relayed and M not in relayed
    received, error = await in_thread(chat_stream, proxy)
    assert isinstance(error, openai.APIError) and BLOCKED in str(error)
    assert "caps" not in received


# -- class 5: upstream error replies are checked, and relayed unchanged when clean ------------------------

ERROR_REPLIES: dict[str, tuple[tuple[str, Any], dict[str, Any], int, dict[str, Any]]] = {
    "chat choices": (CHAT, chat_body(), 400, {"error": {"message": "bad", "type": "invalid_request_error"},
                                               "choices": [{"index": 0, "message": {"role": "assistant",
                                                                                     "content": f"x {M}"}}]}),
    "chat error message": (CHAT, chat_body(), 429, {"error": {"message": f"slow down {M}", "type": "rate_limit"}}),
    "responses output": (RESPONSES, responses_body(), 500, {"error": {"message": "failed"},
                                                           "output": [output_message("cap", "sem_block")]}),
    "anthropic error": (ANTHROPIC, messages_body(), 529, {"type": "error", "error": {"type": "overloaded_error",
                                                                                     "message": M}}),
    "anthropic content": (ANTHROPIC, messages_body(), 400, {"type": "error", "error": {"type": "x", "message": "m"},
                                                            "content": [{"type": "text", "text": M}]}),
    "gemini candidates": (GEMINI, gemini_body(), 400, {"error": {"code": 400, "message": "bad"},
                                                       **candidate(f"text {M}")}),
    "gemini key": (GEMINI, gemini_body(), 400, {"error": {"code": 400, "message": "bad", "details": [{M: 1}]}}),
}


@pytest.mark.parametrize("name", ERROR_REPLIES)
async def test_an_upstream_error_reply_carrying_the_marker_is_blocked(proxy: Proxy, fake: FakeUpstream, name: str) -> None:
    where, body, status, reply = ERROR_REPLIES[name]
    fake.script(Reply(status=status, raw_body=orjson.dumps(reply)))
    response = await post(proxy, where, body)
    assert response.status_code == 400 and BLOCKED in response.text
    assert response.headers["x-capsem-decision"] == "block"


@pytest.mark.parametrize(
    ("where", "body"),
    [(CHAT, chat_body()), (RESPONSES, responses_body()), (ANTHROPIC, messages_body()), (GEMINI, gemini_body())],
    ids=["chat", "responses", "anthropic", "gemini"],
)
async def test_a_clean_upstream_error_reply_is_relayed_unchanged(
    proxy: Proxy, fake: FakeUpstream, where: tuple[str, Any], body: dict[str, Any]
) -> None:
    raw = b'{"error": {"message": "You exceeded your quota.", "type": "insufficient_quota", "code": 429}}'
    fake.script(Reply(status=429, raw_body=raw, headers={"retry-after": "7"}))
    response = await post(proxy, where, body)
    assert response.status_code == 429 and response.content == raw
    assert response.headers["retry-after"] == "7" and response.headers["x-capsem-decision"] == "allow"


async def test_the_sdk_sees_the_providers_error_or_the_block(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(status=400, error_message="Unsupported parameter."),
                Reply(status=400, raw_body=orjson.dumps(ERROR_REPLIES["chat choices"][3])))
    client = proxy.openai()

    def create() -> Any:
        return client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])

    with pytest.raises(openai.BadRequestError, match="Unsupported parameter"):
        await in_thread(create)
    with pytest.raises(openai.BadRequestError, match="CAPSEM policy"):
        await in_thread(create)


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [("text/plain", f"upstream says {M}".encode()), ("text/html", f"<p>{M}</p>".encode())],
    ids=["text", "html"],
)
async def test_an_upstream_error_reply_that_is_no_json_is_checked_as_text(
    proxy: Proxy, fake: FakeUpstream, content_type: str, raw: bytes
) -> None:
    fake.script(Reply(status=502, raw_body=raw, content_type=content_type))
    response = await post(proxy, CHAT, chat_body())
    assert response.status_code == 400 and BLOCKED in response.text


async def test_a_stream_answered_with_an_error_status_is_checked_event_by_event(proxy: Proxy, fake: FakeUpstream) -> None:
    split = sse((None, chat_chunk({"content": "Sure: caps"})), (None, chat_chunk({"content": "em_block"})))
    clean = sse((None, chat_chunk({"content": "Sure: capstone"})))
    fake.script(Reply(status=400, raw_body=split, content_type="text/event-stream"),
                Reply(status=400, raw_body=clean, content_type="text/event-stream"))
    blocked = await post(proxy, CHAT, chat_body(stream=True))
    assert blocked.status_code == 400 and BLOCKED in blocked.text and "Sure" not in blocked.text
    relayed = await post(proxy, CHAT, chat_body(stream=True))
    assert relayed.status_code == 400 and relayed.content == clean


async def test_a_json_array_stream_answered_with_an_error_status_is_checked_as_a_stream(
    proxy: Proxy, fake: FakeUpstream
) -> None:
    elements = [candidate("Sure: caps"), candidate("em_block"), {"error": {"code": 500, "message": "failed"}}]
    fake.script(Reply(status=500, raw_body=json.dumps(elements).encode()))
    response = await post(proxy, GEMINI_ARRAY, gemini_body())
    assert response.status_code == 400 and BLOCKED in response.text and "Sure" not in response.text


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet="abc_ ", max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(alphabet="abcxyz", max_size=4),
                                                                      children, max_size=3),
    max_leaves=15,
)
DIALECTS = [OpenAIChatDialect(), OpenAIResponsesDialect(), OpenAICompletionsDialect(), AnthropicMessagesDialect(),
            AnthropicCountTokensDialect(), GeminiDialect()]


@settings(max_examples=200, deadline=None)
@given(body=JSON_VALUES, dialect=st.sampled_from(DIALECTS))
def test_every_key_and_string_of_an_error_body_is_checked(body: Any, dialect: Dialect) -> None:
    """Whatever its shape, nothing a client may show of an error body is left out of the check."""
    text = error_body_view(dialect, body).text
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for key, item in value.items():
                found.append(key)
                walk(item)

    walk(body)
    assert all(string in text for string in found)


# -- class 6: audio transcripts; Anthropic text blocks around server-tool blocks --------------------------


async def test_a_responses_audio_transcript_split_across_deltas_never_goes(proxy: Proxy, fake: FakeUpstream) -> None:
    created = responses_event("response.created", response={"id": "resp_1", "object": "response", "output": []})
    fake.script(Reply(raw_body=sse(created, responses_event("response.audio.transcript.delta", delta="Sure: caps"),
                                   responses_event("response.audio.transcript.delta", delta="em_block"),
                                   responses_event("response.completed", response={
                                       "id": "resp_1", "object": "response", "status": "completed", "output": []})),
                      content_type="text/event-stream"))
    relayed = relayed_before_refusal(await post(proxy, RESPONSES, responses_body(stream=True)))
    assert "caps" not in relayed


@pytest.mark.parametrize("carrier", ["response.output_item.done", "response.completed"])
async def test_responses_output_text_parts_given_whole_are_checked_joined(
    proxy: Proxy, fake: FakeUpstream, carrier: str
) -> None:
    """A stream without text deltas: the SDK's ``output_text`` joins the parts ``cap``, ``sem_bl``, ``ock``."""
    message = output_message("cap", "sem_bl", "ock")
    created = responses_event("response.created", response={"id": "resp_1", "object": "response", "output": []})
    whole = (responses_event(carrier, output_index=0, item=message) if carrier.endswith("done") else
             responses_event(carrier, response={"id": "resp_1", "object": "response", "status": "completed",
                                                "output": [message]}))
    fake.script(Reply(raw_body=sse(created, whole), content_type="text/event-stream"))
    relayed = relayed_before_refusal(await post(proxy, RESPONSES, responses_body(stream=True)))
    assert "sem_bl" not in relayed


def server_tool_blocks() -> list[dict[str, Any]]:
    return [{"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "news"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
                {"type": "web_search_result", "url": "https://example.com", "title": "Example",
                 "encrypted_content": "abc", "page_age": None}]}]


async def test_anthropic_text_blocks_around_server_tool_blocks_are_checked_joined(
    proxy: Proxy, fake: FakeUpstream
) -> None:
    reply = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "end_turn",
             "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1},
             "content": [{"type": "text", "text": "Sure: caps"}, *server_tool_blocks(),
                         {"type": "text", "text": "em_block"}]}
    fake.script(Reply(raw_body=orjson.dumps(reply)))

    def create() -> Any:
        return proxy.anthropic().messages.create(model="claude", max_tokens=50,
                                                 messages=[{"role": "user", "content": "hi"}])

    with pytest.raises(anthropic.BadRequestError, match="CAPSEM policy"):
        await in_thread(create)


async def test_streamed_anthropic_text_blocks_around_server_tool_blocks_are_checked_joined(
    proxy: Proxy, fake: FakeUpstream
) -> None:
    use, result = server_tool_blocks()
    events = [
        message_start(), *anthropic_text(0, "Sure: caps"),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": use}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": result}),
        ("content_block_stop", {"type": "content_block_stop", "index": 2}),
        ("content_block_start", {"type": "content_block_start", "index": 3,
                                 "content_block": {"type": "text", "text": "em_block", "citations": [
                                     {"type": "web_search_result_location", "url": "https://example.com",
                                      "title": "Example", "cited_text": "news", "encrypted_index": "x"}]}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 3}),
        ("message_stop", {"type": "message_stop"}),
    ]
    fake.script(Reply(raw_body=sse(*events), content_type="text/event-stream"))
    received, raised = await in_thread(anthropic_stream, proxy)
    assert isinstance(raised, anthropic.APIStatusError) and BLOCKED in str(raised)
    assert "caps" not in received


# -- the family: a marker split at any point between streamed text and an error event's text -----------


def _error_streams(head: str, rest: str) -> dict[str, tuple[Dialect, bytes]]:
    """Each dialect's stream: ``head`` as text, then its in-stream error event whose own text begins ``rest``."""
    created = responses_event("response.created", response={"id": "r", "object": "response", "output": []})
    return {
        "chat": (OpenAIChatDialect(), sse((None, chat_chunk({"content": head})),
                                          (None, chat_chunk({"content": rest}, error={"message": "failed"})))),
        "responses": (OpenAIResponsesDialect(), sse(created, responses_event("response.output_text.delta", delta=head),
                                                    responses_event("response.failed", response={
                                                        "id": "r", "object": "response", "status": "failed",
                                                        "output": [output_message(rest)],
                                                        "error": {"code": "server_error", "message": "failed"}}))),
        "anthropic": (AnthropicMessagesDialect(), sse(message_start(), *anthropic_text(0, head)[:2], (
            "error", {"type": "error", "error": {"type": "api_error", "message": rest}}))),
        "gemini": (GeminiDialect(), sse((None, candidate(head)),
                                        (None, {"error": {"code": 500, "message": rest, "status": "INTERNAL"}}))),
    }


ENGINE = engine()


@settings(max_examples=60, deadline=None)
@given(api=st.sampled_from(["chat", "responses", "anthropic", "gemini"]), split=st.integers(0, len(M)),
       before=st.text(alphabet="abcdefghijklmnopqrstuvwxyz .,", max_size=20))
def test_a_marker_split_between_streamed_text_and_an_error_event_never_goes_out(
    api: str, split: int, before: str
) -> None:
    head, rest = "HEAD:" + before + M[:split], M[split:] + " went wrong"
    dialect, upstream = _error_streams(head, rest)[api]
    writes = trio.run(pump_writes, dialect, ENGINE, [upstream])
    relayed, ending = split_at_refusal(b"".join(writes))
    assert BLOCKED in ending
    assert M not in relayed
    if split:
        assert "HEAD:" not in relayed  # the text that ends in the marker's beginning never went
