"""Canary for ``capsem_proxyd/_compat/phonenumbers.py``: the phone matcher's candidate scan, mirrored.

``phone_windows`` imports phonenumbers' private ``_PATTERN`` (the matcher's
candidate pattern) and ``_SECOND_NUMBER_START_PATTERN`` (its trim), and
repeats what ``PhoneNumberMatcher._find`` does with them (via
``_trim_after_first_match``) and how far ``_extract_match`` reads past a
candidate (``_TIME_STAMPS_SUFFIX``, three characters). ``candidate_superset`` is built from its
private ``_VALID_PUNCTUATION`` and the extension forms of ``_EXTN_PATTERNS_FOR_MATCHING``: every
candidate must match it. That the windows find
what the matcher finds on random text is ``tests/policy/test_pii_speed.py``.
"""

from __future__ import annotations

import inspect
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

phonenumbers = pytest.importorskip("phonenumbers", reason="the 'pii' extra is not installed")

from phonenumbers import phonenumbermatcher, phonenumberutil  # noqa: E402

from capsem_proxyd._compat.phonenumbers import (  # noqa: E402
    READ_PAST_CANDIDATE,
    candidate_superset,
    number_superset,
    phone_windows,
    shortest_valid_number,
)
from tests._compat.pins import assert_below_next_minor  # noqa: E402


def test_phonenumbers_is_pinned_below_its_next_minor_release() -> None:
    assert_below_next_minor("phonenumbers")


def test_the_private_patterns_still_exist() -> None:
    assert isinstance(phonenumbermatcher._PATTERN, re.Pattern)
    assert isinstance(phonenumberutil._VALID_PUNCTUATION, str) and isinstance(
        phonenumberutil._EXTN_PATTERNS_FOR_MATCHING, str)
    assert isinstance(phonenumberutil._SECOND_NUMBER_START_PATTERN, re.Pattern)
    assert phonenumbermatcher._SECOND_NUMBER_START_PATTERN is phonenumberutil._SECOND_NUMBER_START_PATTERN


def test_the_matcher_still_scans_the_way_the_windows_repeat() -> None:
    find = inspect.getsource(phonenumbermatcher.PhoneNumberMatcher._find)
    assert find.count("_PATTERN.search(self.text, index)") == 2
    assert "self._trim_after_first_match(_SECOND_NUMBER_START_PATTERN" in find
    assert "index = start + candidate_len" in find
    trim = inspect.getsource(phonenumbermatcher.PhoneNumberMatcher._trim_after_first_match)
    assert "candidate = candidate[:trailing_chars_match.start()]" in trim
    extract = inspect.getsource(phonenumbermatcher.PhoneNumberMatcher._extract_match)
    assert "_TIME_STAMPS_SUFFIX.match(following_text)" in extract
    assert phonenumbermatcher._TIME_STAMPS_SUFFIX.pattern == ":[0-5]\\d"  # ":ss": three characters at most
    assert READ_PAST_CANDIDATE == 3


def test_the_windows_cover_a_number_and_skip_short_candidates() -> None:
    assert phone_windows("call 650-253-0000 now", 4) == [(0, 20)]
    assert phone_windows("x = f(a[3], 42)", 4) == []


def test_a_valid_number_still_matches_the_general_pattern_and_one_of_the_types_the_prefilter_joins() -> None:
    """``RegionPrefilter`` joins, per region of a country code, ``general_desc`` and the type descriptions
    ``_number_type_helper`` tries: a number is valid only when it matches the first and one of the others."""
    from capsem_proxyd._compat.phonenumbers import NUMBER_TYPES

    helper = inspect.getsource(phonenumberutil._number_type_helper)
    assert "if not _is_number_matching_desc(national_number, metadata.general_desc):" in helper
    tried = re.findall(r"_is_number_matching_desc\(national_number, metadata\.(\w+)\)", helper)
    assert set(tried) - {"general_desc"} == set(NUMBER_TYPES)
    assert helper.rstrip().endswith("return PhoneNumberType.UNKNOWN")
    valid = inspect.getsource(phonenumberutil.is_valid_number_for_region)
    assert "_number_type_helper(nsn, metadata) != PhoneNumberType.UNKNOWN" in valid
    matching = inspect.getsource(phonenumberutil._is_number_matching_desc)
    assert "_match_national_number(national_number, number_desc, False)" in matching
    # RegionPrefilter.shortest: a national number shorter than every length general_desc lists is invalid
    assert "actual_length = len(national_number)" in matching and "possible_lengths = number_desc.possible_length" in (
        matching) and "if len(possible_lengths) > 0 and actual_length not in possible_lengths:" in matching
    for verify in (phonenumbermatcher._verify, phonenumbermatcher._verify_strict_grouping,
                   phonenumbermatcher._verify_exact_grouping):  # every leniency the prefilter serves (VALID and up)
        assert "not is_valid_number(numobj)" in inspect.getsource(verify)


