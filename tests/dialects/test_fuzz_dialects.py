"""Property-based fuzzing of every dialect's parsers, called directly (no server).

What must hold for anything a client or provider can send:

* ``request_view`` returns a view or refuses with a 4xx ``ProxyError`` (never a
  crash: the pipeline would answer 500, or fail open if it caught too much);
* ``response_view`` and ``stream_view`` return a view or a ``ProxyError``;
  streamed tool-call keys are hashable (the stream pump files calls by key);
* the stream decoders frame the same events however TCP splits the bytes,
  and fail only with ``FramingError``;
* error bodies and final stream events are valid JSON whatever the message.

Example counts come from the hypothesis profile in ``tests/fuzzing.py``.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from capsem_proxyd.dialects.base import Dialect
from capsem_proxyd.dialects.framing import FramingError, JSONArrayDecoder, SSEDecoder, StreamEvent
from capsem_proxyd.dialects.gemini import GeminiDialect
from capsem_proxyd.errors import ProxyError
from capsem_proxyd.http import routes
from capsem_proxyd.views import RequestView, ResponseView, StreamView
from tests.support.engines import engine
from tests.support.exchanges import exchange_for
from tests.support.fuzzing import (
    REQUEST_SEEDS,
    STRING_VALUES,
    json_objects,
    json_values,
    mutations,
    reply_seeds,
    split_points,
)

DIALECTS: dict[str, Dialect] = routes.DIALECTS
# Relays read no content; they still answer errors and find keys in their provider's way.
WITH_RELAYS: dict[str, Dialect] = {
    **DIALECTS, **{f"relay-{provider}": dialect for provider, dialect in routes.MODEL_RELAYS.items()}
}
EVENT_NAMES = [name for name in STRING_VALUES if "." in name or "_" in name] + ["error", "ping"]

stream_events = st.builds(
    lambda data, name: StreamEvent(raw=b"data: " + data.encode() + b"\n\n", data=data, event=name),
    data=st.one_of(json_values().map(lambda value: orjson.dumps(value).decode()), st.text(max_size=40), st.just("[DONE]")),
    name=st.one_of(st.none(), st.sampled_from(EVENT_NAMES), st.text(max_size=10)),
)
proxy_errors = st.builds(
    lambda status, message, code: ProxyError(status, {400: "invalid_request", 403: "permission"}.get(status, "upstream_error"), message, code=code),
    status=st.sampled_from([400, 401, 403, 404, 413, 431, 502, 503, 504]),
    message=st.text(max_size=60),
    code=st.one_of(st.none(), st.text(max_size=20)),
)
ENGINE = engine()


def request_bodies(name: str) -> st.SearchStrategy[dict[str, Any]]:
    """Random objects, or mutations of what the provider's SDK sends."""
    return st.one_of(json_objects, mutations(REQUEST_SEEDS[DIALECTS[name].provider]))


def replies(name: str) -> st.SearchStrategy[Any]:
    bodies, _ = reply_seeds(name)
    return st.one_of(json_values(), mutations(bodies))


def events(name: str) -> st.SearchStrategy[StreamEvent]:
    """Random events, or mutations of the events the fake provider streams for this dialect."""
    _, seeds = reply_seeds(name)
    mutated = st.tuples(mutations([payload for payload, _ in seeds]), st.sampled_from([e for _, e in seeds])).map(
        lambda pair: StreamEvent(raw=b"data: " + orjson.dumps(pair[0]) + b"\n\n", data=orjson.dumps(pair[0]).decode(), event=pair[1])
    )
    return st.one_of(stream_events, mutated)


def _hashable(key: Any) -> bool:
    try:
        hash(key)
    except TypeError:
        return False
    return True


def _check_request_view(view: RequestView) -> None:
    assert isinstance(view, RequestView)
    assert isinstance(view.prompt, str) and isinstance(view.system, str) and isinstance(view.model, str)
    for tool in view.tools:
        assert isinstance(tool.name, str) and isinstance(tool.description, str) and isinstance(tool.parameters, dict)
    for part in view.media:
        assert isinstance(part.data, bytes) and isinstance(part.mime_type, str)
    for result in view.tool_results:
        assert isinstance(result.name, str)
    # The pieces the engine checks one by one join to exactly the text a policy is given whole.
    for whole, pieces in ((view.prompt, view.prompt_pieces), (view.system, view.system_pieces)):
        if pieces is not None:
            assert "\n".join(pieces) == whole and all(pieces)


@pytest.mark.parametrize("name", DIALECTS)
@given(data=st.data(), path_model=st.one_of(st.none(), st.sampled_from(["gemini-2.5-flash", "m"])))
def test_request_parser_returns_a_view_or_a_client_error(name: str, data: st.DataObject, path_model: str | None) -> None:
    dialect = DIALECTS[name]
    body = data.draw(request_bodies(name))
    try:
        model = dialect.model(body, path_model)
        assert isinstance(model, str)
        assert isinstance(dialect.wants_stream(body, {}, False), bool)
        view = dialect.request_view(body, model)
    except ProxyError as error:
        assert 400 <= error.status < 500, (error.status, error.message)
        orjson.dumps(dialect.error_body(error))
        return
    _check_request_view(view)


@pytest.mark.parametrize("name", ["openai-chat", "openai-responses", "gemini", "anthropic-messages"])
@given(data=st.data())
@settings(max_examples=60)
def test_request_views_never_break_the_policy_engine(name: str, data: st.DataObject) -> None:
    """Whatever a view holds, the engine turns it into policy calls and a verdict (Debug policy)."""
    dialect = DIALECTS[name]
    body = data.draw(request_bodies(name))
    try:
        view = dialect.request_view(body, dialect.model(body, None))
    except ProxyError:
        return
    exchange = exchange_for(dialect)

    async def check() -> None:
        try:
            outcome = await ENGINE.check_request(exchange, view)
        except ProxyError as error:
            assert error.status == 400 and error.decision is not None
            assert error.decision.verdict.value == "BLOCK" and "fail" not in error.decision.details, error.decision.details
        else:
            assert outcome in ("ALLOW", "LOG")

    trio.run(check)


