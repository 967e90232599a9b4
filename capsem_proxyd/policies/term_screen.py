"""Literal terms found in a stream's text as it grows: each new piece read once, not the whole text again.

A stream is checked after nearly every upstream read (``proxy/release.py``),
and a check asked a policy about the choice's whole text so far: a reply of n
events cost n checks of growing text, and each check went through the engine
(the hook call, a decision, its metrics) even when nothing could be in it. For
a policy whose only reason to refuse a reply is a literal term (Debug's
marker), a ``TermScreen`` per channel reads each new piece of text once, plus
the last ``longest - 1`` characters before it (a term split between two reads
is found whole): a check costs what the new text costs, runs in the proxy's
process, and needs no cancel scope or deadline (it is bounded by the text it
is given). Only when it finds a term (or cannot tell, below) is the policy
itself asked, on the whole text as before, so every refusal is still the
policy's own decision.

Text is compared as the policies compare it: folded (``normalize.fold``), which
maps each character alone, so the folded text is the folded pieces end to end,
and a term is found in one reading. A text with a second reading (a bidi
control or mark: visual order may move any text; a combining low line) reads
otherwise as a whole; from the first such character on, the screen says it
cannot tell (``unsure``), and the policy is asked at every check of that
channel, as before.

Why not an Aho-Corasick automaton (``pyahocorasick``, ``ahocorasick-rs``): for
the few terms a stream screen holds (Debug: one), ``str.find`` over the new
text and a carried tail runs in C per term, and the carried tail keeps the
total linear in the reply (each character is read at most ``longest`` times
per term, a constant). A list of thousands of terms would want the automaton.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol

from capsem_proxyd.policies.normalize import fold, one_reading


class TermFound(NamedTuple):
    """A term found, ending ``end`` characters into the channel's folded text."""

    end: int
    term: str


class Screen(Protocol):
    """One channel's screen: fed each piece of the channel's text once, in order; True when the
    text so far may hold what a policy refuses (ask the policy), False when it cannot."""

    def feed(self, new_text: str) -> bool: ...


class TermScreen:
    """One channel's search for ``terms`` (already folded, as ``holdback.Term`` folds them)."""

    __slots__ = ("terms", "keep_case", "unsure", "found", "_keep", "_tail", "_folded")

    def __init__(self, terms: Iterable[str], *, keep_case: bool = False) -> None:
        self.terms = tuple(dict.fromkeys(term for term in terms if term))
        self.keep_case = keep_case
        self.unsure = False  # a second reading appeared: from here on, every check asks the policy
        self.found: list[TermFound] = []  # every occurrence so far, overlapping ones too, by end
        self._keep = max((len(term) for term in self.terms), default=1) - 1
        self._tail = ""  # the last ``_keep`` folded characters read
        self._folded = 0  # folded characters read

    def feed(self, new_text: str) -> bool:
        """Read ``new_text``; True when a term ends in it (or the screen cannot tell)."""
        if self.unsure or not new_text:
            return self.unsure
        if new_text.isascii():  # one reading, folded by lowering (``normalize.fold``), without the calls
            folded = new_text if self.keep_case else new_text.lower()
        elif not one_reading(new_text):
            self.unsure = True
            return True
        else:
            folded = fold(new_text, keep_case=self.keep_case)
        tail = self._tail
        text = tail + folded if tail else folded
        for term in self.terms:
            if term in text:  # maybe one ending in ``folded``: ``scan`` says
                return bool(self.scan(folded))
        # None is in the tail and the new piece together: what ``scan`` would keep, without its search.
        self._folded += len(folded)
        self._tail = text[-self._keep:] if self._keep else ""
        return False

    def scan(self, folded: str) -> list[TermFound]:
        """The occurrences of the terms that end in ``folded`` (the next folded piece of the text)."""
        tail = self._tail
        text = tail + folded if tail else folded
        base = self._folded - len(tail)  # where ``text`` starts in the channel's folded text
        found: list[TermFound] = []
        for term in self.terms:
            at = text.find(term)
            while at >= 0:
                end = at + len(term)
                if end > len(tail):  # ends in the new text: one wholly in the tail was found before
                    found.append(TermFound(base + end, term))
                at = text.find(term, at + 1)
        self._folded += len(folded)
        self._tail = text[-self._keep:] if self._keep else ""
        if found:
            found.sort()
            self.found.extend(found)
        return found


class ChannelScreens:
    """Several policies' screens over one channel: the text may hold a refusal when any says so."""

    __slots__ = ("screens",)

    def __init__(self, screens: Iterable[Screen]) -> None:
        self.screens = tuple(screens)

    def feed(self, new_text: str) -> bool:
        maybe = False
        for screen in self.screens:
            if screen.feed(new_text):  # every screen reads every piece: none may skip one
                maybe = True
        return maybe