def test_a_number_without_a_plus_keeps_the_default_region_s_code_unless_its_international_prefix_leads() -> None:
    """``parse`` takes a country code from the digits only after a plus sign or the region's international
    prefix at the start of the number; otherwise the code is the region's (or the same code, stripped)."""
    extract = inspect.getsource(phonenumberutil._maybe_extract_country_code)
    assert "_maybe_strip_i18n_prefix_and_normalize(full_number,\n" in extract
    assert "possible_country_idd_prefix = metadata.international_prefix" in extract
    assert "default_country_code = metadata.country_code" in extract
    strip = inspect.getsource(phonenumberutil._maybe_strip_i18n_prefix_and_normalize)
    assert "_PLUS_CHARS_PATTERN.match(number)" in strip and "idd_pattern = re_compile(possible_idd_prefix)" in strip


@given(st.from_regex(phonenumbermatcher._PATTERN, fullmatch=True))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_every_candidate_matches_the_superset_a_stream_holds_for(candidate: str) -> None:
    """Whatever phonenumbers' candidate pattern matches (``_PATTERN``: its ``_VALID_PUNCTUATION`` and
    ``_EXTN_PATTERNS_FOR_MATCHING``), ``candidate_superset`` matches: a phone number being written is held."""
    assert candidate_superset().fullmatch(candidate) is not None, candidate


@given(st.from_regex(re.compile(r"[ ]{0,2}(?:[(+][ ]?){0,2}\d{1,4}(?:[ \-./]{1,2}\d{1,4}){0,5}"
                                r"(?:(?: ?ext\.? ?| ?x| #|;ext=| anexo |, int )\d{1,4}#?)?"), fullmatch=True))
def test_every_candidate_found_in_number_like_text_matches_the_superset(text: str) -> None:
    for found in phonenumbermatcher._PATTERN.finditer(text):
        assert candidate_superset().fullmatch(found.group()) is not None, found.group()


REGIONS = ("US", "UK", "DE", "FE", "IL", "IN", "CA", "BR", "FR", "JP", "AU", "CN")  # Presidio's, and some more


@given(st.from_regex(re.compile(r"[ ]{0,2}(?:[(+＋][ ]?){0,2}[\d١٢３]{1,4}(?:[ \-./x]{1,2}[\dX]{1,4}){0,5}"
                                r"(?:(?: ?ext\.? ?| ?x| #|;ext=| anexo |, int |- )\d{1,4}#?)?"), fullmatch=True)
       | st.sampled_from(["1-800-FLOWERS", "+1 415 555 0100", "030 1234567", "+44 20 7946 0958 ext. 12",
                          "(02) 9876 5432", "+49 30 123456", "911", "112", "+1 800 FLOWERS x12"]))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_number_the_matcher_finds_holds_a_match_of_the_superset_a_reply_screen_reads(text: str) -> None:
    """``number_superset``: a valid number has at least ``shortest_valid_number`` digits in its national number,
    read from the digits of the candidate's number part (or from its ASCII letters, phonenumbers' vanity
    numbers, ``_ALPHA_MAPPINGS``), or an extension lends them: every number found holds a match."""
    screen = number_superset(shortest_valid_number())
    for region in REGIONS:
        for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
            assert screen.search(match.raw_string) is not None, (region, match.raw_string)


def test_only_ascii_letters_are_read_as_digits() -> None:
    """What ``number_superset`` counts as a digit besides ``\\d``: the letters of phonenumbers' vanity mapping,
    ASCII only (the punctuation's ``x`` is the one a number part can hold)."""
    assert all(key.isascii() and key.isalpha() for key in phonenumberutil._ALPHA_MAPPINGS)
    screen = number_superset(shortest_valid_number())
    assert shortest_valid_number() == 4
    for prose in ("in 3 steps", "1,000 people", "1 in 10", "2 to 3", "see note 2)", "café résumé 12", "日本語 3"):
        assert screen.search(prose) is None, prose
    for number in ("2024", "555-0100", "1x2x", "+١٢٣٤", "12 ext 3"):
        assert screen.search(number) is not None, number