@pytest.mark.parametrize("name", DIALECTS)
@given(data=st.data())
def test_reply_parser_returns_a_view_or_a_proxy_error(name: str, data: st.DataObject) -> None:
    dialect = DIALECTS[name]
    body = data.draw(replies(name))
    try:
        view = dialect.response_view(body)
    except ProxyError as error:
        assert error.status >= 500
        return
    assert isinstance(view, ResponseView)
    assert isinstance(view.text, str) and isinstance(view.thoughts, str)
    for call in view.tool_calls:
        assert isinstance(call.name, str) and isinstance(call.arguments, dict)


@pytest.mark.parametrize("name", DIALECTS)
@given(data=st.data())
def test_stream_event_parser_returns_a_view_or_a_proxy_error(name: str, data: st.DataObject) -> None:
    dialect = DIALECTS[name]
    event = data.draw(events(name))
    try:
        view = dialect.stream_view(event)
    except ProxyError as error:
        assert error.status >= 500
        return
    assert isinstance(view, StreamView)
    for channel, delta in [*view.text, *view.thoughts]:
        assert _hashable(channel) and isinstance(delta, str)
    assert all(isinstance(text, str) for text in view.content)
    assert all(_hashable(channel) for channel in view.finished)
    assert view.error is None or isinstance(view.error, str)
    for fragment in view.tool_fragments:
        assert _hashable(fragment.key), fragment.key
        assert isinstance(fragment.arguments, str)
    assert all(_hashable(key) for key in view.tool_closes), view.tool_closes


@pytest.mark.parametrize("name", WITH_RELAYS)
@given(error=proxy_errors, started=st.booleans(), sse=st.booleans())
def test_error_bodies_and_final_events_are_valid_json(name: str, error: ProxyError, started: bool, sse: bool) -> None:
    dialect = WITH_RELAYS[name]
    body = dialect.error_body(error)
    assert orjson.loads(orjson.dumps(body)) == body
    framing = "application/json" if isinstance(dialect, GeminiDialect) and not sse else "text/event-stream"
    final = dialect.stream_error(error, started, framing)
    decoder = dialect.stream_decoder(framing)
    if isinstance(decoder, JSONArrayDecoder):
        if started:
            final = b"[{}" + final
        events = decoder.feed(final) + decoder.close()
        assert any(event.data and "error" in orjson.loads(event.data) for event in events)
    elif final.startswith(b"{"):
        # Gemini's SSE stream ends with the bare error object (what @google/genai reads), no SSE frame.
        assert final.endswith(b"\r\n") and "error" in orjson.loads(final)
    else:
        # One SSE event, or several (Responses: ``error`` then ``response.failed``), each one JSON object.
        events = decoder.feed(final) + decoder.close()
        assert events and all(orjson.loads(event.data) for event in events)


@pytest.mark.parametrize("name", WITH_RELAYS)
@given(headers=st.dictionaries(st.sampled_from(["authorization", "x-api-key", "x-goog-api-key", "x"]), st.text(max_size=30)),
       query=st.dictionaries(st.sampled_from(["key", "alt", "x"]), st.text(max_size=30)))
def test_key_lookup_never_fails(name: str, headers: dict[str, str], query: dict[str, str]) -> None:
    key = WITH_RELAYS[name].api_key(headers, query)
    assert key is None or (isinstance(key, str) and key)


def _frame(decoder_type: type, pieces: list[bytes]) -> list[tuple[bytes, str, str | None]] | str:
    decoder = decoder_type()
    try:
        events = [event for piece in pieces for event in decoder.feed(piece)] + decoder.close()
    except FramingError:
        return "framing error"
    return [(event.raw, event.data, event.event) for event in events]


sse_bytes = st.lists(
    st.one_of(
        st.sampled_from([b"data: ", b"event: ", b": comment", b"\n", b"\r\n", b"\r", b"\n\n", b"data:", b"id: 1", b"{}"]),
        st.binary(max_size=12),
        st.text(max_size=12).map(str.encode),
    ),
    max_size=20,
).map(b"".join)


@given(data=st.data(), raw=sse_bytes)
def test_sse_decoder_frames_the_same_however_the_bytes_are_split(data: st.DataObject, raw: bytes) -> None:
    whole = _frame(SSEDecoder, [raw])
    split = _frame(SSEDecoder, data.draw(split_points(raw)))
    assert split == whole


json_array_bytes = st.one_of(
    st.lists(st.dictionaries(st.sampled_from(["candidates", "text", "a"]), json_values(8)), max_size=4).map(
        lambda items: b"[" + b",\r\n".join(orjson.dumps(item) for item in items) + b"]"
    ),
    st.lists(st.sampled_from([b"[", b"]", b"{", b"}", b",", b'"', b"\\", b" ", b"\r\n", b"1", b'"x"']), max_size=20).map(b"".join),
    st.binary(max_size=30),
)


@given(data=st.data(), raw=json_array_bytes)
def test_json_array_decoder_frames_the_same_however_the_bytes_are_split(data: st.DataObject, raw: bytes) -> None:
    whole = _frame(JSONArrayDecoder, [raw])
    split = _frame(JSONArrayDecoder, data.draw(split_points(raw)))
    assert split == whole
    if whole != "framing error":
        assert b"".join(event_raw for event_raw, _, _ in whole) == raw  # forwarded byte for byte
