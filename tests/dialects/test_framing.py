"""Stream framing: decoders keep every byte and cut events the same however the input is split."""

from __future__ import annotations

import json
import random
import re
from collections.abc import AsyncIterator

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from capsem_proxyd.dialects.framing import FramingError, JSONArrayDecoder, SSEDecoder
from capsem_proxyd.dialects.openai_chat import OpenAIChatDialect
from capsem_proxyd.proxy.streaming import OpenStreams, StreamPump, StreamSettings
from tests.support import exchanges
from tests.support.engines import engine

ENGINE = engine()

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


@pytest.mark.parametrize("stream", [
    b"data: a\n\r\ndata: b\n\n", b"data: a\r\n\ndata: b\r\n\r\n", b"data: a\r\r\ndata: b\n\n",
], ids=["LF then CRLF", "CRLF then LF", "CR then CRLF"])
def test_sse_line_ends_mixed_within_an_event_end_it_where_a_whatwg_reader_does(stream: bytes) -> None:
    """Any line end then an empty line ends an event (a CR followed by LF is one line end, never two):
    read otherwise, two of the upstream's events would be checked as one the client reads as two."""
    for cut in range(1, len(stream)):
        decoder = SSEDecoder()
        events = [*decoder.feed(stream[:cut]), *decoder.feed(stream[cut:]), *decoder.close()]
        assert [event.data for event in events] == ["a", "b"], cut
        assert b"".join(event.raw for event in events) == stream


def test_sse_an_event_beyond_the_limit_complete_or_not_is_refused_after_the_ones_before_it() -> None:
    from capsem_proxyd.dialects.framing import EventTooLarge

    with pytest.raises(EventTooLarge) as complete:
        SSEDecoder(max_event_bytes=64).feed(b"data: a\n\ndata: " + b"x" * 100 + b"\n\ndata: b\n\n")
    assert [event.data for event in complete.value.events] == ["a"]
    decoder = SSEDecoder(max_event_bytes=64)
    assert [event.data for event in decoder.feed(b"data: a\n\n")] == ["a"]
    with pytest.raises(EventTooLarge):  # one read, one whole event: the fast path is bounded too
        decoder.feed(b"data: " + b"y" * 100 + b"\n\n")


def test_sse_trailing_event_without_blank_line_is_kept() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: {}\n\ndata: last") != []
    (last,) = decoder.close()
    assert last.data == "last"


# -- a stream that begins with a byte-order mark ---------------------------------------------------------------------
# WHATWG's UTF-8 decode drops one BOM at the start of a stream (browsers, TextDecoder, eventsource-parser); the
# decoders read the stream as such a reader does. tests/e2e/test_stream_bom.py runs a node reader through the proxy.

BOM = "\ufeff".encode()


def whatwg_sse_data(body: bytes) -> list[str]:
    """The data of every event a WHATWG-conformant reader dispatches (the HTML standard's event-stream
    interpretation, in small): UTF-8 decode dropping one leading BOM, lines split on CRLF/CR/LF."""
    text = body.decode("utf-8")
    text = text.removeprefix("\ufeff")
    dispatched, data = [], []
    for line in re.split(r"\r\n|\r|\n", text):
        if not line:
            if data:
                dispatched.append("\n".join(data))
            data = []
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
    return dispatched


def every_data(events: list) -> list[str]:
    return [event.data for event in events if event.data]


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"])
def test_sse_a_leading_byte_order_mark_is_no_part_of_the_first_field_name(seed: int, line_end: bytes) -> None:
    body = BOM + SSE_BODY.replace(b"\n", line_end) if line_end == b"\n" else BOM + b"data: {\"a\": 1}\r\n\r\ndata: x\r\n\r\n"
    events = feed_in_pieces(SSEDecoder(), body, seed)
    assert b"".join(event.raw for event in events) == body  # the mark is still relayed, as every byte is
    assert every_data(events) == whatwg_sse_data(body)
    assert events[0].data == '{"a": 1}'


@pytest.mark.parametrize("split", range(1, 4))
def test_sse_a_byte_order_mark_split_across_reads_is_still_one_mark(split: int) -> None:
    decoder = SSEDecoder()
    body = BOM + b"data: capsem_block\n\n"
    events = decoder.feed(body[:split]) + decoder.feed(body[split:]) + decoder.close()
    assert [event.data for event in events] == ["capsem_block"]


def test_sse_only_the_streams_first_mark_is_dropped() -> None:
    """A second mark is text: a field named ``\\ufeffdata`` to the decoder and to every reader alike."""
    for body in (BOM + BOM + b"data: x\n\n", b"data: a\n\n" + BOM + b"data: x\n\n", b"\n" + BOM + b"data: x\n\n"):
        events = feed_in_pieces(SSEDecoder(), body, 0)
        assert every_data(events) == whatwg_sse_data(body)
        assert "x" not in every_data(events)


