"""A stream checked by PII asks PII only where one of its recognizers may find something (issue 22).

Without a screen, every stream check asked PII (a worker process, Presidio on
the whole reply so far), so checks cost milliseconds, fell back to one per
50 ms, and streamed characters waited for them. PII's reply screen
(``policies/pattern_screen.py``, ``OfflinePIIPolicy.reply_screen``) reads each
new piece once through its recognizers' DFAs and flags a piece once a match
of one of them has ended: checked here against the policy itself (Presidio's
recognizers) on random text full of entities and near-entities, cut anywhere,
and through the real release path, where a reply with no candidate is decided
once, at its end.
"""

from __future__ import annotations

import pickle
import re

import pytest
import trio
from capsem.models import Decision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("presidio_analyzer")

from capsem_proxyd.enforcement.holdbacks import channel_screens  # noqa: E402
from capsem_proxyd.exchange import Exchange  # noqa: E402
from capsem_proxyd.observe.recorders import CacheUse, Recorder  # noqa: E402
from capsem_proxyd.policies.debug import DebugPolicy  # noqa: E402
from capsem_proxyd.policies.pattern_holdback import PatternDFA, Patterns  # noqa: E402
from capsem_proxyd.policies.pattern_screen import PatternScreen, reads_line_breaks  # noqa: E402
from capsem_proxyd.policies.pii import OfflinePIIPolicy  # noqa: E402
from tests.policy.test_holdback import _set  # noqa: E402
from tests.support.engines import engine  # noqa: E402
from tests.support.streams import chat_stream_through  # noqa: E402

DECISIONS = {"EMAIL_ADDRESS": "BLOCK", "CREDIT_CARD": "BLOCK", "US_SSN": "BLOCK", "IBAN_CODE": "BLOCK",
             "CRYPTO": "BLOCK", "PHONE_NUMBER": "LOG", "IP_ADDRESS": "LOG", "US_BANK_NUMBER": "LOG"}
ENTITIES = ["jane.doe@example.com", "x@mail.example.org", "4111 1111 1111 1111", "5555-5555-5555-4444",
            "+1 415 555 0100", "(212) 555-0199", "+44 20 7946 0958", "030 1234567", "DE89 3704 0044 0532 0130 00",
            "GB82WEST12345698765432", "078-05-1120", "192.168.14.7", "2001:db8::8a2e:370:7334", "fe80::1",
            "1BoatSLRHtKNngkdXEeobR76b53LETtpyT", "12345678", "415.555.0100", "1-800-FLOWERS", "555 0100 ext. 12"]
# Pieces of entities, numbers and the characters around them: what makes a recognizer almost match.
NEAR = ["@", ".", "-", " ", ":", "::", "+", "(", ")", "x", "ext", "call", "phone", "card", "ssn", "IBAN", "DE",
        "12", "2024", "415", "0100", "\n", "in 3 steps", "the quick answer", "a@", "@b.", "bc1q", "₁", "١٢٣"]
texts = st.lists(st.sampled_from(ENTITIES) | st.sampled_from(NEAR) | st.text(alphabet="ab0123456789 .-@:+()x\n",
                                                                                     max_size=10),
                 max_size=8).map("".join)


@pytest.fixture(scope="module")
def pii() -> OfflinePIIPolicy:
    policy = OfflinePIIPolicy.from_config({"ner": False, "check_responses": True, "entity_decisions": DECISIONS})
    assert policy is not None
    return policy


def _pieces(text: str, cuts: list[int]) -> list[str]:
    points = sorted({cut for cut in cuts if 0 < cut < len(text)})
    return [text[start:end] for start, end in zip([0, *points], [*points, len(text)])]


@given(text=texts, cuts=st.lists(st.integers(0, 200), max_size=10), thoughts=st.booleans())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_screen_flags_every_piece_after_which_pii_first_decides_otherwise_than_allow(
    pii: OfflinePIIPolicy, text: str, cuts: list[int], thoughts: bool
) -> None:
    """The screen's promise (``declarations.reply_screen``): a check whose new piece it flags nothing in may
    pass without asking PII, so PII must answer ALLOW on the text so far until the screen has flagged."""
    make = pii.reply_screen()
    assert make is not None
    screen = make()
    so_far, flagged_before = "", False
    for piece in _pieces(text, cuts):
        so_far += piece
        flagged = screen.feed(piece)
        assert flagged or not flagged_before  # once flagged, every piece is (the answer may change any time)
        args = ("", so_far) if thoughts else (so_far, "")
        decision: Decision = trio.run(pii.on_model_response, "i", None, *args, [])
        if decision.verdict.value != "ALLOW":
            assert flagged, (so_far, piece, decision.details)
        flagged_before = flagged


def test_prose_and_short_numbers_are_not_flagged(pii: OfflinePIIPolicy) -> None:
    """What the screen is for: ordinary prose, even with a short number or an at sign alone, asks nothing."""
    make = pii.reply_screen()
    assert make is not None
    screen = make()
    for piece in ["Sure, here is the quick answer ", "in 3 steps: first, ", "add 12 cups; then ", "meet me @ noon ",
                  "(see note 2) and e-mail ", "me. ", "Done."]:
        assert not screen.feed(piece), piece
    assert screen.feed(" Write to jane@exam") is False  # an address being written: held back, not yet found
    assert screen.feed("ple.com") is True
    assert screen.feed(" and more prose") is True  # from the first match on, the policy decides


