"""How much streamed text a policy needs held back: the declaration a policy makes for streams.

A stream is released to the client only as far as a check has covered it,
and not even that far: the end of what was checked may be the start of a
match the next chunk completes (``capsem_bl`` before ``ock``), and releasing
it would leak most of a secret before the match is seen. How much to hold
depends on what a policy can match, so a policy says it:

* ``stream_holdback = 11`` (an ``int``, or ``Fixed(11)``): no match of this
  policy is longer than 12 characters, so the last 11 are held;
* ``Visible(11)``: the same counted in characters a reader sees, for a
  policy that matches folded text (invisible characters between the letters
  of a match must not push its start out of the held tail);
* ``stream_holdback = None``, or no declaration at all: the policy may match
  text of any length; ``--stream-holdback`` characters (the cap) are held;
* ``stream_holdback = LiteralTerms(terms)``: the policy matches literal terms
  only; what is held is the longest end of the text that is the beginning of
  one of them, in the text as a reader sees it (``normalize.fold``), usually
  nothing at all;
* ``stream_holdback = Combined(...)``: the most any of several declarations
  holds (the Rules policy: its terms, and the widest of its regexes).

Any object with a ``held(text) -> int`` method (characters of ``text``'s end
to hold) and a ``bound`` (the most it can hold, None for unbounded) works:
third-party CAPSEM policies declare theirs the same way, as an attribute of
the policy. The engine holds the maximum over the active policies.

What a stream asks is a **matcher** per channel (``Matcher``): it is fed the
channel's text as checks cover it (``feed(new_text)``) and answers a ``Scan``:
what it found, and the earliest start of a match still pending, before which
everything may go. ``HeldMatcher`` is today's declarations seen that way (the
text so far, the most any of them holds at its end); an incremental matcher
that finds as it reads (masking in replies) implements the same two lines.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from capsem_proxyd.policies.normalize import fold, fold_with_offsets


class Holdback(Protocol):
    """A policy's stream declaration: how many characters at the end of a text it needs held."""

    bound: int | None  # the most ``held`` can answer (None: unbounded)

    def held(self, text: str) -> int: ...


class Fixed:
    """Hold the last ``chars`` characters: a policy whose matches are at most ``chars + 1`` long."""

    def __init__(self, chars: int) -> None:
        self.bound: int | None = max(0, chars)
        self.chars = max(0, chars)

    def held(self, text: str) -> int:
        return min(self.chars, len(text))

    def __repr__(self) -> str:
        return f"Fixed({self.chars})"


class Visible:
    """Hold the raw characters that make up the last ``chars`` characters a reader sees (``fold``)."""

    def __init__(self, chars: int) -> None:
        self.chars = max(0, chars)
        self.bound: int | None = self.chars

    def held(self, text: str) -> int:
        if not self.chars or not text:
            return 0
        window = max(4 * self.chars, 64)
        while True:
            tail = text[-window:]
            folded, offsets = fold_with_offsets(tail)
            if len(folded) >= self.chars:
                start = len(folded) - self.chars
                return len(tail) - (offsets[start] if offsets is not None else start)
            if len(tail) == len(text):
                return len(text)
            window *= 4  # invisible padding: the window must hold ``chars`` visible characters

    def __repr__(self) -> str:
        return f"Visible({self.chars})"


class LiteralTerms:
    """Hold only the end of a text that could still become one of ``terms`` (compared folded)."""

    def __init__(self, terms: Iterable[str], *, keep_case: bool = False) -> None:
        self.keep_case = keep_case
        self.terms = tuple(sorted({fold(term, keep_case=keep_case) for term in terms if term}, key=len))
        self.longest = max((len(term) for term in self.terms), default=0)
        self.bound: int | None = max(0, self.longest - 1)
        # Every proper prefix of every term: a text's end that is one of these is a match in waiting.
        self._prefixes = {term[:size] for term in self.terms for size in range(1, len(term))}

    def held(self, text: str) -> int:
        """Raw characters at the end of ``text`` that may start a term; 0 when no match is pending."""
        if not self._prefixes or not text:
            return 0
        window = max(4 * self.longest, 64)
        while True:
            tail = text[-window:]
            folded, offsets = fold_with_offsets(tail, keep_case=self.keep_case)
            if len(folded) < self.longest and len(tail) < len(text):
                window *= 4  # invisible padding: the window must hold a term's worth of visible text
                continue
            pending = self._pending(folded)
            if not pending:
                return 0
            start = len(folded) - pending
            raw_start = offsets[start] if offsets is not None else start
            return len(tail) - raw_start

    def _pending(self, folded: str) -> int:
        """The length of the longest end of ``folded`` that is a proper prefix of a term."""
        for size in range(min(self.longest - 1, len(folded)), 0, -1):
            if folded[-size:] in self._prefixes:
                return size
        return 0

    def __repr__(self) -> str:
        return f"LiteralTerms({len(self.terms)} terms, longest {self.longest})"


