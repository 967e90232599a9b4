"""Whether a stream's text may hold a match of a policy's regexes: a reply screen for regex-finding policies (PII).

A policy that refuses a reply only for something one of its regexes finds
(the PII policy: each of Presidio's recognizers reports an entity only inside a
match of its pattern; phone numbers only inside a candidate of phonenumbers'
matcher) answers ALLOW on any text in which none of those regexes has a match.
Without a screen, a stream asked such a policy about the whole text so far at
every check: for PII a round trip to a worker process and Presidio over the
whole reply again, costly enough (milliseconds) that the check schedule
(``proxy/release.py``) fell back to a check every ``check_interval`` (50 ms), and
a streamed character waited for it, on top of the hold-back.

``PatternScreen`` (a ``term_screen.Screen``) reads each new piece of a channel's
text once, stepping each regex's DFA (``pattern_holdback.PatternDFA``: live
states only, a superset of what the regex matches) from every position, and
flags a piece in which some regex's match ends. Two threads in the same DFA
state have the same future, so a set of states per regex is all it keeps
between reads (and the last character, for a ``\\b`` a pattern begins with): the work per character is at most the number of live states, and
a character no match can begin with is skipped by ``re``'s search in C when no
thread is alive (prose with no ``@`` and no digit).

From the first match on, it flags every piece: the policy's answer may then
change with text that matches nothing new (a context word raising a number's
score, a longer match hiding a shorter one, a match that stops being one and
unhides another), and only the policy can tell. So a reply that holds an
e-mail address or a long number is checked as before from there on; one that
holds none is never asked about until the end of the stream (the final check
on the whole reply, before the event that ends it goes).

The hook reads a reply's text and thoughts joined by a line break (PII:
``f"{response}\\n{thoughts}"``); each channel is screened alone, so a screen is
made only for regexes none of whose matches can hold a line break
(``pattern_screen``): a match can then never straddle the two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

from capsem_proxyd.policies.pattern_holdback import PatternDFA, at_boundary


class PatternScreen:
    """One channel's screen for ``dfas``: ``feed(new_text)`` is True once a match of any of them has ended in the
    text so far (then for good). ``steps`` counts DFA transitions taken (linearity tests read it)."""

    __slots__ = ("dfas", "states", "matched", "steps", "last")

    def __init__(self, dfas: Iterable[PatternDFA]) -> None:
        self.dfas = tuple(dfas)
        self.states: list[set[int]] = [set() for _ in self.dfas]  # per DFA: the states of threads still alive
        self.matched = False
        self.steps = 0
        self.last = ""  # the last character read (what a ``\\b`` at a pattern's start looks behind at)

    def feed(self, new_text: str) -> bool:
        if self.matched:
            return True
        for index, dfa in enumerate(self.dfas):
            if self._read(index, dfa, new_text):
                self.matched = True
                return True
        if new_text:
            self.last = new_text[-1]
        return False

    def _read(self, index: int, dfa: PatternDFA, text: str) -> bool:
        """Step DFA ``index``'s threads through ``text``, a new one starting at each character; True when one
        reaches a state where a match ends."""
        initial = dfa.initial
        if initial < 0:
            return False
        symbols, other, step, finals, starts = dfa.symbols, dfa.other, dfa.step, dfa.finals, dfa.starts.search
        if initial in finals and text:
            return True  # it matches the empty string: anywhere
        word = dfa.word_start
        states = self.states[index]
        at, length = 0, len(text)
        while at < length:
            if not states:  # no thread alive: on to where one may begin
                found = starts(text, at)
                if found is None:
                    break
                at = found.start()
            if word is None or at_boundary(word, text[at - 1] if at else self.last, text[at]):
                states.add(initial)
            symbol = symbols.get(text[at], other)
            self.steps += len(states)
            states = {target for state in states if (target := step[state].get(symbol)) is not None}
            if states and not finals.isdisjoint(states):
                self.states[index] = states
                return True
            at += 1
        self.states[index] = states
        return False


def reads_line_breaks(dfa: PatternDFA) -> bool:
    """Whether a match of ``dfa`` may hold a line break (``"\\n"``, what the hook joins text and thoughts with)."""
    symbol = dfa.symbols.get("\n", dfa.other)
    return any(symbol in moves for moves in dfa.step)


def pattern_screen(dfas: Iterable[PatternDFA]) -> Callable[[], PatternScreen] | None:
    """What makes a channel's screen for ``dfas`` (picklable: a policy described in a worker process hands it
    over); None when a match of one may hold a line break (see the module docstring)."""
    dfas = tuple(dfas)
    if any(reads_line_breaks(dfa) for dfa in dfas):
        return None
    return partial(PatternScreen, dfas)
