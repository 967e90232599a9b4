"""Where phonenumbers' matcher can find a number: the parts of a text its candidate scan would look at.

``phone_windows`` repeats the scan of ``PhoneNumberMatcher._find``: its
private ``_PATTERN`` finds a candidate, its private
``_SECOND_NUMBER_START_PATTERN`` trims it, the next search starts where the
candidate ended; ``_extract_match`` reads at most three characters past a
candidate (a time stamp's ``:ss``, its ``_TIME_STAMPS_SUFFIX``). Running the
matcher only on the parts of a text this returns finds the same numbers at the
same places (``tests/policy/test_pii_speed.py`` checks it on random text).

phonenumbers is pinned below its next minor release in pyproject.toml;
``tests/_compat/test_phonenumbers.py`` is the canary: it fails when either
pattern goes or ``_find`` / ``_extract_match`` scan differently. It can go when
phonenumbers (or Presidio's phone recognizer) gets a cheap pre-filter of its own.
"""

from __future__ import annotations

from phonenumbers import PhoneMetadata
from phonenumbers.phonenumbermatcher import _PATTERN as _PHONE_CANDIDATE
from phonenumbers.phonenumberutil import _SECOND_NUMBER_START_PATTERN, SUPPORTED_REGIONS

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


def phone_windows(text: str, min_digits: int) -> list[tuple[int, int]]:
    """The parts of ``text`` the phone matcher must see: each candidate with ``min_digits`` digits or
    more (or any letter), from where the matcher's scan starts the search that finds it to three
    characters past its end (the most the matcher reads after a candidate: a time stamp's ``:ss``),
    merged where they touch."""
    scan: list[tuple[int, int, bool]] = []  # (where the search started, candidate end, long enough)
    index = 0
    while True:
        found = _PHONE_CANDIDATE.search(text, index)
        if found is None:
            break
        candidate = found.group()
        second = _SECOND_NUMBER_START_PATTERN.search(candidate)  # the matcher's own trim
        if second:
            candidate = candidate[:second.start()]
        end = found.start() + max(1, len(candidate))
        digits = sum(char.isdigit() for char in candidate)
        scan.append((index, end, digits >= min_digits or any(char.isalpha() for char in candidate)))
        index = end
    windows: list[tuple[int, int]] = []
    for start, end, long_enough in scan:
        if not long_enough:
            continue
        stop = min(len(text), end + READ_PAST_CANDIDATE)
        if windows and start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], max(windows[-1][1], stop))
        else:
            windows.append((start, stop))
    return windows
