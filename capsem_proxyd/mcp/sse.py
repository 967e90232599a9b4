"""A server's event stream cut into events, each event's bytes kept as they came. No I/O.

The framing is the model hop's (``dialects/framing.py`` ``SSEDecoder``): one
reading of a stream for both hops, as the client reads it (line ends mixed as
they come, a byte-order mark at the start skipped: a framer that kept it would
read ``\\ufeffdata`` as no data and let the event go unchecked). This module
adds what the MCP hop needs of an event besides its data: its id, and its
other lines for a rewrite, read from its bytes only on the rare paths that
need them.

What the hop relays of an event it does not change is its own bytes: ids,
``retry:`` fields, comments (keep-alives, priming events) and line endings
reach the client as the server wrote them, so resumption (``Last-Event-ID``)
and reconnection timing work as the server meant. Only an event whose data a
check changed is written again (``rewrite``), its other lines kept in place.

The size limit is per event, not per stream: a long-lived GET stream may
carry any number of events, but no single one larger than the limit.
"""

from __future__ import annotations

import re

from capsem_proxyd.dialects.framing import EventTooLarge, FramingError, SSEDecoder, StreamEvent

__all__ = ["Event", "EventSplitter", "EventTooLarge", "FramingError"]

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = "\ufeff".encode()  # skipped at a stream's start (the decoder does the same for its data)


class Event:
    """One event: its bytes as received (terminating blank line included), its data, its lines."""

    __slots__ = ("data", "raw")

    def __init__(self, event: StreamEvent) -> None:
        self.raw = event.raw
        self.data = event.data  # its ``data:`` lines joined by newlines; "" when it has none

    @property
    def lines(self) -> list[bytes]:
        raw = self.raw[len(_BOM):] if self.raw.startswith(_BOM) else self.raw
        return [line for line in _LINE_END.split(raw) if line]

    @property
    def event_id(self) -> bytes | None:
        ids = [_value(line) for line in self.lines if _field(line) == b"id"]
        return ids[-1] if ids else None

    def rewrite(self, data: bytes | None) -> bytes:
        """The event with its data replaced by ``data`` (one line; None: no data, the other lines kept)."""
        out: list[bytes] = []
        placed = False
        for line in self.lines:
            if _field(line) == b"data":
                if not placed and data is not None:
                    out.append(b"data: " + data)
                placed = True
                continue
            out.append(line)
        if not placed and data is not None:
            out.append(b"data: " + data)
        return b"\n".join(out) + b"\n\n"


class EventSplitter:
    """Feed bytes, get the events they complete; ``limit``: the most bytes one event may take.

    An event beyond the limit, complete or not, ends the splitting: the events before it are returned,
    ``overflowed`` is set, and any later call raises ``EventTooLarge``. An event that is not UTF-8 raises
    ``FramingError`` (a JSON-RPC message is UTF-8 JSON: the stream is not relayed further).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._decoder = SSEDecoder(limit)
        self.overflowed = False

    def feed(self, chunk: bytes) -> list[Event]:
        if self.overflowed:
            raise EventTooLarge(self.limit, [])
        try:
            events = self._decoder.feed(chunk)
        except EventTooLarge as too_large:
            self.overflowed = True
            events = too_large.events
        return [Event(event) for event in events]

    def end(self) -> list[Event]:
        """The events the stream's last bytes complete, then what it left unterminated, as an event
        (checked like any other)."""
        if self.overflowed:
            raise EventTooLarge(self.limit, [])
        return [Event(event) for event in self._decoder.close()]


def _field(line: bytes) -> bytes:
    if line.startswith(b":"):
        return b""  # a comment
    name, _, _ = line.partition(b":")
    return name


def _value(line: bytes) -> bytes:
    _, _, value = line.partition(b":")
    return value[1:] if value.startswith(b" ") else value
