"""Deny-by-default, as a property: a marker placed anywhere in a valid request, reply or stream
event of any API (as a value or as a key) reaches a policy, unless that very path is declared
not content.

The bodies are what the SDKs send and what the fake provider answers
(``tests/support/fuzzing.py``); hypothesis picks the place and the form: a new
key, a new field, a replaced string, a new array element. The Debug policy is
the judge: the engine must refuse the request (or the reply), or the pump must
cut the stream before the marker reaches the client whole. A place declared
non-content (``Dialect.request_not_content`` and friends: ids, enums,
settings) is skipped: that list is the whole of what is not checked, and the
table in docs/content-surfaces.md is checked against it.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from capsem_proxyd.dialects.base import Dialect
from capsem_proxyd.dialects.content import Paths
from capsem_proxyd.errors import ProxyError
from capsem_proxyd.http import routes
from capsem_proxyd.proxy.body import parse_request_body
from tests.support.engines import engine
from tests.support.exchanges import exchange_for
from tests.support.fuzzing import REQUEST_SEEDS, orjson_copy, reply_seeds
from tests.support.proxy import split_at_refusal
from tests.support.streams import pump_writes

MARKER = "capsem_block"
ENGINE = engine()
REQUESTS: dict[str, tuple[Dialect, list[dict[str, Any]]]] = {
    "openai-chat": (routes.DIALECTS["openai-chat"], [REQUEST_SEEDS["openai"][0], REQUEST_SEEDS["openai"][1]]),
    "openai-responses": (routes.DIALECTS["openai-responses"], [REQUEST_SEEDS["openai"][2]]),
    "openai-embeddings": (routes.DIALECTS["openai-embeddings"], [REQUEST_SEEDS["openai"][3]]),
    "openai-completions": (routes.DIALECTS["openai-completions"], [REQUEST_SEEDS["openai"][4]]),
    "gemini": (routes.DIALECTS["gemini"], [REQUEST_SEEDS["gemini"][0]]),
    "gemini-batchEmbedContents": (routes.DIALECTS["gemini-batchEmbedContents"], [REQUEST_SEEDS["gemini"][1]]),
    "anthropic-messages": (routes.DIALECTS["anthropic-messages"], REQUEST_SEEDS["anthropic"]),
}
REPLY_APIS = ["openai-chat", "openai-responses", "openai-completions", "gemini", "anthropic-messages"]


@st.composite
def placements(draw: st.DrawFn, seed: Any) -> tuple[Any, tuple[Any, ...] | None]:
    """A copy of ``seed`` with the marker placed somewhere, and the path where it went as a value (None:
    as a key, which is content wherever it goes)."""
    value = orjson_copy(seed)
    containers: list[tuple[Any, tuple[Any, ...]]] = []
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            containers.append((item, path))
            stack.extend((child, (*path, key)) for key, child in item.items() if isinstance(child, (dict, list)))
        elif isinstance(item, list):
            containers.append((item, path))
            stack.extend((child, (*path, index)) for index, child in enumerate(item) if isinstance(child, (dict, list)))
    container, path = draw(st.sampled_from(containers))
    text = draw(st.sampled_from([MARKER, f"note {MARKER} here", MARKER.upper()]))
    if isinstance(container, dict):
        strings = [key for key, child in container.items() if isinstance(child, str)]
        form = draw(st.sampled_from(["key", "field", "value"] if strings else ["key", "field"]))
        if form == "key":
            container[f"x_{text}"] = draw(st.sampled_from([1, True, None, "v", {"a": 1}]))
            return value, None
        if form == "field":
            name = f"x_field_{draw(st.integers(0, 99))}"
            container[name] = text
            return value, (*path, name)
        key = draw(st.sampled_from(strings))
        # Inline media (base64 data, data: URLs) reaches the policies as Media, not as text: a
        # marker written there is bytes of an image, which the Debug policy does not read.
        assume(key not in ("data", "file_data") and not container[key].startswith("data:"))
        container[key] = text
        return value, (*path, key)
    index = draw(st.integers(min_value=0, max_value=len(container)))
    container.insert(index, text)
    return value, (*path, index)


def declared_not_content(paths: Paths, path: tuple[Any, ...] | None, body: Any) -> bool:
    """Whether the marker placed at ``path`` in ``body`` fits the shape declared there (the one way a
    string escapes the checks); a marker placed as a key never does."""
    if path is None:
        return False
    placed = body
    for segment in path[:-1]:
        placed = placed[segment]
    return paths.declares(path, placed[path[-1]])


def request_refusal(dialect: Any, body: Any) -> ProxyError | None:
    """What the proxy's parser, dialect and engine (Debug) say of ``body`` as a request: the refusal, or None."""
    exchange = exchange_for(dialect)

    async def check() -> ProxyError | None:
        try:
            parsed = parse_request_body(orjson.dumps(body), "application/json")
            await ENGINE.check_request(exchange, dialect.request_view(parsed, dialect.model(parsed, None)))
        except ProxyError as error:
            return error
        return None

    return trio.run(check)


