"""The stream release core, without sockets, tasks or clocks: events in, checks and writes out.

Like mitmproxy's ``Playbook``, each test plays the shell's part by hand: it
feeds the core a dialect's views (``StreamView``) with their raw bytes, answers
the checks it asks for (a "policy" here is a plain function over the check,
refusing ends the play as the shell would), and reads what it releases.
Then hypothesis: a forbidden term split at any point across events never goes
out, not even its beginning; release order is the upstream's order; an event
carrying part of a tool call never goes before the call was checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsem_proxyd.enforcement.holdbacks import channel_matchers
from capsem_proxyd.policies.holdback import Fixed, LiteralTerms
from capsem_proxyd.proxy.release import (
    Check,
    CheckSchedule,
    Edit,
    Release,
    StreamRelease,
    TextCheck,
    ToolCallCheck,
    apply_edits,
)
from capsem_proxyd.views import ALL_CHANNELS, StreamView, ToolFragment

TERM = "capsem_block"
DEBUG = [("Debug", LiteralTerms([TERM]))]  # what the Debug policy declares


class Refused(Exception):
    """A check refused: the shell would end the stream here."""


@dataclass
class Playbook:
    """The shell's part, by hand: feed events, answer checks, collect what is released."""

    holdbacks: list = field(default_factory=lambda: list(DEBUG))
    schedule: CheckSchedule = field(default_factory=CheckSchedule)
    refuse: Callable[[Check], bool] = lambda check: isinstance(check, TextCheck) and TERM in check.text
    check_seconds: float = 0.0  # what each check "costs"
    now: float = 0.0
    keeps_stored: bool = False
    asked: list[Check] = field(default_factory=list)
    written: list[bytes] = field(default_factory=list)
    releases: list[Release] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.core = StreamRelease(self.schedule, channel_matchers(self.holdbacks), keeps_stored=self.keeps_stored)

    def event(self, view: StreamView, raw: bytes) -> list[Check]:
        """One event: the checks it asked for (answered), then what may go."""
        checks = self.core.accept(view, raw, self.now)
        self._answer(checks)
        return checks

    def read_over(self) -> list[Check]:
        checks = self.core.read_over()
        self._answer(checks)
        return checks

    def finish(self) -> list[Check]:
        checks = self.core.finish()
        self._answer(checks)
        return checks

    def _answer(self, checks: list[Check]) -> None:
        for check in checks:
            self.asked.append(check)
            if self.refuse(check):
                raise Refused(check)
            self.core.checked(check, self.check_seconds, self.now)
        release = self.core.release()
        if release is not None:
            self.releases.append(release)
            self.written.extend(release.events)


def text(delta: str, choice: object = 0) -> StreamView:
    return StreamView(text=[(choice, delta)])


# -- playbook ----------------------------------------------------------------


def test_the_first_text_is_checked_and_goes_out_at_once() -> None:
    play = Playbook()
    checks = play.event(text("Hello"), b"e0")
    assert checks == [TextCheck(0, "Hello", "")]
    assert play.written == [b"e0"] and play.core.started


def test_an_end_that_may_become_a_term_is_held_and_never_goes_once_the_term_completes() -> None:
    play = Playbook()
    play.event(text("Sure: capsem_"), b"e0")
    assert play.written == []  # the event ends in what may become the term: held, with all its text
    play.event(text("bl"), b"e1")
    assert play.written == []
    with pytest.raises(Refused):
        play.event(text("ock now"), b"e2")
    assert play.written == []


def test_an_end_that_does_not_become_a_term_goes_once_it_cannot() -> None:
    play = Playbook()
    play.event(text("Sure: capsem_"), b"e0")
    play.event(text("is a prefix, nothing more"), b"e1")
    assert play.written == [b"e0", b"e1"]


def test_a_fixed_holdback_holds_its_width_until_the_end() -> None:
    play = Playbook(holdbacks=[("Wide", Fixed(10))])
    play.event(text("0123456789abc"), b"e0")
    assert play.written == []  # the event's text ends 10 characters short of what may go
    play.event(text("0123456789"), b"e1")
    assert play.written == [b"e0"]
    play.finish()
    assert play.written == [b"e0", b"e1"]  # the text is complete: nothing is pending