def test_sse_a_stream_of_a_mark_alone_or_a_truncated_mark() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(BOM) == [] and decoder.close() == []
    decoder = SSEDecoder()
    assert decoder.feed(BOM[:2]) == []
    with pytest.raises(FramingError):
        decoder.close()
    decoder = SSEDecoder()
    assert decoder.feed(BOM + b"data: last") == []
    assert [event.data for event in decoder.close()] == ["last"]


@pytest.mark.parametrize("seed", range(20))
def test_json_array_a_leading_byte_order_mark_is_skipped_and_relayed(seed: int) -> None:
    body = BOM + ARRAY_BODY
    events = feed_in_pieces(JSONArrayDecoder(), body, seed)
    assert b"".join(event.raw for event in events) == body
    assert [json.loads(event.data) for event in events if event.data] == json.loads(body.decode("utf-8-sig"))


def test_json_array_a_second_mark_or_a_truncated_one_is_malformed() -> None:
    with pytest.raises(FramingError):
        JSONArrayDecoder().feed(BOM + BOM + b"[]")
    decoder = JSONArrayDecoder()
    assert decoder.feed(BOM[:1]) == []
    with pytest.raises(FramingError):
        decoder.close()


def _chat_event(text: str, line_end: bytes) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m",
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + json.dumps(chunk).encode() + line_end + line_end


async def _relayed(pieces: list[bytes]) -> bytes:
    async def upstream() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    pump = StreamPump(exchanges.exchange("openai", "chat.completions", request_id="req_bom", tenant_id="0" * 16),
                      OpenAIChatDialect(), ENGINE, httpx.Response(200, content=upstream()), SSEDecoder(),
                      StreamSettings(idle_timeout=5), OpenStreams())
    writes: list[bytes] = []
    async def write(data: bytes) -> None:
        writes.append(data)

    await pump.relay(write)
    return b"".join(writes)


@settings(max_examples=80)
@given(texts=st.lists(st.sampled_from(["capsem_block", "capsem_", "block", "hello ", "a"]), min_size=1, max_size=6),
       cuts=st.lists(st.integers(1, 200), max_size=12), line_end=st.sampled_from([b"\n", b"\r\n"]))
def test_a_marker_in_a_stream_that_begins_with_a_mark_never_reaches_a_whatwg_reader(
    texts: list[str], cuts: list[int], line_end: bytes
) -> None:
    raw = BOM + b"".join(_chat_event(text, line_end) for text in texts) + b"data: [DONE]" + line_end + line_end
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(raw[start : start + cut])
        start += cut
    pieces.append(raw[start:])
    delivered = trio.run(_relayed, [piece for piece in pieces if piece])
    read = "".join(
        choice["delta"].get("content") or ""
        for data in whatwg_sse_data(delivered) if data.startswith("{") and '"choices"' in data
        for choice in json.loads(data)["choices"]
    )
    assert "capsem_block" not in read
    if "capsem_block" in "".join(texts):
        assert b"CAPSEM policy" in delivered  # ended by the block, not let through


sse_lines = st.lists(
    st.sampled_from([b"data: ", b"data:", b"event: x", b": note", b"id: 7", b"data: {\"a\": 1}"])
    .flatmap(lambda field: st.lists(st.sampled_from([b"a", b" ", b":", b"\r", b"\x80", "\u00e9".encode(), b"\xef\xbb\xbf"]),
                                    max_size=4).map(lambda tail: field + b"".join(tail))),
    min_size=1, max_size=3,
)


@settings(max_examples=300)
@given(events=st.lists(st.tuples(sse_lines, st.sampled_from([b"\n", b"\r\n", b"\r"])), min_size=1, max_size=8))
def test_sse_events_each_in_a_read_of_its_own_are_framed_as_byte_by_byte(
    events: list[tuple[list[bytes], bytes]],
) -> None:
    """A read holding one whole event takes the decoder's fast path (issue 22: a token's event framed
    without a copy); whatever the event (several lines, CRs, bytes that are not UTF-8), it is framed as
    the general way frames it fed one byte at a time."""
    reads = [b"data: first\n\n"] + [end.join(lines) + end + end for lines, end in events]
    by_byte = [read[byte:byte + 1] for read in reads for byte in range(len(read))]
    framed, framed_by_byte = _framed(reads), _framed(by_byte)
    if "refused" in framed_by_byte:
        # Bytes that are not UTF-8 are refused either way; the events a refused read completed before them
        # are dropped with it (the general way's behaviour, not the fast path's), so only the refusal is compared.
        assert framed[-1] == "refused"
    else:
        assert framed == framed_by_byte


def _framed(reads: list[bytes]) -> list[tuple[bytes, str | None, str] | str]:
    """The events ``reads`` frame, then ``"refused"`` where the decoder refuses (framing stops there)."""
    decoder = SSEDecoder()
    framed: list[tuple[bytes, str | None, str] | str] = []
    try:
        for read in reads:
            framed += [(event.raw, event.event, event.data) for event in decoder.feed(read)]
        framed += [(event.raw, event.event, event.data) for event in decoder.close()]
    except FramingError:
        framed.append("refused")
    return framed