def test_the_screen_travels_to_the_proxy_and_only_where_no_match_holds_a_line_break(pii: OfflinePIIPolicy) -> None:
    """A policy run in worker processes hands its screen maker over in its manifest: it pickles. The hook joins
    text and thoughts with a line break, and each is screened alone: no pattern's match may hold one."""
    make = pii.reply_screen()
    assert make is not None
    copy = pickle.loads(pickle.dumps(make))()
    assert isinstance(copy, PatternScreen) and not copy.feed("plain words") and copy.feed("a@b.co ")
    assert not any(reads_line_breaks(dfa) for dfa in make().dfas)
    quiet = OfflinePIIPolicy.from_config({"ner": False, "check_responses": False, "entity_decisions": DECISIONS})
    assert quiet is not None and (maker := quiet.reply_screen()) is not None and not maker().feed("a@b.co 4111")
    with_ner = OfflinePIIPolicy.from_config({"ner": True, "check_responses": True,
                                             "entity_decisions": {"PERSON": "BLOCK"}}) if _has_model() else None
    if with_ner is not None:
        assert with_ner.reply_screen() is None  # NER entities have no pattern: asked at every check


def _has_model() -> bool:
    from capsem_proxyd._compat.presidio import spacy_model_installed

    return spacy_model_installed("en_core_web_lg")


class _Decisions(Recorder):
    def __init__(self) -> None:
        self.made: list[tuple[str, str, str]] = []

    def decision_made(self, exchange: Exchange, hook: str, policy: str, decision: Decision, mode: str,
                      cache: CacheUse | None = None) -> None:
        self.made.append((hook, policy, decision.verdict.value))


def test_with_pii_and_debug_a_stream_without_entities_asks_pii_once(pii: OfflinePIIPolicy) -> None:
    """40 events, each its own read: both screens read only the new text, and the policies decide once, on the
    whole reply at its end (before, PII was asked at every check)."""
    assert channel_screens([DebugPolicy(), pii]) is not None
    decisions = _Decisions()
    pieces = [f"word{index:02d}, and step {index % 7} " for index in range(40)]
    received, _ = trio.run(chat_stream_through, pieces, engine(_set(DebugPolicy(), pii), recorder=decisions))
    assert "".join(received) == "".join(pieces)
    assert [made for made in decisions.made if made[0] == "on_model_response"] == [
        ("on_model_response", "Debug", "ALLOW"), ("on_model_response", pii.name, "ALLOW")]


def test_after_a_candidate_pii_decides_and_refuses_an_address(pii: OfflinePIIPolicy) -> None:
    """An address split over events: refused, none of it delivered; the policy was asked once it was found."""
    decisions = _Decisions()
    pieces = ["Sure, ", "write to ", "jane.d", "oe@exa", "mple.com", " today."]
    received, raw = trio.run(chat_stream_through, pieces, engine(_set(DebugPolicy(), pii), recorder=decisions))
    assert "".join(received) == "Sure, write to "
    assert b"CAPSEM policy" in raw
    assert ("on_model_response", pii.name, "BLOCK") in decisions.made


BOUNDED = ["\\bab+", "\\b[a-c]+@c", "\\b\\d{2,}", "\\b-x", "\\b\\w\\.\\w", "a\\bb", "(?i)\\bAB"]


@given(text=st.text(alphabet="ab c@-x1é_.", max_size=30), cuts=st.lists(st.integers(0, 30), max_size=8),
       pattern=st.sampled_from(BOUNDED))
@settings(max_examples=300, deadline=None)
def test_a_pattern_beginning_with_a_word_boundary_is_found_and_held_wherever_re_finds_it(
    text: str, cuts: list[int], pattern: str
) -> None:
    """A raw read starts a pending match only where ``\\b`` holds when the pattern begins with it (the character
    before the piece is remembered): the screen still flags every text ``re`` finds a match in, and no split
    releases a character of the first match (the tracker holds it until the match is complete)."""
    compiled = re.compile(pattern)
    dfa = PatternDFA(compiled)
    screen = PatternScreen([dfa])
    tracker = Patterns.of([dfa], raw=True).tracker()
    so_far = ""
    first = compiled.search(text)
    for piece in _pieces(text, cuts):
        so_far += piece
        flagged = screen.feed(piece)
        held = tracker.feed(piece)
        found = compiled.search(so_far)
        if found:
            assert flagged, (so_far, pattern)
        if first is not None and not found:
            assert len(so_far) - held <= first.start(), (so_far, held, pattern)  # nothing of it released


def test_inside_a_word_no_match_of_such_a_pattern_begins() -> None:
    """``on `` of ``question `` begins no IBAN (``\\b[A-Z]{2}[ -]?[0-9]{2}…``): before, the boundary read as the
    empty string and every two letters at a chunk's end were held."""
    dfa = PatternDFA(re.compile("\\b[a-z]{2} ?[0-9]{2}"))
    tracker = Patterns.of([dfa], raw=True).tracker()
    assert tracker.feed("question ") == 0
    assert tracker.feed("on ") == 3  # a word of its own: may still become "on 12"
    screen = PatternScreen([dfa])
    assert not screen.feed("question12 x")
    assert screen.feed("y ab 12")
