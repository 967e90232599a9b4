"""Streams hold back only what an active policy could still match.

Properties: for any literal term and any split of a stream at any boundary,
no client ever receives a whole term (nor its beginning while it may still
complete); and when no partial match is pending, nothing is held. Then the
declarations: Debug holds at most 11 characters, Rules its longest term minus
one or its widest regex, an unbounded regex (or an undeclared policy) the
``--stream-holdback`` cap; ``capsem-proxyd policies`` names the policy that
sets the hold-back.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from capsem_proxyd.enforcement.holdbacks import channel_matchers
from capsem_proxyd.enforcement.loader import load_policy_set
from capsem_proxyd.policies.debug import DebugPolicy
from capsem_proxyd.policies.holdback import Fixed, LiteralTerms, Term, Visible, holds_only_pending, regex_width
from capsem_proxyd.policies.normalize import fold, readings
from capsem_proxyd.policies.rules import RulesPolicy
from tests.support.daemon import run_capsem_proxyd
from tests.support.engines import engine
from tests.support.streams import chat_stream_through

TERMS = ["capsem_block", "project falcon", "wire transfer", "ab", "aab"]
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz _.,", max_size=40)


@given(text=words | st.tuples(words, st.sampled_from(["project", "projec", "wire", "capsem_"]), st.text(" ", max_size=6)).map(
    "".join), terms=st.lists(st.sampled_from(TERMS), min_size=1, max_size=3))
def test_only_a_pending_prefix_is_held(text: str, terms: list[str]) -> None:
    """held == the longest end of the text that is a proper beginning of a term (0: none pending), where a
    run of spaces is one gap between a term's words (``project   `` may still become ``project falcon``)."""
    holdback = LiteralTerms(terms)
    expected = max(
        (len(text) - start for start in range(len(text)) for term in terms
         if 0 < len(end := re.sub(" +", " ", text[start:]) if " " in term else text[start:]) < len(term)
         and term.startswith(end)),
        default=0,
    )
    assert holdback.held(text) == expected


@pytest.mark.parametrize(("text", "held"), [
    ("x project", 7), ("x project" + " " * 300, 307), ("x project\u200b", 8), ("x pro\u200bject \u200b\n-", 12),
    ("x project \u2014 f", 11), ("x project_", 0), ("x projectf", 0), ("x PROJECT\tFALCO", 13),
])
def test_a_pending_gap_is_held_however_long(text: str, held: int) -> None:
    assert LiteralTerms(["project falcon"]).held(text) == held


def test_a_combining_low_line_is_held_as_an_underscore_too() -> None:
    holdback = LiteralTerms(["capsem_block"])
    assert holdback.held("x capsem\u0332") == len("capsem\u0332")
    assert holdback.held("x capsem\u0332bl") == len("capsem\u0332bl")
    assert holdback.held("x c\u0332a\u0332p\u0332") == 6  # underlined: also a pending "cap"


def test_a_paragraph_waits_from_its_first_bidi_control_to_its_end() -> None:
    """Visual order can put later text before earlier (an open override shows new text first), within a paragraph."""
    matcher = channel_matchers([("Debug", LiteralTerms(["capsem_block"]))])()
    assert matcher.feed("hello ").pending is None
    assert matcher.feed("\u202ekc").pending == len("hello ")
    assert matcher.feed("olb and a long tail of text\u202c").pending == len("hello ")
    assert matcher.feed(" still the same paragraph").pending == len("hello ")
    assert matcher.feed(" ends\nnext paragraph").pending is None  # shown, it ends in nothing a term begins with
    fixed_only = channel_matchers([("Other", Fixed(3))])()
    assert fixed_only.feed("hello \u202ekcolb").pending == len("hello \u202ekcolb") - 3


def test_a_paragraph_whose_shown_end_may_begin_a_term_waits_for_the_next() -> None:
    rules = RulesPolicy.from_config({"on_model_response": {"block": ["project falcon", {"regex": "x{3}"}]}})
    assert rules is not None and rules.stream_holdback is not None
    matcher = channel_matchers([("Rules", rules.stream_holdback)])()
    start = len("intro ")
    assert matcher.feed("intro \u202etcejorp\u202c\n").pending == start  # shown: "project\n", a gap may follow
    assert matcher.feed("abc").pending == start
    assert matcher.feed("\n").pending is None  # and no match of the regex is pending (pattern_holdback)
    assert matcher.feed("xx").pending == len("intro \u202etcejorp\u202c\nabc\n")  # now one is
    before = "intro \u202etcejorp\u202c\n"
    again = channel_matchers([("Rules", rules.stream_holdback)])()
    assert again.feed(before).pending == start and again.feed("fal").pending == start


def test_a_pending_prefix_before_the_first_control_is_held_too() -> None:
    matcher = channel_matchers([("Debug", LiteralTerms(["capsem_block"]))])()
    assert matcher.feed("x caps").pending == 2 and matcher.feed("\u202eem").pending == 2


