"""Masked values written over their raw characters in a JSON body; every other character kept.

The engine hands over *values* (what policies found, checked against the text
they read), not positions: the texts policies read are assembled by the
dialects (a message's strings joined, a tool result's parts, the seams between
pieces), so a position in them says little about where the value sits in the
body, while the value itself does. Masking by value is also what the issue
asks of the proxy: once a value is found anywhere in a request, every
occurrence of it in every string is replaced, in pieces the verdict cache
answered for too.

``mask_body`` walks the body's strings (``scanner.scan``) and, in each string
value, replaces every occurrence of every value (longest first, leftmost,
non-overlapping) and every token the tenant's memory knows (``known``), in the
string itself and in JSON inside it (tool-call ``arguments``); then writes each
placeholder over the raw characters the occurrence decodes from. It refuses
(``Unmaskable``) rather than forward a value: when the scanner's strings are
not the parse's, when a value sits in an object key, or when a value is found
nowhere (it came from a media item, a PDF's text, the query string, or crosses
from one string into the next in a way not rebuilt below).

Text-like media written as base64 (a Gemini ``inlineData`` of ``text/plain``,
an Anthropic base64 text document, a ``data:text/csv;base64,`` URL) has its
values masked in the decoded text, which is then encoded again the same way
(``_media``): the string is rewritten whole, every byte around it kept. A
string that does not decode to UTF-8 text (an image, audio, a PDF) is never
rewritten: a value found only there is refused.

A value that crosses the joint between two strings is masked where it is
read that way: a string's end, then (a ``"\\n"`` between them, where pieces
were joined, or nothing, where adjacent text parts were) whole strings and
the next string's beginning, in document order (``_across``); failing that
(a seam's finding), its first line is masked where it ends a string, its
last line where it starts one, and the lines between where they are a whole
string.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from capsem_proxyd.redaction.placeholder import PLACEHOLDER
from capsem_proxyd.redaction.scanner import JsonString, embedded, scanned

# A token the tenant's memory may know (a value masked in an earlier request, now bare): runs of the
# characters credentials are made of, at least 12 long, with base64's trailing padding.
TOKEN = re.compile(r"[A-Za-z0-9+/_.~-]{12,}={0,2}")
# A string that may be base64 media (optionally a data: URL's): at least 16 characters of the alphabet.
_BINARY = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_BASE64 = re.compile(r"(data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[\w.+-]+)*;base64,)?([A-Za-z0-9+/]{16,}={0,2})")


class Unmaskable(ValueError):
    """The body cannot be masked exactly; the request is refused (fail closed). The message never
    quotes a value."""


@dataclass(slots=True)
class Masked:
    """The body with the values masked, and how many places each placeholder took."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)


# (start, end, placeholder) in a string's decoded text
_Find = tuple[int, int, str]


def mask_body(
    raw: str, parsed: Any, values: Mapping[str, str], known: Callable[[str], str | None] | None = None,
    present: frozenset[str] | None = None,
) -> Masked:
    """``raw`` (the body the client sent, which parsed as ``parsed``) with each of ``values`` (value ->
    placeholder) and each token ``known`` has a placeholder for replaced. ``present``: every token ``known``
    may know in the body is one of these (a string holding none is not read token by token); None: any.
    Raises ``Unmaskable``."""
    tokens = scanned(raw, parsed)
    if tokens is None:
        raise Unmaskable("the body's strings could not be located exactly")
    finder = _Finder(values, known, present)
    finds: list[tuple[JsonString, list[_Find]]] = []
    media: dict[str, int] = {}
    for token in tokens:
        found = finder.spans(token.text)
        if token.key:
            if found:
                raise Unmaskable("a finding is in an object key, which is never rewritten")
            continue
        if not found and values and (encoded := _media(token.text, values, finder.seen, media)) is not None:
            found = [(0, len(token.text), encoded)]
        if found:
            finds.append((token, found))
    # a value inside another that was found (a seam's finding inside a piece's) was masked with it
    missing = [value for value in values
               if value not in finder.seen and not any(value in other for other in finder.seen)]
    if missing:
        finds = _rebuild_seams(missing, values, [token for token in tokens if not token.key], finds, finder)
    masked = Masked(raw)
    masked.text = _apply(raw, finds, masked.counts)
    for made, count in media.items():
        masked.counts[made] = masked.counts.get(made, 0) + count
    return masked


def mask_text(text: str, values: Mapping[str, str], known: Callable[[str], str | None] | None = None) -> str:
    """``text`` (a string as a policy reads it) with each of ``values`` (value -> placeholder) and each token
    ``known`` has a placeholder for replaced: the masked view a policy that cannot mask is given. A value
    found across the joint of two pieces (``"\\n"`` where they were joined) is masked on each side of
    ``text``'s edges too, as ``mask_body`` masks it across two strings."""
    finder = _Finder(values, known)
    found = finder._direct(text)
    for value, placeholder in values.items():
        if "\n" not in value or value in finder.seen:
            continue
        lines = value.split("\n")
        first, last = lines[0], lines[-1]
        if first and text.endswith(first):
            found.append((len(text) - len(first), len(text), placeholder))
        if last and text.startswith(last):
            found.append((0, len(last), placeholder))
        if text and text in lines[1:-1]:
            found.append((0, len(text), placeholder))
    if not found:
        return text
    out: list[str] = []
    last_end = 0
    for start, end, placeholder in _disjoint(found):
        out.append(text[last_end:start])
        out.append(placeholder)
        last_end = end
    out.append(text[last_end:])
    return "".join(out)


