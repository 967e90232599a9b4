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
digits ending where a run of digits ends (what is left once a country code, a
national prefix or carrier code and an extension are cut off: the first two
only ever remove digits at the start, an extension (``_EXTN_PATTERN``) and the
trims start at a non-digit; the inner groups the matcher tries are runs of the
same digits). So a candidate whose digits hold neither the region's
international prefix nor such a run matching one of its country code's
``general_desc`` patterns (and a number type's) can never be a number of that
region, and is not parsed for it: ``could_match`` is a few compiled searches
where ``parse`` is a few hundred Python operations per region.

And one more rule, the one that turns away dates (``2024-09-04``) for Germany
and Israel: a number read in the region's national format (no plus, no
international prefix, no country code at the start of a raw input) must show
its national prefix when the format ``_choose_formatting_pattern_for_number``
picks for it requires one (``_is_national_prefix_present_if_required``, run by
every leniency from VALID up; the private ``_formatting_rule_has_first_group_only``
reads the rule). A raw input is the candidate or one of the matcher's inner
groups (``_INNER_MATCHES``), which start after a separator that is not an ASCII
hyphen alone; when no raw input's digits can start with the prefix
(``national_prefix_for_parsing``, a pattern without anchors or look-arounds, so
a match on a raw input is one on the digits that follow), the national number
must also be one that the first fitting format of the main region of its
country code does not require the prefix for (``formats_accepting_no_prefix``:
an atomic group picks that format, a conditional refuses it). Every metadata
the reasoning needs is checked at build time; a region it does not hold for (no
metadata, no pattern) gets no pre-filter. ``RegionSieve`` decides each
candidate text once for all regions (its digits' shape computed once) and
remembers it (dates and counts repeat).

The screen for all regions at once (``any_region_prefilter``), asked first for every plain candidate (one
``match`` for a run of digits alone): ``_starts_a_number`` finds a number only at most ``cut`` digits after a
raw start (``_cut_at_most``: the country code and two national prefixes, as wide as ``re`` reads their
patterns), and right at it in the national format (``without_prefix``) unless the code or a prefix starts
there; a valid number is also only as long as a length its regions list (``possible_length``, which
``_is_number_matching_desc`` checks first; a lookahead before each region's patterns). Nine candidates in ten
of a log or a CSV (ids, amounts, addresses, dates) are turned away there with no region's own check. A part
of a given length is matched against the alternation of only the regions whose part can be that long
(``length_screen``, ``RegionPrefilter.screened_lengths``: a length the region lists, plus at most ``cut``
digits): the 4- to 6-digit parts that fill a log are tried for Germany's numbers alone.

What a stream must hold while a phone number may still be being written
(``candidate_superset``): every number the matcher finds lies inside a match of
its candidate pattern, ``_PATTERN``; but that pattern's overlapping bounded
counters (``\\d{1,20}`` blocks, ``{0,4}`` punctuation, extension forms) make
a DFA that takes minutes to build. Its superset: an optional lead (an opening
bracket or a plus sign, then its punctuation), a digit, then digits and
phonenumbers' ``_VALID_PUNCTUATION``, then optionally the characters of any
extension form followed by digits. The canary checks that every candidate the
pattern matches matches it.

Where a valid national number can start (``RegionPrefilter._starts_a_number``,
asked once the search above says yes): ``parse`` reads a raw input's digits from
their start, cuts the region's country code there (``_maybe_extract_country_code``)
and national prefixes (``_maybe_strip_national_prefix_carrier_code``, at most
twice, a ``match`` on the digits up to the number's end; BR's transform rule keeps
a group that ends the match, so the number starts where it does); the number is
what is left up to the end of a run of digits. A log's addresses, amounts and
versions hold a valid number somewhere in their digits for some region (the
search above), rarely from one of those places; each one let through costs a
parse of the candidate and of each of its inner groups.

``region_matches`` follows the matcher's scan (``_find``) for one region over
the candidates of ``phone_scan`` and asks ``_extract_match`` (of one
``RememberingMatcher`` over the whole text) only about those the region must
see: no matcher per window, no second search for each candidate. When a number
ends inside its candidate (an inner group), it searches on from there as
``_find`` does until it meets a candidate of the scan again.

``RememberingMatcher`` remembers what ``_extract_match`` decides about a
candidate (per region and leniency, for every text) under what it reads: the
candidate, whether the character before it and the one after it are a Latin
letter or an invalid punctuation symbol (``refused_beside``, the only question
``_parse_and_verify`` asks of them; the three characters after it when it holds
a time stamp, ``_TIME_STAMPS``), and the tries (``_max_tries``) it used.

``RegionSieve.verdicts`` asks the sieve about a whole scan in one loop; only the
last settled number before each other match is given to the caller by
``region_matches`` (``PhoneRecognizer.analyze``'s explanation of a number it
cannot parse without a region names the region of the one before).

One difference remains, on purpose: ``PhoneNumberMatcher`` stops after 65,535
failed tries in one text (its ``max_tries``, about 400 kB of source code);
ours gives each candidate's decision all of them and so keeps looking. It can
only find more.

phonenumbers is pinned below its next minor release in pyproject.toml;
``tests/_compat/test_phonenumbers.py`` is the canary: it fails when either
pattern goes or changes (``phone_scan``'s ``lines`` rely on ``_PATTERN``
taking no newline and reading nothing around a match: its text is pinned),
or ``_find`` / ``_extract_match`` scan differently, or ``parse`` /
``is_valid_number`` / ``_is_national_prefix_present_if_required`` /
``_choose_formatting_pattern_for_number`` / ``_INNER_MATCHES`` /
``_EXTN_PATTERN`` stop working the way the pre-filter relies on. It can go
when phonenumbers (or Presidio's phone recognizer) gets a cheap pre-filter of
its own.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable
from functools import cache
from itertools import accumulate
from typing import Any, NamedTuple

from phonenumbers import NumberParseException, PhoneMetadata, PhoneNumberMatch, PhoneNumberMatcher, parse
from phonenumbers.phonenumbermatcher import _INNER_MATCHES, _LEAD_PATTERN, _SLASH_SEPARATED_DATES, _TIME_STAMPS
from phonenumbers.phonenumbermatcher import _PATTERN as _PHONE_CANDIDATE
from phonenumbers.phonenumberutil import (
    _EXTN_PATTERNS_FOR_MATCHING,
    _SECOND_NUMBER_START_PATTERN,
    _VALID_PUNCTUATION,
    COUNTRY_CODE_TO_REGION_CODE,
    SUPPORTED_REGIONS,
    _formatting_rule_has_first_group_only,
    country_code_for_region,
    region_code_for_country_code,
)

from capsem_proxyd._compat import sre

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


class PhoneCandidate(NamedTuple):
    """One candidate of the matcher's scan: where the search that found it started, where it starts and
    ends, its text (trimmed as the matcher trims it), and whether it has the digits to be a number anywhere.
    (A named tuple: a text of digits has tens of thousands.)"""

    search_start: int
    start: int
    end: int  # of its match, untrimmed: the window must hold it all
    text: str
    long_enough: bool


def phone_scan(text: str, min_digits: int, *, long_only: bool = False,
               lines: list[tuple[int, int]] | None = None) -> list[PhoneCandidate]:
    """The candidates ``PhoneNumberMatcher._find`` looks at in ``text``, in order, as long as it finds no
    number (a number found inside a candidate makes it search on from there: the windows cover it);
    ``long_only``: only those with the digits to be a number anywhere. The matcher searches on where the
    candidate, once trimmed, ends: where its match ends unless it was trimmed (then the scan starts a new
    ``finditer`` there). ``lines``: only the candidates in those parts of the text, each from a line's start
    (0 or after a newline) to a line's end (a newline or the text's end), in order: no candidate holds a
    newline (``_PATTERN`` takes none, and has no look-around), so the scan of the whole text searches from
    a line's start, or from before it with nothing found in between, and finds there what a scan from the
    line's start finds."""
    scan: list[PhoneCandidate] = []
    for begin, stop in [(0, len(text))] if lines is None else lines:
        _scan_lines(text, begin, stop, min_digits, long_only, scan)
    return scan


def lines_around(text: str, parts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The lines (``phone_scan``'s ``lines``) holding the characters from ``first`` to ``last`` (both included) of
    each of ``parts``, merged where they touch, in order."""
    lines: list[tuple[int, int]] = []
    for first, last in sorted(parts):
        if lines and lines[-1][0] <= first and last < lines[-1][1]:
            continue  # inside the last stretch, which ends at a newline past ``last``: nothing to add
        begin = text.rfind("\n", 0, max(0, first)) + 1
        stop = text.find("\n", min(len(text), max(0, last)))
        stop = len(text) if stop < 0 else stop
        if lines and begin <= lines[-1][1] + 1:
            lines[-1] = (lines[-1][0], max(lines[-1][1], stop))
        else:
            lines.append((begin, stop))
    return lines


def _scan_lines(text: str, index: int, stop_at: int, min_digits: int, long_only: bool,
                scan: list[PhoneCandidate]) -> None:
    """``phone_scan`` from ``index`` (a line's start) to ``stop_at`` (a line's end), into ``scan``."""
    enough = _enough_digits(min_digits).match
    letter = _LETTER.search
    append = scan.append
    new = tuple.__new__  # a PhoneCandidate without the Python frame of its generated __new__
    while True:
        restart = False
        for found in _PHONE_CANDIDATE.finditer(text, index, stop_at):
            candidate = found.group()
            if candidate.isdecimal():  # digits alone (most): not empty, nothing to trim (the trim's pattern needs an
                # "x"), no letter (\\d is Unicode's decimal digits, as isdecimal's)
                stop = found.end()
                if len(candidate) >= min_digits:
                    append(new(PhoneCandidate, (index, stop - len(candidate), stop, candidate, True)))
                elif not long_only:
                    append(new(PhoneCandidate, (index, stop - len(candidate), stop, candidate, False)))
                index = stop
                continue
            start, stop = found.span()
            end = stop if stop > start else start + 1  # where the matcher searches on (past an empty match)
            if "x" in candidate:  # the trim's pattern needs one (_SECOND_NUMBER_START_PATTERN: [\\/] *x)
                second = _SECOND_NUMBER_START_PATTERN.search(candidate)  # the matcher's own trim
                if second:
                    candidate = candidate[:second.start()]
                    end = start + max(1, len(candidate))
            if candidate.isdecimal():
                long_enough = len(candidate) >= min_digits
            else:
                long_enough = enough(candidate) is not None or letter(candidate) is not None
            if long_enough or not long_only:
                append(PhoneCandidate(index, start, max(end, stop), candidate, long_enough))
            index = end
            if end != stop:
                restart = True
                break
        if not restart:
            return


@cache
def _enough_digits(count: int) -> re.Pattern[str]:
    """Matches a text holding at least ``count`` decimal digits (``\\d``, as the candidate pattern's)."""
    return re.compile(r"(?:\D*\d){%d}" % count)


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
_DIGIT_RUN_SPLIT = re.compile(r"([0-9]+)")
_NOT_A_DECIMAL = re.compile(r"\D")  # what _PATTERN's \d takes
_LETTER = re.compile(r"[^\W\d_]")
_NOT_PLAIN = re.compile(r"[^\x00-\x2a\x2c-\x40\x5b-\x60\x7b-\x7f]")  # '+', letters, non-ASCII


class RegionPrefilter:
    """Whether a candidate can hold a number the matcher accepts when it parses for ``region`` (module
    docstring): a plus sign, a letter or a non-ASCII character say "maybe" (the parse decides), else its
    digits must hold the region's international prefix, or a valid national number of its country code
    ending where a run of digits ends; and when the number can only have been read as written in the
    region's national format without its national prefix, that number's format must not require one."""

    def __init__(self, region: str) -> None:
        self.region = region
        self._international: re.Pattern[str] | None = None
        self._national: re.Pattern[str] | None = None
        self._without_prefix: re.Pattern[str] | None = None
        self._national_prefix: re.Pattern[str] | None = None
        self._country_code = ""
        self._strips: list[tuple[re.Pattern[str], int | None]] | None = None  # national prefixes parse strips
        self.shortest = 0  # the fewest digits a valid number of the country code has (possible_length)
        self.longest: int | None = None  # the most (None: a region of the code lists no length)
        self.cut: int | None = None  # the most digits parse cuts before the national number (None: unknown)
        metadata = PhoneMetadata.metadata_for_region(region)
        if metadata is None or not metadata.international_prefix or metadata.country_code is None:
            return
        patterns = []
        lengths: list[int] = []
        longest: list[int | None] = []
        for sharing in COUNTRY_CODE_TO_REGION_CODE.get(country_code_for_region(region), ()):
            described = PhoneMetadata.metadata_for_region(sharing)
            general = described.general_desc if described is not None else None
            if described is None or general is None or not general.national_number_pattern:
                return  # a region of the code with no pattern: anything may be valid there
            possible = [length for length in general.possible_length or () if length > 0]
            lengths.append(min(possible, default=0))  # none listed: _is_number_matching_desc checks no length
            longest.append(max(possible, default=None))
            kinds = [kind.national_number_pattern for kind in (getattr(described, name) for name in NUMBER_TYPES)
                     if kind is not None and kind.national_number_pattern]
            if kinds:  # valid: the general pattern and one of a type's (_number_type_helper), on the same digits
                patterns.append(f"(?=(?:{general.national_number_pattern})\\Z)(?:{'|'.join(kinds)})\\Z")
        valid = "|".join(f"(?:{pattern})" for pattern in patterns) or "(?!)"  # no type anywhere: nothing is valid
        bounded = [length for length in longest if length is not None]
        if bounded and len(bounded) == len(longest):  # a valid number's length is one its region lists: first
            valid = f"(?=[0-9]{{{min(lengths)},{max(bounded)}}}\\Z)(?:{valid})"  # the cheap check of its length
        self._international = re.compile(metadata.international_prefix)
        self._national = re.compile(valid)
        self._country_code = str(metadata.country_code)
        self.shortest = min(lengths, default=0)
        self.longest = max(bounded) if bounded and len(bounded) == len(longest) else None
        main = PhoneMetadata.metadata_for_region(region_code_for_country_code(metadata.country_code))
        self._strips = _prefix_strips([metadata] if main is None else [metadata, main])
        self.cut = _cut_at_most(self._country_code, self._strips)
        self._without_prefix = self._national  # unless the main region's formats say more (below)
        if main is None:
            return  # _is_national_prefix_present_if_required accepts: no more to say
        self._national_prefix = _prefix_pattern(main.national_prefix_for_parsing)
        if self._national_prefix is None and main.national_prefix_for_parsing:
            return  # a prefix pattern we cannot reason about: the prefix may always be there
        self._without_prefix = re.compile(
            f"(?=(?:{valid})){formats_accepting_no_prefix(main.number_format, tag=region)}")

    @property
    def filters(self) -> bool:
        return self._national is not None

    def near_a_raw_start(self) -> str:
        """A pattern whose ``match`` at a raw start, on the digits up to the end of a run, succeeds wherever
        ``_starts_a_number`` finds a number from that raw start to that end (``any_region_prefilter``): a
        valid number right there (its national format's when neither the country code nor the national
        prefix starts there: ``without_prefix``; or when it is too short to hold them), or after at most
        ``cut`` digits when the code or a prefix ``parse`` strips starts there. With ``cut`` unknown (a rule
        keeping a group: ``_starts_a_number`` may say yes once ``plain_could_match``'s search found a valid
        number anywhere from the first raw start), a valid number anywhere from there."""
        national, without_prefix, strips = self._national, self._without_prefix, self._strips
        assert national is not None and without_prefix is not None
        prefix = self._national_prefix
        code_or_prefix = self._code_or_prefix()
        if not self._cut_near_start() or strips is None:  # (_cut_near_start: strips is not None)
            return f"[0-9]*?(?:{national.pattern})"
        heads = "|".join(f"(?:{pattern})" for pattern in [re.escape(self._country_code)] + (
            [prefix.pattern] if prefix is not None else []) + [strip.pattern for strip, _ in strips])
        return (f"(?=(?:{heads}))[0-9]{{0,{self.cut}}}?(?:{national.pattern})|(?:{without_prefix.pattern})"
                f"|(?=[0-9]{{0,{code_or_prefix - 1}}}\\Z)(?:{national.pattern})")

    def _code_or_prefix(self) -> int:
        """The most digits the country code or the national prefix can take at a raw start (``re``'s width)."""
        code_or_prefix = len(self._country_code)
        if self._national_prefix is not None:
            code_or_prefix = max(code_or_prefix, sre.parse(self._national_prefix.pattern).getwidth()[1])
        return code_or_prefix

    def _cut_near_start(self) -> bool:
        """Whether ``near_a_raw_start`` finds the valid number at most ``cut`` digits after the raw start (else
        anywhere after it)."""
        return self.cut is not None and self._strips is not None and self._code_or_prefix() < sre.MAXREPEAT - 1

    def screened_lengths(self) -> tuple[int, int | None]:
        """The fewest and the most digits (None: no most) of a part ``near_a_raw_start`` can match, from a raw
        start to the end of the part (``_screen_passes``' ``end - start``): every branch of it ends with a
        valid national number ending at the part's end, and when the region's lengths are all listed
        (``longest``) its valid pattern starts with the check that the number has ``shortest`` to ``longest``
        digits; the number starts right at the raw start or, in the first branch, at most ``cut`` digits after
        it (anywhere after it when that is not followed). With no lengths listed, any part may match."""
        if self.longest is None:
            return 0, None
        if not self._cut_near_start():
            return self.shortest, None
        assert self.cut is not None
        return self.shortest, self.longest + self.cut

    @property
    def signature(self) -> tuple[Any, ...]:
        """What ``plain_could_match`` reads: pre-filters with the same signature give the same verdicts."""
        return tuple(None if pattern is None else pattern.pattern for pattern in (
            self._international, self._national, self._without_prefix, self._national_prefix)) + (
            self._country_code, self.shortest,
            None if self._strips is None else tuple((pattern.pattern, group) for pattern, group in self._strips))

    def wants(self, candidate: PhoneCandidate) -> bool:
        """Whether the matcher must see ``candidate`` for this region."""
        return candidate.long_enough and self.could_match(candidate.text)

    def could_match(self, candidate: str, shape: DigitShape | None = None) -> bool:
        """``shape``: the candidate's ``DigitShape`` when it is plain (computed here when not given)."""
        if self._national is None or self._international is None or self._without_prefix is None or (
                _NOT_PLAIN.search(candidate)):
            return True
        return self.plain_could_match(DigitShape(candidate) if shape is None else shape)

    def plain_could_match(self, shape: DigitShape) -> bool:
        """``could_match`` of a plain candidate (no plus sign, letter or non-ASCII character), for a region
        that ``filters``."""
        national, international = self._national, self._international
        assert national is not None and international is not None
        digits = shape.digits
        if len(digits) < self.shortest:  # _is_number_matching_desc: a length general_desc lists, or invalid
            return False  # (an international prefix would only add digits)
        for start in shape.raw_starts:  # _maybe_strip_i18n_prefix_and_normalize: at a raw input's first digit
            if international.match(digits, start) is not None:
                return True  # an international call: any country's number may follow
        # Read as written in the region's own format (no plus, no international prefix): without a
        # country code or national prefix at the start of a raw input, the number is one a national
        # prefix must precede whenever its format asks for one (_is_national_prefix_present_if_required).
        prefix = self._national_prefix
        wanted = self._without_prefix
        for start in shape.raw_starts:
            if digits.startswith(self._country_code, start) or (
                    prefix is not None and prefix.match(digits, start) is not None):
                wanted = national
                break
        assert wanted is not None
        # Its national significant number ends where a run of digits ends (what follows it is an
        # extension, a trimmed ending or another inner group, each starting at a non-digit), starts at or
        # after the first raw start, and has at most ``longest`` digits (``search_from``).
        search = wanted.search
        if not any(search(digits, search_from(shape, end, self.longest), end) is not None for end in shape.ends):
            return False
        return self._starts_a_number(shape)

    def _starts_a_number(self, shape: DigitShape) -> bool:
        """Whether a valid national number can start where ``parse`` starts one in a raw input: where the raw
        input's digits start (a raw start), after the country code there, or after the national prefixes
        ``_maybe_strip_national_prefix_carrier_code`` strips (once after the code inside
        ``_maybe_extract_country_code``, once more in ``parse``: at most twice, with the region's or its
        code's main region's pattern), and end where a run of digits ends. Read unstripped at a raw start
        without the code or the prefix there, it must be a number whose format takes no prefix (as in
        ``plain_could_match``). The prefix is matched on the digits up to that end, as ``parse`` matches it
        on the national number (a greedy pattern, BR's, takes what follows). True when a prefix rule is one
        this cannot follow (``_prefix_strips``)."""
        national, without_prefix, strips = self._national, self._without_prefix, self._strips
        if strips is None or national is None or without_prefix is None:
            return True
        digits = shape.digits
        code = self._country_code
        prefix = self._national_prefix
        for start in shape.raw_starts:
            with_code = digits.startswith(code, start)
            own = national if with_code or (prefix is not None and prefix.match(digits, start) is not None) else (
                without_prefix)
            for end in shape.ends:
                if end <= start:
                    continue
                if own.match(digits, start, end) is not None:
                    return True
                heads = [start, start + len(code)] if with_code else [start]
                reached = set(heads[1:])
                for _ in range(2):
                    stripped = []
                    for head in heads:
                        for pattern, group in strips:
                            found = pattern.match(digits, head, end)
                            if found is None:
                                continue
                            if group is None or not found.groups() or found.groups()[-1] is None:
                                stripped.append(found.end())
                            elif found.end(group) == found.end() and found.start(group) >= 0:
                                stripped.append(found.start(group))  # the rule keeps a group ending the match
                            else:
                                return True
                    heads = [head for head in stripped if head not in reached]
                    reached.update(heads)
                if any(at < end and national.match(digits, at, end) is not None for at in reached):
                    return True
        return False


_UNSAFE_PREFIX = re.compile(r"\$|\\[ZbBA]|\(\?[=!<]|\^")


def _prefix_pattern(pattern: str | None) -> re.Pattern[str] | None:
    """A national prefix pattern whose ``match`` on a raw input implies its ``match`` on the same digits
    followed by more (no anchor, boundary or look-around): None for any other (or none)."""
    if not pattern or _UNSAFE_PREFIX.search(pattern):
        return None
    return re.compile(pattern)


_GROUP_RULE = re.compile(r"\\(\d)")


def _cut_at_most(country_code: str, strips: list[tuple[re.Pattern[str], int | None]] | None) -> int | None:
    """The most digits ``_starts_a_number`` can find cut from a raw input's start before a valid national
    number: the country code, then at most two national prefixes, each no wider than its pattern's widest
    match (``getwidth``, as ``re`` reads the pattern). None when that is unbounded or not followed this
    way: a rule keeping a group (``_starts_a_number`` may then say yes without a number near the start), or
    prefixes it cannot follow."""
    if strips is None:
        return None
    widest = 0
    for pattern, group in strips:
        if group is not None:
            return None
        most = sre.parse(pattern.pattern).getwidth()[1]
        if most >= sre.MAXREPEAT - 1:
            return None
        widest = max(widest, most)
    return len(country_code) + 2 * widest


def _prefix_strips(regions: list[Any]) -> list[tuple[re.Pattern[str], int | None]] | None:
    """The national prefix patterns of ``regions``' metadata (``national_prefix_for_parsing``), each with the
    group its transform rule keeps (``\\N``: the national number then starts where the group does) or None
    (the prefix is cut off); None when one cannot be followed (an anchor or a look-around, another rule)."""
    strips: list[tuple[re.Pattern[str], int | None]] = []
    for metadata in regions:
        pattern = metadata.national_prefix_for_parsing
        if not pattern:
            continue
        compiled = _prefix_pattern(pattern)
        rule = metadata.national_prefix_transform_rule
        if compiled is None:
            return None
        if not rule:
            strips.append((compiled, None))
            continue
        kept = _GROUP_RULE.fullmatch(rule)
        if kept is None or compiled.groups == 0 or int(kept.group(1)) > compiled.groups:
            return None
        strips.append((compiled, int(kept.group(1))))
    return strips


def formats_accepting_no_prefix(number_formats: list[Any], tag: str = "") -> str:
    """A pattern that matches where the national number (ending at the end of the searched part) is
    formatted (``_choose_formatting_pattern_for_number``: the first format whose last leading-digits
    pattern matches at its start and whose pattern matches it all) by a format that does not require a
    national prefix, or by none: an atomic group picks the first format that fits, a conditional refuses
    the ones that require the prefix (its groups named with ``tag``: one pattern may hold several regions')."""
    alternatives = []
    refusals = []
    for index, number_format in enumerate(number_formats):
        leading = number_format.leading_digits_pattern
        fits = (f"(?=(?:{leading[-1]}))" if leading else "") + f"(?=(?:{number_format.pattern})\\Z)"
        rule = number_format.national_prefix_formatting_rule
        requires = bool(rule) and not number_format.national_prefix_optional_when_formatting and (
            not _formatting_rule_has_first_group_only(rule))
        if requires:
            alternatives.append(f"{fits}(?P<requires{tag}{index}>)")
            refusals.append(f"(?(requires{tag}{index})(?!))")
        else:
            alternatives.append(fits)
    return f"(?>{'|'.join([*alternatives, ''])})" + "".join(refusals)


def search_from(shape: DigitShape, end: int, longest: int | None) -> int:
    """Where a valid national number ending at ``end`` in ``shape``'s digits can start, at the earliest: it
    is what is left of a raw input's digits once a country code or national prefix is cut from their start
    (so it starts at a raw start or after), and ``_is_number_matching_desc`` refuses one longer than every
    length its region's ``general_desc`` lists (``longest``; None: a region lists none). A search for it in
    the digits up to ``end`` need not try earlier starts (with no raw start: none, ``end``)."""
    first = shape.raw_starts[0] if shape.raw_starts else end
    return first if longest is None else max(first, end - longest)


class DigitShape:
    """A plain candidate's digits, and where in them its runs start and end, and where a parse's raw input
    can start (``RegionPrefilter.could_match``): computed once per candidate for every region."""

    __slots__ = ("digits", "ends", "raw_starts", "starts")

    def __init__(self, candidate: str, *, after_letter: bool = False) -> None:
        parts = _DIGIT_RUN_SPLIT.split(candidate)  # text before, then (run, text after) for each run
        runs = parts[1::2]
        self.ends = list(accumulate(map(len, runs)))
        self.starts = [0, *self.ends[:-1]] if runs else []
        # a raw input starts at the first run (unless a letter stands before the candidate: ``letter_before``),
        # or after a separator an inner group of the matcher starts after (anything but ASCII hyphens alone:
        # _INNER_MATCHES)
        self.raw_starts = [start for index, start in enumerate(self.starts)
                           if (index == 0 and not after_letter) or (index > 0 and parts[2 * index].strip("-"))]
        self.digits = "".join(runs)


class RegionSieve:
    """Which of ``regions`` each candidate can be a number of (``RegionPrefilter``), decided once per
    candidate text for all of them and remembered (a text's candidates repeat: dates, counts, ids)."""

    KNOWN = 65_536  # candidate texts remembered, then forgotten all at once

    def __init__(self, regions: list[str]) -> None:
        self.regions = list(regions)
        self._prefilters = [region_prefilter(region) for region in self.regions]
        self._all_filter = all(prefilter.filters and prefilter._international is not None  # noqa: SLF001
                               and prefilter._without_prefix is not None for prefilter in self._prefilters)  # noqa: SLF001
        # Regions whose pre-filters are built alike (same patterns, country code and length: US and CA) give
        # the same verdict: each verdict is computed once.
        distinct: dict[tuple[Any, ...], int] = {}
        self._verdict_of = [distinct.setdefault(prefilter.signature, len(distinct)) for prefilter in self._prefilters]
        self._distinct = [self._prefilters[self._verdict_of.index(index)] for index in range(len(distinct))]
        self._fewest = max(1, min((prefilter.shortest for prefilter in self._distinct), default=0))  # of a valid number
        self._any_region = any_region_prefilter(tuple(prefilter.region for prefilter in self._distinct)) if (
            self._all_filter) else None
        self._screened_regions = tuple(prefilter.region for prefilter in self._distinct)
        self._nationals: dict[int, Callable[..., Any] | None] = {}  # length_screen's match, by length
        self._known: dict[str, tuple[bool, ...] | None] = {}
        self._known_after: dict[str, tuple[bool, ...] | None] = {}
        self._alike: dict[str, bool] = {}
        self._nowhere = (False,) * len(self._prefilters)

    def regions_of(self, candidate: str, after_letter: bool = False) -> tuple[bool, ...] | None:
        """Per region, whether the matcher must see ``candidate``; None when for none. ``after_letter``: a
        Latin letter or an invalid punctuation symbol stands before it (``letter_before``)."""
        if after_letter:
            return self._after_letter(candidate)
        try:
            return self._known[candidate]
        except KeyError:
            pass
        if _SLASH_SEPARATED_DATES.search(candidate):  # _extract_match gives up on it first, in every region
            wanted = self._nowhere
        elif self._any_region is not None and candidate.isdigit() and candidate.isascii() and (
                not self._run_passes(candidate)):
            wanted = self._nowhere  # digits alone: one raw start, one end (the screen below)
        elif self._all_filter and not _NOT_PLAIN.search(candidate):
            wanted = self._plain_verdicts(DigitShape(candidate))
        else:
            wanted = tuple([prefilter.could_match(candidate) for prefilter in self._prefilters])
        decided = wanted if any(wanted) else None
        if len(self._known) >= self.KNOWN:
            self._known.clear()
        self._known[candidate] = decided
        return decided

    def verdicts(self, text: str, scan: list[PhoneCandidate]) -> list[tuple[bool, ...] | None]:
        """``regions_of`` each candidate of ``scan`` (``phone_scan`` of ``text``), with ``letter_before`` told
        from ``text``: in one loop, with the commonest cases (a candidate seen before, digits alone that the
        screen for all regions turns away) decided without a call. Digits alone hold no slash, so no slash
        date (``_SLASH_SEPARATED_DATES``) needs ruling out first."""
        known = self._known
        get = known.get
        regions_of = self.regions_of
        screening = self._any_region is not None
        international = self._any_region[0].match if self._any_region is not None else None  # (None: no screening)
        nationals = self._nationals
        lettered = _LETTERS_BEFORE
        out: list[tuple[bool, ...] | None] = []
        append = out.append
        for candidate in scan:
            start, piece = candidate.start, candidate.text
            if start and lettered.get(text[start - 1]) is not False and letter_before(text, start, piece):
                append(self._after_letter(piece))
                continue
            decided = get(piece, _UNDECIDED)
            if decided is _UNDECIDED:
                decided = None
                if screening and piece.isdigit() and piece.isascii():  # _run_passes, without its call
                    national = nationals.get(len(piece), _UNDECIDED)
                    if national is _UNDECIDED:
                        national = self._national_screen(len(piece))
                    if international(piece) is None and (  # type: ignore[misc]
                            national is None or national(piece) is None):  # type: ignore[operator]
                        if len(known) >= self.KNOWN:
                            known.clear()
                        known[piece] = None
                        append(None)
                        continue
                decided = regions_of(piece)
            append(decided)  # type: ignore[arg-type]  # _UNDECIDED replaced above
        return out

    def _plain_verdicts(self, shape: DigitShape) -> tuple[bool, ...]:
        """Per region, ``plain_could_match``: all no at once when no region's international prefix starts at a
        raw start and no region's valid national number starts near one and ends where a run ends
        (``any_region_prefilter``)."""
        screen = self._any_region
        if screen is not None and not self._screen_passes(shape, screen[0].match):
            return self._nowhere
        verdicts = [prefilter.plain_could_match(shape) for prefilter in self._distinct]
        return tuple([verdicts[index] for index in self._verdict_of])

    def _screen_passes(self, shape: DigitShape, international: Callable[..., Any]) -> bool:
        """Whether a region's international prefix starts at a raw start, or a region's valid national number
        starts near one and ends where a run ends, at least the fewest digits a valid number has further on
        (each region's part of the screen needs a valid number there: its length), asked only of the regions
        whose part can be that long (``length_screen``)."""
        digits = shape.digits
        starts, ends, fewest = shape.raw_starts, shape.ends, self._fewest
        for start in starts:
            if international(digits, start) is not None:
                return True
        nationals = self._nationals
        for start in starts:
            for end in ends:
                if end - start >= fewest:
                    national = nationals.get(end - start, _UNDECIDED)
                    if national is _UNDECIDED:
                        national = self._national_screen(end - start)
                    if national is not None and national(digits, start, end) is not None:  # type: ignore[operator]
                        return True
        return False

    def _run_passes(self, digits: str) -> bool:
        """Whether a run of ASCII digits alone passes the screen for all regions (one raw start, one end): a
        region's international prefix starts it, or a region's valid national number is near its start."""
        assert self._any_region is not None
        if self._any_region[0].match(digits) is not None:
            return True
        national = self._nationals.get(len(digits), _UNDECIDED)
        if national is _UNDECIDED:
            national = self._national_screen(len(digits))
        return national is not None and national(digits) is not None  # type: ignore[operator]

    def _national_screen(self, length: int) -> Callable[..., Any] | None:
        """The national screen's ``match`` (``length_screen``) for a part of ``length`` digits; None: no match."""
        national = length_screen(self._screened_regions, length)
        found = self._nationals[length] = None if national is None else national.match
        return found

    def _after_letter(self, candidate: str) -> tuple[bool, ...] | None:
        """``regions_of`` a candidate after a letter: the matcher turns away every raw input that starts where
        the candidate does (``_parse_and_verify`` reads the character before it, the same for the candidate
        and the part of it before an inner group), so a plain one can hold a number only from a later raw
        start on (the others: as ``regions_of`` says)."""
        if candidate in self._known_after:
            return self._known_after[candidate]
        if _NOT_PLAIN.search(candidate) or _SLASH_SEPARATED_DATES.search(candidate) or not self._all_filter:
            decided = self.regions_of(candidate)
        else:
            shape = DigitShape(candidate, after_letter=True)
            if not shape.raw_starts:
                decided = None
            else:
                wanted = self._plain_verdicts(shape)
                decided = wanted if any(wanted) else None
        if len(self._known_after) >= self.KNOWN:
            self._known_after.clear()
        self._known_after[candidate] = decided
        return decided

    def parsed_alike_everywhere(self, candidate: str) -> bool:
        """Whether ``parse`` reads ``candidate`` the same whatever region it parses for: it parses with no
        region at all, which takes a plus sign followed by a known country code (``parse`` then reads the
        country code from the digits and uses that code's region's metadata, never the default region's).
        The matcher then accepts it, or not, the same way in every region (its other checks read the
        candidate and the text around it), and Presidio's results for it are the same in every region."""
        known = self._alike.get(candidate)
        if known is None:
            try:
                parse(candidate)
                known = True
            except NumberParseException:
                known = False
            if len(self._alike) >= self.KNOWN:
                self._alike.clear()
            self._alike[candidate] = known
        return known


@cache
def region_prefilter(region: str) -> RegionPrefilter:
    return RegionPrefilter(region)


_LETTERS_BEFORE: dict[str, bool] = {}  # refused_beside's answers, by character
_UNDECIDED = object()


def refused_beside(char: str) -> bool:
    """Whether ``_parse_and_verify`` (leniency VALID and up) turns away a number with ``char`` right before or
    after it: a Latin letter or an invalid punctuation symbol (a currency sign, ``%``). The only test it makes
    of the text around what it parses."""
    known = _LETTERS_BEFORE.get(char)
    if known is None:
        known = bool(PhoneNumberMatcher._is_invalid_punctuation_symbol(char) or
                     PhoneNumberMatcher._is_latin_letter(char))
        if len(_LETTERS_BEFORE) < 4096:
            _LETTERS_BEFORE[char] = known
    return known


def letter_before(text: str, start: int, candidate: str) -> bool:
    """Whether ``_parse_and_verify`` (leniency VALID and up) turns away whatever it parses from ``start``, the
    candidate's start: the candidate does not start with a lead character (``_LEAD_PATTERN``: an opening
    bracket or a plus sign) and the character before it is a Latin letter or an invalid punctuation symbol
    (``refused_beside``: a log's hex id run into an address, ``req=3fa9c2 10.1.2.3``)."""
    if start == 0:
        return False
    return refused_beside(text[start - 1]) and _LEAD_PATTERN.match(candidate) is None


@cache
def any_region_prefilter(regions: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]] | None:
    """The alternation of ``regions``' international prefixes, and that of their valid national numbers
    each after at most the digits its region's parse can cut before one (``RegionPrefilter.cut``; any
    number of digits when unknown): ``plain_could_match`` says yes for a region only when its international
    prefix matches at a raw start or ``_starts_a_number`` finds its valid number (or the one without a
    prefix, which is one) starting at most that far after a raw start and ending at a run's end."""
    internationals, nationals = [], []
    for region in regions:
        prefilter = region_prefilter(region)
        international, national = prefilter._international, prefilter._national  # noqa: SLF001
        if international is None or national is None:
            return None
        internationals.append(f"(?:{international.pattern})")
        nationals.append(prefilter.near_a_raw_start())
    if not nationals:
        return None
    any_international = "|".join(internationals)
    any_national = "|".join(f"(?:{pattern})" for pattern in nationals)
    return (re.compile(any_international), re.compile(any_national),
            re.compile(f"(?:{any_international})|(?:{any_national})"))


@cache
def length_screen(regions: tuple[str, ...], length: int) -> re.Pattern[str] | None:
    """``any_region_prefilter(regions)``'s national screen for a part of ``length`` digits (a run of digits alone,
    or a raw start to a run's end): the same alternation with only the regions whose part can match that many
    digits (``RegionPrefilter.screened_lengths``; a region that cannot match adds nothing to whether the
    alternation matches), None when there is none. On a log most parts are 4 to 6 digits long (counts, ids,
    amounts), which only Germany's numbers can be: NANPA's 25 regions (7 to 10 digits), and the others, are
    left out of the pattern tried on them. A smaller alternation is compiled only when it is at most half as
    long as the whole one (compiling NANPA's takes ~50 ms, and most of the time is in the few largest):
    otherwise the whole one is used."""
    screens = any_region_prefilter(regions)
    assert screens is not None
    kept = tuple(region for region in regions if _screens_length(region_prefilter(region), length))
    if not kept:
        return None
    parts = [region_prefilter(region).near_a_raw_start() for region in kept]
    if kept == regions or 2 * sum(map(len, parts)) > len(screens[1].pattern):
        return screens[1]
    return _alternation(tuple(parts))


@cache
def _alternation(parts: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{part})" for part in parts))


def _screens_length(prefilter: RegionPrefilter, length: int) -> bool:
    fewest, most = prefilter.screened_lengths()
    return fewest <= length and (most is None or length <= most)


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


_LEAD = "(\\[（［+＋"


def number_superset(min_digits: int) -> re.Pattern[str]:
    """A pattern with a match inside every phone number the matcher can find, when a valid number has at least
    ``min_digits`` digits in its national number (``shortest_valid_number``): a run of the characters a
    candidate's number part is made of (a lead bracket or plus sign, ``_VALID_PUNCTUATION``, digits) through
    ``min_digits`` digits, or through an extension form and its first digit (``_EXTN_PATTERNS_FOR_MATCHING``:
    an extension not stripped may lend its digits). phonenumbers reads an ASCII letter as a digit (vanity
    numbers); the only ones a number part can hold are its punctuation's ``x``, counted as a digit here.
    What a stream's reply screen (``policies/pattern_screen.py``) looks for: prose with a short number ("3
    steps", "1,000") has no match, where ``candidate_superset`` matches every digit. Written without
    IGNORECASE (the characters it takes are listed: a case-insensitive class reads as every non-ASCII
    character in a DFA), except for the extension forms."""
    run = _listed(f"[{_VALID_PUNCTUATION}{_LEAD}]")
    units = _decimal_digits() + "".join(map(re.escape, (char for char in run if char.isascii() and char.isalpha())))
    part = "".join(map(re.escape, run))
    return re.compile(
        f"[{units}](?:[{part}]*[{units}]){{{max(0, min_digits - 1)}}}"
        f"|[{units}][{part}{units}]*(?i:{_EXTENSION_UNBOUNDED})"
    )


# The extension forms with their digits' counters unbounded (``\\d{1,20}`` as ``\\d+``: more matches; the counters
# made the DFA too large to build).
_EXTENSION_UNBOUNDED = re.sub(r"\\d\{1,\d+\}", r"\\d+", _EXTN_PATTERNS_FOR_MATCHING)


@cache
def _listed(pattern: str) -> tuple[str, ...]:
    """Every character the class ``pattern`` takes as the candidate pattern's flags read it (IGNORECASE; no
    character outside the Basic Multilingual Plane folds into one of these)."""
    taken = re.compile(pattern, re.IGNORECASE).fullmatch
    return tuple(char for char in map(chr, range(0x10000)) if taken(char))


@cache
def _decimal_digits() -> str:
    """``\\d`` as ranges of the characters it takes (Unicode's decimal digits, ``str.isdecimal``): listed, so a
    DFA reads them exactly rather than as every non-ASCII character."""
    digits = [code for code in range(0x110000) if chr(code).isdecimal()]
    ranges: list[tuple[int, int]] = []
    for code in digits:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    return "".join(re.escape(chr(low)) if low == high else f"{re.escape(chr(low))}-{re.escape(chr(high))}"
                   for low, high in ranges)


Decision = tuple[int, tuple[int, str, Any] | None]  # tries used; the match (offset in the candidate, text, number)


class RememberingMatcher(PhoneNumberMatcher):
    """phonenumbers' matcher, deciding a candidate once per what its decision reads, for every text.

    ``_extract_match(candidate, offset)`` reads, besides the candidate, only the character before it (when
    it is not at the text's start: ``_parse_and_verify``'s check for a letter or a currency sign before the
    candidate or an inner group at its start) and the one after it (the next-character check), or three
    when the candidate holds a time stamp (``_TIME_STAMPS``: its ``:ss`` may follow); everything else it
    reads is the region's metadata and the leniency, fixed per matcher. Of the character before and the
    one after, ``_parse_and_verify`` asks only whether it is a Latin letter or an invalid punctuation
    symbol (``refused_beside``; none there, at a text's start or end: the same answer as a no). So its
    answer is remembered in ``known`` (one dict per region and leniency, shared by the matchers of every
    window and text) under the candidate, those two answers (the three characters after a time stamp),
    and given again, at the new offset, wherever the same candidate stands between characters that get
    the same answers: a number written twice, after a space or a comma, before a newline or a semicolon,
    is parsed once per region. The tries it used are remembered
    too and taken again, and a remembered answer is used only while more tries are left than deciding it
    could ever use (``_max_tries`` counts down at each parse; a candidate's inner groups each start one
    character further)."""

    KNOWN = 8_192  # decisions remembered per region and leniency (a few MB at most), then all forgotten

    def __init__(self, text: str, region: str, leniency: Any, known: dict[tuple[str, bool, str | bool], Decision]
                 ) -> None:
        super().__init__(text, region, leniency=leniency)
        self._known = known

    def _extract_match(self, candidate: str, offset: int) -> PhoneNumberMatch | None:
        text = self.text
        end = offset + len(candidate)
        after: str | bool
        if _TIME_STAMPS.search(candidate):
            after = text[end:end + READ_PAST_CANDIDATE]
        else:
            after = end < len(text) and refused_beside(text[end])
        key = (candidate, offset > 0 and refused_beside(text[offset - 1]), after)
        if self._max_tries <= len(_INNER_MATCHES) * (2 * len(candidate) + 1) + 1:
            return super()._extract_match(candidate, offset)  # near the end of its tries: decide as it would
        decided = self._known.get(key)
        if decided is None:
            tries = self._max_tries
            match = super()._extract_match(candidate, offset)
            decided = (tries - self._max_tries,
                       None if match is None else (match.start - offset, match.raw_string, match.number))
            if len(self._known) >= self.KNOWN:
                self._known.clear()
            self._known[key] = decided
            return match
        self._max_tries -= decided[0]
        if decided[1] is None:
            return None
        at, raw, number = decided[1]
        return PhoneNumberMatch(offset + at, raw, number)


def _give(found: list[PhoneNumberMatch], skipped: PhoneNumberMatch | None, match: PhoneNumberMatch) -> None:
    """``region_matches``: a match found, after the settled one not given yet before it (if any)."""
    if skipped is not None:
        found.append(skipped)
    found.append(match)


MAX_TRIES = 65_535  # PhoneNumberMatcher's default max_tries: the failed parses it allows itself in one text


def region_matches(matcher: RememberingMatcher, scan: list[PhoneCandidate], wants: list[tuple[bool, ...] | None],
                   scan_index: dict[int, int], region: int, sieve: RegionSieve,
                   settled: dict[int, PhoneNumberMatch], min_digits: int,
                   wanted_at: list[int] | None = None, starts: list[int] | None = None) -> list[PhoneNumberMatch]:
    """What ``PhoneNumberMatcher(text, ...)`` finds, for region number ``region`` of ``sieve``: its scan
    followed over ``scan`` (``phone_scan(text, ..., long_only=True)``, with ``wants[k]`` the sieve's verdicts
    on ``scan[k]`` and ``scan_index`` its candidates by start; ``min_digits`` the scan's), ``_extract_match`` asked only about the
    candidates the region must see, on the whole text (``matcher.text``).

    The matcher's search goes from candidate to candidate as the scan's does as long as what it finds ends
    where the candidate (trimmed) ends; a candidate the region need not see holds no number of it, so the
    matcher would find none there and go on to the next. When a match ends inside its candidate (an inner
    group), the matcher searches on from there: those searches are made here as ``_find`` makes them,
    until one finds a candidate of the scan (a match of ``_PATTERN`` at a given start is the same whatever
    the search started from: its look-behinds read the text), from which the two go on together again.
    ``settled``: candidates found whole and parsed alike in every region (by their start), whose
    decision is the same in this one (``RegionSieve.parsed_alike_everywhere``): found in an earlier region,
    each is a duplicate here, and only the last one before each other match is given (what the caller's
    explanation of that match may read: ``PhoneRecognizer.analyze``'s region of the number before), the
    others not at all (on a text full of numbers with a plus sign, most of what every region finds).

    Each decision starts with all the matcher's tries (``MAX_TRIES``): like a matcher per candidate, it
    can only find more than one matcher over a text so full of candidates that it runs out of them.

    ``starts``: the scan's candidates' starts, when it may be the scan of only some lines of the text
    (``phone_scan``'s ``lines``). A search on from inside a candidate that finds a match past a newline meets
    there a candidate of the whole text's scan (no candidate holds a newline, the scan went on from the
    candidate's end, at or after where the search started, and found nothing before it either); one not in
    ``scan`` is too short, or on a line left out, where the region need see none: both go on from the next
    candidate of ``scan``, as from a candidate the region need not see."""
    text = matcher.text
    found: list[PhoneNumberMatch] = []
    if wanted_at is None:
        wanted_at = [at for at, wanted in enumerate(wants) if wanted is not None and wanted[region]]
    at = 0
    count = len(scan)
    skipped: PhoneNumberMatch | None = None  # the last settled match not given yet
    position = 0  # in wanted_at: the scan's candidates the region must see, in order (the others: skipped)
    while position < len(wanted_at):
        at = wanted_at[position]
        position += 1
        candidate = scan[at]
        at += 1
        match = settled.get(candidate.start)
        if match is not None:
            skipped = match  # found whole: ends where the candidate ends
            continue
        matcher._max_tries = MAX_TRIES
        match = matcher._extract_match(candidate.text, candidate.start)
        if match is None:
            continue
        _give(found, skipped, match)
        skipped = None
        if match.end == candidate.start + len(candidate.text):
            continue
        index = match.end  # the matcher searches on from inside the candidate
        at = count
        while True:
            searched = _PHONE_CANDIDATE.search(text, index)
            if searched is None:
                break
            start = searched.start()
            known = scan_index.get(start)
            if known is not None:
                at = known  # the scan's candidate: from here on, the scan's way
                break
            if starts is not None and "\n" in text[index:start]:
                at = bisect_left(starts, start)  # a candidate of the whole text's scan (phone_scan's lines): one
                break  # too short, or on a line the scan left out, where the region need see none
            piece = searched.group()
            if "x" in piece:
                second = _SECOND_NUMBER_START_PATTERN.search(piece)
                if second:
                    piece = piece[:second.start()]
            index = start + max(1, len(piece))
            if _enough_digits(min_digits).match(piece) is None and (
                    _LETTER.search(piece) is None):
                continue  # too short to be a number anywhere (phone_scan's long_enough)
            verdicts = sieve.regions_of(piece)
            if verdicts is None or not verdicts[region]:
                continue
            matcher._max_tries = MAX_TRIES
            match = matcher._extract_match(piece, start)
            if match is not None:
                _give(found, skipped, match)
                skipped = None
                index = match.end
        position = bisect_left(wanted_at, at)  # on from the scan's candidate met again (or past the last)
    return found