@given(text=words, padding=st.sampled_from(["\u200b", "\u00ad", "\u200b" * 30]))
def test_a_prefix_padded_with_invisible_characters_is_held_from_its_start(text: str, padding: str) -> None:
    holdback = LiteralTerms(["capsem_block"])
    padded = padding.join("capsem_bl")
    held = holdback.held(text + " " + padded)
    assert held >= len(padded)  # the first letter of the pending term is held, however far back it is
    assert fold((text + " " + padded)[:-held]).rstrip().endswith(fold(text).rstrip()) or not text.strip()


@given(data=st.data())
@settings(max_examples=120)
def test_no_split_of_a_stream_ever_delivers_a_whole_term(data: st.DataObject) -> None:
    term = data.draw(st.sampled_from(["capsem_block", "project falcon"]))
    before, after = data.draw(words), data.draw(words)
    text = before + data.draw(st.sampled_from([term, term.upper()])) + after
    cuts = sorted(data.draw(st.lists(st.integers(1, len(text) - 1), max_size=12)))
    pieces = [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)]) if end > start]
    rules = RulesPolicy.from_config({"on_model_response": {"block": ["project falcon"]}})
    policy_engine = engine(_set(DebugPolicy(), rules))
    texts, raw = trio.run(chat_stream_through, pieces, policy_engine)
    received, whole = fold("".join(texts)), fold(text)
    assert whole.startswith(received)
    # Not a character of the term's first occurrence reached the client ("____p" of "____pproject falcon" may).
    assert len(received) <= whole.find(fold(term)), received
    assert b"CAPSEM policy" in raw


SPELLINGS = {
    "capsem_block": ["capsem_błock", "capsem_bløck", "ȼapsem_block", "capsɇm_block", "capsem\u02cdblock",
                     "capsem\u2017block", "capsem\u0332block", "🅲🅰🅿🆂🅴🅼_🅱🅻🅾🅲🅺", "⒞⒜⒫⒮⒠⒨_⒝⒧⒪⒞⒦",
                     "\u202ekcolb_mespac\u202c", "\u202e_mespac\u202cblock", "\u2067\u202ekcolb_mespac\u202c\u2069",
                     "\u202e\u202dcapsem\u202c_block\u202c", "block\u200f_capsem"],
    "project falcon": ["project  falcon", "project\nfalcon", "project\tfalcon", "project-falcon", "project\u200bfalcon",
                       "pro\u200bject \u2014 falcon", "project" + " " * 80 + "falcon", "ⓟⓡⓞⓙⓔⓒⓣ\r\nⓕⓐⓛⓒⓞⓝ",
                       "\u202etcejorp\u202c\nfalcon", "\u202etcejorp\u202c\n\u202enoclaf\u202c"],
}


@given(data=st.data())
@settings(max_examples=150)
def test_no_split_of_a_stream_ever_delivers_a_disguised_term(data: st.DataObject) -> None:
    """Class 12 and 14 spellings, cut into events anywhere: refused, and what went out never reads as the term."""
    term = data.draw(st.sampled_from(list(SPELLINGS)))
    spelling = data.draw(st.sampled_from(SPELLINGS[term]))
    # On a line of its own: a bidi spelling reads as the term only within its paragraph's visual order,
    # which letters next to it on the same line change ("ab block\u200f_capsem" reads "capsem_ab block").
    text = data.draw(words) + "\n" + spelling + "\n" + data.draw(words)
    cuts = sorted(data.draw(st.lists(st.integers(1, len(text) - 1), max_size=12)))
    pieces = [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)]) if end > start]
    rules = RulesPolicy.from_config({"on_model_response": {"block": ["project falcon"]}})
    texts, raw = trio.run(chat_stream_through, pieces, engine(_set(DebugPolicy(), rules)))
    received = "".join(texts)
    assert text.startswith(received)
    compiled = Term(term)
    assert not compiled.found(readings(received), lambda: readings(received, spaced=True)), received
    assert b"CAPSEM policy" in raw


@given(text=st.text(alphabet="xyz .,", min_size=1, max_size=60), data=st.data())
@settings(max_examples=80)
def test_with_no_match_pending_nothing_is_held(text: str, data: st.DataObject) -> None:
    """Text with no letter of the marker: every piece goes out with the event that brought it."""
    cuts = sorted(data.draw(st.lists(st.integers(1, max(1, len(text) - 1)), max_size=8)))
    pieces = [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)]) if end > start]
    texts, _ = trio.run(chat_stream_through, pieces, engine())
    assert texts == pieces


class _Undeclared(DebugPolicy):
    """A third-party policy that checks replies and declares no hold-back."""

    name = "Undeclared"
    stream_holdback = None


def _set(*policies: object) -> object:
    from capsem.manager import SecurityManager

    from capsem_proxyd.enforcement.loader import PolicySet

    manager = SecurityManager()
    for policy in policies:
        manager.add_policy(policy)
    return PolicySet(manager=manager, source="test")


