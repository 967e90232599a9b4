"""Text as a reader sees it: the one normalization our own matchers compare.

A reader (the model, a human) reads ``ｃａｐｓｅｍ＿ｂｌｏｃｋ``, ``caps\\u00adem_block``,
``c\\u0301apsem_block`` and ``саpsem_block`` (Cyrillic с and а) as ``capsem_block``;
a plain ``in`` does not. :func:`fold` maps all of them to the same string, and
the matching rule is ``fold(term) in fold(text)``: term and text go through the
same function, so whatever it does, it does to both. Some text has more than
one reading (:func:`readings`, below); a term is in a text when it is in one.

What :func:`fold` does, per character (it is a per-character map, so
``fold(a + b) == fold(a) + fold(b)`` and ``fold(fold(t)) == fold(t)``):

1. compatibility decomposition (NFKD): fullwidth and mathematical letters,
   ligatures, superscripts, roman numerals, NBSP... become their plain forms,
   accented letters their base letter plus combining marks (where the
   decomposition holds no ASCII but TR39 reads the character as ASCII, the
   TR39 reading is taken instead: Greek lunate sigma ``ϲ`` decomposes to ``ς``
   but reads as ``c``);
2. invisible characters removed: format characters (category Cf: zero-width
   space and joiners, soft hyphen, BOM, bidi controls, tag characters) and the
   rest of Unicode's Default_Ignorable_Code_Point set (variation selectors,
   Hangul fillers, ...), and combining marks (Mn, Me), so ``é`` reads as ``e``.
   Marks go in every script: a kana's voicing mark too (``で`` folds like
   ``て``), and Hangul syllables compare as their jamo. That is consistent, as
   terms fold alike, but a term written in such a script matches a little more
   than a reader would;
3. confusables: a non-ASCII character that Unicode TR39 (confusables.txt)
   lists as a lookalike of ASCII text becomes that text, e.g. Cyrillic ``а``
   → ``a``, Greek ``Ρ`` → ``P``, Cherokee ``Ꭺ`` → ``A``, Arabic-Indic ``١`` → ``1``;
   a lookalike of a Latin small capital (Cyrillic ``в``, ``н``, ``т``, ``к``, ``м``,
   Greek ``τ``, ``κ``) becomes that letter;
4. named readings: a letter the Unicode name database names as a Latin letter
   with something on it (``LATIN SMALL LETTER O WITH STROKE`` ``ø``, ``... L WITH
   STROKE`` ``ł``, ``... C WITH HOOK`` ``ƈ``, ``... U BAR`` ``ʉ``, ``... BARRED O``
   ``ɵ``: 331 characters) or an enclosed one (negative squared ``🅲``, negative
   circled ``🅒``, parenthesized ``⒞``, whose NFKD is ``(c)``) becomes that letter,
   where steps 1 and 3 give no single ASCII letter; ``ˍ`` (modifier low macron)
   and ``‗`` (double low line, whose NFKD is a space and a mark) become ``_``.
   From the name database of the running Python (``unicodedata``), at import;
5. case folding (``str.casefold``, then ``lower`` so the result is stable):
   ``ß`` → ``ss``, ``Ж`` → ``ж``.

These repeat until the character no longer changes (casefolding can produce
something step 1 or 3 changes again). ASCII characters are only lowercased:
TR39 itself maps ``I``/``1`` → ``l``, ``0`` → ``O`` and ``m`` → ``rn``, which
would make every ASCII word something else. So for ASCII text
``fold(text) == text.lower()``, character for character.

Readings of TR39's ASCII classes. TR39 gives one prototype to characters that
look alike *including ASCII ones* (``I``, ``l``, ``1`` and ``|`` all have ``l``);
since we keep ASCII as it is, a non-ASCII lookalike needs one ASCII reading,
chosen by its Unicode category, so that it reads like the ASCII character it
imitates: a capital (Cyrillic ``І``, Greek ``Ι``) → ``I``, a digit (``١``) → ``1``,
a symbol (``∣``) → ``|``, other letters (Hebrew ``ו``) → ``l``; digits among the
``O``/``o`` lookalikes → ``0``; the ``rn`` class (lookalikes of ``m``) → ``m``;
``''`` (curly double quotes) → ``"``. Multi-letter prototypes (``æ`` → ``ae``) stay as
TR39 has them.

``keep_case=True`` is the same folding without step 5 (for case-sensitive
rules): fullwidth ``ＬＡＵＮＣＨ`` and Cyrillic capitals still read as ASCII
capitals, but ``launch`` does not read as ``LAUNCH``. A Latin small capital
reads as its lowercase letter either way.

Readings (:func:`readings`). One text can read two ways, and the matchers take
every one (a term found in any is found):

* a combining low line (or double low line, macron below) under a letter: an
  underlined word reads as the word (``c̲a̲p̲`` is ``cap``: the first reading,
  where the mark is nothing, like every mark), and a low line on its own reads as
  ``_`` (``capsem̲block`` is ``capsem_block``: the second, where it is ``_``);
* bidi controls (embeddings, overrides, isolates, directional marks): the text in logical
  order (what the model reads) and in visual order (what a person sees:
  ``U+202E kcolb_mespac U+202C`` shows ``capsem_block``), by :func:`visual_order`,
  a subset of the Unicode Bidirectional Algorithm (no maintained pure-Python
  implementation exists to use: ``python-bidi`` is a Rust extension now).

Text without those characters has one reading, computed as before: for it,
:func:`readings` costs :func:`fold` and a search of its non-ASCII characters.

Gaps (``spaced=True``, for terms of several words, ``holdback.Term``): the
same folding, but each invisible character becomes ``GAP_MARK`` instead of
nothing, so that a term's gap can match ``project\u200bfalcon`` while its words
still match ``pro\u200bject``; ``fold`` is the spaced fold without the marks. A
gap (``GAP``) is a run of whitespace, dash-like characters (category Pd, the
minus sign, and what they fold to) and marks; :func:`seen_length` counts each
gap once, the measure a term's length is in (for seams and the stream hold-back).

Why this data. The confusables come from ``confusable-homoglyphs`` (MIT, pure
Python, 145 kB wheel, maintained fork, last release 3.3.1 in 2024, widely
used): it ships TR39's confusables.txt as JSON. It has no character → skeleton
function (its JSON lists each pair in both directions), so the table is built
here at import, from its data file: a TR39 source character maps to exactly
one prototype and is itself nobody's prototype, so its list has exactly one
entry; only mappings whose prototype is ASCII (1,789 characters; they equal
the ASCII mappings of the raw confusables.txt) and the small-capital classes
(61 more) are used. The others were weighed: ``confusables`` (raw file, but unmaintained since
2021), ``disarm`` (whole-string API, 4.6 MB native module, beta), ``decancer-py``
(whole-string, transliterates whole scripts, applies the bidi algorithm),
PyICU's spoof checker (authoritative skeletons, but ICU is a large native
dependency and its skeletons rewrite ASCII too). TR39 does not list ``ø``,
``ł`` or ``ȼ`` as lookalikes of ``o``, ``l``, ``c`` (they are letters of their
own to it), nor ``⒞`` as ``c``; the named readings come from the Unicode
Character Database's names instead (``unicodedata``, no dependency), a reader
of a prompt in Latin script reading the letter under the stroke.

Cost. For pure ASCII text (``str.isascii`` is O(1) in CPython) fold is exactly
``str.lower``. Otherwise the text is split into ASCII runs (lowered in bulk)
and non-ASCII runs, whose characters go through a per-character table filled
on first sight (short runs are cached whole; both caches are bounded, so a
text with every code point in it costs time, not memory). Measured with
``uv run python bench/fold.py`` (best of 20 runs, CPython 3.11, the 2-core dev
VM with other suites running, load average 2):

==============================  =========  ======  ===================  ========
200,000 characters              str.lower  fold    fold_with_offsets    visible
==============================  =========  ======  ===================  ========
ASCII                           0.05 ms    0.05    0.05 (None)          0.0001
5% non-ASCII, scattered         0.4 ms     3.3     7.8                  3.3
Japanese                        0.45 ms    8.5     11                   1.9
==============================  =========  ======  ===================  ========

The mixed case is dominated by splitting into ~20,000 pieces (2 ms): its cost
grows with the number of non-ASCII runs, not with their length.
``fold_with_offsets`` spends about 3 ms of its 7.8 allocating the 200,000 ints.

The readings (issue 20) left ``fold`` as it was per character (the new named
readings are computed once per character, into the same tables) and add to
the Debug check only a search of the non-ASCII runs for the characters with a
second reading. Measured against the fold before them, interleaved, best of
40 runs, load average 3: ASCII 0.16 ms both; 5% non-ASCII 4.8 ms (was 4.5);
Japanese 12.5 ms (was 12.9, noise). Text with a second reading pays a second
fold; a Rules hook with a multi-word term folds once (spaced) for all its terms.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable
from functools import partial
from importlib.resources import files
from itertools import accumulate, repeat
from operator import itemgetter
from typing import TypeVar

__all__ = [
    "BIDI_CONTROLS", "GAP", "GAP_MARK", "KEEP_CASE", "LOW_LINE", "PARAGRAPH_SEPARATORS", "PARAGRAPH_SEPARATORS_LIST", "SPACED", "fold", "fold_with_offsets", "gap_words", "has_bidi_control",
    "has_low_line", "one_reading", "reads_at_least", "readings", "seen_length", "visible", "visual_order",
]

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): rendered as nothing.
# Most are also Cf or Mn; the list keeps the others (Hangul fillers are Lo, some are unassigned).
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)
# Planes holding every Cf character (checked against a full scan in the tests).
_CF_PLANES = (range(0x0000, 0x20000), range(0xE0000, 0xE1000))
_MARKS = frozenset({"Mn", "Me"})
_MAX_ROUNDS = 8  # a character is stable after 2 or 3; the bound only guards against a cycle
_CACHE_LIMIT = 1 << 16  # entries per table: a text using every code point costs time, not memory
_RUN_CACHE_LENGTH = 16  # non-ASCII runs up to this long are cached whole (é, ’, —, emoji...)
_NON_ASCII_RUNS = re.compile("([^\x00-\x7f]+)")
_Value = TypeVar("_Value")


def _invisible_pattern() -> re.Pattern[str]:
    """One character class of every invisible character: Cf and Default_Ignorable_Code_Point."""
    codes = {code for plane in _CF_PLANES for code in plane if unicodedata.category(chr(code)) == "Cf"}
    codes.update(code for low, high in _DEFAULT_IGNORABLE for code in range(low, high + 1))
    ranges: list[str] = []
    for code in sorted(codes):
        if ranges and ranges[-1][-1] == chr(code - 1):
            ranges[-1] = ranges[-1][0] + chr(code)
        else:
            ranges.append(chr(code))
    return re.compile("[" + "".join(re.escape(r[0]) + ("-" + re.escape(r[-1]) if len(r) > 1 else "") for r in ranges) + "]")


_INVISIBLE = _invisible_pattern()


def _clean(entry: str) -> str:
    # The JSON shows right-to-left characters between U+200E marks, as confusables.txt's comments do.
    return entry.replace("\u200e", "").replace("\u200f", "")


def _ascii_reading(char: str, prototype: str) -> str:
    """The ASCII a reader takes ``char`` for, given its TR39 ASCII prototype (see the module docstring)."""
    kind = unicodedata.category(char)
    if prototype == "l":
        if kind in ("Lu", "Lt"):
            return "I"
        return "1" if kind[0] == "N" else "|" if kind[0] in "SP" else "l"
    if prototype in ("O", "o") and kind[0] == "N":
        return "0"
    return {"rn": "m", "''": '"'}.get(prototype, prototype)


def _small_capital_letter(char: str) -> str | None:
    name = unicodedata.name(char, "") if len(char) == 1 else ""
    prefix = "LATIN LETTER SMALL CAPITAL "
    letter = name[len(prefix):] if name.startswith(prefix) else ""
    return letter.lower() if len(letter) == 1 and "A" <= letter <= "Z" else None


def _confusable_readings() -> dict[str, str]:
    """Non-ASCII character → the ASCII a reader takes it for, from TR39 (see the module docstring)."""
    raw = json.loads((files("confusable_homoglyphs") / "confusables.json").read_text(encoding="utf-8"))
    pairs: dict[str, list[str]] = {}
    for key, entries in raw.items():
        pairs.setdefault(_clean(key), []).extend(_clean(entry["c"]) for entry in entries)
    prototype_of: dict[str, str] = {}
    for char, others in pairs.items():
        if len(char) != 1 or char.isascii() or len(others) != 1 or others[0] == char:
            continue
        other = others[0]
        # A single entry both ways is a pair whose direction the JSON lost: used only when the
        # other side is ASCII (TR39 never maps an ASCII character to a lone non-ASCII one).
        if other.isascii() or pairs.get(other) != [char]:
            prototype_of[char] = other
    readings = {char: _ascii_reading(char, proto) for char, proto in prototype_of.items() if proto.isascii()}
    # Latin small capitals read as their letter, and so does a TR39 class holding one (Cyrillic в, ʙ,
    # Cherokee ᏼ). Each pair links a source to its prototype, so the linked groups are the classes;
    # the direction does not matter here.
    group: dict[str, str] = {}

    def root(node: str) -> str:
        group.setdefault(node, node)
        while group[node] != node:
            group[node] = group[group[node]]  # path halving
            node = group[node]
        return node

    for key, others in pairs.items():
        for other in others:
            group[root(key)] = root(other)
    classes: dict[str, set[str]] = {}
    for node in list(group):
        classes.setdefault(root(node), set()).add(node)
    for members in classes.values():
        letters = {letter for member in members if (letter := _small_capital_letter(member))}
        if len(letters) == 1 and not any(member.isascii() for member in members):
            letter = letters.pop()
            readings.update((m, letter) for m in members if len(m) == 1 and m not in readings)
    for low, high in ((0x1D00, 0x1D2B), (0x0250, 0x02AF), (0xA730, 0xA7FF)):
        for code in range(low, high + 1):
            letter = _small_capital_letter(chr(code))
            if letter:
                readings.setdefault(chr(code), letter)
    return readings


_READINGS = _confusable_readings()
# Blocks holding Latin letters with strokes, hooks, bars..., and enclosed (circled, squared, parenthesized) ones.
_LATIN_BLOCKS = (
    (0x0080, 0x024F), (0x0250, 0x02AF), (0x1D00, 0x1DBF), (0x1E00, 0x1EFF), (0x2460, 0x24FF),
    (0x2C60, 0x2C7F), (0xA720, 0xA7FF), (0xAB30, 0xAB6F), (0x1DF00, 0x1DFFF), (0x1F100, 0x1F1FF),
)
_LETTER_NAME = re.compile(
    r"LATIN (SMALL|CAPITAL) LETTER ([A-Z])(?: WITH .+| BAR)\Z"
    r"|LATIN (SMALL|CAPITAL) LETTER BARRED ([A-Z])\Z"
    r"|(?:NEGATIVE )?(?:CIRCLED|SQUARED|PARENTHESIZED) LATIN (SMALL|CAPITAL) LETTER ([A-Z])\Z"
)
# Spacing underscore lookalikes NFKD does not take to "_" (‗ even decomposes to a space and a mark).
_UNDERSCORES = "\u02cd\u2017"
# Combining marks that draw a low line under a letter: read as nothing (an underlined word reads as the word)
# and, in a second reading, as "_" (capsem̲block reads as capsem_block): see ``readings``.
_LOW_LINE_MARKS = frozenset("\u0331\u0332\u0333\u035f\ufe2d")
_NAMED: dict[str, str] = {}  # filled below, once _fold_round exists
# Folding modes (bit flags): case kept; combining low lines read as "_"; invisible characters kept as GAP_MARK.
KEEP_CASE, LOW_LINE, SPACED = 1, 2, 4
# What an invisible character becomes in the spaced reading: itself invisible, so no folded text holds it.
GAP_MARK = "\u200b"


def _named_readings() -> dict[str, str]:
    """Letters the Unicode name database names as a Latin letter with something on it, and underscore
    lookalikes, that neither NFKD nor TR39 take to ASCII (see the module docstring)."""
    readings: dict[str, str] = {}
    for low, high in _LATIN_BLOCKS:
        for code in range(low, high + 1):
            char = chr(code)
            match = _LETTER_NAME.match(unicodedata.name(char, ""))
            if match is None:
                continue
            case, letter = next((case, letter) for case, letter in zip(match.groups()[::2], match.groups()[1::2]) if letter)
            readings[char] = letter if case == "CAPITAL" else letter.lower()
    for char in _UNDERSCORES:
        readings[char] = "_"
    return readings


def _fold_round(text: str, mode: int) -> str:
    keep_case = bool(mode & KEEP_CASE)
    out: list[str] = []
    for whole in text:
        named = _NAMED.get(whole)
        if named is not None:
            out.append(named if keep_case else named.lower())
            continue
        decomposed = unicodedata.normalize("NFKD", whole)
        if decomposed != whole and whole in _READINGS and not any(char.isascii() for char in decomposed):
            decomposed = _READINGS[whole]  # Greek lunate sigma ϲ decomposes to ς, but reads as c
        for char in decomposed:
            if char.isascii():
                out.append(char if keep_case else char.lower())
            elif char in _LOW_LINE_MARKS and mode & LOW_LINE:
                out.append("_")
            elif unicodedata.category(char) in _MARKS:
                continue
            elif _INVISIBLE.match(char):
                if mode & SPACED:
                    out.append(GAP_MARK)
            elif (reading := _READINGS.get(char) or _NAMED.get(char)) is not None:
                out.append(reading if keep_case else reading.lower())
            else:
                out.append(char if keep_case else char.casefold().lower())
    return "".join(out)


def _fold_char(char: str, mode: int) -> str:
    """One non-ASCII character, folded until it no longer changes."""
    text = char
    for _ in range(_MAX_ROUNDS):
        folded = _fold_round(text, mode)
        if folded == text:
            break
        text = folded
    return text


def _is_one_ascii_letter(text: str) -> bool:
    return len(text) == 1 and text.isascii() and text.isalpha()


# A named reading where NFKD and TR39 give no single ASCII letter (Ɓ gives 'B, Ŀ gives L·, ⒜ gives (a)).
_NAMED.update((char, reading) for char, reading in _named_readings().items()
              if not _is_one_ascii_letter(_fold_char(char, KEEP_CASE)))


class _Table(dict[str, _Value]):
    """A dict that computes a missing entry and keeps it while there is room."""

    def __init__(self, compute: Callable[[str], _Value], cache_if: Callable[[str], bool] = lambda key: True) -> None:
        super().__init__()
        self._compute = compute
        self._cache_if = cache_if

    def __missing__(self, key: str) -> _Value:
        value = self._compute(key)
        if len(self) < _CACHE_LIMIT and self._cache_if(key):
            self[key] = value
        return value


def _short(run: str) -> bool:
    return len(run) <= _RUN_CACHE_LENGTH


# A folded non-ASCII run, and where it does not fold one character to one:
# (index in the run, number of characters that one folds to), empty when it does everywhere.
_Run = tuple[str, tuple[tuple[int, int], ...]]


class _Folder:
    """fold for one mode: ASCII runs in bulk, non-ASCII runs through the cached tables."""

    def __init__(self, mode: int) -> None:
        self.keep_case = bool(mode & KEEP_CASE)
        self.chars: _Table[str] = _Table(partial(_fold_char, mode=mode))
        self.runs: _Table[str] = _Table(self._fold_run, cache_if=_short)
        self.shaped_runs: _Table[_Run] = _Table(self._fold_shaped_run, cache_if=_short)

    def _fold_run(self, run: str) -> str:
        return "".join(map(self.chars.__getitem__, run))

    def _fold_shaped_run(self, run: str) -> _Run:
        pieces = list(map(self.chars.__getitem__, run))
        lengths = list(map(len, pieces))
        if lengths.count(1) == len(lengths):
            return "".join(pieces), ()
        return "".join(pieces), tuple((index, length) for index, length in enumerate(lengths) if length != 1)

    def _ascii(self, parts: list[str]) -> Iterable[str]:
        return parts if self.keep_case else map(str.lower, parts)

    def fold(self, text: str) -> str:
        if text.isascii():
            return text if self.keep_case else text.lower()
        return self.fold_with_runs(text)[0]

    def fold_with_runs(self, text: str) -> tuple[str, list[str]]:
        """The folded text, and its non-ASCII runs as they were (what a second reading looks for)."""
        parts = _NON_ASCII_RUNS.split(text)  # ASCII, non-ASCII, ASCII, ..., ASCII
        runs = parts[1::2]
        parts[0::2] = self._ascii(parts[0::2])
        parts[1::2] = map(self.runs.__getitem__, runs)
        return "".join(parts), runs

    def fold_with_offsets(self, text: str) -> tuple[str, list[int] | None]:
        if text.isascii():
            return (text if self.keep_case else text.lower()), None
        parts = _NON_ASCII_RUNS.split(text)
        ends = list(accumulate(map(len, parts)))
        runs = list(map(self.shaped_runs.__getitem__, parts[1::2]))
        parts[0::2] = self._ascii(parts[0::2])
        parts[1::2] = map(itemgetter(0), runs)
        folded = "".join(parts)
        offsets: list[int] = []
        position = 0
        for number, (_, shape) in enumerate(runs):
            start = ends[2 * number]  # the run follows ASCII part number 2 * number
            for index, count in shape:
                at = start + index
                offsets.extend(range(position, at))
                offsets.extend(repeat(at, count))
                position = at + 1
        if position == 0:
            return folded, None
        offsets.extend(range(position, len(text)))
        return folded, offsets


_FOLDERS = [_Folder(mode) for mode in range(8)]  # indexed by mode; a table fills only once its mode is used


def fold(text: str, *, keep_case: bool = False) -> str:
    """``text`` as a reader sees it (see the module docstring); match with ``fold(term) in fold(text)``.

    ``keep_case=True`` skips case folding, for case-sensitive terms.
    """
    return _FOLDERS[KEEP_CASE if keep_case else 0].fold(text)


def fold_with_offsets(text: str, *, keep_case: bool = False, mode: int = 0) -> tuple[str, list[int] | None]:
    """``fold(text)`` and, for each of its characters, the index in ``text`` it came from.

    The promise, with ``folded, offsets = fold_with_offsets(text)``: ``offsets`` is
    non-decreasing, and ``offsets[i]`` is the ``j`` whose ``fold(text[j])`` produced
    ``folded[i]`` (fold works per character, so ``folded`` is the concatenation of the
    ``fold(text[j])``). Hence ``folded[i:]`` is a suffix of ``fold(text[offsets[i]:])``:
    a term found at ``folded[i]`` is found again in the raw text from ``offsets[i]`` on,
    however many invisible characters were spread through it. Characters that fold to
    nothing (zero-width, soft hyphen, marks) have no entry.

    ``None`` stands for the identity, ``offsets[i] == i``: every character of ``text``
    folded to exactly one character. Pure ASCII text always gives ``None`` at the cost
    of ``str.lower``. ``mode`` (``LOW_LINE``, ``SPACED``, or'ed) folds as ``readings`` does.
    """
    return _FOLDERS[(KEEP_CASE if keep_case else 0) | mode].fold_with_offsets(text)


def readings(text: str, *, keep_case: bool = False, spaced: bool = False) -> tuple[str, ...]:
    """Every way a reader may read ``text``, folded: a term is in the text when it is in one of them.

    Usually one: ``fold(text)``. Where the text holds a combining low line (or macron below),
    also the reading with it as ``_`` (``capsem̲block``), the first reading having it as nothing
    (an underlined word). Where it holds a bidi control or directional mark, also both in visual order
    (``visual_order``), in a left-to-right paragraph and in a right-to-left one. ``spaced=True``: invisible characters become ``GAP_MARK`` instead of
    nothing, for terms whose words a gap separates (``holdback.Term``). ASCII text: ``(text.lower(),)``.
    """
    base = (KEEP_CASE if keep_case else 0) | (SPACED if spaced else 0)
    if text.isascii():
        return (text if keep_case else text.lower(),)
    first, runs = _FOLDERS[base].fold_with_runs(text)
    non_ascii = "".join(runs)  # a twentieth of the text, typically: searched instead of all of it
    if _SECOND_READINGS.search(non_ascii) is None:
        return (first,)
    found = {match.group() for match in _SECOND_READINGS.finditer(non_ascii)}
    low_line = any(char in _LOW_LINE_MARKS for char in found)
    out = [first]
    if low_line:
        out.append(_FOLDERS[base | LOW_LINE].fold(text))
    if any(char not in _LOW_LINE_MARKS for char in found):
        for shown in (visual_order(text), visual_order(text, rtl=True)):
            out.append(_FOLDERS[base].fold(shown))
            if low_line:
                out.append(_FOLDERS[base | LOW_LINE].fold(shown))
    return tuple(dict.fromkeys(out))  # each distinct reading once


def has_bidi_control(text: str) -> bool:
    """Whether ``text`` holds a bidi embedding, override, isolate (or their ends) or directional mark."""
    return not text.isascii() and _BIDI_CONTROLS.search(text) is not None


def one_reading(text: str) -> bool:
    """Whether ``readings(text)`` is ``(fold(text),)`` alone: no bidi control, mark or low line in it."""
    return text.isascii() or _SECOND_READINGS.search(text) is None


def has_low_line(text: str) -> bool:
    """Whether ``text`` holds a combining low line (its second reading is ``LOW_LINE``)."""
    return not text.isascii() and _LOW_LINES.search(text) is not None


# -- gaps between words ------------------------------------------------------------------------------------------

def _dashes() -> str:
    chars = {chr(code) for low, high in ((0x0080, 0x2FFF), (0x3000, 0x33FF), (0xFE00, 0xFFFF))
             for code in range(low, high + 1) if unicodedata.category(chr(code)) == "Pd"}
    chars.update("-\u2212\u2043")
    chars = {char for char in chars if fold(char) != "="}  # double hyphens read as "="
    folded = {fold(char) for char in chars}
    return "".join(sorted(char for char in chars | folded if len(char) == 1 and not char.isalnum() and char != "="))


# A gap between words: whitespace, dash-like characters, and (in the spaced reading) invisible ones.
DASHES = _dashes()
GAP = "[\\s" + re.escape(DASHES) + GAP_MARK + "]"
_GAP_RUN = re.compile(GAP + "+")
_TWO_GAPS = re.compile(GAP + "{2}")  # where a run of gaps reads shorter than it is long
_INNER_GAP = re.compile("(?<=[^" + GAP[1:-1] + "])" + GAP + "+(?=[^" + GAP[1:-1] + "])")


def gap_words(folded_term: str) -> list[str] | None:
    """The words of a folded term that gaps separate (``project falcon`` → project, falcon), or None
    when it has no gap inside (leading and trailing separators are literal)."""
    words = _INNER_GAP.split(folded_term)
    return words if len(words) > 1 else None


def seen_length(folded: str) -> int:
    """The length of a folded (or spaced) reading with each gap counted once and invisible characters
    not at all: a term of this length matches at most this many of them (``project   falcon`` is 14)."""
    return len(_GAP_RUN.sub(" ", folded.replace(GAP_MARK, "")))


def reads_at_least(text: str, width: int) -> bool:
    """Whether ``text`` holds ``width`` characters as every matcher counts them (folded with gaps counted
    once, and visible): a window of it that wide holds any match that wide."""
    if len(text) < width:
        return False
    if text.isascii():  # folding keeps its length; only runs of gap characters read shorter
        return _TWO_GAPS.search(text) is None or len(_GAP_RUN.sub(" ", text)) >= width
    return seen_length(fold(text)) >= width and len(visible(text)) >= width


def reads_at_least_in(text: str, start: int, end: int, width: int, ascii: bool) -> bool:
    """``reads_at_least(text[start:end], width)`` without copying the stretch in the common case: ``ascii``
    says that ``text`` is ASCII (its caller knows it for the whole text), and a stretch of ASCII without two
    gap characters in a row reads as long as it is (the seams of a prompt ask this twice per joint)."""
    if end - start < width:
        return False
    if ascii and _TWO_GAPS.search(text, start, end) is None:
        return True
    return reads_at_least(text[start:end], width)


# -- visual order ------------------------------------------------------------------------------------------------

# Explicit bidi controls (embeddings, overrides, isolates, their ends) and the invisible directional marks
# (ALM, LRM, RLM: an RLM between two Latin words orders them from the right in a right-to-left paragraph).
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_BIDI_CONTROLS = re.compile("[" + BIDI_CONTROLS + "]")
_LOW_LINES = re.compile("[" + "".join(sorted(_LOW_LINE_MARKS)) + "]")
_SECOND_READINGS = re.compile("[" + BIDI_CONTROLS + "".join(sorted(_LOW_LINE_MARKS)) + "]")
PARAGRAPH_SEPARATORS_LIST = "\n\r\x1c\x1d\x1e\x85\u2029"  # bidi class B: each paragraph is ordered alone
PARAGRAPH_SEPARATORS = re.compile("[" + PARAGRAPH_SEPARATORS_LIST + "]")
_PARAGRAPHS = re.compile("([" + PARAGRAPH_SEPARATORS_LIST + "])")
# Opening controls: (opens a right-to-left level, forced direction or None, is an isolate).
_OPENERS = {
    "\u202a": (False, None, False), "\u202b": (True, None, False),  # LRE, RLE
    "\u202d": (False, "L", False), "\u202e": (True, "R", False),  # LRO, RLO
    "\u2066": (False, None, True), "\u2067": (True, None, True), "\u2068": (False, None, True),  # LRI, RLI, FSI
}
_STRONG = {"L": "L", "R": "R", "AL": "R", "EN": "N", "AN": "N"}  # N: a number; anything else is neutral
_MAX_DEPTH = 125


def visual_order(text: str, *, rtl: bool = False) -> str:
    """``text`` in the order it is displayed, where bidi controls or marks reorder it (else ``text``).

    A subset of the Unicode Bidirectional Algorithm (UAX #9), per paragraph, in a left-to-right
    paragraph (``rtl=True``: a right-to-left one; a display chooses, so both are read): explicit levels from the embeddings, overrides and isolates (X1-X10, with
    their limits), strong letters and numbers at their implicit levels (I1-I2), neutrals
    taking the direction of the strong characters around them when both agree, else the
    embedding's (N1-N2), and the reordering of runs by level (L2). Not done: the weak-type
    rules but W7 (a number after a Latin letter is left-to-right), bracket pairs (N0), mirroring.
    Embedding and override controls are dropped (X9), an isolate's ends stay where the outer
    level puts them; all fold to nothing. Checked beside the logical order, never instead of it.
    """
    if not has_bidi_control(text):
        return text
    parts = _PARAGRAPHS.split(text)
    parts[0::2] = (_visual_paragraph(part, 1 if rtl else 0) for part in parts[0::2])
    return "".join(parts)


def _visual_paragraph(text: str, paragraph_level: int) -> str:
    if _BIDI_CONTROLS.search(text) is None and not paragraph_level:
        return text
    chars, levels, kinds = _explicit_levels(text, paragraph_level)
    _resolve_neutrals(levels, kinds)
    for index, kind in enumerate(kinds):
        odd = levels[index] % 2
        if kind == "N":
            levels[index] += 1 if odd else 2
        elif (kind == "R") != bool(odd):
            levels[index] += 1
    return "".join(chars[index] for index in _reordered(levels))


def _explicit_levels(text: str, paragraph_level: int) -> tuple[list[str], list[int], list[str]]:
    """X1-X10: each character but the controls, its embedding level, and its kind (L, R, N: a number,
    "": neutral), an override's direction where one is in force."""
    stack: list[tuple[int, str | None, bool]] = [(paragraph_level, None, False)]
    chars: list[str] = []
    levels: list[int] = []
    kinds: list[str] = []
    for char in text:
        opener = _OPENERS.get(char)
        if opener is not None:
            rtl, override, isolate = opener
            level = stack[-1][0]
            if isolate:  # an isolate's ends stay, at the outer level, as neutrals: they part runs (X5a-X5c)
                chars.append(char)
                levels.append(level)
                kinds.append("")
            new = level + 1 if (level % 2 == 0) == rtl else level + 2
            stack.append((new if new <= _MAX_DEPTH else level, override if new <= _MAX_DEPTH else stack[-1][1], isolate))
            continue
        if char == "\u202c":  # PDF: ends the innermost embedding or override, not an isolate
            if len(stack) > 1 and not stack[-1][2]:
                stack.pop()
            continue
        if char == "\u2069":  # PDI: ends the innermost isolate and whatever is open inside it
            if any(entry[2] for entry in stack[1:]):
                while not stack[-1][2]:
                    stack.pop()
                stack.pop()
                chars.append(char)
                levels.append(stack[-1][0])
                kinds.append("")
            continue
        level, override, _ = stack[-1]
        chars.append(char)
        levels.append(level)
        kinds.append(override or _STRONG.get(unicodedata.bidirectional(char), ""))
    return chars, levels, kinds


def _reordered(levels: list[int]) -> list[int]:
    """L2: from the highest level down to the lowest odd one, each run at that level or higher reversed."""
    order = list(range(len(levels)))
    highest = max(levels, default=0)
    lowest_odd = min((level for level in levels if level % 2), default=highest + 1)
    for level in range(highest, lowest_odd - 1, -1):
        start = None
        for index in range(len(order) + 1):
            inside = index < len(order) and levels[order[index]] >= level
            if inside and start is None:
                start = index
            elif not inside and start is not None:
                order[start:index] = order[start:index][::-1]
                start = None
    return order


def _resolve_neutrals(levels: list[int], kinds: list[str]) -> None:
    """N1-N2: a run of neutrals between two strong types (numbers count as R) that agree takes theirs;
    otherwise the embedding direction. The run's edges see the embedding direction (sos/eos). Before them, W7."""
    size = len(kinds)
    strong, level = "", -1
    for index in range(size):  # W7: a number after a left-to-right letter (since the run's start) is one too
        if levels[index] != level:
            strong, level = ("R" if levels[index] % 2 else "L"), levels[index]
        if kinds[index] in ("L", "R"):
            strong = kinds[index]
        elif kinds[index] == "N" and strong == "L":
            kinds[index] = "L"
    index = 0
    while index < size:
        if kinds[index]:
            index += 1
            continue
        end = index
        while end < size and not kinds[end] and levels[end] == levels[index]:
            end += 1
        embedding = "R" if levels[index] % 2 else "L"
        before = kinds[index - 1] if index and levels[index - 1] == levels[index] else embedding
        after = kinds[end] if end < size and levels[end] == levels[index] else embedding
        before, after = ("R" if before == "N" else before), ("R" if after == "N" else after)
        resolved = before if before == after else embedding
        for position in range(index, end):
            kinds[position] = resolved
        index = end


def visible(text: str) -> str:
    """What the Rules policy's regexes see: invisible characters removed, then NFKC; case kept.

    Invisible: format characters (Cf) and Default_Ignorable_Code_Point. NFKC turns
    fullwidth and other compatibility forms into plain ones and composes ``e`` +
    combining acute into ``é``. No confusables and no case folding: a regex's own
    character classes and flags decide those. ASCII text is returned as is.
    """
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", _INVISIBLE.sub("", text))


_CLUSTER_MARKS = frozenset({"Mn", "Mc", "Me"})


def visible_with_places(text: str) -> tuple[str, list[int], list[int]] | None:
    """``visible(text)`` and, for each of its characters, the whole characters of ``text`` it was read
    from: ``starts[i]``..``ends[i]``; None when ``visible`` cannot be read character by character.

    A match a regex finds on the text as read is a place in the text as written only once it is widened
    to whole characters: a character of ``text`` and everything that reads as part of it (the combining
    marks after it, and invisible characters, which read as nothing) make one unit, read on its own
    (NFKC of the unit, invisibles removed); ``text[starts[s]:ends[e - 1]]`` then covers every character
    the read span ``[s, e)`` came from, trailing marks and invisibles included. Where NFKC joins units
    (Hangul jamo into syllables, a few compositions of two base characters) the readings of the units
    differ from ``visible(text)``: None, and the caller refuses rather than guess (fail closed).
    """
    read = visible(text)
    if read is text:
        return read, list(range(len(text))), list(range(1, len(text) + 1))
    units: list[int] = []  # where each unit starts in ``text``
    for index, char in enumerate(text):
        attached = unicodedata.category(char) in _CLUSTER_MARKS or _INVISIBLE.fullmatch(char) is not None
        if not units or not attached:
            units.append(index)
    units.append(len(text))
    parts: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for start, end in zip(units, units[1:]):
        reading = unicodedata.normalize("NFKC", _INVISIBLE.sub("", text[start:end]))
        parts.append(reading)
        starts.extend([start] * len(reading))
        ends.extend([end] * len(reading))
    if "".join(parts) != read:
        return None
    return read, starts, ends