def test_each_choice_is_its_own_channel() -> None:
    play = Playbook()
    checks = play.event(StreamView(text=[(0, "capsem_"), (1, "block")]), b"e0")
    assert {check.text for check in checks if isinstance(check, TextCheck)} == {"capsem_", "block"}
    play.finish()
    assert play.written == [b"e0"]  # the term never stood whole in one choice


def test_thoughts_are_checked_with_their_choice_and_held_on_their_own() -> None:
    play = Playbook()
    checks = play.event(StreamView(text=[(0, "Answer")], thoughts=[(0, "thinking capsem_")]), b"e0")
    assert checks == [TextCheck(0, "Answer", "thinking capsem_")]
    assert play.written == []  # the thoughts' end may become the term


def test_a_tool_call_is_held_until_complete_and_checked_and_events_behind_it_wait() -> None:
    play = Playbook()
    key = (0, 0)
    play.event(StreamView(tool_fragments=[ToolFragment(key=key, name="get_weather", call_id="c1", arguments='{"ci')]), b"e0")
    play.event(StreamView(tool_fragments=[ToolFragment(key=key, arguments='ty": "Paris"}')]), b"e1")
    play.event(text("after the call"), b"e2")
    assert play.written == []  # the call is open: it and everything behind it wait
    checks = play.event(StreamView(finished=[0]), b"e3")
    call = next(check for check in checks if isinstance(check, ToolCallCheck))
    assert call.call.name == "get_weather" and call.call.arguments == {"city": "Paris"} and call.call.call_id == "c1"
    assert play.written == [b"e0", b"e1"]  # the text behind the call waits for its own check...
    play.read_over()
    assert play.written == [b"e0", b"e1", b"e2", b"e3"]  # ...which the end of the read brings


def test_a_call_checked_once_however_many_events_close_it() -> None:
    play = Playbook()
    key = (0, 0)
    play.event(StreamView(tool_fragments=[ToolFragment(key=key, name="f", arguments="{}")]), b"e0")
    checks = play.event(StreamView(tool_closes=[key], finished=[ALL_CHANNELS]), b"e1")
    assert len([check for check in checks if isinstance(check, ToolCallCheck)]) == 1


def test_everything_the_client_reads_of_a_call_is_checked() -> None:
    """Pieces and a different restated whole, another name, Gemini's partial values by path."""
    play = Playbook()
    key = (0, 0)
    play.event(StreamView(tool_fragments=[ToolFragment(key=key, name="f", arguments='{"a": 1}')]), b"e0")
    play.event(StreamView(tool_fragments=[ToolFragment(key=key, name="g", arguments='{"a": 2}', replace=True)]), b"e1")
    play.event(StreamView(tool_fragments=[ToolFragment(key=key, values=[("b.c", "par"), ("b.c", "tial")])]), b"e2")
    checks = play.finish()
    call = next(check for check in checks if isinstance(check, ToolCallCheck)).call
    assert call.name == "f"
    assert call.arguments == {"a": 1, "_restated_0": {"a": 2}, "b.c": "partial", "_other_names": ["g"]}


def test_a_restated_call_is_checked_again() -> None:
    play = Playbook()
    key = (0, 0)
    play.event(StreamView(tool_fragments=[ToolFragment(key=key, name="f", arguments='{"a": 1}')], tool_closes=[key]), b"e0")
    assert play.written == [b"e0"]
    play.event(StreamView(tool_fragments=[ToolFragment(key=key, arguments='{"a": "capsem_block"}', replace=True)]), b"e1")
    assert play.written == [b"e0"]  # held: the restated call is not checked yet
    checks = play.event(StreamView(tool_closes=[key]), b"e2")
    assert [check.call.arguments for check in checks if isinstance(check, ToolCallCheck)] == [
        {"a": 1, "_restated_0": {"a": "capsem_block"}}
    ]


def test_text_that_continues_nothing_is_checked_whole_before_its_event_goes() -> None:
    play = Playbook()
    checks = play.event(StreamView(content=["an output item", "given whole"]), b"e0")
    assert checks == [TextCheck(None, "an output item\ngiven whole", "")]
    assert play.written == [b"e0"]
    with pytest.raises(Refused):
        play.event(StreamView(content=[TERM]), b"e1")
    assert play.written == [b"e0"]


