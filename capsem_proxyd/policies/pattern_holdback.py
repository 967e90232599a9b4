"""Hold back exactly what could still become a match of a regex: ``Patterns``, a hold-back declaration.

A regex of unbounded width (``[a-z]+@[a-z]+\\.com``) has no "widest match" to
hold, so it used to hold the cap (``--stream-holdback``, 64 characters) all
the time: every stream waited ~0.5 s at a model's pace. What a stream must
hold is less: everything from the earliest position where a match could
still begin and be completed by more text, and nothing when no match is
pending (a reply without ``@`` holds nothing for the e-mail pattern, except
the word being written).

How, linearly on any input: each regex becomes a DFA (``dfa.build_dfa``: positions,
then only the states the start reaches; milliseconds per regex), keeping only the states from which a final
state can still be reached (*live*). The text is read once, a character at a
time; a match may begin at every position, so a thread starts at each, but two
threads in the same DFA state have the same future: only the earliest start is
kept per state. The work per character is at most the number of live states,
whatever the text (no backtracking), and the threads are kept between reads
(``PatternTracker``, one per channel): a read costs what its new text costs.

Safe means never holding less than a match needs; holding more is allowed, so
what the DFA library cannot express is made *bigger* (``_Translator``):

* the text is the one the Rules policy's regexes see (``normalize.visible``:
  invisible characters removed, then NFKC), read in *segments* that normalize
  alone (a segment starts at a character nothing before it composes with, e.g.
  any ASCII one); a thread that starts inside a segment counts from the
  segment's start, and the last segment, which the next text may still change
  (``e`` then a combining acute), is read again with each new piece; it is held
  from where a match could begin once a mark still to come composes with its
  last letter only if what that letter may become (``é``, ``ê``, ... for ``e``:
  Unicode's canonical compositions) can continue one;
* ``\\w``, ``\\d``, ``\\s`` (Unicode in Python) become their ASCII class plus every
  non-ASCII character; under ``IGNORECASE`` a class of ASCII characters takes its
  case twins and the four non-ASCII letters ``re`` matches to ASCII ones (``K``
  matches KELVIN SIGN): exactly what ``re`` takes; a class with a non-ASCII
  cased character takes every non-ASCII character;
* anchors, ``\\b``, lookarounds match the empty string (they only ever remove
  matches); a backreference matches any text; atomic and possessive forms read
  as ordinary ones (a superset); except a ``\\b`` a pattern begins with (all of
  Presidio's but the phone superset's), which a raw read honours exactly: a
  thread starts only where a word begins or ends (the character before and the
  one read decide it), so ``on `` of ``question `` is no IBAN being written;
* a repeat inside a repeat (``(?:[ -]?[A-Z0-9]{4}){2,6}``: counters the DFA
  multiplies) is refused, unless the DFA is built ``widened``: then such a
  repeat and every repeat around it lose their upper bound (``{4,}``,
  ``{2,}``: a superset, with few states), and a pending thread holds at
  most the pattern's own widest match minus one (``holdback.regex_width``,
  counted in the text as read): no match of the pattern began earlier;
* a pattern the translation or the library still refuses is not a ``Patterns``
  pattern: the Rules policy holds its widest match as before, or the cap when
  it is unbounded, and says so at start-up (``untranslatable``).

A declaration for a policy that reads the text as it is written (the PII
policy: Presidio's recognizers see the raw text) is built ``raw``: no
normalization, each character read once as it comes, nothing read again.
A raw read of many regexes (the Secrets policy's thirty-odd rules) looks for
where any of them may begin with one search (``StartIndex``: a character a
match can begin with, followed by one it can go on with or by the piece's
end) and steps only the DFAs alive or able to begin there: a streamed token
with no credential's beginning costs one search, not one per rule.
"""

from __future__ import annotations

import functools
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from capsem_proxyd._compat import sre
from capsem_proxyd.policies.dfa import TooLarge, build_dfa
from capsem_proxyd.policies.holdback import regex_width
from capsem_proxyd.policies.normalize import visible

# The stdlib's regex parser (the one ``re.compile`` runs; ``holdback.regex_width`` reads it too).