def test_a_number_read_in_national_format_still_needs_its_prefix_when_its_first_fitting_format_asks() -> None:
    """``RegionPrefilter`` turns away for a region a candidate that can only be read in the region's national
    format without its national prefix (no country code, national prefix or international prefix at the
    start of any raw input) unless its number's format accepts that: every leniency it serves checks
    ``_is_national_prefix_present_if_required``, which picks the first format whose last leading-digits
    pattern and whole pattern fit (``_choose_formatting_pattern_for_number``), reads the rule with the private
    ``_formatting_rule_has_first_group_only`` and strips the prefix with ``_maybe_strip_national_prefix_carrier_code``
    (a ``match`` at the start of the raw input's digits)."""
    assert "return _is_national_prefix_present_if_required(numobj)" in inspect.getsource(phonenumbermatcher._verify)
    for verify in (phonenumbermatcher._verify_strict_grouping, phonenumbermatcher._verify_exact_grouping):
        assert "not _is_national_prefix_present_if_required(numobj)" in inspect.getsource(verify)
    required = inspect.getsource(phonenumbermatcher._is_national_prefix_present_if_required)
    for line in ("if numobj.country_code_source != CountryCodeSource.FROM_DEFAULT_COUNTRY:",
                 "phone_number_region = region_code_for_country_code(numobj.country_code)",
                 "format_rule = _choose_formatting_pattern_for_number(metadata.number_format,",
                 "if format_rule.national_prefix_optional_when_formatting:",
                 "if _formatting_rule_has_first_group_only(format_rule.national_prefix_formatting_rule):",
                 "raw_input = normalize_digits_only(numobj.raw_input)",
                 "return _maybe_strip_national_prefix_carrier_code(raw_input, metadata)[2]"):
        assert line in required, line
    choose = inspect.getsource(phonenumberutil._choose_formatting_pattern_for_number)
    assert "ld_pattern = re_compile(num_format.leading_digits_pattern[-1])" in choose
    assert "ld_match = ld_pattern.match(national_number)" in choose
    assert "if fullmatch(format_pattern, national_number):" in choose
    assert callable(phonenumberutil._formatting_rule_has_first_group_only)
    strip = inspect.getsource(phonenumberutil._maybe_strip_national_prefix_carrier_code)
    assert "prefix_match = prefix_pattern.match(number)" in strip
    assert strip.count("return (U_EMPTY_STRING, number, False)") == 2  # not stripped: no prefix match, or not viable
    assert "return (carrier_code, number, False)" in strip  # the transform left no viable number


def test_inner_groups_start_after_a_separator_that_is_not_ascii_hyphens_alone() -> None:
    """``DigitShape.raw_starts``: a parse's raw input is the candidate or one of ``_INNER_MATCHES``' groups (or
    what comes before one, from the candidate's start); none of their separators is an ASCII hyphen alone."""
    patterns = [pattern.pattern for pattern in phonenumbermatcher._INNER_MATCHES]
    assert patterns == ["/+(.*)", "(\\([^(]*)", "(?u)(?:\\s-|-\\s)\\s*(.+)", "(?u)[\u2012-\u2015\uFF0D]\\s*(.+)",
                        "(?u)\\.+\\s*([^.]+)", "(?u)\\s+(\\S+)"]
    inner = inspect.getsource(phonenumbermatcher.PhoneNumberMatcher._extract_inner_match)
    assert "candidate[:group_match.start()]" in inner and "group_match.group(1))" in inner


def test_a_national_number_still_ends_where_a_run_of_digits_ends() -> None:
    """``RegionPrefilter`` looks for a valid national number ending at the end of a run of digits: an extension
    is cut off from a match of ``_EXTN_PATTERN``, which starts with no digit, and the candidate's trims
    (``_SECOND_NUMBER_START_PATTERN``, ``_UNWANTED_END_CHAR_PATTERN``) cut at a non-digit."""
    strip = inspect.getsource(phonenumberutil._maybe_strip_extension)
    assert "match = _EXTN_PATTERN.search(number)" in strip and "number[:match.start()]" in strip
    extension = phonenumberutil._EXTN_PATTERN
    for digit in "0123456789":  # no alternative of the pattern begins with a digit
        assert extension.match(digit + "1") is None and extension.match(digit + "#") is None
    assert phonenumberutil._SECOND_NUMBER_START_PATTERN.pattern == "[\\\\/] *x"  # the scan looks for "x" first
    assert phonenumbermatcher._UNWANTED_END_CHAR_PATTERN.match("0") is None


