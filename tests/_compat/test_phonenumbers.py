"""Canary for ``capsem_proxyd/_compat/phonenumbers.py``: the phone matcher's candidate scan, mirrored.

``phone_windows`` imports phonenumbers' private ``_PATTERN`` (the matcher's
candidate pattern) and ``_SECOND_NUMBER_START_PATTERN`` (its trim), and
repeats what ``PhoneNumberMatcher._find`` does with them (via
``_trim_after_first_match``) and how far ``_extract_match`` reads past a
candidate (``_TIME_STAMPS_SUFFIX``, three characters). That the windows find
what the matcher finds on random text is ``tests/policy/test_pii_speed.py``.
"""

from __future__ import annotations

import inspect
import re

import pytest

phonenumbers = pytest.importorskip("phonenumbers", reason="the 'pii' extra is not installed")

from phonenumbers import phonenumbermatcher, phonenumberutil  # noqa: E402

from capsem_proxyd._compat.phonenumbers import READ_PAST_CANDIDATE, phone_windows  # noqa: E402
from tests._compat.pins import assert_below_next_minor  # noqa: E402


def test_phonenumbers_is_pinned_below_its_next_minor_release() -> None:
    assert_below_next_minor("phonenumbers")


def test_the_private_patterns_still_exist() -> None:
    assert isinstance(phonenumbermatcher._PATTERN, re.Pattern)
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
