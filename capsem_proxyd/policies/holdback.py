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
  one of them, in the text as a reader sees it (``normalize.readings``; a
  gap between a term's words counts once however long), usually nothing at
  all; and where bidi controls or marks reorder the text (visual order can
  put new text before old), everything from the first of them to the end of
  its paragraph (and on, while the paragraph as shown ends in a term's start);
* ``stream_holdback = Patterns(regexes)`` (``pattern_holdback.py``): the end of
  the text from the earliest start of a match of a regex still pending, usually
  nothing, whatever the regexes' width (a DFA per regex, read incrementally;
  ``raw`` for a policy that reads the text as written, the PII policy);
* ``stream_holdback = Combined(...)``: the most any of several declarations
  holds (the Rules policy: its terms, and its regexes).

Any object with a ``held(text) -> int`` method (characters of ``text``'s end
to hold) and a ``bound`` (the most it can hold, None for unbounded) works:
third-party CAPSEM policies declare theirs the same way, as an attribute of
the policy. The engine holds the maximum over the active policies. A declaration
with ``holds_only_pending = True`` holds only while a match is pending, so an
unbounded ``bound`` does not make the engine hold the cap instead; one with a
``tracker()`` method gives each channel its own incremental state (an object whose
``feed(new_text)`` answers what ``held`` would on the whole text so far).

What a stream asks is a **matcher** per channel (``Matcher``): it is fed the
channel's text as checks cover it (``feed(new_text)``) and answers a ``Scan``:
what it found, and the earliest start of a match still pending, before which
everything may go. ``HeldMatcher`` is today's declarations seen that way (the
text so far, the most any of them holds at its end); an incremental matcher
that finds as it reads (masking in replies) implements the same two lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from capsem_proxyd._compat import sre
from capsem_proxyd.policies.normalize import (
    BIDI_CONTROLS,
    GAP,
    GAP_MARK,
    KEEP_CASE,
    LOW_LINE,
    PARAGRAPH_SEPARATORS,
    PARAGRAPH_SEPARATORS_LIST,
    SPACED,
    fold,
    fold_with_offsets,
    gap_words,
    has_bidi_control,
    has_low_line,
    seen_length,
    visual_order,
)
from capsem_proxyd.policies.term_screen import TermScreen


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


class Term:
    """One literal term as every matcher compares it (see the module docstring of ``normalize``).

    Folded once. A term whose words a gap separates (``project falcon``, ``rm -rf``: whitespace or
    dash-like characters inside it) matches any gap a reader sees as one: a run of whitespace,
    dash-like and invisible characters (``project\\n\\tfalcon``, ``project-falcon``,
    ``project\\u200bfalcon``), looked for in the spaced readings, where invisible characters are
    ``GAP_MARK``. Inside a word they are still nothing (``pro\\u200bject``). A separator at either end
    of a term is literal. ``length``: the most a match of it is long, counted as ``seen_length`` does
    (a gap once, however long): what the stream hold-back and the seams between pieces count in.
    """

    __slots__ = ("text", "keep_case", "words", "length", "pattern", "loose_pattern")

    def __init__(self, term: str, *, keep_case: bool = False) -> None:
        self.keep_case = keep_case
        self.text = fold(term, keep_case=keep_case)
        self.words = gap_words(self.text)
        self.length = seen_length(self.text) if self.words else len(self.text)
        self.pattern: re.Pattern[str] | None = None
        self.loose_pattern: re.Pattern[str] | None = None
        if self.words:
            self.pattern = re.compile(f"{GAP}+".join(map(re.escape, self.words)))
            self.loose_pattern = re.compile(f"{GAP}+".join(map(_loose, self.words)))

    def found(self, folded: Sequence[str], spaced: Callable[[], Sequence[str]]) -> bool:
        """In one of a text's ``readings`` (``folded``), or for a gapped term one of its spaced ones."""
        if self.pattern is None or self.loose_pattern is None:
            return any(self.text in reading for reading in folded)
        for reading in spaced():
            pattern = self.loose_pattern if GAP_MARK in reading else self.pattern
            if pattern.search(reading) is not None:
                return True
        return False

    def prefix_pattern(self) -> str:
        """A regex of every proper beginning of a match of this gapped term (without the anchor)."""
        assert self.words is not None
        tokens: list[str] = []
        for number, word in enumerate(self.words):
            if number:
                tokens.append(f"{GAP}+")
            tokens.extend(re.escape(char) + _MARKS_AFTER for char in word)
        pattern = ""
        for token in reversed(tokens[1:-1]):
            pattern = f"(?:{token}{pattern})?"
        return tokens[0] + pattern

    def __repr__(self) -> str:
        return f"Term({self.text!r})"


