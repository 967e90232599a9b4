"""Where phonenumbers' matcher can find a number: the parts of a text its candidate scan would look at.

``phone_scan`` repeats the scan of ``PhoneNumberMatcher._find``: its
private ``_PATTERN`` finds a candidate, its private
``_SECOND_NUMBER_START_PATTERN`` trims it, the next search starts where the
candidate ended; ``_extract_match`` reads at most three characters past a
candidate (a time stamp's ``:ss``, its ``_TIME_STAMPS_SUFFIX``).
``phone_windows`` cuts a text into the parts around the candidates worth
parsing; running the matcher only on those parts finds the same numbers at the
same places (``tests/policy/test_pii_speed.py`` checks it on random text).

Which candidates are worth parsing, per region (``RegionPrefilter``): the
matcher accepts (leniency VALID and up) only a number ``is_valid_number``
accepts, whose national significant number matches the ``general_desc``
pattern of a region of its country code. Without a plus sign, a letter or a
non-ASCII character, a candidate's number has the country code of the region
the matcher parses for, unless its digits start with that region's
international prefix; and its national number is a run of the candidate's
digits (what is left once a country code, a national prefix or carrier code
and an extension are cut off, each only ever removing digits at either end; the
inner groups the matcher tries are runs of the same digits). So a candidate
whose digits hold neither the region's international prefix nor a run that
matches one of its country code's ``general_desc`` patterns can never be a
number of that region, and is not parsed for it: ``could_match`` is two
compiled searches where ``parse`` is a few hundred Python operations per
region. Every metadata the reasoning needs is checked at build time; a region
it does not hold for (no metadata, no pattern) gets no pre-filter.

What a stream must hold while a phone number may still be being written
(``candidate_superset``): every number the matcher finds lies inside a match of
its candidate pattern, ``_PATTERN``; but that pattern's overlapping bounded
counters (``\\d{1,20}`` blocks, ``{0,4}`` punctuation, extension forms) make
a DFA that takes minutes to build. Its superset: an optional lead (an opening
bracket or a plus sign, then its punctuation), a digit, then digits and
phonenumbers' ``_VALID_PUNCTUATION``, then optionally the characters of any
extension form followed by digits. The canary checks that every candidate the
pattern matches matches it.

One difference remains, on purpose: ``PhoneNumberMatcher`` stops after 65,535
failed tries in one text (its ``max_tries``, about 400 kB of source code);
ours starts a matcher per window and so keeps looking. It can only find more.

phonenumbers is pinned below its next minor release in pyproject.toml;
``tests/_compat/test_phonenumbers.py`` is the canary: it fails when either
pattern goes or ``_find`` / ``_extract_match`` scan differently, or ``parse`` /
``is_valid_number`` stop working the way the pre-filter relies on. It can go
when phonenumbers (or Presidio's phone recognizer) gets a cheap pre-filter of
its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from phonenumbers import PhoneMetadata
from phonenumbers.phonenumbermatcher import _PATTERN as _PHONE_CANDIDATE
from phonenumbers.phonenumberutil import (
    _SECOND_NUMBER_START_PATTERN,
    _VALID_PUNCTUATION,
    COUNTRY_CODE_TO_REGION_CODE,
    SUPPORTED_REGIONS,
    country_code_for_region,
)

READ_PAST_CANDIDATE = 3  # the matcher reads a time stamp's ":ss" after a candidate


def shortest_valid_number() -> int:
    """The fewest digits a valid phone number of any region has (its national number's shortest length)."""
    lengths = []
    for region in SUPPORTED_REGIONS:
        metadata = PhoneMetadata.metadata_for_region(region)
        described = metadata.general_desc if metadata is not None else None
        if described is None:
            return 1  # nothing known about a region: every candidate may be a number
        lengths += [length for length in described.possible_length or () if length > 0]
    return min(lengths, default=1)


@dataclass(frozen=True)
class PhoneCandidate:
    """One candidate of the matcher's scan: where the search that found it started, where it starts and
    ends, its text (trimmed as the matcher trims it), and whether it has the digits to be a number anywhere."""

    search_start: int
    start: int
    end: int  # of its match, untrimmed: the window must hold it all
    text: str
    long_enough: bool


def phone_scan(text: str, min_digits: int) -> list[PhoneCandidate]:
    """The candidates ``PhoneNumberMatcher._find`` looks at in ``text``, in order, as long as it finds no
    number (a number found inside a candidate makes it search on from there: the windows cover it)."""
    scan: list[PhoneCandidate] = []
    index = 0
    search = _PHONE_CANDIDATE.search
    while True:
        found = search(text, index)
        if found is None:
            break
        candidate = found.group()
        second = _SECOND_NUMBER_START_PATTERN.search(candidate)  # the matcher's own trim
        if second:
            candidate = candidate[:second.start()]
        end = found.start() + max(1, len(candidate))
        long_enough = len(_NOT_A_DECIMAL.sub("", candidate)) >= min_digits or _LETTER.search(candidate) is not None
        scan.append(PhoneCandidate(index, found.start(), max(end, found.end()), candidate, long_enough))
        index = end
    return scan


def windows_of(scan: list[PhoneCandidate], text_length: int,
               wanted: Callable[[PhoneCandidate], bool]) -> list[tuple[int, int]]:
    """The parts of a text the matcher must see to find what it finds in ``wanted`` candidates: from where
    the scan's search for each starts to three characters past the end of its match (the most the matcher
    reads after a candidate: a time stamp's ``:ss``), merged where they touch."""
    windows: list[tuple[int, int]] = []
    for candidate in scan:
        if not wanted(candidate):
            continue
        stop = min(text_length, candidate.end + READ_PAST_CANDIDATE)
        if windows and candidate.search_start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], max(windows[-1][1], stop))
        else:
            windows.append((candidate.search_start, stop))
    return windows