_ASCII = frozenset(map(chr, range(128)))
_ASCII_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_ASCII_DIGIT = frozenset("0123456789")
_ASCII_SPACE = frozenset(" \t\n\r\f\v\x1c\x1d\x1e\x1f")
# The non-ASCII characters an ASCII letter matches under IGNORECASE (the ``re`` docs: U+0130, U+0131, U+017F and
# U+212A; tests/policy/test_pattern_holdback.py checks every character), with the ASCII letters they match.
_ASCII_FOLDS = {"\u0130": frozenset("iI"), "\u0131": frozenset("iI"), "\u017f": frozenset("sS"),
                "\u212a": frozenset("kK")}
_WIDE_RANGE = 256  # a class range wider than this is read as its ASCII part plus every non-ASCII character
_LONG_TAIL = 256  # raw characters of a last segment read again with each new piece; longer, it is all held
_MOST_STATES = 20_000  # a DFA larger than this is refused (the pattern falls back)
# Seconds one pattern's DFA may take to build. A DFA can be exponentially larger than its pattern
# (``(a|b)*a(a|b){14}``: 2^15 states), and the build runs in ``check``, ``start`` and reload; past this budget
# the pattern falls back to its old hold instead of stalling the daemon's start.
_BUILD_SECONDS = 1.0


class CharSet:
    """A set of characters: ``chars`` or, when ``negated``, every character but ``chars``."""

    __slots__ = ("negated", "chars")

    def __init__(self, chars: Iterable[str], negated: bool = False) -> None:
        self.negated = negated
        self.chars = frozenset(chars)

    def union(self, other: CharSet) -> CharSet:
        if not self.negated and not other.negated:
            return CharSet(self.chars | other.chars)
        if self.negated and other.negated:
            return CharSet(self.chars & other.chars, True)
        finite, cofinite = (self, other) if other.negated else (other, self)
        return CharSet(cofinite.chars - finite.chars, True)

    def complement(self) -> CharSet:
        return CharSet(self.chars, not self.negated)

    def ignoring_case(self) -> CharSet:
        """A superset of what the set matches under ``IGNORECASE``; exactly that for a set of ASCII characters."""
        if self.negated:  # a cased character excluded may still match through a twin: excluded only with its twins
            return CharSet((char for char in self.chars if char.lower() == char.upper() or (
                char.isascii() and char.lower() in self.chars and char.upper() in self.chars)), True)
        if not any(char.lower() != char.upper() or not char.isascii() for char in self.chars):
            return self
        twins = {twin for char in self.chars for twin in (char, char.lower(), char.upper()) if len(twin) == 1}
        if self.chars <= _ASCII:  # exactly: the ASCII twins, and the four non-ASCII letters that match ASCII ones
            return CharSet(twins | {other for other, folds in _ASCII_FOLDS.items() if folds & twins})
        return CharSet(_ASCII - {char for char in twins if char.isascii()}, True)

    def regex(self) -> str:
        """The set as a character class ``build_dfa`` reads."""
        if not self.chars:
            return "[\\s\\S]" if self.negated else "(?!)"  # (?!): nothing (never emitted for a live set)
        body = "".join(_class_char(char) for char in sorted(self.chars))
        return f"[^{body}]" if self.negated else f"[{body}]"