def reply_refusal(dialect: Any, body: Any) -> ProxyError | None:
    """What the dialect and engine (Debug) say of ``body`` as a JSON reply: the refusal, or None."""
    exchange = exchange_for(dialect)

    async def check() -> ProxyError | None:
        try:
            await ENGINE.check_response(exchange, dialect.response_view(body))
        except ProxyError as error:
            return error
        return None

    return trio.run(check)


@pytest.mark.parametrize("name", REQUESTS)
@given(data=st.data())
@settings(max_examples=80)
def test_a_marker_anywhere_in_a_request_is_refused(name: str, data: st.DataObject) -> None:
    dialect, seeds = REQUESTS[name]
    body, path = data.draw(placements(data.draw(st.sampled_from(seeds))))
    assume(not declared_not_content(dialect.request_not_content, path, body))
    error = request_refusal(dialect, body)
    assert error is not None, f"the marker at {path} reached no policy: {body}"
    assert 400 <= error.status < 500, error.message


@pytest.mark.parametrize("name", REPLY_APIS)
@given(data=st.data())
@settings(max_examples=80)
def test_a_marker_anywhere_in_a_reply_is_refused(name: str, data: st.DataObject) -> None:
    dialect = routes.DIALECTS[name]
    bodies, _ = reply_seeds(name)
    body, path = data.draw(placements(data.draw(st.sampled_from(bodies))))
    assume(not declared_not_content(dialect.reply_not_content, path, body))
    error = reply_refusal(dialect, body)
    assert error is not None, f"the marker at {path} reached no policy: {body}"
    assert error.status == 400, error.message


@pytest.mark.parametrize("name", REPLY_APIS)
@given(data=st.data())
@settings(max_examples=80)
def test_a_marker_anywhere_in_a_stream_never_reaches_the_client_whole(name: str, data: st.DataObject) -> None:
    dialect = routes.DIALECTS[name]
    _, events = reply_seeds(name)
    index = data.draw(st.integers(min_value=0, max_value=len(events) - 1))
    payload, path = data.draw(placements(events[index][0]))
    assume(not declared_not_content(dialect.event_not_content, path, payload))
    stream = [*events[:index], (payload, events[index][1]), *events[index + 1:]]
    sent = b"".join(
        (f"event: {event}\n" if event else "").encode() + b"data: " + orjson.dumps(item) + b"\n\n"
        for item, event in stream
    )
    writes = trio.run(lambda: pump_writes(dialect, ENGINE, [sent]))
    relayed, ending = split_at_refusal(b"".join(writes))
    assert MARKER not in relayed.lower(), relayed
    assert "CAPSEM policy 'Debug'" in ending, ending  # the proxy's own final error, naming the policy




# -- a value outside its declared shape is content (issue 20, class 10) ---------------------------------

OUTSIDE = ["note capsem_block here", "capsem_block!", {"x": "capsem_block"}, {"capsem_block": 1},
           ["capsem_block here"]]


