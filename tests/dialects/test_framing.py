"""Stream framing: decoders keep every byte and cut events the same however the input is split."""

from __future__ import annotations

import json
import random

import pytest

from capsem_proxyd.dialects.framing import FramingError, JSONArrayDecoder, SSEDecoder

SSE_BODY = (
    b"event: response.created\ndata: {\"a\": 1}\n\n"
    b": keep-alive comment\n\n"
    b"data: {\"b\": \"line\"}\r\n\r\n"
    b"data: first\ndata: second\n\n"
    b"data: [DONE]\n\n"
)
ARRAY_BODY = b'[{"text": "a \\" ] } [ {"}\n,\r\n{"nested": [{"x": [1, 2]}], "s": "\\\\"}\n]'


def feed_in_pieces(decoder, body: bytes, seed: int) -> list:
    rng = random.Random(seed)
    events, index = [], 0
    while index < len(body):
        step = rng.randint(1, 7)
        events += decoder.feed(body[index : index + step])
        index += step
    return events + decoder.close()


@pytest.mark.parametrize("seed", range(20))
def test_sse_decoder_is_split_invariant_and_lossless(seed: int) -> None:
    events = feed_in_pieces(SSEDecoder(), SSE_BODY, seed)
    assert b"".join(event.raw for event in events) == SSE_BODY
    assert [(e.event, e.data) for e in events] == [
        ("response.created", '{"a": 1}'),
        (None, ""),
        (None, '{"b": "line"}'),
        (None, "first\nsecond"),
        (None, "[DONE]"),
    ]


@pytest.mark.parametrize("seed", range(20))
def test_json_array_decoder_is_split_invariant_and_lossless(seed: int) -> None:
    events = feed_in_pieces(JSONArrayDecoder(), ARRAY_BODY, seed)
    assert b"".join(event.raw for event in events) == ARRAY_BODY
    elements = [json.loads(event.data) for event in events if event.data]
    assert elements == json.loads(ARRAY_BODY)


def test_json_array_decoder_rejects_garbage_and_truncation() -> None:
    with pytest.raises(FramingError):
        JSONArrayDecoder().feed(b"[{}, garbage]")
    decoder = JSONArrayDecoder()
    decoder.feed(b'[{"a": "unterminated')
    with pytest.raises(FramingError):
        decoder.close()


def test_sse_trailing_event_without_blank_line_is_kept() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: {}\n\ndata: last") != []
    (last,) = decoder.close()
    assert last.data == "last"