def test_an_upstream_error_event_goes_as_it_is_with_what_was_held_before_it() -> None:
    play = Playbook()
    play.event(text("Sure: capsem_"), b"e0")
    assert play.written == []
    play.event(StreamView(error="overloaded"), b"e1")
    assert play.written == [b"e0", b"e1"]


def test_the_final_check_covers_every_choice_and_then_everything_goes() -> None:
    play = Playbook(check_seconds=1.0)  # costly checks: the throttle holds the next one back
    play.event(text("one "), b"e0")
    play.event(text("two ", 1), b"e1")
    play.event(text("three", 0), b"e2")
    checks = play.finish()
    assert sorted(check.text for check in checks if isinstance(check, TextCheck)) == ["one three", "two "]
    assert play.written == [b"e0", b"e1", b"e2"]


def test_the_schedule_throttles_costly_checks_and_takes_the_clock_as_an_argument() -> None:
    play = Playbook(check_seconds=1.0, schedule=CheckSchedule(check_chars=100, check_interval=0.05))
    assert play.event(text("first "), b"e0")  # the first text is checked at once
    assert play.event(text("a"), b"e1") == []  # costly checks: a character does not earn one
    assert play.read_over() == []  # nor does the end of the read
    play.now = 0.06  # the interval passed
    assert play.event(text("b"), b"e2") == [TextCheck(0, "first ab", "")]
    assert play.event(text("x" * 100), b"e3")  # enough unchecked text earns one at once


def test_cheap_checks_run_at_the_end_of_every_read() -> None:
    play = Playbook(schedule=CheckSchedule(check_chars=100, check_interval=10))
    play.event(text("first "), b"e0")
    assert play.event(text("a"), b"e1") == []
    assert play.read_over() == [TextCheck(0, "first a", "")]
    assert play.written == [b"e0", b"e1"]


def test_one_slow_round_among_cheap_ones_does_not_throttle_the_next_read() -> None:
    """A check that took long once (the process preempted on a busy machine) is no costly policy: the next
    read is still checked at its end, so a paced stream's next chunk does not wait for ``check_interval``."""
    play = Playbook(schedule=CheckSchedule(check_chars=100, check_interval=10))
    play.event(text("first "), b"e0")
    play.event(text("one "), b"e1")
    play.check_seconds = 0.004  # this round, the machine was busy
    assert play.read_over() == [TextCheck(0, "first one ", "")]
    play.check_seconds = 0.0
    play.event(text("two "), b"e2")
    assert play.read_over() == [TextCheck(0, "first one two ", "")]  # not throttled
    assert play.written == [b"e0", b"e1", b"e2"]


def test_two_slow_rounds_in_a_row_throttle() -> None:
    play = Playbook(schedule=CheckSchedule(check_chars=100, check_interval=10))
    play.event(text("first "), b"e0")
    play.check_seconds = 0.004  # costly from here on (a heavy policy, a long text)
    for word in ("one ", "two "):
        play.event(text(word), b"e")
        assert play.read_over()  # the round before was cheap: still checked at the read's end
    play.event(text("three "), b"e3")
    assert play.read_over() == []  # two costly rounds in a row: the throttle decides
    play.now = 10.0  # the interval passed
    assert play.event(text("four "), b"e4") == [TextCheck(0, "first one two three four ", "")]


def test_the_event_completing_a_stored_reply_and_the_one_ending_the_reply_are_marked() -> None:
    play = Playbook(keeps_stored=True)
    play.event(StreamView(stored_id="resp_1"), b"created")
    play.event(text("done"), b"e1")
    play.event(StreamView(stored_id="resp_1", stored_final=True, finished=[ALL_CHANNELS]), b"completed")
    assert play.core.stored_id == "resp_1"
    assert [(r.completes_stored, r.ends_reply) for r in play.releases] == [(False, False), (False, False), (True, True)]


def test_a_reply_not_kept_marks_no_stored_event() -> None:
    play = Playbook()
    play.event(StreamView(stored_id="resp_1", stored_final=True), b"completed")
    assert play.core.stored_id == "" and not play.releases[0].completes_stored


# -- edits ---------------------------------------------------------------------


def test_an_edit_replaces_inside_json_strings_and_leaves_every_other_byte() -> None:
    raw = b'data: {"type":"delta","delta":"call 555-0100 now","n":555}\n\n'
    edited = apply_edits(raw, [Edit("555-0100", "<PHONE_1>")])
    assert edited == b'data: {"type":"delta","delta":"call <PHONE_1> now","n":555}\n\n'


