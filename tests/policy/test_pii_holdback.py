"""A stream checked by PII holds back only what may still become one of its recognizers' matches (issue 22).

PII used to hold the 64-character cap on every streamed reply (its e-mail
pattern is unbounded, its phone numbers have no pattern at all): the reply
reached the client 64 characters late. Now it declares ``Patterns`` over its
recognizers' regexes and a superset of phonenumbers' candidate pattern
(``OfflinePIIPolicy._pending_matches``). Checked here through the real release
path (``StreamPump`` with the engine and the policy, which finds what Presidio
finds): whatever the cuts, the client never receives a character of the first
entity; with nothing pending, each event goes out as soon as it is checked;
and the work stays linear on a match that never ends.
"""

from __future__ import annotations

import pytest
import trio
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

pytest.importorskip("presidio_analyzer")

from capsem_proxyd.enforcement.holdbacks import stream_holdbacks  # noqa: E402
from capsem_proxyd.policies.holdback import Combined, holds_only_pending  # noqa: E402
from capsem_proxyd.policies.pattern_holdback import Patterns  # noqa: E402
from capsem_proxyd.policies.pii import OfflinePIIPolicy  # noqa: E402
from tests.policy.test_holdback import _set  # noqa: E402
from tests.proxy.test_release import Playbook  # noqa: E402
from tests.proxy.test_release import text as text_view  # noqa: E402
from tests.support.engines import engine  # noqa: E402
from tests.support.streams import chat_stream_through  # noqa: E402

ENTITIES = ("EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "CRYPTO", "PHONE_NUMBER", "IP_ADDRESS",
            "US_BANK_NUMBER")
SAMPLES = [
    "jane.doe@example.com",
    "x@mail.example.org",
    "4111 1111 1111 1111",
    "5555-5555-5555-4444",
    "+1 415 555 0100",
    "(212) 555-0199",
    "DE89 3704 0044 0532 0130 00",
    "GB82WEST12345698765432",
    "078-05-1120",
    "192.168.14.7",
]


@pytest.fixture(scope="module")
def pii() -> OfflinePIIPolicy:
    policy = OfflinePIIPolicy.from_config(
        {"ner": False, "check_responses": True, "entity_decisions": {entity: "BLOCK" for entity in ENTITIES}})
    assert policy is not None
    return policy


def _cut(text: str, cuts: list[int]) -> list[str]:
    cuts = sorted(cut for cut in cuts if 0 < cut < len(text))
    return [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)]) if end > start]


def _patterns(policy: OfflinePIIPolicy) -> Patterns:
    declaration = policy.stream_holdback
    assert isinstance(declaration, Combined)
    return next(part for part in declaration.parts if isinstance(part, Patterns))


def test_the_declaration_holds_only_pending_matches(pii: OfflinePIIPolicy) -> None:
    """Not the cap: the engine keeps a declaration that holds only while a match is pending."""
    declaration = pii.stream_holdback
    assert declaration is not None and holds_only_pending(declaration)
    tracker = _patterns(pii).tracker()
    assert tracker.feed("Sure, here is the answer. ") == 0
    assert tracker.feed("Write to jane.d") == len("jane.d")
    assert tracker.feed("oe@example.com") == len("jane.doe@example.com")
    assert tracker.feed(" or call ") == 0
    assert tracker.feed("+1 415 55") == len("+1 415 55")  # a phone number being written
    assert tracker.feed("5 0100 today. ") == 0


@given(data=st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_no_split_of_a_stream_ever_delivers_a_character_of_the_first_entity(
    data: st.DataObject, pii: OfflinePIIPolicy
) -> None:
    """E-mails, cards, phone numbers, IBANs, SSNs, IPs between random words, cut anywhere: refused, and
    nothing from the first entity Presidio's recognizers find on went out."""
    words = st.text(alphabet="abcdefghij XYZ,.;:!?()-\n", max_size=25)
    text = data.draw(words) + data.draw(st.sampled_from(SAMPLES)) + data.draw(words)
    stripped = len(text) - len(text.lstrip())  # the hook analyses the reply stripped
    found = pii.analyze_text(text.strip())
    assume(found)
    first = stripped + min(result.start for result in found)
    pieces = _cut(text, data.draw(st.lists(st.integers(1, len(text)), max_size=12)))
    texts, raw = trio.run(chat_stream_through, pieces, engine(_set(pii)))
    received = "".join(texts)
    assert text.startswith(received)
    assert len(received) <= first, (text, received, found)
    assert b"CAPSEM policy" in raw


@given(pieces=st.lists(st.tuples(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", max_size=9),
                                 st.sampled_from([" ", ", ", "; ", "\n", ". "])), min_size=1, max_size=12))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_with_no_match_pending_nothing_is_held(pii: OfflinePIIPolicy, pieces: list[tuple[str, str]]) -> None:
    """Words, each event ending where no entity can be pending: every event goes out as soon as it is checked
    (the release core with the PII declaration; under the cap each waited for 64 characters)."""
    play = Playbook(holdbacks=stream_holdbacks([pii], frozenset(), 64), refuse=lambda check: False)
    for number, (word, separator) in enumerate(pieces):
        play.event(text_view(word + separator), str(number).encode())
        play.read_over()
        assert play.written[-1:] == [str(number).encode()], (word, separator)


def _steps_per_char(patterns: Patterns, text: str, piece: int) -> tuple[float, int]:
    tracker = patterns.tracker()
    held = 0
    for start in range(0, len(text), piece):
        held = tracker.feed(text[start:start + piece])
    return tracker.steps / len(text), held


def test_the_work_is_linear_however_long_a_match_stays_pending(pii: OfflinePIIPolicy) -> None:
    """An e-mail address that never ends (16 kB each side of the @) and a 16 kB phone-like run of digits:
    held whole, and the DFA steps are at most a constant per character, the same on 2 kB as on 32 kB."""
    patterns = _patterns(pii)
    states = sum(len(dfa.step) for dfa in patterns.dfas)
    address = "x" * 16_000 + "@" + "y" * 16_000
    per_char, held = _steps_per_char(patterns, address, 3)
    assert held == len(address) and per_char <= states
    short, _ = _steps_per_char(patterns, address[:1_000] + address[-1_000:], 3)
    assert abs(per_char - short) < 1  # linear, not quadratic: a pending match is not read again
    digits = "1 2-3 " * 3_000
    per_char, held = _steps_per_char(patterns, digits, 5)
    assert held > 0 and per_char <= states
    words = "word " * 4_000  # each word may begin an address, and is held only while it is the last
    per_char, held = _steps_per_char(patterns, words, 7)
    assert held == 0 and per_char <= states