_MARKS_AFTER = re.escape(GAP_MARK) + "*"


def _loose(word: str) -> str:
    """A word's letters with any invisible characters between them (in a spaced reading)."""
    return _MARKS_AFTER.join(map(re.escape, word))


class LiteralTerms:
    """Hold only the end of a text that could still become one of ``terms`` (compared as ``Term`` does).

    What is held is exact for each reading a term is compared in (``normalize.readings``):
    the folded text, its second reading where a combining low line is in it, and for a
    gapped term the spaced ones, where a gap of any length counts once. Visual order, where
    bidi controls are, is the channel's business (``HeldMatcher``): it can move any text.
    """

    reads_visual_order = True

    def __init__(self, terms: Iterable[str], *, keep_case: bool = False) -> None:
        self.keep_case = keep_case
        compiled = {(term := Term(text, keep_case=keep_case)).text: term for text in terms if text}
        self.terms = tuple(sorted(compiled, key=len))
        plain = [term.text for term in compiled.values() if term.words is None]
        gapped = [term for term in compiled.values() if term.words is not None]
        self.longest = max((term.length for term in compiled.values()), default=0)
        self.bound: int | None = max(0, self.longest - 1)
        # Every proper prefix of every plain term: a text's end that is one of these is a match in waiting.
        self._prefixes = {term[:size] for term in plain for size in range(1, len(term))}
        # Their last characters: an end whose last character is none of them begins no term (a token ending
        # in a space, most of a stream's ends) and is answered without trying each length.
        self._prefix_ends = frozenset(prefix[-1] for prefix in self._prefixes)
        self._gapped = (
            re.compile("(?:" + "|".join(term.prefix_pattern() for term in gapped) + r")\Z") if gapped else None
        )

    def held(self, text: str) -> int:
        """Raw characters at the end of ``text`` that may start a term; 0 when no match is pending."""
        if not (self._prefixes or self._gapped) or not text:
            return 0
        held = self.held_at_end(text[1 - self.longest:] if self.longest > 1 else "", len(text) < self.longest)
        if held is not None:
            return held
        window = max(4 * self.longest, 64)
        while True:
            tail = text[-window:]
            held = self._held(tail, len(tail) == len(text))
            if held is not None:
                return held
            window *= 4  # invisible padding or long gaps: the window must hold a term's worth of seen text

    def held_at_end(self, end: str, whole: bool) -> int | None:
        """What ``held`` answers for a text that ends with ``end`` (``whole``: is ``end``), told from that end
        alone; None when it cannot be (a gapped term, an end shorter than a term, or not ASCII).

        ASCII folds to itself lowered, one character for one: the pending beginning of a plain term (at
        most ``longest - 1`` characters) is in the text's last ``longest - 1`` characters as they are,
        whatever came before them, so a stream's channel need not join its whole text to ask.
        """
        if self._gapped is not None or not end.isascii():
            return None
        if len(end) < self.longest - 1 and not whole:
            return None
        end = end[1 - self.longest:] if self.longest > 1 else ""
        folded = end if self.keep_case else end.lower()
        if not folded or folded[-1] not in self._prefix_ends:  # ``_pending``'s first test, without its call
            return 0
        return self._pending(folded)

    def screen(self) -> TermScreen | None:
        """A channel's search for these terms, reading each new piece once (``term_screen.py``); None when
        a term has words a gap separates (found in the spaced readings, which a screen does not read)."""
        if self._gapped is not None:
            return None
        return TermScreen(self.terms, keep_case=self.keep_case)

    def _held(self, tail: str, whole: bool) -> int | None:
        """What ``tail`` holds, or None when it is too short to tell (and not the whole text)."""
        most = 0
        base = KEEP_CASE if self.keep_case else 0
        for mode in (0, LOW_LINE) if has_low_line(tail) else (0,):
            if self._prefixes:
                folded, offsets = fold_with_offsets(tail, mode=base | mode)
                if len(folded) < self.longest and not whole:
                    return None
                pending = self._pending(folded)
                if pending:
                    start = len(folded) - pending
                    most = max(most, len(tail) - (offsets[start] if offsets is not None else start))
            if self._gapped is not None:
                spaced, offsets = fold_with_offsets(tail, mode=base | mode | SPACED)
                if seen_length(spaced) < self.longest and not whole:
                    return None
                match = self._gapped.search(spaced)
                if match is not None:
                    start = match.start()
                    most = max(most, len(tail) - (offsets[start] if offsets is not None else start))
        return most

    def _pending(self, folded: str) -> int:
        """The length of the longest end of ``folded`` that is a proper prefix of a plain term."""
        if not folded or folded[-1] not in self._prefix_ends:
            return 0
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
        self.reads_visual_order = any(getattr(part, "reads_visual_order", False) for part in self.parts)
        bounds = [part.bound for part in self.parts]
        self.bound: int | None = None if None in bounds else max((b for b in bounds if b is not None), default=0)
        self.holds_only_pending = all(part.bound is not None or holds_only_pending(part) for part in self.parts)

    def held(self, text: str) -> int:
        return max((part.held(text) for part in self.parts), default=0)

    def __repr__(self) -> str:
        return f"Combined({self.parts})"