def _media(text: str, values: Mapping[str, str], seen: set[str], counts: dict[str, int]) -> str | None:
    """``text`` encoded again with the values masked in what it decodes to, when it is base64 (or a
    base64 data: URL) of UTF-8 text holding one of them; else None (binary media is never rewritten)."""
    match = _BASE64.fullmatch(text)
    if match is None:
        return None
    prefix, data = match.group(1) or "", match.group(2)
    try:
        decoded = base64.b64decode(data, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if base64.b64encode(decoded.encode("utf-8")).decode("ascii") != data:
        return None  # not the canonical encoding: re-encoding would change more than the values
    if decoded.startswith("%PDF") or _BINARY.search(decoded) or (prefix and "pdf" in prefix.lower()):
        return None  # a PDF (its text can be ASCII) or binary that happens to be UTF-8: never rewritten
    changed = decoded
    for value in sorted(values, key=len, reverse=True):
        if value in changed:
            counts[values[value]] = counts.get(values[value], 0) + changed.count(value)
            seen.add(value)
            changed = changed.replace(value, values[value])
    if changed == decoded:
        return None
    return prefix + base64.b64encode(changed.encode("utf-8")).decode("ascii")


class _Finder:
    """Finds the values (and the tokens ``known`` knows) in one string, and JSON inside it."""

    def __init__(
        self, values: Mapping[str, str], known: Callable[[str], str | None] | None,
        present: frozenset[str] | None = None,
    ) -> None:
        self.values = values
        self.known = known
        self.present = present
        ordered = sorted(values, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self.seen: set[str] = set()

    def spans(self, text: str) -> list[_Find]:
        inner = embedded(text)
        tokens = scanned(text, inner) if inner is not None else None
        if tokens is None:
            return _disjoint(self._direct(text))
        # JSON inside the string: a value is masked inside one of its strings, never across its syntax
        # (that would break the JSON the provider parses) nor inside one of its escapes.
        found = [find for find in self._direct(text, mark=False) if _inside(tokens, find)]
        for start, end, _ in found:
            self.seen.add(text[start:end])
        for token in tokens:
            for start, end, placeholder in self._direct(token.text):
                if token.key:
                    raise Unmaskable("a finding is in an object key, which is never rewritten")
                found.append((token.raw_index(start), token.raw_index(end), placeholder))
        return _disjoint(found)

    def _direct(self, text: str, mark: bool = True) -> list[_Find]:
        found: list[_Find] = []
        if self.pattern is not None:
            for match in self.pattern.finditer(text):
                if mark:
                    self.seen.add(match.group())
                found.append((match.start(), match.end(), self.values[match.group()]))
        if self.known is not None and (self.present is None or any(token in text for token in self.present)):
            for match in TOKEN.finditer(text):
                placeholder = self.known(match.group())
                if placeholder is not None:
                    found.append((match.start(), match.end(), placeholder))
        return found


def _inside(tokens: list[JsonString], find: _Find) -> bool:
    """Whether ``find`` (raw positions in a JSON text) lies in one string's contents without cutting an
    escape (one that does is no occurrence of the value: the inner strings are searched as decoded);
    across strings or syntax it cannot be masked without breaking the JSON: ``Unmaskable``."""
    start, end, _ = find
    for token in tokens:
        if token.raw_start <= start and end <= token.raw_end:
            if token.key:
                raise Unmaskable("a finding is in an object key, which is never rewritten")
            points = token.points
            return not any(
                points[index][1] < edge < points[index + 1][1] for index in range(0, len(points), 2) for edge in (start, end)
            )
        if token.raw_start > end:
            break
    raise Unmaskable("a finding spans the syntax of JSON inside a string")


def _disjoint(found: list[_Find]) -> list[_Find]:
    """The finds in order, each overlapping an earlier (or longer at the same start) one dropped."""
    found.sort(key=lambda find: (find[0], -find[1]))
    kept: list[_Find] = []
    for find in found:
        if kept and find[0] < kept[-1][1]:
            continue
        kept.append(find)
    return kept


def _rebuild_seams(
    missing: list[str], values: Mapping[str, str], strings: list[JsonString],
    finds: list[tuple[JsonString, list[_Find]]], finder: _Finder,
) -> list[tuple[JsonString, list[_Find]]]:
    """The finds with the values found nowhere whole masked line by line across string ends."""
    extra: dict[int, list[_Find]] = {}
    for value in missing:
        placed = _across(value, strings)
        if placed:
            for number, start, end in placed:
                extra.setdefault(number, []).append((start, end, values[value]))
            finder.seen.add(value)
            continue
        lines = value.split("\n")
        if len(lines) < 2:
            raise Unmaskable("a finding could not be located in the body (media, a document or the query)")
        placeholder = values[value]
        first, last, middle = lines[0], lines[-1], lines[1:-1]
        located = [False, False]
        for number, token in enumerate(strings):
            text = token.text
            if first and text.endswith(first):
                extra.setdefault(number, []).append((len(text) - len(first), len(text), placeholder))
                located[0] = True
            if last and text.startswith(last):
                extra.setdefault(number, []).append((0, len(last), placeholder))
                located[1] = True
            if text and text in middle:
                extra.setdefault(number, []).append((0, len(text), placeholder))
        if not all(located[index] or not part for index, part in enumerate((first, last))):
            raise Unmaskable("a finding across two strings could not be located in the body")
        finder.seen.add(value)
    merged = {id(token): (token, list(found)) for token, found in finds}
    for number, found in extra.items():
        token = strings[number]
        entry = merged.setdefault(id(token), (token, []))
        entry[1].extend(found)
    return [(token, _disjoint(found)) for token, found in sorted(merged.values(), key=lambda item: item[0].raw_start)]


def _across(value: str, strings: list[JsonString]) -> list[tuple[int, int, int]]:
    """Where ``value`` runs across strings as the model reads them: a string's end, then (``"\\n"`` between
    them or nothing: adjacent text parts are read side by side, pieces a line apart) whole strings and the
    next string's beginning, in document order; strings that are no part of it (a part's ``"type"``, a
    message's role) may sit between the parts (at most ``_SKIP`` in a row). Every such occurrence, as
    (string number, start, end); empty when there is none."""
    placed: list[tuple[int, int, int]] = []
    memo: dict[tuple[int, int], Any] = {}
    budget = _TRIES
    if len(value) < 2:
        return placed
    for number, token in enumerate(strings):
        text = token.text
        # value[:head] ends this string: it starts at one of the value's first character in the text's tail
        at = text.find(value[0], max(0, len(text) - len(value) + 1))
        while at >= 0:
            budget -= 1
            if budget < 0:
                raise Unmaskable("a finding across strings could not be located in the body within bounds")
            head = len(text) - at
            if value.startswith(text[at:]):
                rest = _continue(value[head:], strings, number + 1, memo)
                if rest is not None:
                    placed.append((number, at, len(text)))
                    placed.extend(rest)
                    break
            at = text.find(value[0], at + 1)
    return placed


_TRIES = 5_000  # places a value crossing strings may start at, tried at most (beyond: refused)
_SKIP = 4  # strings between two parts of a value that are no part of it
_PARTS = 200  # strings one value may run across (beyond: refused, as a value that cannot be located)


def _continue(
    rest: str, strings: list[JsonString], number: int, memo: dict[tuple[int, int], Any] | None = None,
    depth: int = 0,
) -> list[tuple[int, int, int]] | None:
    """The places of ``rest`` from string ``number`` on (see ``_across``), or None. ``memo``: the answers
    so far, by (length of the rest, string number), so that many short strings that each begin the rest
    (an adversary's one-character parts) cost one answer each, not a search of every way to combine them."""
    memo = {} if memo is None else memo
    if depth > _PARTS:
        return None
    if len(memo) > _TRIES:
        raise Unmaskable("a finding across strings could not be located in the body within bounds")
    known = memo.get((len(rest), number), memo)
    if known is not memo:
        return known
    answer: list[tuple[int, int, int]] | None = None
    options = [rest[1:], rest] if rest.startswith("\n") else [rest]
    for option in options:
        if not option:
            answer = []
            break
        for index in range(number, min(len(strings), number + _SKIP + 1)):
            text = strings[index].text
            if text and option.startswith(text) and len(text) < len(option):
                further = _continue(option[len(text):], strings, index + 1, memo, depth + 1)
                if further is not None:
                    answer = [(index, 0, len(text)), *further]
                    break
            if text.startswith(option):
                answer = [(index, 0, len(option))]
                break
        if answer is not None:
            break
    memo[(len(rest), number)] = answer
    return answer


def _apply(raw: str, finds: list[tuple[JsonString, list[_Find]]], counts: dict[str, int]) -> str:
    """``raw`` with each find's raw characters replaced by its placeholder."""
    out: list[str] = []
    last = 0
    for token, found in finds:
        for start, end, placeholder in found:
            raw_start, raw_end = token.raw_index(start), token.raw_index(end)
            out.append(raw[last:raw_start])
            out.append(placeholder)
            last = raw_end
            if PLACEHOLDER.fullmatch(placeholder):  # a media string encoded again counts its values itself
                counts[placeholder] = counts.get(placeholder, 0) + 1
    out.append(raw[last:])
    return "".join(out)
