"""Stream framings: Server-Sent Events and Gemini's streamed JSON array.

A decoder (``StreamDecoder``) cuts upstream bytes into events while keeping
each event's exact bytes, so an event that passes the checks is forwarded as
the upstream sent it (no re-serialisation); an encoder writes the proxy's own
final error event, framed for the decoder's ``media_type``.

A stream is read as its client reads it. One UTF-8 byte-order mark at the very
start of a stream is no part of its text: WHATWG's UTF-8 decode (browsers,
``TextDecoder``, eventsource-parser and the SDKs built on them) drops it, so
``\ufeffdata: ...`` is a ``data`` line to them. A decoder that kept it would
read a field named ``\ufeffdata``, see no data, and let the event go
unchecked to a client that reads it. Both decoders skip that one mark (its
bytes are still relayed, as every byte is); a mark anywhere else is text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import orjson

_BOM = b"\xef\xbb\xbf"  # UTF-8's byte-order mark, U+FEFF
# An event ends at a line end followed by an empty line, each line end CRLF, LF or CR, mixed as they come
# (WHATWG): a CR followed by LF is one line end, never two.
_SSE_BOUNDARY = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)")
_SSE_LINE = re.compile(r"\r\n|\r|\n")
_STRING_STOP = re.compile(rb'["\\]')  # what ends a JSON string scan: its closing quote, or an escape


@dataclass(slots=True)
class StreamEvent:
    """One framed event: its exact bytes, its SSE event name and its data text."""

    raw: bytes
    data: str
    event: str | None = None


class FramingError(Exception):
    """The upstream's stream cannot be framed (garbage, truncation)."""


class EventTooLarge(FramingError):
    """One event is larger than the decoder's ``max_event_bytes``, complete or not; ``events``: the
    events the same ``feed`` completed before it (a reader that relays event by event may still send them)."""

    def __init__(self, limit: int, events: list[StreamEvent]) -> None:
        super().__init__(f"an upstream event exceeds {limit} bytes")
        self.events = events


class StreamDecoder(Protocol):
    """Cuts a streamed reply into events, chosen by the reply's content type (``Dialect.stream_decoder``).

    ``media_type`` names the framing it reads; the proxy's own final error
    event is framed the same way (``Dialect.stream_error``).
    """

    media_type: str

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        """The events ``chunk`` completes (raises ``FramingError`` on garbage)."""
        ...

    def close(self) -> list[StreamEvent]:
        """End of input: what is left, as events (raises ``FramingError`` on a truncated stream)."""
        ...


class SSEDecoder:
    """Incremental SSE decoder (WHATWG rules for ``event:``, ``data:`` and comments).

    One framer for both hops: the model hop reads ``data`` and ``event``, the MCP hop (``mcp/sse.py``)
    also an event's other lines, from its ``raw`` bytes. ``max_event_bytes`` bounds each event, complete
    or still arriving (``EventTooLarge``), not the stream: a long-lived stream may carry any number.
    """

    media_type = "text/event-stream"

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self._buffer = bytearray()
        self._max_event_bytes = max_event_bytes
        self._seen_cr = False  # until a CR arrives, events end only in "\n\n": a plain find does
        self._at_start = True  # the stream's first bytes may still be a byte-order mark
        self._skip = 0  # bytes of the first event's text that are its stream's byte-order mark

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        if (
            not self._buffer and not self._at_start and not self._seen_cr and type(chunk) is bytes
            and chunk.endswith(b"\n\n") and len(chunk) <= self._max_event_bytes
        ):
            # One whole event in one read, nothing before it (a provider streaming token by token):
            # the event is the chunk itself, with no copy into and out of the buffer. When its text holds
            # no line break, the search below would find one boundary, at its end, and ``_parse_sse`` one
            # data line: both are looked for in the decoded text (a character search costs a fraction of
            # the byte search for the boundary, once per event).
            try:
                text = chunk[:-2].decode("utf-8")
            except UnicodeDecodeError:
                text = ""  # the general way (``_parse_sse``) says why
            if text.startswith("data: ") and "\n" not in text and "\r" not in text:
                return [StreamEvent(raw=chunk, data=text[6:])]
            if chunk.find(b"\n\n") == len(chunk) - 2 and b"\r" not in chunk:  # one event of several lines
                return [_parse_sse(chunk, len(chunk) - 2)]
        self._buffer += chunk
        if self._at_start and self._bom_may_follow():
            return []
        if not self._seen_cr and b"\r" in chunk:
            self._seen_cr = True
        events: list[StreamEvent] = []
        start = 0
        buffer = self._buffer
        limit = self._max_event_bytes
        if self._seen_cr:
            while True:
                match = _SSE_BOUNDARY.search(buffer, start)
                if match is None or (match.end() == len(buffer) and buffer.endswith(b"\r")):
                    break  # no event end yet, or a CR that an LF may still follow (close() takes it as it is)
                if match.end() - start > limit:
                    raise EventTooLarge(limit, events)
                raw = bytes(buffer[start : match.end()])
                events.append(_parse_sse(raw, match.start() - start, self._skip))
                self._skip = 0
                start = match.end()
        else:
            while (end := buffer.find(b"\n\n", start)) >= 0:
                if end + 2 - start > limit:
                    raise EventTooLarge(limit, events)
                events.append(_parse_sse(bytes(buffer[start : end + 2]), end - start, self._skip))
                self._skip = 0
                start = end + 2
        if start:
            del self._buffer[:start]
        if len(self._buffer) > limit:
            raise EventTooLarge(limit, events)
        return events

    def _bom_may_follow(self) -> bool:
        """At the stream's start: True while its bytes so far may be a byte-order mark still arriving;
        once they cannot be, whether they were one is settled for good."""
        if len(self._buffer) < len(_BOM) and _BOM.startswith(self._buffer):
            return True
        self._at_start = False
        if self._buffer.startswith(_BOM):
            self._skip = len(_BOM)
        return False

    def close(self) -> list[StreamEvent]:
        """End of input: a trailing event without its blank line still counts."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        skip, self._skip = self._skip, 0
        if not rest[skip:].strip():
            return []
        ended = _SSE_BOUNDARY.search(rest)  # only an event ending in a CR an LF did not follow
        if ended is not None and ended.end() == len(rest):
            return [_parse_sse(rest, ended.start(), skip)]
        return [_parse_sse(rest + b"\n\n", len(rest), skip)]


def _parse_sse(raw: bytes, body_length: int, skip: int = 0) -> StreamEvent:
    """One event from its bytes; ``skip``: the stream's byte-order mark it starts with (no part of its text)."""
    try:
        text = raw[skip:body_length].decode("utf-8")
    except UnicodeDecodeError as error:
        raise FramingError(f"upstream event is not UTF-8: {error}") from None
    if text.startswith("data:") and "\n" not in text and "\r" not in text:
        # The common event, one data line: the loop below would give the same.
        return StreamEvent(raw=raw, data=text[6:] if text.startswith("data: ") else text[5:])
    event_name: str | None = None
    data_lines: list[str] = []
    for line in _SSE_LINE.split(text):
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data_lines.append(value)
        elif name == "event":
            event_name = value
    return StreamEvent(raw=raw, data="\n".join(data_lines), event=event_name)