def put(body: Any, pattern: str, value: Any) -> None:
    """``value`` at ``pattern`` in ``body``, making the containers the path needs (``*``: the first element
    of an array, or a new one; a key ``k`` in an object)."""
    segments = pattern.split(".")
    here = body
    for segment, after in zip(segments, [*segments[1:], None]):
        fresh: Any = value if after is None else ([] if after == "*" else {})
        if isinstance(here, list):
            if not here or after is None:
                here.insert(0, fresh)
            elif not isinstance(here[0], (dict, list)):
                here[0] = fresh
            here = here[0]
        elif segment == "*":
            key = next(iter(here), "k") if after is not None and here else "k"
            if after is None or not isinstance(here.get(key), (dict, list)):
                here[key] = fresh
            here = here[key]
        else:
            if after is None or not isinstance(here.get(segment), (dict, list)):
                here[segment] = fresh
            here = here[segment]


def declared(paths: Paths) -> list[str]:
    return sorted(paths.declarations)


@pytest.mark.parametrize("name", REQUESTS)
@given(data=st.data())
@settings(max_examples=60)
def test_a_declared_request_field_outside_its_shape_is_checked(name: str, data: st.DataObject) -> None:
    dialect, seeds = REQUESTS[name]
    body = orjson_copy(data.draw(st.sampled_from(seeds)))
    pattern = data.draw(st.sampled_from(declared(dialect.request_not_content)))
    put(body, pattern, orjson_copy(data.draw(st.sampled_from(OUTSIDE))))
    error = request_refusal(dialect, body)
    assert error is not None, f"a value outside the shape of {pattern} reached no policy: {body}"
    assert error.decision is not None, error.message  # a policy refused it, not the parser


@pytest.mark.parametrize("name", REPLY_APIS)
@given(data=st.data())
@settings(max_examples=60)
def test_a_declared_reply_field_outside_its_shape_is_checked(name: str, data: st.DataObject) -> None:
    dialect = routes.DIALECTS[name]
    bodies, _ = reply_seeds(name)
    body = orjson_copy(data.draw(st.sampled_from(bodies)))
    pattern = data.draw(st.sampled_from(declared(dialect.reply_not_content)))
    put(body, pattern, orjson_copy(data.draw(st.sampled_from(OUTSIDE))))
    error = reply_refusal(dialect, body)
    assert error is not None, f"a value outside the shape of {pattern} reached no policy: {body}"
    assert error.decision is not None, error.message


@pytest.mark.parametrize("name", REPLY_APIS)
@given(data=st.data())
@settings(max_examples=60)
def test_a_declared_event_field_outside_its_shape_never_reaches_the_client(name: str, data: st.DataObject) -> None:
    dialect = routes.DIALECTS[name]
    _, events = reply_seeds(name)
    index = data.draw(st.integers(min_value=0, max_value=len(events) - 1))
    payload = orjson_copy(events[index][0])
    pattern = data.draw(st.sampled_from(declared(dialect.event_not_content)))
    put(payload, pattern, orjson_copy(data.draw(st.sampled_from(OUTSIDE))))
    stream = [*events[:index], (payload, events[index][1]), *events[index + 1:]]
    sent = b"".join(
        (f"event: {event}\n" if event else "").encode() + b"data: " + orjson.dumps(item) + b"\n\n"
        for item, event in stream
    )
    writes = trio.run(lambda: pump_writes(dialect, ENGINE, [sent]))
    relayed, ending = split_at_refusal(b"".join(writes))
    assert MARKER not in relayed.lower(), (pattern, relayed)
    assert "CAPSEM policy 'Debug'" in ending, (pattern, ending)


@pytest.mark.parametrize("shape_value", ["capsem_block", "gpt-4o", "resp_0123abcdef"])
def test_a_value_that_fits_its_shape_is_what_the_declaration_skips(shape_value: str) -> None:
    """The other half: the same walk skips a fitting value (a model name, an id), and only at its path."""
    paths = routes.DIALECTS["openai-responses"].request_not_content
    assert paths.declares(("model",), shape_value)
    assert paths.declares(("previous_response_id",), shape_value)
    assert not paths.declares(("model",), f"{shape_value} and more")
    assert not paths.declares(("model", "x"), shape_value)
    assert not paths.declares(("input", 0, "call_id"), shape_value)  # a client's own id: content


# -- logprobs are read as the text they spell (issue 20, class 7) -----------------------------------------