def test_declarations(tmp_path: Path) -> None:
    debug = DebugPolicy.stream_holdback
    assert debug.bound == 11
    rules = RulesPolicy.from_config({"on_model_response": {"block": ["project falcon", {"regex": "AKIA[0-9A-Z]{16}"}]}})
    assert rules is not None and rules.stream_holdback is not None
    assert rules.stream_holdback.bound == 19  # the regex (20 wide) outranks the term (14 long)
    unbounded = RulesPolicy.from_config({"on_model_response": {"block": [{"regex": "secret-[a-z]+"}]}})
    assert unbounded is not None and unbounded.stream_holdback is not None
    assert unbounded.stream_holdback.bound is None and holds_only_pending(unbounded.stream_holdback)
    request_side = RulesPolicy.from_config({"on_model_call": {"block": [{"regex": "secret-[a-z]+"}]}})
    assert request_side is not None and request_side.split_holdback is None  # a seam needs a width: the cap
    prompt_only = RulesPolicy.from_config({"on_model_call": {"block": [{"regex": "x+"}]}})
    assert prompt_only is not None and prompt_only.stream_holdback is not None and prompt_only.stream_holdback.bound == 0
    assert regex_width(re.compile("AKIA[0-9A-Z]{16}")) == 20 and regex_width(re.compile("a+")) is None
    assert Visible(3).held("ab\u200bcd") == 4  # three visible characters, four raw ones


def test_the_engine_holds_the_most_any_policy_needs_and_the_cap_for_unbounded(tmp_path: Path) -> None:
    (tmp_path / "debug.toml").write_text("")
    (tmp_path / "rules.toml").write_text('[on_model_response]\nblock = [{ regex = "secret-[a-z]+" }]\n')
    policy_engine = engine(load_policy_set(tmp_path), holdback_cap=40)
    text = "plain text " * 10
    # An unbounded regex holds only a match pending (pattern_holdback), never the cap.
    assert channel_matchers(policy_engine.holdbacks)().feed(text).pending is None
    assert channel_matchers(policy_engine.holdbacks)().feed(text + "SECRET-" + "x" * 100).pending == len(text)
    undeclared = engine(_set(_Undeclared()), holdback_cap=40)  # a third-party policy that declares nothing
    assert channel_matchers(undeclared.holdbacks)().feed(text).pending == len(text) - 40  # the cap
    debug_only = channel_matchers(engine(load_policy_set(None), holdback_cap=40).holdbacks)
    assert debug_only().feed(text).pending is None and debug_only().feed("plain capsem_").pending == len("plain ")


@pytest.mark.parametrize(("rules", "says"), [
    ("", "up to 11 characters, only while they may still become a term (set by Debug)"),
    # the default rules: the DFAs hold only from the start of a credential still pending
    ("secrets", "only while a match is pending, of any length (regexes; set by Secrets)"),
    ('[on_model_response]\nblock = [{ regex = "AKIA[0-9A-Z]{16}" }]\n', "19 characters (set by Rules)"),
    ('[on_model_response]\nblock = [{ regex = "secret-[a-z]+" }]\n',
     "only while a match is pending, of any length (regexes; set by Rules)"),
])
def test_policies_command_names_the_effective_holdback(tmp_path: Path, rules: str, says: str) -> None:
    (tmp_path / "debug.toml").write_text("")
    (tmp_path / "secrets.toml").write_text("enabled = false\n")  # on by default: its own hold-back is below
    if rules == "secrets":
        (tmp_path / "secrets.toml").unlink()
    elif rules:
        (tmp_path / "rules.toml").write_text(rules)
    result = run_capsem_proxyd("policies", "--policy-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"stream hold-back: {says}" in result.stdout


@given(pieces=st.lists(st.text(alphabet="abcsemop_lk \u200b", max_size=12), min_size=1, max_size=8),
       regex_width=st.integers(0, 20))
def test_a_channel_matcher_fed_in_pieces_holds_what_the_engine_held_on_the_whole_text(
    pieces: list[str], regex_width: int,
) -> None:
    """The matcher interface keeps today's hold-back exactly: ``pending`` is the text's length minus the
    most any declaration holds on the whole text so far (None when nothing is held), and it finds nothing."""
    holdbacks = [("Debug", LiteralTerms(["capsem_block"])), ("Rules", Visible(regex_width)), ("Other", Fixed(3))]
    matcher = channel_matchers(holdbacks)()
    text = ""
    for piece in pieces:
        text += piece
        scan = matcher.feed(piece)
        held = max(holdback.held(text) for _, holdback in holdbacks) if text else 0
        assert scan.pending == (len(text) - held if held else None)
        assert scan.findings == ()


def test_a_policy_set_that_checks_no_reply_holds_nothing() -> None:
    matcher = channel_matchers([])()
    assert matcher.feed("plain capsem_").pending is None
    debug = channel_matchers([("Debug", LiteralTerms(["capsem_block"]))])()
    assert debug.feed("plain ").pending is None and debug.feed("capsem_").pending == len("plain ")