def holds_only_pending(holdback: object) -> bool:
    """An unbounded declaration that holds only while a match is pending: never replaced by the cap."""
    return getattr(holdback, "holds_only_pending", False) is True


class Tracker(Protocol):
    """One channel's incremental state for a declaration with ``tracker()`` (``pattern_holdback.Patterns``)."""

    def feed(self, new_text: str) -> int: ...


def regex_width(pattern: re.Pattern[str]) -> int | None:
    """The widest text ``pattern`` can match, or None when that is unbounded (``+``, ``*``, ``{n,}``).

    From the stdlib's own regex parser, the one ``re.compile`` runs
    (``re._parser``, read through ``_compat/sre.py``).
    """
    parsed = sre.parse(pattern.pattern, pattern.flags)
    _, widest = parsed.getwidth()
    return None if widest >= sre.MAXREPEAT else int(widest)




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
    the same ``held`` on the same whole text; and, for a declaration that reads
    visual order too (``LiteralTerms``), a paragraph with bidi controls or marks
    from the first of them (``_follow_visual_order``). Finds nothing itself: the
    policies' checks decide.
    """

    __slots__ = ("holdbacks", "trackers", "_parts", "_length", "_visual", "_reordered_from", "_looked_from", "_end",
                 "_readers")

    def __init__(self, holdbacks: Sequence[Holdback]) -> None:
        whole: list[Holdback] = []
        self.trackers: tuple[Tracker, ...] = tuple(_trackers(holdbacks, whole))
        self.holdbacks = tuple(whole)  # the declarations that read the whole text (no tracker of their own)
        # Each with its ``held_at_end`` (None: it reads the whole text), looked up once, not once per read.
        self._readers = tuple((holdback, getattr(holdback, "held_at_end", None)) for holdback in whole)
        self._parts: list[str] = []
        self._length = 0
        self._visual = tuple(reader for holdback in self.holdbacks for reader in _visual_readers(holdback))
        self._reordered_from: int | None = None  # the first bidi control of the paragraphs held for visual order
        self._looked_from = 0  # where to look for the end of those paragraphs
        self._end = ""  # the text's last ``_END`` characters: most declarations are answered from them

    def feed(self, new_text: str) -> Scan:
        if new_text:
            start = self._length
            self._parts.append(new_text)
            self._length += len(new_text)
            self._end = (self._end + new_text)[-_END:] if len(new_text) < _END else new_text[-_END:]
            if self._visual and (self._reordered_from is not None
                                 or (not new_text.isascii() and has_bidi_control(new_text))):
                self._follow_visual_order(start, new_text)
        most = 0
        for tracker in self.trackers:
            held = tracker.feed(new_text)
            if held > most:
                most = held
        if not self._length:
            return NOTHING_PENDING
        text: str | None = None
        for holdback, at_end in self._readers:
            told: int | None = at_end(self._end, self._length == len(self._end)) if at_end is not None else None
            if told is None:
                text = self._text() if text is None else text
                told = holdback.held(text)
            if told > most:
                most = told
        pending = self._length - most if most else None
        if self._reordered_from is not None and (pending is None or self._reordered_from < pending):
            pending = self._reordered_from
        return Scan(pending=pending) if pending is not None else NOTHING_PENDING

    def _text(self) -> str:
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0]

    def _follow_visual_order(self, start: int, new_text: str) -> None:
        """Visual order may show later text before earlier (an override still open shows new text first),
        so a paragraph is held from its first bidi control or mark to its end; then, once its visual
        order shows no beginning of a term at its end, it may go (the next paragraph is ordered alone)."""
        if self._reordered_from is None:
            self._reordered_from = self._looked_from = start + _first_bidi_control(new_text)
        while self._reordered_from is not None:
            closing = PARAGRAPH_SEPARATORS.search(new_text, max(0, self._looked_from - start))
            if closing is None:
                return
            end = self._looked_from = start + closing.end()
            text = self._text()
            opened = self._reordered_from
            paragraph = max(text.rfind(separator, 0, opened) for separator in PARAGRAPH_SEPARATORS_LIST) + 1
            shown = [visual_order(text[paragraph:end], rtl=rtl) for rtl in (False, True)]
            if any(holdback.held(order) for holdback in self._visual for order in shown):
                continue  # its end, as shown, may still begin a term: held until the next paragraph's end
            rest = new_text[closing.end():]
            self._reordered_from = end + _first_bidi_control(rest) if has_bidi_control(rest) else None
            self._looked_from = self._reordered_from or end


_END = 64  # characters of a channel's end kept apart (``LiteralTerms.held_at_end``: terms up to 65 long)


def _trackers(holdbacks: Iterable[Holdback], whole: list[Holdback]) -> Iterable[Tracker]:
    """A tracker per declaration that makes them (inside ``Combined`` too: it holds the most of its parts);
    the other declarations go to ``whole``."""
    for holdback in holdbacks:
        parts = getattr(holdback, "parts", None)
        make = getattr(holdback, "tracker", None)
        if isinstance(parts, list):
            yield from _trackers(parts, whole)
        elif callable(make):
            yield make()
        else:
            whole.append(holdback)


def _visual_readers(holdback: Holdback) -> Iterable[Holdback]:
    """The declarations inside ``holdback`` that read text in visual order too (``LiteralTerms``)."""
    parts = getattr(holdback, "parts", None)
    if isinstance(parts, list):
        for part in parts:
            yield from _visual_readers(part)
    elif getattr(holdback, "reads_visual_order", False):
        yield holdback


def _first_bidi_control(text: str) -> int:
    return min(index for index in (text.find(char) for char in BIDI_CONTROLS) if index >= 0)


class NoMatcher:
    """A channel no policy needs held: everything checked may go."""

    __slots__ = ()

    def feed(self, new_text: str) -> Scan:
        return NOTHING_PENDING