SPLIT = [{"token": "caps", "logprob": -0.1}, {"token": "em_bl", "logprob": -0.2}, {"token": "ock", "logprob": -0.3}]
LOGPROB_REPLIES = {
    "openai-chat": {"choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"},
                                 "logprobs": {"content": SPLIT}}]},
    "openai-completions": {"choices": [{"index": 0, "text": "fine", "logprobs": {
        "tokens": ["caps", "em_bl", "ock"], "token_logprobs": [-0.1, -0.2, -0.3]}}]},
    "openai-responses": {"output": [{"type": "message", "id": "msg_1", "role": "assistant", "content": [
        {"type": "output_text", "text": "fine", "annotations": [], "logprobs": SPLIT}]}]},
    "gemini": {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": "fine"}]},
                               "logprobsResult": {"chosenCandidates": SPLIT}}]},
}


@pytest.mark.parametrize("name", LOGPROB_REPLIES)
def test_a_term_split_across_logprobs_tokens_is_read_whole(name: str) -> None:
    error = reply_refusal(routes.DIALECTS[name], LOGPROB_REPLIES[name])
    assert error is not None and error.decision is not None


def test_a_term_split_across_one_events_logprobs_never_reaches_the_client() -> None:
    dialect = routes.DIALECTS["openai-responses"]
    event = {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1", "output_index": 0,
             "content_index": 0, "delta": "fine", "logprobs": SPLIT}
    sent = b"event: response.output_text.delta\ndata: " + orjson.dumps(event) + b"\n\n"
    relayed, ending = split_at_refusal(b"".join(trio.run(lambda: pump_writes(dialect, ENGINE, [sent]))))
    assert "caps" not in relayed and "CAPSEM policy 'Debug'" in ending


# -- the declarations themselves ---------------------------------------------------------------------------


def test_a_declaration_names_a_leaf_and_its_shape_and_nothing_else() -> None:
    from capsem_proxyd.dialects.content import BOOLEAN, NUMBER, Enum, Sorter

    paths = Paths({"role": Enum("user", "assistant"), "n": NUMBER, "stream": BOOLEAN, "bias.*": NUMBER})
    sorter = Sorter(frozenset({"role", "n", "stream", "bias", "text"}))
    found: list[str] = []
    sorter.add(found, {"role": "user", "n": 2, "stream": True, "bias": {"50256": 1, "x_key": 2},
                       "text": "hi"}, paths.root)
    assert found == ["50256", "x_key", "hi"]  # the bias's keys are content: ``*`` names values, not keys
    found.clear()
    sorter.add(found, {"role": "caps", "n": "em_bl", "stream": {"ock": 1}, "bias": {"k": "v"}}, paths.root)
    assert found == ["caps", "em_bl", "ock", "k", "v"]  # outside their shapes, in reading order
    with pytest.raises(ValueError, match="two shapes"):
        Paths({"n": NUMBER}, {"n": BOOLEAN})


def test_no_declaration_of_any_api_is_a_whole_object() -> None:
    """Every declared leaf holds a scalar shape: a value that is an object or array is content there."""
    for dialect in {*routes.DIALECTS.values()}:
        for paths in (dialect.request_not_content, dialect.reply_not_content, dialect.event_not_content):
            for pattern in paths.declarations:
                path = tuple(0 if segment == "*" else segment for segment in pattern.split("."))
                assert not paths.declares(path, {"x": MARKER}), (dialect.endpoint, pattern)
                assert not paths.declares(path, [MARKER]), (dialect.endpoint, pattern)
                assert not paths.declares(path, f"a {MARKER} b"), (dialect.endpoint, pattern)


@pytest.mark.parametrize("name", REPLY_APIS)
def test_the_apis_own_words_never_join_a_replys_text(name: str) -> None:
    """Usage objects are walked now (no object is declared whole): their field names, which the SDK
    vocabularies lack in places, are declared, so a reply's text is its text and nothing else."""
    dialect = routes.DIALECTS[name]
    bodies, _ = reply_seeds(name)
    for body in bodies:
        text = dialect.response_view(body).text
        assert "tokens" not in text.lower() and "token_count" not in text.lower(), text
