"""The event splitter: every byte of a stream comes back, cut at event ends, whatever the chunking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.mcp.sse import Event, EventSplitter, EventTooLarge

_LINE = st.sampled_from([
    b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}", b"id: 17", b"retry: 3000", b": keep-alive", b"event: message",
    b"data:", b"data: second line", b":", b"id:",
])
_END = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    events = []
    for _ in range(draw(st.integers(0, 6))):
        end = draw(_END)
        lines = draw(st.lists(_LINE, min_size=1, max_size=4))
        events.append(end.join(lines) + end + end)
    return b"".join(events)


@given(streams(), st.lists(st.integers(1, 40), max_size=30))
def test_events_come_back_byte_for_byte_however_the_stream_is_cut(stream: bytes, cuts: list[int]) -> None:
    splitter = EventSplitter(1 << 20)
    out: list[Event] = []
    position = 0
    for size in cuts:
        out += splitter.feed(stream[position:position + size])
        position += size
    out += splitter.feed(stream[position:])
    out += splitter.end()
    assert b"".join(event.raw for event in out) == stream


def test_data_ids_and_rewrites_keep_the_other_fields() -> None:
    splitter = EventSplitter(1024)
    (event,) = splitter.feed(b": comment\r\nid: 5\r\nretry: 100\r\ndata: a\r\ndata: b\r\n\r\n")
    assert event.data == "a\nb" and event.event_id == b"5"
    assert event.rewrite(b"{}") == b": comment\nid: 5\nretry: 100\ndata: {}\n\n"
    assert event.rewrite(None) == b": comment\nid: 5\nretry: 100\n\n"


def test_the_limit_is_per_event_not_per_stream() -> None:
    splitter = EventSplitter(1024)
    for _ in range(100):  # 100 events of 600 bytes: far beyond the limit in all, each within it
        assert len(splitter.feed(b"data: " + b"x" * 600 + b"\n\n")) == 1
    assert splitter.feed(b"data: " + b"x" * 2000) == [] and splitter.overflowed
    with pytest.raises(EventTooLarge):
        splitter.feed(b"\n\n")


def test_a_complete_event_beyond_the_limit_stops_after_the_ones_before_it() -> None:
    splitter = EventSplitter(1024)
    events = splitter.feed(b"data: a\n\n" + b"data: " + b"x" * 2000 + b"\n\n" + b"data: b\n\n")
    assert [event.data for event in events] == ["a"] and splitter.overflowed


def test_a_byte_order_mark_at_the_start_does_not_hide_the_data() -> None:
    """As the client reads it (WHATWG decode drops the mark): a framer that kept it would read a field
    named ``\\ufeffdata``, see no data, and the hop would relay the message unchecked."""
    (event,) = EventSplitter(1024).feed("\ufeff".encode() + b'id: 3\ndata: {"jsonrpc":"2.0"}\n\n')
    assert event.data == '{"jsonrpc":"2.0"}' and event.event_id == b"3"


@pytest.mark.parametrize("stream", [b"data: a\n\r\ndata: b\n\n", b"data: a\r\n\ndata: b\n\n", b"data: a\r\r\ndata: b\r\n\r\n"])
def test_line_ends_mixed_within_an_event_end_it_where_the_client_does(stream: bytes) -> None:
    splitter = EventSplitter(1024)
    events = [*splitter.feed(stream), *splitter.end()]
    assert [event.data for event in events] == ["a", "b"]
    assert b"".join(event.raw for event in events) == stream