class Combined:
    """The most any of ``parts`` holds."""

    def __init__(self, parts: Iterable[Holdback]) -> None:
        self.parts = list(parts)
        bounds = [part.bound for part in self.parts]
        self.bound: int | None = None if None in bounds else max((b for b in bounds if b is not None), default=0)

    def held(self, text: str) -> int:
        return max((part.held(text) for part in self.parts), default=0)

    def __repr__(self) -> str:
        return f"Combined({self.parts})"


def regex_width(pattern: re.Pattern[str]) -> int | None:
    """The widest text ``pattern`` can match, or None when that is unbounded (``+``, ``*``, ``{n,}``).

    From the stdlib's own regex parser, the one ``re.compile`` runs
    (``re._parser``: a private module, so ``tests/policies/test_holdback.py``
    checks it still answers ``getwidth`` the way this reads it).
    """
    parsed = _REGEX_PARSER.parse(pattern.pattern, pattern.flags)
    _, widest = parsed.getwidth()
    return None if widest >= _MAXREPEAT else int(widest)


# The stdlib's regex parser and its "repeat without end" constant (no type stubs: private modules).
_REGEX_PARSER: Any = importlib.import_module("re._parser")
_MAXREPEAT: int = importlib.import_module("re._constants").MAXREPEAT


def declared(policy: object) -> Holdback | None:
    """A policy's declaration (``stream_holdback``); None when it has none or says unbounded."""
    value = getattr(policy, "stream_holdback", None)
    if value is None:
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Fixed(value)
    if callable(getattr(value, "held", None)) and hasattr(value, "bound"):
        return value
    return None


class Finding(NamedTuple):
    """What a matcher found in a channel's text: ``[start, end)`` in characters from the channel's start."""

    start: int
    end: int
    policy: str


@dataclass(frozen=True, slots=True)
class Scan:
    """A matcher's answer to new text: what it found, and where the earliest match still pending starts
    (characters from the channel's start; None: nothing pending, all the text fed may go)."""

    findings: tuple[Finding, ...] = ()
    pending: int | None = None


NOTHING_PENDING = Scan()


class Matcher(Protocol):
    """One channel's matcher: fed each piece of text once, in order, as checks cover it."""

    def feed(self, new_text: str) -> Scan: ...


class HeldMatcher:
    """Declarations that say how much of a text's end to hold (``Holdback``), as one channel's matcher.

    Keeps the channel's text (a declaration reads its end, and an end padded
    with invisible characters reaches back as far as it must) and answers the
    most any declaration holds, exactly what the engine held before matchers:
    the same ``held`` on the same whole text. Finds nothing itself: the
    policies' checks decide.
    """

    __slots__ = ("holdbacks", "_parts", "_length")

    def __init__(self, holdbacks: Sequence[Holdback]) -> None:
        self.holdbacks = tuple(holdbacks)
        self._parts: list[str] = []
        self._length = 0

    def feed(self, new_text: str) -> Scan:
        if new_text:
            self._parts.append(new_text)
            self._length += len(new_text)
        if not self._length:
            return NOTHING_PENDING
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        text = self._parts[0]
        most = 0
        for holdback in self.holdbacks:
            held = holdback.held(text)
            if held > most:
                most = held
        return Scan(pending=self._length - most) if most else NOTHING_PENDING


class NoMatcher:
    """A channel no policy needs held: everything checked may go."""

    __slots__ = ()

    def feed(self, new_text: str) -> Scan:
        return NOTHING_PENDING
