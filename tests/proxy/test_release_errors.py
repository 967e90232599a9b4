"""An error the upstream reports inside its stream, in the release core: events in, checks and writes out.

The error event ends the reply, so nothing is held back after it; but it is
checked like any event, and the tail a channel held back goes with it only
once checked together with the error's own text: a term split between the
two (``response.failed`` restating the output, a Chat chunk carrying ``error``
next to ``choices``) is never delivered, not even its beginning.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsem_proxyd.proxy.release import CheckSchedule, TextCheck, ToolCallCheck
from capsem_proxyd.views import StreamView, ToolFragment
from tests.proxy.test_release import TERM, Playbook, Refused, text


def error(*content: str, deltas: tuple[tuple[object, str], ...] = ()) -> StreamView:
    return StreamView(error="upstream failed", content=list(content), text=list(deltas))


def test_a_term_split_between_the_held_tail_and_the_error_text_never_goes() -> None:
    play = Playbook()
    play.event(text("Sure: caps"), b"e0")
    assert play.written == []  # "caps" may become the term: held
    with pytest.raises(Refused):
        play.event(error("em_block, and the run failed"), b"e1")
    assert play.written == []


def test_the_tail_is_checked_with_the_error_text_appended_and_then_goes_with_it() -> None:
    play = Playbook()
    play.event(text("Sure: caps"), b"e0")
    checks = play.event(error("tone, the run failed"), b"e1")
    assert TextCheck(None, "tone, the run failed", "") in checks  # the error checked whole, like any event
    assert any(isinstance(check, TextCheck) and check.text == "Sure: capstone, the run failed" for check in checks)
    assert play.written == [b"e0", b"e1"]


def test_the_error_text_alone_is_checked_whole() -> None:
    play = Playbook()
    with pytest.raises(Refused):
        play.event(error("the output:", TERM), b"e0")
    assert play.written == []


def test_an_error_event_without_text_of_its_own_flushes_what_was_held() -> None:
    play = Playbook()
    play.event(text("Sure: capsem_"), b"e0")
    assert play.event(StreamView(error="overloaded"), b"e1") == []
    assert play.written == [b"e0", b"e1"]


def test_text_deltas_an_error_event_carries_continue_their_channel() -> None:
    play = Playbook()
    play.event(text("Sure: caps"), b"e0")
    with pytest.raises(Refused):
        play.event(error("rate limited", deltas=((0, "em_block"),)), b"e1")
    assert play.written == []


def test_each_choice_and_its_thoughts_are_checked_with_the_error_text() -> None:
    play = Playbook(refuse=lambda check: isinstance(check, TextCheck) and TERM in check.thoughts)
    play.event(StreamView(text=[(0, "fine")], thoughts=[(0, "thinking caps")]), b"e0")
    play.event(text("other choice", 1), b"e1")
    with pytest.raises(Refused):
        play.event(error("em_block"), b"e2")
    assert b"e2" not in play.written


def test_a_call_an_error_event_carries_is_checked_before_it_goes() -> None:
    play = Playbook()
    view = error("failed")
    view.tool_fragments.append(ToolFragment(key="k", name="wipe", arguments='{"target": "disk"}'))
    view.tool_closes.append("k")
    checks = play.event(view, b"e0")
    assert any(isinstance(check, ToolCallCheck) and check.call.name == "wipe" for check in checks)
    assert play.written == [b"e0"]


filler = st.text(alphabet="abcdefghijklmnopqrstuvwxyz _.,", max_size=30)


@settings(max_examples=300, deadline=None)
@given(before=filler, after=filler, split=st.integers(0, len(TERM)), cuts=st.lists(st.integers(1, 60), max_size=6),
       chars=st.integers(1, 300), costly=st.booleans(), reads=st.lists(st.booleans(), max_size=10),
       noise=st.lists(filler, max_size=2))
def test_a_term_split_anywhere_between_streamed_text_and_the_error_text_never_goes_out(
    before: str, after: str, split: int, cuts: list[int], chars: int, costly: bool, reads: list[bool],
    noise: list[str],
) -> None:
    """The term's head streamed (cut into deltas anywhere), its rest the error event's first text."""
    streamed = before + TERM[:split]
    points = sorted({cut for cut in cuts if cut < len(streamed)})
    pieces = [streamed[start:end] for start, end in zip([0, *points], [*points, len(streamed)])]
    play = Playbook(schedule=CheckSchedule(check_chars=chars), check_seconds=1.0 if costly else 0.0)
    deltas = {}
    try:
        for number, piece in enumerate(pieces):
            raw = f"e{number}".encode()
            deltas[raw] = piece
            if piece:
                play.event(text(piece), raw)
            if number < len(reads) and reads[number]:
                play.read_over()
            play.now += 0.01
        play.event(error(TERM[split:] + after, *noise), b"error")
        play.finish()
    except Refused:
        pass
    else:
        raise AssertionError("the term went by unchecked")
    assert b"error" not in play.written
    released = "".join(deltas[raw] for raw in play.written)
    assert streamed.startswith(released) and len(released) <= len(before)  # not one character of the term
