"""Literal terms found in a stream's text as it grows (``policies/term_screen.py``).

Properties: a screen fed a text in any pieces finds exactly what it finds fed
the whole text at once; it never misses what the Debug policy refuses (every
piece after which the policy would first refuse the text so far is one the
screen flags), and on text with a single reading it flags nothing the policy
lets through. Then the stream: with Debug alone a stream's checks read only
the new text (the policy is asked once, at the end, about the whole of it),
and a marker disguised or split anywhere is still refused.
"""

from __future__ import annotations

import trio
from capsem.models import Decision
from hypothesis import given, settings
from hypothesis import strategies as st

from capsem_proxyd.enforcement.holdbacks import channel_screens
from capsem_proxyd.enforcement.loader import default_policy_set
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.observe.recorders import CacheUse, Recorder
from capsem_proxyd.policies.debug import MARKER, DebugPolicy
from capsem_proxyd.policies.holdback import LiteralTerms, Term
from capsem_proxyd.policies.normalize import one_reading, readings
from capsem_proxyd.policies.rules import RulesPolicy
from capsem_proxyd.policies.term_screen import TermScreen
from tests.support.engines import engine
from tests.support.streams import chat_stream_through

TERMS = ["capsem_block", "ab", "aab", "abab", "b"]
DISGUISES = ["capsem_block", "CAPSEM_BLOCK", "ｃａｐｓｅｍ＿ｂｌｏｃｋ", "caps\u00adem_block", "c\u0301apsem_block",
             "саpsem_block", "capsem\u200b_block", "🅲🅰🅿🆂🅴🅼_🅱🅻🅾🅲🅺", "capsem\u0332block", "\u202ekcolb_mespac\u202c",
             "block\u200f_capsem", "capsem_bloc", "apsem_block", "capsem block"]
# Letters of the marker, its pieces, lookalikes, invisible characters, marks, bidi controls, low lines.
ALPHABET = "capsemblok_ ABCKSЕсаоk\u200b\u00ad\u0301\u0332\u202e\u202c\u200fｃ🅲\n"
texts = st.lists(st.sampled_from(DISGUISES) | st.text(alphabet=ALPHABET, max_size=8), max_size=8).map("".join)


def _pieces(text: str, cuts: list[int]) -> list[str]:
    points = sorted({cut for cut in cuts if 0 < cut < len(text)})
    return [text[start:end] for start, end in zip([0, *points], [*points, len(text)])]


def _refused(policy: DebugPolicy, text: str) -> bool:
    decision: Decision = trio.run(policy.on_model_response, "i", None, text, "", [])
    return decision.verdict.value == "BLOCK"


@settings(max_examples=300)
@given(text=st.text(alphabet="abc_psemlok", max_size=60), cuts=st.lists(st.integers(0, 60), max_size=12),
       terms=st.lists(st.sampled_from(TERMS), min_size=1, max_size=4))
def test_any_split_finds_what_the_whole_text_holds(text: str, cuts: list[int], terms: list[str]) -> None:
    whole = TermScreen(terms)
    whole.feed(text)
    split = TermScreen(terms)
    for piece in _pieces(text, cuts):
        split.feed(piece)
    assert split.found == whole.found
    expected = sorted((at + len(term), term) for term in set(terms) for at in range(len(text))
                      if text.startswith(term, at))
    assert [(found.end, found.term) for found in whole.found] == expected


@settings(max_examples=300)
@given(text=st.text(alphabet="abc_psemlok", max_size=60), cuts=st.lists(st.integers(0, 60), max_size=12),
       terms=st.lists(st.sampled_from(TERMS), min_size=1, max_size=4))
def test_a_piece_is_flagged_exactly_when_a_term_ends_in_it(text: str, cuts: list[int], terms: list[str]) -> None:
    """``feed`` searches only when a term is in the kept tail and the piece together (issue 22): a term
    wholly in the tail (a short one beside a long one) was flagged before and does not flag the piece."""
    screen = TermScreen(terms)
    at = 0
    for piece in _pieces(text, cuts):
        ends_in_piece = any(text.startswith(term, start) and at < start + len(term) <= at + len(piece)
                            for term in terms for start in range(len(text)))
        assert screen.feed(piece) is ends_in_piece
        at += len(piece)


@settings(max_examples=300)
@given(text=texts, cuts=st.lists(st.integers(0, 120), max_size=12))
def test_a_screen_flags_every_piece_after_which_debug_first_refuses(text: str, cuts: list[int]) -> None:
    policy = DebugPolicy()
    screen = TermScreen([MARKER])
    so_far, refused_before = "", False
    for piece in _pieces(text, cuts):
        so_far += piece
        flagged = screen.feed(piece)
        refused = _refused(policy, so_far)
        if refused and not refused_before:
            assert flagged, (so_far, piece)
        if flagged and one_reading(so_far):
            assert refused, (so_far, piece)  # one reading: nothing flagged that the policy lets through
        refused_before = refused