def _class_char(char: str) -> str:
    if char.isascii() and not char.isalnum():
        return {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\f": "\\f", "\v": "\\v"}.get(char, "\\" + char)
    return char


_CATEGORIES = {
    "CATEGORY_DIGIT": CharSet(_ASCII - _ASCII_DIGIT, True),
    "CATEGORY_NOT_DIGIT": CharSet(_ASCII_DIGIT, True),
    "CATEGORY_SPACE": CharSet(_ASCII - _ASCII_SPACE, True),
    "CATEGORY_NOT_SPACE": CharSet(_ASCII_SPACE, True),
    "CATEGORY_WORD": CharSet(_ASCII - _ASCII_WORD, True),
    "CATEGORY_NOT_WORD": CharSet(_ASCII_WORD, True),
}


class Untranslatable(Exception):
    """The pattern has something ``_Translator`` has no safe reading of."""


class _Translator:
    """A Python regex as one ``build_dfa`` reads (classes, groups, repeats), whose language contains it
    (see the module docstring)."""

    def __init__(self, pattern: re.Pattern[str], *, widened: bool = False, unbounded: bool = False) -> None:
        self.parsed = sre.parse(pattern.pattern, pattern.flags)
        self.flags = self.parsed.state.flags
        self.widened = widened or unbounded  # a repeat inside a repeat loses its bound (and those around it)
        self.unbounded = unbounded  # every repeat of more than one loses its bound
        self.repeating = 0  # how many repeats the item being translated is inside
        self.inner_repeat = False  # whether the item being translated holds a repeat (of more than one)
        self.size = 0  # characters and classes, counting each copy a bounded repeat makes

    def translate(self) -> str:
        return self._sequence(self.parsed, self.flags)

    def starts_at_boundary(self) -> bool:
        """Whether the pattern begins with ``\\b``: a match can begin only where a word begins or ends."""
        items = list(self.parsed)
        return bool(items) and str(items[0][0]) == "AT" and str(items[0][1]) == "AT_BOUNDARY"

    def _sequence(self, items: Iterable[Any], flags: int) -> str:
        return "".join(self._item(op, arg, flags) for op, arg in items)

    def _item(self, op: Any, arg: Any, flags: int) -> str:
        name = str(op)
        if name in ("LITERAL", "NOT_LITERAL"):
            chars = CharSet([chr(arg)], negated=name == "NOT_LITERAL")
            return self._chars(chars, flags)
        if name == "ANY":
            return self._chars(CharSet([] if flags & re.DOTALL else ["\n"], True), flags)
        if name == "IN":
            return self._chars(self._in(arg), flags)
        if name == "BRANCH":
            return "(?:" + "|".join(self._sequence(branch, flags) for branch in arg[1]) + ")"
        if name == "SUBPATTERN":
            _, added, removed, inner = arg
            return "(?:" + self._sequence(inner, (flags | added) & ~removed) + ")"
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, inner = arg
            if self.repeating and high > 1 and not self.widened:
                raise Untranslatable("a repeat inside a repeat")  # the library's DFA can grow exponentially
            repeats = high > 1
            inside = self.repeating > 0
            self.repeating += repeats
            before, around = self.size, self.inner_repeat
            self.inner_repeat = False
            body = self._sequence(inner, flags)
            if self.widened and repeats and (inside or self.inner_repeat or self.unbounded):
                high = sre.MAXREPEAT  # a superset without the counters that multiply states
            most = "" if high >= sre.MAXREPEAT else str(high)
            self.size = before + (self.size - before) * max(1, min(high, low + 1))
            self.inner_repeat = around or repeats or self.inner_repeat
            self.repeating -= repeats
            return f"(?:{body}){{{low},{most}}}"
        if name == "ATOMIC_GROUP":
            return "(?:" + self._sequence(arg, flags) + ")"
        if name in ("AT", "ASSERT", "ASSERT_NOT"):
            return ""  # matches the empty string: only more matches
        if name == "GROUPREF":
            return "[\\s\\S]*"  # any text: a superset of what the group matched
        if name == "GROUPREF_EXISTS":
            _, yes, no = arg
            return "(?:" + self._sequence(yes, flags) + "|" + (self._sequence(no, flags) if no else "") + ")"
        raise Untranslatable(name)

    def _in(self, items: Sequence[Any]) -> CharSet:
        result = CharSet([])
        negate = False
        for op, arg in items:
            name = str(op)
            if name == "NEGATE":
                negate = True
            elif name == "LITERAL":
                result = result.union(CharSet([chr(arg)]))
            elif name == "RANGE":
                low, high = arg
                if high - low > _WIDE_RANGE:
                    part = CharSet(_ASCII - {chr(code) for code in range(low, min(high, 127) + 1)}, True)
                else:
                    part = CharSet(map(chr, range(low, high + 1)))
                result = result.union(part)
            elif name == "CATEGORY":
                category = _CATEGORIES.get(str(arg))
                if category is None:
                    raise Untranslatable(str(arg))
                result = result.union(category)
            else:
                raise Untranslatable(name)
        return result.complement() if negate else result

    def _chars(self, chars: CharSet, flags: int) -> str:
        self.size += 1
        if self.size > _MOST_STATES // 10:
            raise Untranslatable("too long")
        return (chars.ignoring_case() if flags & re.IGNORECASE else chars).regex()


class PatternDFA:
    """One pattern's DFA, live states only: ``step[state][symbol]`` (absent: dead), ``symbols`` per character,
    ``finals`` the states where a match ends.

    ``widened`` (see the module docstring): repeats inside repeats lose their bound instead of refusing the
    pattern; ``unbounded``: every repeat of more than one does (a pattern whose counters overlap on the same
    characters, like phonenumbers' candidate pattern, whose DFA takes minutes otherwise). ``widest`` is then
    the pattern's own widest match (None: unbounded), the most a thread may hold.
    """

    __slots__ = ("initial", "step", "symbols", "other", "longest", "grows_non_ascii", "widest", "starts", "finals",
                 "word_start")

    def __init__(self, pattern: re.Pattern[str], *, widened: bool = False, unbounded: bool = False) -> None:
        self.widest: int | None = None
        # A pattern that begins with ``\\b``: in a raw read, a thread starts only where ``\\b`` holds (the word
        # test its flags give it: ASCII or Unicode); None: anywhere. Anchors elsewhere read as the empty string.
        self.word_start: Callable[[str], bool] | None = None
        try:
            translator = _Translator(pattern, widened=widened, unbounded=unbounded)
            translated = translator.translate()
            if translator.starts_at_boundary():
                self.word_start = _ascii_word if pattern.flags & re.ASCII else _word
            fsm = build_dfa(translated, most_states=_MOST_STATES, deadline=time.thread_time() + _BUILD_SECONDS)
            if widened or unbounded:
                self.widest = regex_width(pattern)
        except TooLarge as error:
            raise Untranslatable(f"its DFA is too large to build ({error})") from None
        except (ValueError, RecursionError, OverflowError) as error:
            raise Untranslatable(type(error).__name__) from None
        live = _live_states(dict(enumerate(fsm.transitions)), fsm.finals)
        number = {state: index for index, state in enumerate(sorted(live))}
        self.initial = number.get(0, -1)
        self.step: list[dict[int, int]] = [{} for _ in number]
        for state, index in number.items():
            for symbol, target in fsm.transitions[state].items():
                if target in number:
                    self.step[index][symbol] = number[target]
        self.finals = frozenset(number[state] for state in fsm.finals if state in number)  # where a match ends
        self.symbols = dict(fsm.symbols)
        self.other = fsm.other
        self.longest = _longest_path(self.initial, self.step)  # the longest match (None: unbounded)
        if self.widest is not None and (self.longest is None or self.widest < self.longest):
            self.longest = self.widest
        self.starts = self._starts()
        # Per state: a non-ASCII character keeps it live (what a composed letter may become, see ``feed``).
        non_ascii = {self.other} | {symbol for char, symbol in self.symbols.items() if not char.isascii()}
        self.grows_non_ascii = [bool(non_ascii & moves.keys()) for moves in self.step]

    def _starts(self) -> re.Pattern[str]:
        """The characters a match can begin with, as a character class: where a raw read with no thread
        alive jumps to (``re``'s search, in C, instead of a step per character)."""
        return _class_search(self.start_chars())

    def start_chars(self) -> CharSet:
        """The characters a match can begin with (a thread leaves the initial state on them)."""
        return self._moving(self.initial) if self.initial >= 0 else CharSet(())

    def second_chars(self) -> CharSet:
        """The characters a thread begun one character earlier can go on with (``AKIA``: ``K``, ``S``, ...)."""
        if self.initial < 0:
            return CharSet(())
        found = CharSet(())
        for state in set(self.step[self.initial].values()):
            found = found.union(self._moving(state))
        return found

    def _moving(self, state: int) -> CharSet:
        """The characters on which ``state`` moves to a live state."""
        moves = self.step[state]
        if self.other in moves:  # every character the DFA has no symbol of moves it: all but those that do not
            return CharSet((char for char, symbol in self.symbols.items() if symbol not in moves), True)
        return CharSet(char for char, symbol in self.symbols.items() if symbol in moves)

    def may_continue(self, state: int, first: str) -> bool:
        """Whether a thread in ``state`` may live on through a text that starts with ``first``, or with what
        ``first`` becomes when a combining mark still to come composes with it (``e`` then U+0301 is ``é``;
        ``first`` empty: any text)."""
        if not first:
            return True
        moves, symbols, other = self.step[state], self.symbols, self.other
        if symbols.get(first, other) in moves:
            return True
        composed = _compositions().get(first)
        if composed is None:
            return False  # nothing composes with it
        if first in _HANGUL_FIRSTS:
            return self.grows_non_ascii[state]  # a syllable: read as any non-ASCII character
        return any(symbols.get(char, other) in moves for char in composed)


def _class_search(chars: CharSet) -> re.Pattern[str]:
    """A search for one character of ``chars``."""
    return re.compile(_class_regex(chars))


def _pair_search(first: CharSet, second: CharSet) -> re.Pattern[str]:
    """A search for a character of ``first`` followed by one of ``second`` or by the end of the text."""
    return re.compile(f"{_class_regex(first)}(?={_class_regex(second)}|\\Z)")


def _class_regex(chars: CharSet) -> str:
    if chars.negated:
        return "[^" + "".join(map(re.escape, sorted(chars.chars))) + "]" if chars.chars else "(?s:.)"
    return "[" + "".join(map(re.escape, sorted(chars.chars))) + "]" if chars.chars else "(?!)"


class StartIndex:
    """Where a match of any of several DFAs can begin, found by one search instead of one per DFA.

    A raw read of a quiet stream (no thread alive: no credential being written) used to run each DFA's own
    start search (``PatternDFA.starts``) over each new piece: for the Secrets policy's thirty-odd rules, thirty
    searches and a Python loop around them per streamed event, most of a token's CPU in the proxy. ``search``
    looks for a character any of them can begin with followed by one any can go on with, or by the piece's
    end (the union of their start classes, then of their second classes: ``re``'s search in C); without one,
    no DFA can start a thread in the piece that lives past its first character, and none is stepped. With
    one, only the DFAs whose start class holds a character from there on are (``candidates``): ``by_char``
    names them for each character of a positive class, ``anywhere`` the DFAs whose class is negated (most
    characters start them); each jumps with its own pair search (``starts``) while it has no thread alive.
    Exact: a thread a search skips dies at its second character (holding nothing, and no state another
    thread could need), and a DFA left out has no character of its class in the piece (tests/policy/
    test_pattern_holdback.py checks both against every DFA stepped from every character, random patterns
    and the Secrets rules). Prose with an ``e`` no ``y`` follows starts no ``eyJ`` thread.
    """

    __slots__ = ("search", "by_char", "anywhere", "starts")

    def __init__(self, dfas: Sequence[PatternDFA]) -> None:
        union = seconds = CharSet(())
        by_char: dict[str, list[int]] = {}
        anywhere: list[int] = []
        starts = []
        for index, dfa in enumerate(dfas):
            chars, then = dfa.start_chars(), dfa.second_chars()
            starts.append(_pair_search(chars, then).search)
            union = union.union(chars)
            seconds = seconds.union(then)
            if chars.negated:
                anywhere.append(index)
            else:
                for char in chars.chars:
                    by_char.setdefault(char, []).append(index)
        self.search = _pair_search(union, seconds).search  # pickles: a bound method of a compiled pattern
        self.starts = tuple(starts)
        self.by_char = {char: tuple(indices) for char, indices in by_char.items()}
        self.anywhere = frozenset(anywhere)

    def candidates(self, text: str, start: int) -> set[int]:
        """The DFAs that may begin a match in ``text[start:]`` (``start``: where ``search`` found the first
        character any can begin with)."""
        found = set(self.anywhere)
        by_char = self.by_char
        for char in set(text[start:] if start else text):
            indices = by_char.get(char)
            if indices is not None:
                found.update(indices)
        return found


def _word(char: str) -> bool:
    """What ``\\w`` takes in a ``str`` pattern (Unicode): ``\\b`` holds between a word character and another."""
    return char.isalnum() or char == "_"


def _ascii_word(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char == "_")


def at_boundary(word: Callable[[str], bool], before: str, char: str) -> bool:
    """Whether ``\\b`` holds before ``char``, after ``before`` (empty: the text's start)."""
    return word(char) != (bool(before) and word(before))


def _longest_path(initial: int, step: Sequence[dict[int, int]]) -> int | None:
    """The most transitions a walk from ``initial`` through live states can take; None when it can loop."""
    if initial < 0:
        return 0
    longest: dict[int, int] = {}
    on_path: set[int] = set()

    def walk(state: int) -> int | None:  # the graph is at most _MOST_STATES deep: iterate, not recurse
        stack: list[tuple[int, list[int]]] = [(state, sorted(set(step[state].values())))]
        on_path.add(state)
        while stack:
            current, targets = stack[-1]
            if targets:
                target = targets.pop()
                if target in on_path:
                    return None
                if target not in longest:
                    on_path.add(target)
                    stack.append((target, sorted(set(step[target].values()))))
                continue
            stack.pop()
            on_path.discard(current)
            longest[current] = max((longest[target] + 1 for target in step[current].values()), default=0)
        return longest[state]

    return walk(initial)


def _live_states(transitions: dict[Any, dict[Any, Any]], finals: Iterable[Any]) -> set[Any]:
    """The states from which a final state can be reached."""
    back: dict[Any, set[Any]] = {}
    for state, moves in transitions.items():
        for target in moves.values():
            back.setdefault(target, set()).add(state)
    live = set(finals)
    todo = list(live)
    while todo:
        for source in back.get(todo.pop(), ()):
            if source not in live:
                live.add(source)
                todo.append(source)
    return live


class Patterns:
    """Hold from the earliest start of a match of any of ``patterns`` still pending, in ``visible`` text.

    ``bound``: the longest match of the (translated) patterns minus one, None when
    unbounded; unbounded, this declaration is still never replaced by the cap: it
    holds only while a match is pending (``holds_only_pending``). Each stream channel asks ``tracker()`` for its own
    incremental state; ``held(text)`` reads a whole text afresh.
    """

    holds_only_pending = True

    def __init__(self, patterns: Iterable[re.Pattern[str]], *, raw: bool = False) -> None:
        self.raw = raw  # the text as written (the PII policy's), not as ``visible`` reads it
        self._set(PatternDFA(pattern) for pattern in patterns)

    @classmethod
    def of(cls, dfas: Iterable[PatternDFA], *, raw: bool = False) -> Patterns:
        """From DFAs already built (the caller chose what to do with the patterns that have none)."""
        patterns = cls((), raw=raw)
        patterns._set(dfas)
        return patterns

    def _set(self, dfas: Iterable[PatternDFA]) -> None:
        self.dfas = tuple(dfas)
        self._index: StartIndex | None = None
        if not self.raw:  # the Unicode composition tables (~0.6 MiB), at load rather than on a stream's first
            _canonical_pairs()  # read; a raw read (Secrets, PII) never composes and never builds them
            _compositions()
        widths = [dfa.longest for dfa in self.dfas]
        self.bound: int | None = None if None in widths else max((w - 1 for w in widths if w is not None), default=0)

    def tracker(self) -> PatternTracker:
        if self._index is None:  # built once, shared by every channel's tracker
            self._index = StartIndex(self.dfas)
        return PatternTracker(self.dfas, raw=self.raw, index=self._index)

    def held(self, text: str) -> int:
        return self.tracker().feed(text)

    def __repr__(self) -> str:
        return f"Patterns({len(self.dfas)} regexes{', raw' if self.raw else ''})"


class PatternTracker:
    """One channel's threads for each DFA: ``feed(new_text)`` answers how many characters of the end to hold.

    ``steps`` counts DFA transitions taken (the adversarial test reads it). ``raw``: the text is read as it
    is written, each character once (no segments, no tail read again).
    """

    __slots__ = ("dfas", "threads", "committed", "tail", "steps", "raw", "last", "index", "alive")

    def __init__(self, dfas: Sequence[PatternDFA], *, raw: bool = False, index: StartIndex | None = None) -> None:
        self.dfas = tuple(dfas)
        self.threads: list[dict[int, int]] = [{} for _ in self.dfas]  # per DFA: live state -> earliest start
        # raw: where any DFA may begin a match (``StartIndex``), and the DFAs with a thread alive
        self.index = index if index is not None else StartIndex(self.dfas)
        self.alive: set[int] = set()
        self.committed = 0  # raw characters read for good
        self.tail = ""  # raw text after them: its last segment, which more text may still change
        self.steps = 0
        self.raw = raw
        self.last = ""  # raw: the last character read (what a ``\\b`` at a pattern's start looks behind at)

    def feed(self, new_text: str) -> int:
        if self.raw:
            first = self.index.search(new_text)
            if first is None and not self.alive:  # ``_feed_raw``'s quiet piece, without its call (one per event)
                self.committed += len(new_text)
                if new_text:
                    self.last = new_text[-1]
                return 0
            return self._feed_raw(new_text, first)
        tail = self.tail + new_text
        cut = _last_boundary(tail, len(self.tail))  # the old tail had none: look in the new text only
        if cut:
            self._read(tail[:cut], self.committed, self.threads)
            self.committed += cut
            tail = tail[cut:]
        self.tail = tail
        if len(tail) > _LONG_TAIL:  # a run of marks no boundary ends (hostile): not read again and again
            return len(tail) + self.committed - self._changeable("")
        threads = [dict(states) for states in self.threads] if tail else self.threads
        if tail:
            self._read(tail, self.committed, threads)
        end = self.committed + len(tail)
        earliest = min((start for states in threads for start in states.values()), default=end)
        if tail and _may_compose(tail):
            earliest = min(earliest, self._changeable(tail))
        return end - earliest

    def _feed_raw(self, new_text: str, first: re.Match[str] | None) -> int:
        """Read ``new_text`` for good; hold from the earliest start of a thread that may still complete a match.

        A widened DFA's thread may stand for several (one state keeps the earliest start of all that reach
        it): past its pattern's widest match the earliest can no longer complete one, but a later one may.
        Any match still pending began within the last ``widest - 1`` characters, so that is the most such a
        thread holds: no less than a match needs, and never more than the pattern's width.

        Only the DFAs with a thread alive, or that can begin a match in the new text (``StartIndex``: one
        search for all), are stepped; a quiet stream's piece costs one search, made by ``feed``, which answers
        such a piece itself (``first``: what that search found, None when nothing may start in the piece)."""
        offset = self.committed
        last = self.last
        alive = self.alive
        stepped = tuple(alive) if first is None else alive | self.index.candidates(new_text, first.start())
        starting = self.index.starts
        for index in stepped:  # each DFA through the whole text: fewer look-ups per character
            dfa = self.dfas[index]
            initial, symbols, other, step, word = dfa.initial, dfa.symbols, dfa.other, dfa.step, dfa.word_start
            starts = starting[index]
            states = self.threads[index]
            at, length = 0, len(new_text)
            while at < length:
                if not states:  # no thread alive: on to where one may begin
                    found = starts(new_text, at)
                    if found is None:
                        break
                    at = found.start()
                if initial not in states and (word is None or at_boundary(word, new_text[at - 1] if at else last,
                                                                           new_text[at])):
                    states[initial] = offset + at
                symbol = symbols.get(new_text[at], other)
                moved: dict[int, int] = {}
                for state, begun in states.items():
                    target = step[state].get(symbol)
                    if target is not None and (target not in moved or begun < moved[target]):
                        moved[target] = begun
                self.steps += len(states)
                states = moved
                at += 1
            self.threads[index] = states
            if states:
                alive.add(index)
            else:
                alive.discard(index)
        end = self.committed = self.committed + len(new_text)
        if new_text:
            self.last = new_text[-1]
        earliest = end
        for index in alive:
            dfa, states = self.dfas[index], self.threads[index]
            start = min(states.values())
            if dfa.widest is not None:
                start = max(start, end - dfa.widest + 1)
            earliest = min(earliest, start)
        return end - earliest

    def _changeable(self, tail: str) -> int:
        """The earliest start of a thread a change of ``tail`` may keep alive. A combining mark still to
        come may compose with the tail's last letter (``e`` then U+0301 is ``é``): what the tail reads
        as then starts with the same character or with a non-ASCII one, followed by anything."""
        first = visible(tail[:8])[:1] if tail else ""
        earliest = self.committed + len(tail)
        for dfa, states in zip(self.dfas, self.threads):
            for state, start in states.items():
                if start < earliest and dfa.may_continue(state, first):
                    earliest = start
            if dfa.initial >= 0 and dfa.may_continue(dfa.initial, first):
                earliest = min(earliest, self.committed)
        return earliest

    def _read(self, raw: str, offset: int, threads: list[dict[int, int]]) -> None:
        """Step every DFA's threads through ``raw`` (starting at raw position ``offset``), segment by segment."""
        for start, segment in _segments(raw, offset):
            for index, dfa in enumerate(self.dfas):
                states = threads[index]
                for char in segment:
                    if dfa.initial >= 0 and dfa.initial not in states:
                        states[dfa.initial] = start
                    symbol = dfa.symbols.get(char, dfa.other)
                    moved: dict[int, int] = {}
                    for state, begun in states.items():
                        target = dfa.step[state].get(symbol)
                        if target is not None and (target not in moved or begun < moved[target]):
                            moved[target] = begun
                    self.steps += len(states)
                    threads[index] = states = moved


def _segments(raw: str, offset: int) -> Iterable[tuple[int, str]]:
    """``raw`` in pieces that normalize alone: (raw start, the piece as ``visible`` reads it)."""
    if raw.isascii():
        for index, char in enumerate(raw):
            yield offset + index, char
        return
    begin = 0
    for index in range(1, len(raw) + 1):
        if index == len(raw) or _is_boundary(raw[index]):
            yield offset + begin, visible(raw[begin:index])
            begin = index


def _may_compose(segment: str) -> bool:
    """Whether a character still to come may compose with ``segment`` (a mark after ``e``, ``=``, ``가``)."""
    return any(char in _firsts() for char in visible(segment))


def _last_boundary(text: str, since: int = 0) -> int:
    """The last position > 0 (and >= ``since``) before which ``text`` normalizes the same whatever follows
    (0: none)."""
    for index in range(len(text) - 1, max(since, 1) - 1, -1):
        if _is_boundary(text[index]):
            return index
    return 0


def _is_boundary(char: str) -> bool:
    """Nothing before ``char`` composes with it or is reordered past it: a visible starter that is no
    composition's second part, and whose compatibility form starts with such a character."""
    if char.isascii():
        return True
    return _non_ascii_boundary(char)


@functools.lru_cache(maxsize=4096)
def _non_ascii_boundary(char: str) -> bool:
    if visible(char) == "" or unicodedata.combining(char):
        return False
    first = unicodedata.normalize("NFKD", char)[:1]
    return bool(first) and not unicodedata.combining(first) and char not in _seconds() and first not in _seconds()


def _seconds() -> frozenset[str]:
    """Every character that composes with the one before it: second parts of canonical pairs, Hangul V and T."""
    return _canonical_pairs()[1]


def _firsts() -> frozenset[str]:
    """Every character that composes with the one after it: first parts of canonical pairs, Hangul L and LV."""
    return _canonical_pairs()[0]


_HANGUL_FIRSTS = frozenset(chr(code) for code in range(0x1100, 0x1113)) | frozenset(
    chr(code) for code in range(0xAC00, 0xD7A4) if (code - 0xAC00) % 28 == 0)


@functools.cache
def _compositions() -> dict[str, frozenset[str]]:
    """Per character, what marks still to come may make of it: every character whose canonical decomposition
    begins with it (through compositions of compositions: ``ế`` from ``e``), as it reads (``visible``) and as
    it is; Hangul leading jamo and LV syllables map to themselves (``may_continue`` reads them as any
    non-ASCII character)."""
    base = {char: first for char, (first, _) in _pairs().items()}
    grown: dict[str, set[str]] = {first: {first} for first in _HANGUL_FIRSTS}
    for char in base:
        first = char
        while first in base:
            first = base[first]
        grown.setdefault(first, set()).update((char, visible(char)[:1] or char))
    return {first: frozenset(chars) for first, chars in grown.items()}


@functools.cache
def _canonical_pairs() -> tuple[frozenset[str], frozenset[str]]:
    """(first parts, second parts) of every canonical composition, from the running Python's ``unicodedata``."""
    firsts = {chr(code) for code in range(0x1100, 0x1113)}
    firsts |= {chr(code) for code in range(0xAC00, 0xD7A4) if (code - 0xAC00) % 28 == 0}  # LV syllables
    seconds = {chr(code) for code in range(0x1161, 0x1176)} | {chr(code) for code in range(0x11A8, 0x11C3)}
    for first, second in _pairs().values():
        firsts.add(first)
        seconds.add(second)
    return frozenset(firsts), frozenset(seconds)


@functools.cache
def _pairs() -> dict[str, tuple[str, str]]:
    """Every character with a canonical decomposition in two parts, and the parts (one scan of Unicode)."""
    pairs = {}
    for code in range(0x110000):
        decomposition = unicodedata.decomposition(chr(code))
        if decomposition and not decomposition.startswith("<"):
            parts = decomposition.split()
            if len(parts) == 2:
                pairs[chr(code)] = (chr(int(parts[0], 16)), chr(int(parts[1], 16)))
    return pairs