# The number types ``_number_type_helper`` tries after the general description: a valid number matches one.
NUMBER_TYPES = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail",
                "fixed_line", "mobile")
_NOT_A_DIGIT = re.compile(r"[^0-9]")
_DIGIT_RUN = re.compile(r"[0-9]+")
_NOT_A_DECIMAL = re.compile(r"\D")  # what _PATTERN's \d takes
_LETTER = re.compile(r"[^\W\d_]")
_NOT_PLAIN = re.compile(r"[^\x00-\x2a\x2c-\x40\x5b-\x60\x7b-\x7f]")  # '+', letters, non-ASCII


class RegionPrefilter:
    """Whether a candidate can hold a number the matcher accepts when it parses for ``region`` (module
    docstring): a plus sign, a letter or a non-ASCII character say "maybe" (the parse decides), else its
    digits must hold the region's international prefix or a run matching a ``general_desc`` pattern of
    its country code."""

    def __init__(self, region: str) -> None:
        self.region = region
        self._international: re.Pattern[str] | None = None
        self._national: re.Pattern[str] | None = None
        metadata = PhoneMetadata.metadata_for_region(region)
        if metadata is None or not metadata.international_prefix:
            return
        patterns = []
        for sharing in COUNTRY_CODE_TO_REGION_CODE.get(country_code_for_region(region), ()):
            described = PhoneMetadata.metadata_for_region(sharing)
            general = described.general_desc if described is not None else None
            if described is None or general is None or not general.national_number_pattern:
                return  # a region of the code with no pattern: anything may be valid there
            kinds = [kind.national_number_pattern for kind in (getattr(described, name) for name in NUMBER_TYPES)
                     if kind is not None and kind.national_number_pattern]
            if kinds:  # valid: the general pattern and one of a type's (_number_type_helper), on the same digits
                patterns.append(f"(?=(?:{general.national_number_pattern}))(?:{'|'.join(kinds)})")
        self._international = re.compile(metadata.international_prefix)
        self._national = re.compile("|".join(patterns) or "(?!)")  # no type anywhere: nothing is valid

    @property
    def filters(self) -> bool:
        return self._national is not None

    def wants(self, candidate: PhoneCandidate) -> bool:
        """Whether the matcher must see ``candidate`` for this region."""
        return candidate.long_enough and self.could_match(candidate.text)

    def could_match(self, candidate: str) -> bool:
        if self._national is None or self._international is None or _NOT_PLAIN.search(candidate):
            return True
        digits = _NOT_A_DIGIT.sub("", candidate)
        if self._national.search(digits) is not None:
            return True
        # A number's digits start where a run of the candidate's digits starts (parse skips what comes
        # before its first digit; the matcher's inner groups start after a non-digit).
        start = 0
        for run in _DIGIT_RUN.finditer(candidate):
            if self._international.match(digits, start) is not None:
                return True
            start += run.end() - run.start()
        return False


@cache
def region_prefilter(region: str) -> RegionPrefilter:
    return RegionPrefilter(region)


def phone_windows(text: str, min_digits: int) -> list[tuple[int, int]]:
    """The parts of ``text`` the phone matcher must see for any region: each candidate with ``min_digits``
    digits or more (or any letter)."""
    return windows_of(phone_scan(text, min_digits), len(text), lambda candidate: candidate.long_enough)


# Every character an extension form (``_EXTN_PATTERNS_FOR_MATCHING``: ";ext=", "ext.", "extensión", "ｘ", "#",
# "доб", "anexo", "int", ...) has before its digits, and their separators; case comes from IGNORECASE.
_EXTENSION_CHARS = " \\xa0\\t,\\-;=:\\.．#＃~～xｘeｅtｔnｎsioóaдобｉ"


def candidate_superset() -> re.Pattern[str]:
    """A pattern that matches every candidate the matcher's scan can find (module docstring), with few
    DFA states: what a stream holds back while a phone number may still be being written."""
    lead = "(\\[（［+＋"
    return re.compile(
        f"(?:[{lead}][{_VALID_PUNCTUATION}{lead}]*)?\\d[{_VALID_PUNCTUATION}\\d]*(?:[{_EXTENSION_CHARS}]*\\d+#?)?",
        re.IGNORECASE,
    )
