"""The strings of a JSON text, each with where its decoded characters sit in the raw text.

Masking writes a placeholder over the raw characters of a value, inside the
string that carries it, and leaves every other character of the body as the
client sent it: no re-serialisation, which would change number spellings,
key order, spacing and escapes the provider (or a signature over the body)
may care about. So the decoded text a policy read must be mapped back to raw
positions. Most strings have no escape at all and map one to one; a string's
map (``JsonString.raw_index``) records a point only where an escape sits
(``\\n``, ``\\u0041``, a surrogate pair ``\\ud83d\\ude00``: each decodes to one
character from 2, 6 or 12 raw ones).

The scanner does not parse: it finds the strings of text the one parse
(``proxy/body.py``) already accepted, and ``strings_of`` lists the parse's own
strings in document order so that the two can be compared. Should they ever
differ, the request is refused rather than rewritten at the wrong place.

JSON inside a JSON string (OpenAI tool-call ``arguments``) is scanned the
same way over the outer string's decoded text; its positions go through the
outer string's map (``redaction/rewrite.py``).
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from json import decoder as _json_decoder
from typing import Any

# Outside a string a JSON text has no quote, inside one every quote is escaped: from the
# start, each quote found outside a string opens one string token (the text was accepted by the one parse).
# The json module's own string scanner (C), which ``json.loads`` uses: public in ``json.decoder`` since
# Python 2.6, though typeshed leaves it out. ``scanstring(text, index after the quote, strict)``.
scanstring: Callable[[str, int, bool], tuple[str, int]] = _json_decoder.scanstring  # type: ignore[attr-defined]
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})(?:\\u([0-9a-fA-F]{4}))?|(.))", re.DOTALL)
_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_COLON = re.compile(r"\s*:")


class ScanError(ValueError):
    """The text is not the JSON the scanner expects (an escape the parse would not accept)."""


@dataclass(slots=True)
class JsonString:
    """One string token: its decoded ``text``, where its contents sit in the raw text
    (``raw_start``..``raw_end``, quotes excluded), whether it is an object key, and its map.

    ``points`` are (decoded index, raw index) pairs at each escape and just after it; between two
    points, and before the first, characters map one to one. They are worked out when first asked
    for (``source``: the raw text, when the string holds an escape): only the strings a value is
    masked in need them, and a turn's tool results hold thousands of ``\\n``.
    """

    text: str
    raw_start: int
    raw_end: int
    key: bool
    source: str | None = field(default=None, repr=False)
    _points: list[tuple[int, int]] | None = field(default=None, repr=False)

    @property
    def points(self) -> list[tuple[int, int]]:
        if self._points is None:
            self._points = [] if self.source is None else _decode(
                self.source[self.raw_start:self.raw_end], self.raw_start)[1]
        return self._points

    def raw_index(self, index: int) -> int:
        """Where decoded position ``index`` (0..len(text)) sits in the raw text."""
        if self.source is None:
            return self.raw_start + index
        points = self.points
        at = bisect.bisect_right(points, (index, 1 << 62)) - 1
        if at < 0:
            return self.raw_start + index
        decoded, raw = points[at]
        return raw + (index - decoded)


def scan(raw: str) -> Iterator[JsonString]:
    """Every string token of the JSON text ``raw``, in document order.

    Each is decoded by the json module's own C string scanner (``scanstring``, as lenient as the
    scanner always was: a control character is taken as it is), from the quote ``str.find`` finds next:
    no regular expression walks the body character by character (a 230 kB agent turn: ~1 ms, against
    ~10 ms with a pattern and a decoder in Python)."""
    find, colon = raw.find, _COLON.match
    at = find('"')
    while at >= 0:
        start = at + 1
        try:
            text, end = scanstring(raw, start, False)
        except ValueError as error:  # an invalid escape or an unterminated string
            raise ScanError(str(error)) from None
        stop = end - 1
        yield JsonString(text, start, stop, colon(raw, end) is not None,
                         raw if len(text) != stop - start else None)
        at = find('"', end)


def _decode(body: str, offset: int) -> tuple[str, list[tuple[int, int]]]:
    """``body`` (a string's raw contents) decoded, and its map: a point at each escape and after it."""
    parts: list[str] = []
    points: list[tuple[int, int]] = []
    decoded = 0
    last = 0
    for escape in _ESCAPE.finditer(body):
        literal = body[last:escape.start()]
        parts.append(literal)
        decoded += len(literal)
        high, low, simple = escape.group(1), escape.group(2), escape.group(3)
        end = escape.end()
        if simple is not None:
            if simple not in _SIMPLE:
                raise ScanError(f"invalid escape \\{simple}")
            char = _SIMPLE[simple]
        else:
            first = int(high, 16)
            if low is not None:
                second = int(low, 16)
                if 0xD800 <= first < 0xDC00 and 0xDC00 <= second < 0xE000:
                    char = chr(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
                else:  # two escapes that are not a pair: the first alone, the second is decoded next
                    char = chr(first)
                    end = escape.start() + 6
            else:
                char = chr(first)
        points.append((decoded, offset + escape.start()))
        parts.append(char)
        decoded += 1
        points.append((decoded, offset + end))
        last = end
        if end != escape.end():
            # the second escape of a non-pair is decoded on its own
            tail_text, tail_points = _decode(body[end:], offset + end)
            parts.append(tail_text)
            points.extend((decoded + d, r) for d, r in tail_points)
            return "".join(parts), points
    parts.append(body[last:])
    return "".join(parts), points


def strings_of(value: Any) -> Iterator[str]:
    """The strings of a parsed JSON value (keys and values) in document order: what ``scan`` must find."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            for key, member in reversed(list(item.items())):
                stack.append(member)
                stack.append(key)
        elif isinstance(item, list):
            stack.extend(reversed(item))


def agrees(raw: str, parsed: Any) -> bool:
    """Whether the scanner reads exactly the parse's strings, in order (else nothing is rewritten)."""
    return scanned(raw, parsed) is not None


def scanned(raw: str, parsed: Any) -> list[JsonString] | None:
    """The string tokens of ``raw`` when they are exactly the parse's strings, in order; else None. One
    scan serves both the check and the rewrite (a 230 kB agent turn's strings were scanned twice)."""
    try:
        tokens = list(scan(raw))
    except ScanError:
        return None
    texts = strings_of(parsed)
    for token in tokens:
        if next(texts, None) != token.text:
            return None
    return tokens if next(texts, None) is None else None


def embedded(text: str) -> Any | None:
    """``text`` parsed when it is a JSON object or array (tool-call arguments), else None."""
    stripped = text.lstrip()
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def first_strings(body: Any) -> dict[int, int]:
    """For each object of ``body`` (by ``id``), the index in ``strings_of`` order of its first key: where the
    scan's strings of that object begin (signed blocks and logprobs entries are found by it)."""
    starts: dict[int, int] = {}
    count = 0
    stack: list[Any] = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            count += 1
        elif isinstance(item, dict):
            starts[id(item)] = count
            for key, member in reversed(list(item.items())):
                stack.append(member)
                stack.append(key)
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return starts