def test_the_sieve_keeps_a_region_s_numbers_and_drops_dates_in_code() -> None:
    from capsem_proxyd._compat.phonenumbers import RegionSieve

    sieve = RegionSieve(["US", "DE", "IL"])
    assert sieve.regions_of("2024-11-23") is None  # DE and IL would need their national prefix
    wanted = sieve.regions_of("030 901820")
    assert wanted is not None and wanted[:2] == (False, True)  # not a US number; a Berlin one
    assert sieve.regions_of("+49 30 901820") == (True, True, True)


def test_a_candidate_s_decision_still_reads_one_character_before_it_and_three_after() -> None:
    """``RememberingMatcher`` remembers ``_extract_match(candidate, offset)``'s answer under the candidate, the
    character before it (or none at the text's start) and the three after it: ``_parse_and_verify`` reads
    ``self.text`` only at ``offset - 1`` (a letter or a currency sign before) and at the end of what it
    parses (inside the candidate, or the character after it); ``_extract_match`` reads a time stamp's
    ``:ss`` after it; ``_extract_inner_match`` parses parts of the candidate at their offsets. Each parse
    costs one of ``_max_tries``, which the remembered answer takes again."""
    extract = inspect.getsource(phonenumbermatcher.PhoneNumberMatcher._extract_match)
    assert extract.count("self.text[") == 1 and "following_text = self.text[offset + len(candidate):]" in extract
    assert "if _TIME_STAMPS.search(candidate):\n            following_text" in extract  # read only then
    # RegionSieve: a candidate holding a date written with slashes is given up on first, whatever the region
    assert extract.index("if (_SLASH_SEPARATED_DATES.search(candidate)):\n            return None") < extract.index(
        "_TIME_STAMPS.search(candidate)")
    assert "match = self._parse_and_verify(candidate, offset)" in extract
    assert "return self._extract_inner_match(candidate, offset)" in extract
    verify = inspect.getsource(phonenumbermatcher.PhoneNumberMatcher._parse_and_verify)
    assert verify.count("self.text[") == 2 and verify.count("len(self.text)") == 1
    assert "previous_char = self.text[offset - 1]" in verify and "if (offset > 0 and" in verify
    assert "last_char_index = offset + len(candidate)" in verify and "if last_char_index < len(self.text):" in verify
    assert "next_char = self.text[last_char_index]" in verify
    # RememberingMatcher keeps only refused_beside's answer on those two characters: nothing else reads them
    flat = "".join(verify.split())
    assert verify.count("previous_char") == 3 and verify.count("next_char") == 3
    assert "if(self._is_invalid_punctuation_symbol(previous_char)orself._is_latin_letter(previous_char)):returnNone" in flat
    assert "if(self._is_invalid_punctuation_symbol(next_char)orself._is_latin_letter(next_char)):returnNone" in flat
    assert "numobj = parse(candidate, self.preferred_region, keep_raw_input=True)" in verify
    assert "return PhoneNumberMatch(offset, candidate, numobj)" in verify
    inner = inspect.getsource(phonenumbermatcher.PhoneNumberMatcher._extract_inner_match)
    assert "self.text[" not in inner and "len(self.text)" not in inner
    assert "match = self._parse_and_verify(group, offset)" in inner
    assert "match = self._parse_and_verify(group, offset + group_match.start(1))" in inner
    assert inner.count("self._max_tries -= 1") == 2 and "while group_match and self._max_tries > 0:" in inner
    assert "group_match = possible_inner_match.search(candidate, group_match.start() + 1)" in inner
    find = inspect.getsource(phonenumbermatcher.PhoneNumberMatcher._find)
    assert "match = self._extract_match(candidate, start)" in find and "self._max_tries -= 1" in find
    assert "self._max_tries = int(max_tries)" in inspect.getsource(phonenumbermatcher.PhoneNumberMatcher.__init__)


@given(st.lists(st.sampled_from(["+44 20 7946 0958", "020 7946 0958", "(650) 253-0000", "650-253-0000", "030 901820",
                                 "12:30", ":45", "a", "$", "%", " ", "/", "-", "x", "ext. 12", "2024-05-13", "\n",
                                 ",", ";", "é", "€", "."]),
                max_size=12))
