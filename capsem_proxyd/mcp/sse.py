"""A server's event stream cut into events, each event's bytes kept as they came. No I/O.

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
from dataclasses import dataclass

_LINE_END = re.compile(rb"\r\n|\r|\n")


class EventTooLarge(Exception):
    """One event grew beyond the per-message limit before it ended."""


@dataclass(slots=True)
class Event:
    """One event: its bytes as received (terminating blank line included) and its lines."""

    raw: bytes
    lines: list[bytes]

    @property
    def data(self) -> str | None:
        """The event's data (its ``data:`` lines joined by newlines), None when it has none."""
        values = [_value(line) for line in self.lines if _field(line) == b"data"]
        if not values:
            return None
        return b"\n".join(values).decode("utf-8", "replace")

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
    ``overflowed`` is set, and any later call raises ``EventTooLarge``.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._start = 0  # where the current event starts
        self._scan = 0  # where the next line starts
        self._lines: list[bytes] = []
        self.overflowed = False

    def feed(self, chunk: bytes) -> list[Event]:
        if self.overflowed:
            raise EventTooLarge
        self._buffer += chunk
        return self._split(final=False)

    def _split(self, *, final: bool) -> list[Event]:
        events: list[Event] = []
        buffer = self._buffer
        while True:
            match = _LINE_END.search(buffer, self._scan)
            if match is None or (not final and match.group() == b"\r" and match.end() == len(buffer)):
                break  # no line end yet, or a CR that a LF may still follow
            line = bytes(buffer[self._scan:match.start()])
            self._scan = match.end()
            if line:
                self._lines.append(line)
                continue
            if self._scan - self._start > self.limit:
                self.overflowed = True
                return events
            events.append(Event(bytes(buffer[self._start:self._scan]), self._lines))
            self._start, self._lines = self._scan, []
        if self._start:
            del buffer[:self._start]
            self._scan -= self._start
            self._start = 0
        if len(buffer) > self.limit:
            self.overflowed = True
        return events

    def end(self) -> list[Event]:
        """The events the stream's last bytes complete (a final CR ends a line), then what it left
        unterminated, as an event (checked like any other)."""
        if self.overflowed:
            raise EventTooLarge
        events = self._split(final=True)
        rest = bytes(self._buffer)
        if rest and not self.overflowed:
            events.append(Event(rest, [line for line in _LINE_END.split(rest) if line]))
        return events


def _field(line: bytes) -> bytes:
    if line.startswith(b":"):
        return b""  # a comment
    name, _, _ = line.partition(b":")
    return name


def _value(line: bytes) -> bytes:
    _, _, value = line.partition(b":")
    return value[1:] if value.startswith(b" ") else value