def test_a_second_reading_makes_the_screen_ask_from_then_on() -> None:
    screen = TermScreen([MARKER])
    assert not screen.feed("plain text ")
    assert screen.feed("\u202eright to left\u202c")  # visual order may move any text: it cannot tell
    assert screen.feed("more plain text")


def _rules(config: dict) -> RulesPolicy:
    rules = RulesPolicy.from_config(config)
    assert rules is not None
    return rules


def test_only_policies_that_say_what_they_refuse_replies_for_are_screened() -> None:
    assert channel_screens([DebugPolicy()]) is not None  # Debug: its marker
    # Secrets (on by default) screens with its rules' keywords: the default set is screened too
    assert channel_screens(default_policy_set().manager.policies) is not None
    one_word = _rules({"on_model_response": {"block": ["x"], "log": [{"term": "Y", "case_sensitive": True}]}})
    assert channel_screens([DebugPolicy(), one_word]) is not None
    assert channel_screens([_rules({"on_model_call": {"block": ["x"]}})]) is not None  # no reply rule: never refuses
    for unscreened in ({"block": [{"regex": "x+"}]}, {"block": ["project falcon"]}, {"block": ["rm-rf"]}):
        # A regex, or a term of several words (a gap of any length between them): asked at every check.
        assert channel_screens([DebugPolicy(), _rules({"on_model_response": unscreened})]) is None
    assert LiteralTerms(["project falcon"]).screen() is None
    assert channel_screens([]) is not None  # no policy checks replies: nothing to ask


@settings(max_examples=300)
@given(text=texts, cuts=st.lists(st.integers(0, 120), max_size=12),
       terms=st.lists(st.sampled_from(["capsem", "BLOCK", "em_b", "ｃ", "k"]), min_size=1, max_size=3),
       cased=st.booleans(), thoughts=st.booleans())
def test_a_screen_flags_every_piece_after_which_rules_first_refuse(
    text: str, cuts: list[int], terms: list[str], cased: bool, thoughts: bool,
) -> None:
    rules = _rules({"on_model_response": {"block": [{"term": term, "case_sensitive": cased} for term in terms]}})
    make = channel_screens([rules])
    assert make is not None
    screen = make()
    so_far, refused_before = "", False
    for piece in _pieces(text, cuts):
        so_far += piece
        flagged = screen.feed(piece)
        args = ("", so_far) if thoughts else (so_far, "")  # the channel is the text, or the thoughts
        decision: Decision = trio.run(rules.on_model_response, "i", None, *args, [])
        refused = decision.verdict.value != "ALLOW"
        if refused and not refused_before:
            assert flagged, (so_far, piece)
        refused_before = refused


class _Decisions(Recorder):
    def __init__(self) -> None:
        self.hooks: list[tuple[str, str]] = []

    def decision_made(self, exchange: Exchange, hook: str, policy: str, decision: Decision, mode: str,
                      cache: CacheUse | None = None) -> None:
        self.hooks.append((hook, decision.verdict.value))


def test_with_debug_a_stream_asks_the_policy_once_about_its_whole_text() -> None:
    """40 events, each its own read: each check reads only the new text; Debug decides once, at the end."""
    decisions = _Decisions()
    pieces = [f"word{index:02d} " for index in range(40)]
    received, _ = trio.run(chat_stream_through, pieces, engine(recorder=decisions))
    assert received == pieces  # each went out with its own event
    assert decisions.hooks == [("on_model_response", "ALLOW")]


@given(data=st.data())
@settings(max_examples=150)
def test_with_debug_alone_a_disguised_marker_split_anywhere_is_refused(data: st.DataObject) -> None:
    spelling = data.draw(st.sampled_from(DISGUISES[:-3]))
    text = data.draw(st.text(alphabet="xyz .,", max_size=30)) + spelling + data.draw(st.text(alphabet="xyz .,", max_size=30))
    pieces = _pieces(text, data.draw(st.lists(st.integers(1, len(text) - 1), max_size=12)))
    received, raw = trio.run(chat_stream_through, pieces, engine())
    so_far = "".join(received)
    assert text.startswith(so_far)
    assert not Term(MARKER).found(readings(so_far), lambda: readings(so_far, spaced=True)), so_far
    refused = _refused(DebugPolicy(), text)  # some spellings read otherwise with what follows them
    assert (b"CAPSEM policy" in raw) == refused
    assert refused or so_far == text