def encode_sse(payload: dict, event: str | None = None, line_end: bytes = b"\n") -> bytes:
    """One SSE event with a JSON payload."""
    head = b"event: " + event.encode() + line_end if event else b""
    return head + b"data: " + orjson.dumps(payload) + line_end + line_end


class JSONArrayDecoder:
    """Incremental splitter for a streamed JSON array ``[{...},{...}]``.

    Each element's raw bytes include the separators before it (``[`` or ``,``
    and white space), and the closing ``]`` arrives as a last event with empty
    data, so forwarding every raw reproduces the upstream bytes exactly.
    """

    media_type = "application/json"

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self._buffer = bytearray()
        self._scan = 0  # where scanning resumes inside _buffer
        self._element_start = -1
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._opened = False
        self._closed = False
        self._at_start = True  # the stream's first bytes may still be a byte-order mark
        self._max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        self._buffer += chunk
        buffer = self._buffer
        if self._at_start:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                return []  # a byte-order mark may still be arriving
            self._at_start = False
            if buffer.startswith(_BOM):
                self._scan = len(_BOM)  # skipped as a reader's decoder does; relayed with the first element
        events: list[StreamEvent] = []
        index = self._scan
        cut = 0  # where the next event's raw bytes start
        while index < len(buffer):
            if self._in_string:
                index = self._past_string(buffer, index)
                continue
            byte = buffer[index]
            if self._depth == 0:
                cut = self._between_elements(byte, index, cut, events)
            elif byte == 0x22:
                self._in_string = True
            elif byte in b"{[":
                self._depth += 1
            elif byte in b"}]":
                self._depth -= 1
                if self._depth == 0:
                    raw = bytes(buffer[cut : index + 1])
                    data = bytes(buffer[self._element_start : index + 1]).decode("utf-8", "replace")
                    events.append(StreamEvent(raw=raw, data=data))
                    cut = index + 1
            index += 1
        if cut:
            del buffer[:cut]
            index -= cut
            if self._element_start >= 0:
                self._element_start -= cut
        self._scan = index
        if len(buffer) > self._max_event_bytes:
            raise FramingError(f"an upstream element exceeds {self._max_event_bytes} bytes")
        return events

    def _past_string(self, buffer: bytearray, index: int) -> int:
        """Where the scan resumes after the string it is in: past its closing quote, or the buffer's end."""
        if self._escaped:
            self._escaped = False
            index += 1
        while (stop := _STRING_STOP.search(buffer, index)) is not None:
            index = stop.start()
            if buffer[index] == 0x22:
                self._in_string = False
                return index + 1
            if index + 1 >= len(buffer):
                self._escaped = True  # the escaped character comes with the next chunk
                return len(buffer)
            index += 2
        return len(buffer)

    def _between_elements(self, byte: int, index: int, cut: int, events: list[StreamEvent]) -> int:
        """One byte outside any element: the array's brackets, separators, an element's start."""
        if byte in b" \t\r\n,":
            return cut
        if byte == 0x5B and not self._opened:  # [
            self._opened = True
            return cut
        if byte == 0x5D and self._opened and not self._closed:  # ]
            self._closed = True
            events.append(StreamEvent(raw=bytes(self._buffer[cut : index + 1]), data=""))
            return index + 1
        if byte == 0x7B and self._opened and not self._closed:  # {
            self._depth = 1
            self._element_start = index
            return cut
        raise FramingError("upstream JSON stream is malformed")

    def close(self) -> list[StreamEvent]:
        if self._at_start and self._buffer:
            raise FramingError("upstream JSON stream is malformed")
        if self._depth or self._in_string or (self._opened and not self._closed):
            raise FramingError("upstream JSON stream ended before the array was closed")
        rest = bytes(self._buffer)
        self._buffer.clear()
        return [StreamEvent(raw=rest, data="")] if rest else []


def encode_json_array_error(payload: dict, started: bool) -> bytes:
    """The proxy's error element, closing the array it ends."""
    return (b",\r\n" if started else b"[") + orjson.dumps(payload) + b"]"
