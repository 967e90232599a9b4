"""End-to-end fuzzing through the real app on a loopback socket.

One proxy and one fake provider run in the test's trio loop; hypothesis drives
a synchronous httpx client from a worker thread, so every example is a real
HTTP exchange with the running daemon (no per-example start-up).

Guarantees checked on every example:

* a request either passes through (the fake received it and its status came
  back) or is refused by the proxy with a provider-shaped 4xx — never a 5xx,
  never a hang (every call is bounded), never a key in an error body;
* a stream of arbitrary upstream events reaches the client as a prefix of the
  upstream's own events, byte for byte, ended by at most one error event in
  the dialect's shape;
* arbitrary bytes on the socket never take the server down;
* nothing is logged at ERROR by the daemon (an unhandled exception would be).
"""

from __future__ import annotations

import logging
import socket
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from capsem_proxyd.dialects.framing import FramingError, JSONArrayDecoder, SSEDecoder
from tests.support.bodies import chat_body, messages_body
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.fuzzing import REQUEST_SEEDS, json_values, mutations, reply_seeds
from tests.support.key_watch import DAEMON_LOGGERS
from tests.support.proxy import (
    ALL_TEST_KEYS,
    ANTHROPIC_AUTH,
    GEMINI_AUTH,
    OPENAI_AUTH,
    Proxy,
)

AUTH = {
    "openai": OPENAI_AUTH,
    "anthropic": ANTHROPIC_AUTH,
    "gemini": GEMINI_AUTH,
}
GEMINI_MODEL = "/v1beta/models/gemini-2.5-flash"


@dataclass(frozen=True)
class Endpoint:
    name: str  # the dialect, as in tests/fuzzing.reply_seeds
    path: str
    provider: str


