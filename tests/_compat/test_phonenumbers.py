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

from capsem_proxyd._compat.phonenumbers import READ_PAST_CANDIDATE, candidate_superset, phone_windows  # noqa: E402
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
