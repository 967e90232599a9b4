"""Stream framings: Server-Sent Events and Gemini's streamed JSON array.

A decoder cuts upstream bytes into events while keeping each event's exact
bytes, so an event that passes the checks is forwarded as the upstream sent it
(no re-serialisation); an encoder writes the proxy's own final error event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

_SSE_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_SSE_LINE = re.compile(r"\r\n|\r|\n")


@dataclass(slots=True)
class StreamEvent:
    """One framed event: its exact bytes, its SSE event name and its data text."""

    raw: bytes
    data: str
    event: str | None = None


class FramingError(Exception):
    """The upstream's stream cannot be framed (garbage, truncation)."""


class SSEDecoder:
    """Incremental SSE decoder (WHATWG rules for ``event:``, ``data:`` and comments)."""

    media_type = "text/event-stream"

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self._buffer = bytearray()
        self._max_event_bytes = max_event_bytes
        self._seen_cr = False  # until a CR arrives, events end only in "\n\n": a plain find does

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        self._buffer += chunk
        if not self._seen_cr and b"\r" in chunk:
            self._seen_cr = True
        events: list[StreamEvent] = []
        start = 0
        buffer = self._buffer
        if self._seen_cr:
            while True:
                match = _SSE_BOUNDARY.search(buffer, start)
                if match is None:
                    break
                raw = bytes(buffer[start : match.end()])
                events.append(_parse_sse(raw, match.start() - start))
                start = match.end()
        else:
            while (end := buffer.find(b"\n\n", start)) >= 0:
                events.append(_parse_sse(bytes(buffer[start : end + 2]), end - start))
                start = end + 2
        if start:
            del self._buffer[:start]
        if len(self._buffer) > self._max_event_bytes:
            raise FramingError(f"an upstream event exceeds {self._max_event_bytes} bytes")
        return events

    def close(self) -> list[StreamEvent]:
        """End of input: a trailing event without its blank line still counts."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        if not rest.strip():
            return []
        return [_parse_sse(rest + b"\n\n", len(rest))]


def _parse_sse(raw: bytes, body_length: int) -> StreamEvent:
    try:
        text = raw[:body_length].decode("utf-8")
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
        self._max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        self._buffer += chunk
        events: list[StreamEvent] = []
        buffer = self._buffer
        index = self._scan
        cut = 0
        while index < len(buffer):
            byte = buffer[index]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif byte == 0x5C:  # backslash
                    self._escaped = True
                elif byte == 0x22:
                    self._in_string = False
            elif self._depth == 0:
                if byte in b" \t\r\n,":
                    pass
                elif byte == 0x5B and not self._opened:  # [
                    self._opened = True
                elif byte == 0x5D and self._opened and not self._closed:  # ]
                    self._closed = True
                    events.append(StreamEvent(raw=bytes(buffer[cut : index + 1]), data=""))
                    cut = index + 1
                elif byte == 0x7B and self._opened and not self._closed:  # {
                    self._depth = 1
                    self._element_start = index
                else:
                    raise FramingError("upstream JSON stream is malformed")
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

    def close(self) -> list[StreamEvent]:
        if self._depth or self._in_string or (self._opened and not self._closed):
            raise FramingError("upstream JSON stream ended before the array was closed")
        rest = bytes(self._buffer)
        self._buffer.clear()
        return [StreamEvent(raw=rest, data="")] if rest else []


def encode_json_array_error(payload: dict, started: bool) -> bytes:
    """The proxy's error element, closing the array it ends."""
    return (b",\r\n" if started else b"[") + orjson.dumps(payload) + b"]"