def test_an_edit_reads_escapes_as_the_text_they_stand_for() -> None:
    raw = b'{"text":"caf\\u00e9 \\"secret\\""}'
    edited = apply_edits(raw, [Edit('"secret"', "X")])
    assert json.loads(edited) == {"text": "café X"}
    assert apply_edits(raw, [Edit("absent", "X")]) == raw  # no string changed: not one byte either


def test_a_release_writes_its_events_edited() -> None:
    release = Release([b'{"a":"one secret"}', b'{"b":"two"}'], [(Edit("secret", "[masked]"),), ()])
    assert release.data() == b'{"a":"one [masked]"}{"b":"two"}'
    assert Release([b"x", b"y"], [(), ()]).data() == b"xy"


# -- properties ----------------------------------------------------------------

filler = st.text(alphabet="abcdefghijklmnopqrstuvwxyz _.,", max_size=30)


@settings(max_examples=300, deadline=None)
@given(before=filler, after=filler, cuts=st.lists(st.integers(1, 80), max_size=10),
       chars=st.integers(1, 300), costly=st.booleans(), reads=st.lists(st.booleans(), max_size=20))
def test_a_term_split_anywhere_never_goes_out_not_even_its_beginning(
    before: str, after: str, cuts: list[int], chars: int, costly: bool, reads: list[bool],
) -> None:
    whole = before + TERM + after
    points = sorted({cut for cut in cuts if cut < len(whole)})
    pieces = [whole[start:end] for start, end in zip([0, *points], [*points, len(whole)])]
    play = Playbook(schedule=CheckSchedule(check_chars=chars), check_seconds=1.0 if costly else 0.0)
    deltas = {}
    try:
        for number, piece in enumerate(pieces):
            raw = f"e{number}".encode()
            deltas[raw] = piece
            play.event(text(piece), raw)
            if number < len(reads) and reads[number]:
                play.read_over()
            play.now += 0.01
        play.finish()
    except Refused:
        pass
    else:
        raise AssertionError("the term went by unchecked")
    released = "".join(deltas[raw] for raw in play.written)
    assert whole.startswith(released)
    assert len(released) <= len(before)  # not one character of the term


event_specs = st.lists(
    st.one_of(
        st.tuples(st.just("text"), st.integers(0, 1), st.text(alphabet="ab c", min_size=1, max_size=6)),
        st.tuples(st.just("call"), st.integers(0, 2), st.text(alphabet='{}"ab', max_size=6)),
        st.tuples(st.just("close"), st.integers(0, 2), st.just("")),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(specs=event_specs, chars=st.integers(1, 40), costly=st.booleans())
def test_events_go_in_order_and_a_call_only_once_checked(
    specs: list[tuple[str, int, str]], chars: int, costly: bool,
) -> None:
    play = Playbook(schedule=CheckSchedule(check_chars=chars), check_seconds=1.0 if costly else 0.0,
                    refuse=lambda check: False)
    calls_in: dict[bytes, tuple[int, int]] = {}  # event -> (call, how many fragments of it had been sent)
    fragments: dict[int, int] = {}
    checked_upto: dict[int, int] = {}  # call -> fragments covered by its last check
    sent: list[bytes] = []
    for number, (kind, target, payload) in enumerate(specs):
        raw = f"e{number}".encode()
        sent.append(raw)
        if kind == "text":
            view = text(payload, target)
        elif kind == "call":
            fragments[target] = fragments.get(target, 0) + 1
            calls_in[raw] = (target, fragments[target])
            view = StreamView(tool_fragments=[ToolFragment(key=(9, target), name="f", arguments=payload)])
        else:
            view = StreamView(tool_closes=[(9, target)])
        before = len(play.asked)
        play.event(view, raw)
        for check in play.asked[before:]:
            if isinstance(check, ToolCallCheck):
                checked_upto[check.key[1]] = fragments.get(check.key[1], 0)
        for raw_out in play.written:
            if raw_out in calls_in:
                call, count = calls_in[raw_out]
                assert checked_upto.get(call, 0) >= count, "a call's event went before the call was checked"
        assert play.written == sent[: len(play.written)]  # the upstream's order, nothing skipped
    play.finish()
    assert play.written == sent  # at the end, everything goes
