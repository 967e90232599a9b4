"""The PII policy's two speed-ups change no result: its analyzer against Presidio's own, on random text.

``OfflinePIIPolicy`` computes spaCy's artifacts only when a match needs its
context words, and runs the phone recognizer only around candidates with
enough digits to be valid anywhere. The reference here is Presidio's
``PhoneRecognizer`` on the whole text with eagerly computed artifacts; both
must find the same entities, at the same places, with the same scores.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytest.importorskip("presidio_analyzer", reason="the 'pii' extra is not installed")

from presidio_analyzer import AnalyzerEngine, RecognizerRegistry  # noqa: E402
from presidio_analyzer.nlp_engine import SpacyNlpEngine  # noqa: E402
from presidio_analyzer.predefined_recognizers import PhoneRecognizer  # noqa: E402

from capsem_proxyd._compat.phonenumbers import phone_windows  # noqa: E402
from capsem_proxyd.policies.pii import CandidatePhoneRecognizer, OfflinePIIPolicy  # noqa: E402

ENTITIES = {"EMAIL_ADDRESS": "BLOCK", "CREDIT_CARD": "BLOCK", "US_SSN": "BLOCK", "PHONE_NUMBER": "LOG",
            "IP_ADDRESS": "LOG", "IBAN_CODE": "BLOCK", "US_BANK_NUMBER": "LOG"}
POLICY = OfflinePIIPolicy.from_config({"entity_decisions": ENTITIES, "ner": False})
assert POLICY is not None
WORDS = ["call", "phone", "me", "at", "+1", "(650)", "253-0000", "650-253-0000", "+44 20 7946 0958", "020 7946 0958",
         "+49 30 901820", "030 901820", "2024-05-13", "12:30", ":45", "1234", "42", "x", "ext.", "4111 1111 1111 1111",
         "078-05-1120", "ssn", "jane@example.com", "10.0.0.1", "DE89 3704 0044 0532 0130 00", "tel:", "/", "-",
         "def", "handler_5678(timeout=30)", "rev 1a2b3c4d", "\n", "\t", "555", "0123456789", "+33 1 42 68 53 00"]


def reference() -> AnalyzerEngine:
    """Presidio as it comes: its phone recognizer, its artifacts computed for every text."""
    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": "blank:en"}])
    engine.nlp = POLICY.analyzer.nlp_engine.nlp  # the same blank pipeline (with its lemma component)
    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in POLICY.analyzer.registry.recognizers:
        if isinstance(recognizer, CandidatePhoneRecognizer):
            recognizer = PhoneRecognizer(context=recognizer.context, supported_regions=recognizer.supported_regions,
                                         leniency=recognizer.leniency)
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])


REFERENCE = reference()


def found(results: list[Any]) -> list[tuple[str, int, int, float]]:
    return sorted((result.entity_type, result.start, result.end, round(result.score, 6)) for result in results)


@given(st.lists(st.sampled_from(WORDS), max_size=30), st.lists(st.sampled_from([" ", "", ", ", "  "]), max_size=30))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_analyzer_finds_what_presidio_finds(words: list[str], separators: list[str]) -> None:
    text = "".join(word + (separators[index] if index < len(separators) else " ") for index, word in enumerate(words))
    ours = POLICY.analyze_text(text)
    theirs = REFERENCE.analyze(text=text, entities=list(ENTITIES), language="en", score_threshold=POLICY.score_threshold)
    assert found(ours) == found(theirs), text


@given(st.text(alphabet="0123456789 -+().:/x\nab", max_size=120))
@example("call 650-253-0000a or 650-253-0000 b")  # a letter right after a number: not a number
@example("at 2024-05-13 12:30:45 and 020 7946 0958:12")  # time stamps: the matcher reads past the candidate
@settings(max_examples=500, deadline=None)
def test_the_phone_recognizer_finds_what_presidio_finds_in_digit_soup(text: str) -> None:
    ours = CandidatePhoneRecognizer().analyze(text, ["PHONE_NUMBER"])
    theirs = PhoneRecognizer().analyze(text, ["PHONE_NUMBER"])
    assert found(ours) == found(theirs), text


def test_candidates_too_short_to_be_numbers_leave_nothing_to_scan() -> None:
    listing = "\n".join(f"{line:6d}\tx = f(a[{line % 7}], {line % 300})" for line in range(1, 200))
    assert phone_windows(listing, 4) == []
    assert phone_windows("call 650-253-0000 now", 4) == [(0, 20)]