@settings(max_examples=200, deadline=None)
def test_a_remembering_matcher_finds_what_the_matcher_finds(words: list[str]) -> None:
    """The same matches, text after text, with decisions remembered from the texts before (``KNOWN``)."""
    from capsem_proxyd._compat.phonenumbers import RememberingMatcher

    text = "".join(words)
    for region in ("US", "GB", "DE"):
        for leniency in (1, 2, 3):
            known = REMEMBERED.setdefault((region, leniency), {})
            ours = [(match.start, match.raw_string, match.number) for match in
                    RememberingMatcher(text, region, leniency, known)]
            theirs = [(match.start, match.raw_string, match.number) for match in
                      phonenumbers.PhoneNumberMatcher(text, region, leniency=leniency)]
            assert ours == theirs, (region, leniency, text)


REMEMBERED: dict = {}


def test_a_number_between_other_neighbours_that_get_the_same_answer_is_decided_once() -> None:
    """``RememberingMatcher`` remembers a decision under what ``_parse_and_verify`` asks of the characters around
    the candidate (``refused_beside``: a Latin letter or an invalid punctuation symbol), not the characters
    themselves: the same number after a space or a comma, before a semicolon, a newline or the text's end, is
    parsed once; after a letter or before a currency sign it is another decision (refused there)."""
    from capsem_proxyd._compat.phonenumbers import RememberingMatcher, refused_beside

    assert not any(map(refused_beside, " ,;\n.-(")) and all(map(refused_beside, "aZé€$%"))
    known: dict = {}
    text = "call 650-253-0000, 650-253-0000; x,650-253-0000\n650-253-0000"
    ours = [(match.start, match.raw_string) for match in RememberingMatcher(text, "US", 1, known)]
    theirs = [(match.start, match.raw_string) for match in phonenumbers.PhoneNumberMatcher(text, "US", leniency=1)]
    assert ours == theirs and len(ours) == 4
    assert len(known) == 1
    refused = "a650-253-0000 or 650-253-0000$"
    assert [match.start for match in RememberingMatcher(refused, "US", 1, known)] == [
        match.start for match in phonenumbers.PhoneNumberMatcher(refused, "US", leniency=1)] == []
    assert len(known) == 3  # after a letter; before a currency sign


def test_a_remembering_matcher_near_the_end_of_its_tries_decides_as_the_matcher_does() -> None:
    from capsem_proxyd._compat.phonenumbers import RememberingMatcher

    text = " ".join(["1234 5678"] * 40 + ["650-253-0000"])
    known: dict = {}
    list(RememberingMatcher(text, "US", 1, known))  # remembered with tries to spare
    for tries in (1, 5, 20, 60, 200):
        ours = RememberingMatcher(text, "US", 1, known)
        ours._max_tries = tries
        theirs = phonenumbers.PhoneNumberMatcher(text, "US", max_tries=tries)
        assert [match.start for match in ours] == [match.start for match in theirs], tries


def test_parse_still_starts_a_national_number_where_the_prefilter_looks_for_one() -> None:
    """``RegionPrefilter._starts_a_number``: without a plus sign or an international prefix, ``parse`` reads
    the raw input's digits from their start, cuts the region's country code when they start with it
    (``_maybe_extract_country_code``, then strips a national prefix there), strips a national prefix once more
    with the metadata of the code's main region (``_maybe_strip_national_prefix_carrier_code``: a ``match`` at
    the start, the rest kept, or a transform rule's group), and keeps leading zeros (the national significant
    number is those digits)."""
    extract = inspect.getsource(phonenumberutil._maybe_extract_country_code)
    for line in ("if normalized_number.startswith(default_country_code_str):",
                 "potential_national_number = full_number[len(default_country_code_str):]",
                 "_, potential_national_number, _ = _maybe_strip_national_prefix_carrier_code(potential_national_number,",
                 "return (default_country_code, potential_national_number)", "return (0, U_EMPTY_STRING)"):
        assert line in extract, line
    parse = inspect.getsource(phonenumberutil.parse)
    assert parse.count("_maybe_strip_national_prefix_carrier_code(") == 1
    assert "metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, number_region)" in parse
    assert "normalized_national_number += _normalize(national_number)" in parse
    assert "_set_italian_leading_zeros_for_phone_number(normalized_national_number, numobj)" in parse
    strip = inspect.getsource(phonenumberutil._maybe_strip_national_prefix_carrier_code)
    for line in ("possible_national_prefix = metadata.national_prefix_for_parsing",
                 "prefix_pattern = re_compile(possible_national_prefix)", "prefix_match = prefix_pattern.match(number)",
                 "transform_rule = metadata.national_prefix_transform_rule",
                 "prefix_match.groups()[num_groups - 1] is None):",
                 "return (carrier_code, number[prefix_match.end():], True)",
                 "transformed_number = re.sub(prefix_pattern, transform_rule, number, count=1)",
                 "return (carrier_code, transformed_number, True)"):
        assert line in strip, line
    nsn = inspect.getsource(phonenumberutil.national_significant_number)
    assert "numobj.italian_leading_zero" in nsn and "numobj.number_of_leading_zeros" in nsn
    # the default regions' prefix rules are ones the pre-filter follows (a plain cut, or BR's "\2")
    from capsem_proxyd._compat.phonenumbers import region_prefilter

    for region in ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR"):
        assert region_prefilter(region)._strips is not None, region
    assert phonenumberutil.PhoneMetadata.metadata_for_region("BR").national_prefix_transform_rule == "\\2"