ENDPOINTS = [
    Endpoint("openai-chat", "/v1/chat/completions", "openai"),
    Endpoint("openai-responses", "/v1/responses", "openai"),
    Endpoint("openai-completions", "/v1/completions", "openai"),
    Endpoint("openai-embeddings", "/v1/embeddings", "openai"),
    Endpoint("openai-moderations", "/v1/moderations", "openai"),
    Endpoint("anthropic-messages", "/v1/messages", "anthropic"),
    Endpoint("anthropic-count-tokens", "/v1/messages/count_tokens", "anthropic"),
    Endpoint("gemini", GEMINI_MODEL + ":generateContent", "gemini"),
    Endpoint("gemini", GEMINI_MODEL + ":streamGenerateContent?alt=sse", "gemini"),
    Endpoint("gemini", GEMINI_MODEL + ":streamGenerateContent", "gemini"),
    Endpoint("gemini-countTokens", GEMINI_MODEL + ":countTokens", "gemini"),
    Endpoint("gemini-batchEmbedContents", GEMINI_MODEL + ":batchEmbedContents", "gemini"),
]
STREAM_ENDPOINTS = [
    (ENDPOINTS[0], chat_body(model="m", stream=True)),
    (ENDPOINTS[1], {"model": "m", "stream": True, "input": "hi"}),
    (ENDPOINTS[2], {"model": "m", "stream": True, "prompt": "hi"}),
    (ENDPOINTS[5], messages_body(model="m", max_tokens=10, stream=True)),
    (ENDPOINTS[8], {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
    (ENDPOINTS[9], {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
]


def request_bodies(endpoint: Endpoint) -> st.SearchStrategy[bytes]:
    """Mutated SDK requests, random JSON, truncated JSON and raw bytes."""
    mutated = mutations(REQUEST_SEEDS[endpoint.provider]).map(orjson.dumps)
    return st.one_of(
        mutated,
        mutated,
        json_values().map(orjson.dumps),
        st.tuples(mutated, st.integers(min_value=0, max_value=400)).map(lambda pair: pair[0][: pair[1]]),
        st.binary(max_size=64),
    )


def assert_provider_shaped(provider: str, body: Any) -> None:
    """The error object each provider's SDK parses (and raises its typed exception from)."""
    if provider == "anthropic":
        assert body["type"] == "error" and isinstance(body["error"]["type"], str), body
        assert isinstance(body["error"]["message"], str), body
    elif provider == "gemini":
        error = body["error"]
        assert isinstance(error["code"], int) and isinstance(error["message"], str) and isinstance(error["status"], str), body
    else:
        error = body["error"]
        assert isinstance(error["message"], str) and isinstance(error["type"], str) and "code" in error, body


def daemon_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{record.name}: {record.getMessage()}"
        for record in caplog.records
        if record.name.startswith(DAEMON_LOGGERS) and record.levelno >= logging.ERROR
    ]


async def test_arbitrary_requests_pass_through_or_get_a_provider_shaped_4xx(
    proxy: Proxy, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=200)
    @given(endpoint=st.sampled_from(ENDPOINTS), data=st.data(),
           content_type=st.sampled_from(["application/json", "text/plain", "", "application/json; charset=latin-1"]))
    def one_request(endpoint: Endpoint, data: st.DataObject, content_type: str) -> None:
        body = data.draw(request_bodies(endpoint))
        before = len(fake.requests)
        headers = {**AUTH[endpoint.provider], "content-type": content_type}
        response = client.post(endpoint.path, content=body, headers=headers)
        forwarded = len(fake.requests) - before
        assert response.status_code < 500, (response.status_code, response.text[:300])
        assert not any(key in response.text for key in ALL_TEST_KEYS)
        if forwarded:
            assert forwarded == 1
            assert response.status_code == fake.requests[-1].status  # the provider's answer, passed on
            outcomes[f"passed through ({response.status_code})"] += 1
        else:
            assert 400 <= response.status_code < 500
            assert_provider_shaped(endpoint.provider, response.json())
            outcomes[f"refused ({response.status_code})"] += 1

    with httpx.Client(base_url=proxy.url, timeout=15) as client:
        with trio.fail_after(120):
            await trio.to_thread.run_sync(one_request)
    print(f"\nend-to-end request fuzz outcomes: {dict(outcomes)}")
    assert sum(outcomes.values()) >= 100
    assert any(key.startswith("refused") for key in outcomes) and any(key.startswith("passed") for key in outcomes)
    assert daemon_errors(caplog) == []


def upstream_stream(endpoint: Endpoint) -> st.SearchStrategy[bytes]:
    """Arbitrary event streams: mutated real events, random JSON and garbage, in the endpoint's framing."""
    _, seeds = reply_seeds(endpoint.name)
    payloads = st.one_of(mutations([payload for payload, _ in seeds]), mutations([payload for payload, _ in seeds]),
                         json_values(12))
    json_array = "alt=sse" not in endpoint.path and endpoint.provider == "gemini"
    if json_array:
        elements = st.lists(payloads.map(orjson.dumps), max_size=8).map(lambda items: b"[" + b",\r\n".join(items) + b"]")
        return st.one_of(elements, elements.map(lambda raw: raw[:-1]), st.binary(max_size=40))
    seen_names = sorted({name for _, name in seeds if name})
    names = st.one_of(st.none(), st.sampled_from(seen_names)) if seen_names else st.none()
    event = st.tuples(payloads, names).map(
        lambda pair: (f"event: {pair[1]}\n" if pair[1] else "").encode() + b"data: " + orjson.dumps(pair[0]) + b"\n\n"
    )
    garbage = st.sampled_from([b"data: {not json\n\n", b"data: [DONE]\n\n", b": keep-alive\n\n", b"data: \xff\xfe\n\n", b"\n\n"])
    return st.lists(st.one_of(event, event, event, garbage), max_size=8).map(b"".join)


def frame(endpoint: Endpoint, raw: bytes) -> list[bytes]:
    """The events in ``raw`` up to the first framing error (fed byte by byte, so none before it is lost).

    A JSON array's closing ``]`` is kept with the element before it: together they end the array.
    """
    json_array = "alt=sse" not in endpoint.path and endpoint.provider == "gemini"
    decoder = JSONArrayDecoder() if json_array else SSEDecoder()
    events: list[bytes] = []
    try:
        for index in range(len(raw)):
            events.extend(event.raw for event in decoder.feed(raw[index : index + 1]))
        events.extend(event.raw for event in decoder.close())
    except FramingError:
        pass
    if json_array and len(events) >= 2 and events[-1].strip() == b"]":
        events[-2:] = [events[-2] + events[-1]]
    return events


def is_error_event(raw: bytes) -> bool:
    text = raw.decode().strip().lstrip(",[").rstrip("]")
    data = text.split("data: ", 1)[1] if "data: " in text else text
    payload = orjson.loads(data)
    if isinstance(payload, dict) and payload.get("type") == "response.failed":
        return "error" in payload.get("response", {})
    return isinstance(payload, dict) and "error" in payload


async def test_arbitrary_upstream_streams_reach_the_client_as_a_clean_prefix(
    proxy: Proxy, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=150)
    @given(choice=st.sampled_from(STREAM_ENDPOINTS), data=st.data())
    def one_stream(choice: tuple[Endpoint, dict[str, Any]], data: st.DataObject) -> None:
        endpoint, request_body = choice
        raw = data.draw(upstream_stream(endpoint))
        # The content type a real provider sends with each framing: the proxy decodes by it.
        json_array = "alt=sse" not in endpoint.path and endpoint.provider == "gemini"
        fake.script(Reply(raw_body=raw, content_type="application/json" if json_array else "text/event-stream"))
        response = client.post(endpoint.path, json=request_body, headers=AUTH[endpoint.provider])
        assert response.status_code == 200, response.text[:300]
        content = response.content
        if "alt=sse" in endpoint.path and content.endswith(b"}\r\n") and not content.endswith(b"\n\n"):
            # Gemini's SSE stream ends with the proxy's bare error object (what @google/genai reads).
            head, _, bare = content[:-2].rpartition(b"\n")
            assert is_error_event(bare), bare
            content = head + b"\n" if head else b""
            outcomes["ended with an error event"] += 1
        upstream_events = frame(endpoint, raw)
        client_events = frame(endpoint, content)
        # The client's events are the upstream's own, in order, byte for byte ...
        kept = 0
        while kept < min(len(client_events), len(upstream_events)) and client_events[kept] == upstream_events[kept]:
            kept += 1
        tail = client_events[kept:]
        # ... then, if the proxy cut the stream, its error event (Responses: ``error`` and ``response.failed``).
        assert len(tail) <= 2 and all(is_error_event(event) for event in tail), tail
        if tail:
            outcomes["ended with an error event"] += 1
        elif client_events:
            outcomes["passed through"] += 1
        else:
            outcomes["empty"] += 1

    with httpx.Client(base_url=proxy.url, timeout=15) as client:
        with trio.fail_after(120):
            await trio.to_thread.run_sync(one_stream)
    print(f"\nend-to-end stream fuzz outcomes: {dict(outcomes)}")
    assert outcomes["passed through"] and outcomes["ended with an error event"]
    assert daemon_errors(caplog) == []


async def test_arbitrary_bytes_on_the_socket_never_take_the_server_down(
    proxy: Proxy, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = proxy.url.removeprefix("http://").rsplit(":", 1)
    prefixes = [b"", b"POST /v1/chat/completions HTTP/1.1\r\n", b"GET /health HTTP/1.1\r\nHost: x\r\n",
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"]

    @settings(max_examples=60)
    @given(prefix=st.sampled_from(prefixes), junk=st.binary(max_size=200))
    def one_connection(prefix: bytes, junk: bytes) -> None:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(prefix + junk)
            sock.shutdown(socket.SHUT_WR)
            try:
                while sock.recv(65536):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass

    with trio.fail_after(120):
        await trio.to_thread.run_sync(one_connection)
    async with httpx.AsyncClient() as client:
        assert (await client.get(proxy.url + "/health")).status_code == 200
    assert daemon_errors(caplog) == []
