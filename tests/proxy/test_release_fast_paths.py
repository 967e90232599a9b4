"""The release core's way for a token's event (one text delta, nothing else) against its general way.

``StreamRelease.accept`` takes an event that carries one text delta and
nothing else without the general way's lists and loops, and its single-channel
check and release test are written out, and the read-over check of a read
that a token's event ends comes with that event when a release between them
could find nothing (issue 22: per-event CPU when a provider streams token by
token). Nothing about what is checked or released
may change: here the same stream is played through two cores, one fed the
token events as the dialects give them (``TokenView``), the other fed the same events in a
shape that takes the general way and means the same (a ``finished`` entry
naming no channel: it closes no call). Both must ask the same checks, on the
same text, and release the same events at the same steps, under the default
policy set's hold-backs and screens (Debug and Secrets). And with Debug's
marker split anywhere, no character of it ever goes out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from capsem_proxyd.enforcement.holdbacks import channel_matchers
from capsem_proxyd.enforcement.loader import default_policy_set
from capsem_proxyd.policies.debug import MARKER
from capsem_proxyd.proxy.release import Check, CheckSchedule, StreamRelease, TextCheck
from capsem_proxyd.views import ALL_CHANNELS, StreamView, TokenView
from tests.support.engines import engine

ENGINE = engine(default_policy_set())
NOBODY = object()  # a ``finished`` entry that names no channel: the general way, closing nothing

PIECES = [MARKER, MARKER[:5], MARKER[5:], "AKIA", "ABCDEFGHIJKLMNOP", "tok ", " ", "", "é", "\u200f"]
deltas = st.lists(st.sampled_from(PIECES) | st.text(alphabet="capsem_blockAKI01 ", max_size=6), max_size=40)


class Refused(Exception):
    """A check refused: the shell would end the stream here."""


@dataclass
class Play:
    """One core, played as the pump plays it: each event accepted, its checks answered, then released;
    then the read is over (one event per read, as a token-by-token provider sends them). ``general``:
    every event the general way, and the read-over check always on its own."""

    general: bool
    cost: list[float]
    trace: list[tuple[str, object]] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.core = StreamRelease(CheckSchedule(), channel_matchers(ENGINE.holdbacks), new_screen=ENGINE.reply_screens)
        self.now = 0.0

    def event(self, view: StreamView, raw: bytes) -> None:
        if self.general and len(view.text) == 1 and not view.finished:
            view = StreamView(text=list(view.text), finished=[NOBODY])
        self.now += 0.001
        if self.general:  # accepted, released, then the read-over check, each on its own
            self._answer(self.core.accept(view, raw, self.now))
            self._answer(self.core.read_over(self.now))
            return
        self._answer(self.core.accept(view, raw, self.now, ends_read=True))
        if not self.core.read_checked:  # else the read-over check came with the event, as the pump plays it
            self._answer(self.core.read_over(self.now))

    def finish(self) -> None:
        self._answer(self.core.finish())

    def _answer(self, checks: list[Check]) -> None:
        for check in checks:
            said = check.text if isinstance(check, TextCheck) else repr(check.call)
            self.trace.append(("check", said))
            if MARKER in said:
                raise Refused
            seconds = self.cost[len(self.trace) % len(self.cost)]
            self.core.checked(check, seconds, self.now)
        release = self.core.release()
        if release is not None:
            self.trace.append(("release", tuple(release.events)))
            self.sent += release.events


def play(general: bool, pieces: list[str], cost: list[float]) -> Play:
    played = Play(general, cost)
    try:
        played.event(StreamView(), b"role")
        for number, piece in enumerate(pieces):
            # A token's event as the Chat dialect gives it (``TokenView``); an empty delta as a ``StreamView``.
            view = TokenView(0, piece) if piece and not general else StreamView(text=[(0, piece)])
            played.event(view, b"%d" % number)
        played.event(StreamView(finished=[0]), b"stop")
        played.event(StreamView(finished=[ALL_CHANNELS]), b"done")
        played.finish()
    except Refused:
        played.trace.append(("refused", None))
    return played


@settings(max_examples=300, deadline=None)
@given(pieces=deltas, cost=st.lists(st.sampled_from([0.0, 0.0001, 0.01]), min_size=1, max_size=4))
def test_a_tokens_event_is_checked_and_released_as_the_general_way_would(pieces: list[str], cost: list[float]) -> None:
    fast, general = play(False, pieces, cost), play(True, pieces, cost)
    assert fast.trace == general.trace


@settings(max_examples=300, deadline=None)
@given(before=st.text(alphabet="capsem_blo k", max_size=20), after=st.text(alphabet="capsem_blo k", max_size=20),
       cuts=st.lists(st.integers(1, 60), max_size=12))
def test_no_character_of_a_marker_split_anywhere_goes_out(before: str, after: str, cuts: list[int]) -> None:
    whole = before + MARKER + after
    points = sorted({cut for cut in cuts if 0 < cut < len(whole)})
    pieces = [whole[start:end] for start, end in zip([0, *points], [*points, len(whole)])]
    played = play(False, pieces, [0.0])
    assert played.trace[-1] == ("refused", None)
    released = "".join(pieces[int(raw)] for raw in played.sent if raw.isdigit())
    assert len(released) <= whole.find(MARKER)  # not even the marker's first character