def test_region_matches_follows_the_matcher_s_scan() -> None:
    """``region_matches`` repeats ``_find``'s loop (search, trim, ``_extract_match``, on from where the match
    or the trimmed candidate ends) with the matcher's default tries per decision (``MAX_TRIES``)."""
    import phonenumbers as library

    from capsem_proxyd._compat.phonenumbers import MAX_TRIES

    assert inspect.signature(library.PhoneNumberMatcher.__init__).parameters["max_tries"].default == MAX_TRIES
    next_match = inspect.getsource(phonenumbermatcher.PhoneNumberMatcher.has_next)
    assert "self._search_index = self._last_match.end" in next_match
    assert "self._last_match = self._find(self._search_index)" in next_match


def test_a_candidate_after_a_letter_is_still_turned_away_from_its_start() -> None:
    """``letter_before``: ``_parse_and_verify`` (leniency VALID and up) refuses a part starting at an offset
    whose character before is a Latin letter or an invalid punctuation symbol (``_is_latin_letter``,
    ``_is_invalid_punctuation_symbol``) unless it starts with a lead character (``_LEAD_PATTERN``)."""
    from capsem_proxyd._compat.phonenumbers import letter_before

    verify = inspect.getsource(phonenumbermatcher.PhoneNumberMatcher._parse_and_verify)
    assert "if self.leniency >= Leniency.VALID:" in verify
    assert "not _LEAD_PATTERN.match(candidate)):" in verify
    assert ("if (self._is_invalid_punctuation_symbol(previous_char) or\n                        "
            "self._is_latin_letter(previous_char)):\n                        return None") in verify
    assert letter_before("req=3fa9c2 10.1.2.3", 9, "2 10.1.2.3")
    assert not letter_before("call 650", 5, "650") and not letter_before("a(650) 253", 1, "(650) 253")
    assert letter_before("%650", 1, "650") and letter_before("$650", 1, "650") and not letter_before("650", 0, "650")


def test_no_candidate_holds_a_newline_and_the_pattern_reads_nothing_around_a_match() -> None:
    """``phone_scan``'s ``lines``: a line's scan finds the whole scan's candidates there only when no candidate
    holds a newline and ``_PATTERN`` has no anchor or look-around. Its text is pinned (reviewed by hand: its
    classes hold no newline, ``\\d`` takes none, it has no anchor or look-around); and no match of it on text
    full of newlines holds one."""
    import hashlib

    pattern = phonenumbermatcher._PATTERN
    assert hashlib.sha256(pattern.pattern.encode()).hexdigest() == (
        "f5af5fee4448fcd045acfd4d2a9ccfe4ecc4cf8e842f4f14b3d6210bfa913fbb"), "review phone_scan's lines"
    assert pattern.flags == re.UNICODE | re.IGNORECASE
    for lookaround in ("(?=", "(?!", "(?<", "^", "$", "\\b", "\\B", "\\A", "\\Z"):
        assert lookaround not in pattern.pattern, lookaround
    text = "\n".join(["+1 (650) 253-0000", "1\n2", "(\n650) 253", "x\n12", "030 901820 ext\n12", "12 \n 34", "\n+\n1"])
    assert [found.group() for found in pattern.finditer(text) if "\n" in found.group()] == []


@given(st.text(alphabet="0123456789 \n\t\r+-().x#;ext=,/\u00a0\u3000\uff10", max_size=60))
@settings(max_examples=300, deadline=None)
def test_no_match_of_the_candidate_pattern_holds_a_newline(text: str) -> None:
    assert all("\n" not in found.group() for found in phonenumbermatcher._PATTERN.finditer(text))
