"""The stream release core: which checks a stream needs next, and which events may go. No I/O.

Like h11's connection object, ``StreamRelease`` does no reading, no writing,
no waiting and reads no clock: the trio shell (``streaming.py``) feeds it
each decoded event (the dialect's ``StreamView`` and the event's exact bytes)
and the time, runs the checks it asks for (``TextCheck``: ``on_model_response``
on a choice's whole text; ``ToolCallCheck``: ``on_tool_call`` on a complete
call), tells it each one passed (``checked``), and writes what ``release``
hands back. A check that refuses ends the stream in the shell; the core never
learns of it, and nothing it still holds goes out. So every rule below is
testable by feeding events and reading releases (``tests/proxy/test_release.py``),
without sockets or sleeps.

The rules:

* each choice's text and each choice's thoughts is a channel of its own, with
  its own buffer: a term split between two choices is never seen whole, one
  inside a choice always is;
* a channel's text is released only as far as a check has covered it, minus
  what its matcher (``policies/holdback.py``: one per channel, built from the
  active policies' hold-back declarations) says may still be the start of a
  match: for literal terms only an end that could still become a term, for a
  bounded regex its width, for a policy that may match any length the
  ``--stream-holdback`` cap. A forbidden term split across events is never
  delivered whole, nor is its beginning;
* the check schedule: until the first text has gone out, every event with
  text is checked at once (the first text reaches the client without
  waiting); after that, as long as checks are cheap (the last round of
  checks, or the one before it, took under ``eager_check_seconds``), one runs
  at the end of every upstream read that left text unchecked (``read_over``),
  so no character waits for a throttle: one slow round alone (the process
  preempted on a busy machine, a garbage collection) is no costly policy, and
  throttling after it held a paced stream's next chunk up to
  ``check_interval``; when checks become costly (a heavy policy, a long text:
  two rounds in a row, or the very first), the next one waits until the unchecked text is at least ``check_chars`` or
  ``check_growth`` of what is already checked, or ``check_interval`` has
  passed, so the total cost stays linear in the reply size;
* where every policy checking replies says what it refuses them for (Debug:
  its marker), each channel has a screen (``policies/term_screen.py``) that
  reads each new piece of its text once; a check whose new text it finds
  nothing in has passed without asking the policies: the core passes it
  itself, and the shell never sees it (no check object, no round trip: a
  provider sending token by token pays this once per event,
  ``bench/events.py``); one where it finds something asks them about the
  whole text as usual, and so do the checks at the end and at an upstream's
  error;
* text an event carries that continues nothing (a whole output item, an
  event type nobody knows) is checked whole before the event may go;
* an event carrying part of a tool call is held until the call is complete
  and checked, with everything it streamed (the pieces, a whole restated
  later, another name a later event gave it, Gemini's partial argument
  values by JSON path); events behind a held event wait: order is kept;
* an error the upstream reports inside its stream ends the reply: its event
  is checked whole like any other, and what each channel held back goes with
  it only once checked together with the error event's own text (the tail
  and the error's text read as one: a term split between them never goes);
* at the end (``finish``) every open call and every choice's complete text
  is checked once more, and then everything goes;
* the event that completes a reply the provider stores is marked
  (``Release.completes_stored``), so the shell records the id as usable just
  before that event goes out; the event that ends the reply
  (``StreamView.finished`` holding ``ALL_CHANNELS``) is marked too
  (``Release.ends_reply``): once it is written the client has the whole reply.

What may go is events plus edits: an ``Edit`` replaces a text inside an
event's JSON strings, every other byte untouched. Masking in replies makes
them (``mask``): when a policy asks to mask a value the model wrote, every
occurrence of it in a channel's text not yet released is masked. The
hold-back kept the value's events back (a pending match holds from its
start), so each event that carries a piece of it is still pending: the first
piece's text field carries the placeholder, the others lose their piece, and
the event is re-encoded in that one string (``Edit.exact``); every other
byte of every event is the provider's. An event that restates text whole (a
``done`` event, the completed response) has the value replaced inside its
strings. An occurrence that began in text already released cannot be masked:
``Unmaskable`` (the shell ends the stream with a refusal).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from capsem_proxyd.dialects.base import parse_arguments
from capsem_proxyd.policies.holdback import Matcher
from capsem_proxyd.policies.term_screen import Screen
from capsem_proxyd.redaction.rewrite import Unmaskable
from capsem_proxyd.views import ALL_CHANNELS, StoredItem, StreamView, TokenView, ToolCall, ToolFragment


@dataclass(frozen=True, slots=True)
class CheckSchedule:
    """How the core trades latency against checking cost (see the module docstring)."""

    check_chars: int = 256
    check_growth: float = 0.25
    check_interval: float = 0.05
    # While the last round of checks or the one before it took less than this, a check runs at the end of
    # every upstream read that left text waiting: cheap checks (the Debug and Rules policies on an answer
    # of tens of kB) keep no character waiting for the throttle, even after one round a busy machine made
    # slow; costly ones (PII analysis, long texts: two rounds in a row) fall back to it.
    eager_check_seconds: float = 0.0005


@dataclass(slots=True, eq=False)
class _Channel:
    """One text a reader reads as a whole (a choice's text, or its thoughts): its buffer and check state."""

    choice: Any
    thought: bool
    matcher: Matcher
    parts: list[str] = field(default_factory=list)
    length: int = 0
    checked: int = 0
    fed: int = 0  # characters the matcher has seen
    screen: Screen | None = None  # finds what a policy refuses in each new piece (None: ask the policies)
    screened: int = 0  # characters the screen has read
    releasable: int = 0  # what was checked, minus what the matcher says may start a match
    sent: int = 0  # characters released (in events that went out)
    masks: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, placeholder), in order

    def whole(self) -> str:
        if len(self.parts) > 1:
            self.parts = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    def between(self, start: int, end: int) -> str:
        """The text from ``start`` to ``end``; from the last part alone when it holds it (a check per
        event reads one event's delta: joining the whole text for it made each check cost the reply)."""
        if end <= start:
            return ""
        if end == self.length:
            last = self.parts[-1]
            if len(last) >= end - start:
                return last[len(last) - (end - start):]
        return self.whole()[start:end]


def _deltas(ends: list[tuple[_Channel, int]], view: StreamView) -> tuple[tuple[_Channel, int, int], ...]:
    """Each text delta of an event as (channel, start, end) in its channel (``ends`` in view order)."""
    lengths = [len(delta) for _, delta in view.text] + [len(delta) for _, delta in view.thoughts]
    return tuple((channel, end - length, end) for (channel, end), length in zip(ends, lengths))


def _followed_by(channel: _Channel | None, texts: list[str]) -> str:
    """The channel's text with each of ``texts`` right after what it has not released: the error's
    message, or its restated output, whichever of its texts a client shows after the tail."""
    if channel is None:
        return ""
    whole = channel.whole()
    return whole + ("\n" + whole[channel.releasable:]).join(texts)


def _screened(*channels: _Channel | None) -> bool:
    """The channels' screens read their new text (every one of them) and found nothing a policy refuses."""
    clear = True
    for channel in channels:
        if channel is None:
            continue
        screen = channel.screen
        if screen is None:
            return False
        if channel.screened < channel.length:
            if screen.feed(channel.between(channel.screened, channel.length)):
                clear = False
            channel.screened = channel.length
    return clear


@dataclass(slots=True, eq=False)
class _OpenCall:
    """A tool call being streamed: all that the client reads of it, to check once it is complete."""

    name: str = ""
    call_id: str = ""
    arguments: list[str] = field(default_factory=list)
    wholes: list[str] = field(default_factory=list)  # the whole arguments as a later event restates them
    other_names: list[str] = field(default_factory=list)  # a later event naming the call differently
    values: dict[str, list[str]] = field(default_factory=dict)  # streamed by JSON path (Gemini partialArgs)
    closed: bool = False
    asked: bool = False  # a check of it as it stands was asked for
    checked: bool = False

    def as_call(self) -> ToolCall:
        """The call as the client will read it; every restated whole and other name is checked with it."""
        streamed = "".join(self.arguments)
        arguments = parse_arguments(streamed or (self.wholes[0] if self.wholes else ""))
        for number, whole in enumerate(dict.fromkeys(self.wholes)):
            if whole != streamed and (streamed or number):
                arguments = {**arguments, f"_restated_{number}": parse_arguments(whole)}
        if self.values:
            arguments = {**arguments, **{path: "".join(parts) for path, parts in self.values.items()}}
        if self.other_names:
            arguments = {**arguments, "_other_names": self.other_names}
        return ToolCall(name=self.name, arguments=arguments, call_id=self.call_id)


@dataclass(frozen=True, slots=True)
class TextCheck:
    """``on_model_response`` on ``text`` and ``thoughts``: a choice's whole text so far, or (``choice``
    None) text an event carries that continues nothing."""

    choice: Any
    text: str
    thoughts: str
    covers: tuple[tuple[_Channel, int], ...] = field(default=(), repr=False, compare=False)
    final: bool = False  # on the whole reply, asked of the policies before the event that ends it goes


@dataclass(frozen=True, slots=True)
class ToolCallCheck:
    """``on_tool_call`` on a complete streamed call."""

    key: Any
    call: ToolCall
    opened: _OpenCall = field(repr=False, compare=False)


Check = TextCheck | ToolCallCheck


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace ``old`` by ``new`` wherever it occurs inside one event's JSON strings; ``exact``: replace
    the first string of a text field (``TEXT_FIELDS``) that is ``old`` whole, and only it (a delta)."""

    old: str
    new: str
    exact: bool = False


# The fields a stream event carries a channel's text delta in, across the dialects.
TEXT_FIELDS = frozenset({b"content", b"text", b"delta", b"thinking", b"reasoning_content", b"refusal", b"reasoning"})


@dataclass(slots=True)
class _Pending:
    """An event waiting to be released: where its text ends in each channel, which calls it carries."""

    raw: bytes
    text_ends: tuple[tuple[_Channel, int], ...] = ()
    tool_keys: tuple[Any, ...] = ()
    final: bool = False  # completes a stored reply
    ends_reply: bool = False
    edits: tuple[Edit, ...] = ()
    deltas: tuple[tuple[_Channel, int, int], ...] = ()  # each text delta's place in its channel


@dataclass(slots=True)
class Release:
    """Events that passed, in order, and the edits to make in them (``edits[i]`` for ``events[i]``;
    an empty list: no edit in any)."""

    events: list[bytes]
    edits: list[tuple[Edit, ...]] = field(default_factory=list)
    completes_stored: bool = False  # carries the event that completes a stored reply
    ends_reply: bool = False  # carries the event that ends the reply

    def data(self) -> bytes:
        """The bytes to write: the events as the upstream sent them, edited where an edit says."""
        if self.edits:
            return b"".join(apply_edits(raw, edits) for raw, edits in zip(self.events, self.edits))
        return self.events[0] if len(self.events) == 1 else b"".join(self.events)


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


_FIELD_BEFORE = re.compile(rb'"((?:[^"\\]|\\.)*)"\s*:\s*$')


def apply_edits(raw: bytes, edits: Sequence[Edit]) -> bytes:
    """``raw`` with each edit made inside its JSON strings (escapes read as the text they stand for);
    a string no edit changes keeps its exact bytes, and so does everything between strings. Exact edits
    come first, each on the first text field string that is its ``old`` whole, in order."""
    exact = [edit for edit in edits if edit.exact]
    if exact:
        raw = _apply_exact(raw, exact)
    edits = [edit for edit in edits if edit.old and not edit.exact]
    if not edits:
        return raw

    def replace(match: re.Match[bytes]) -> bytes:
        literal = match.group(0)
        try:
            text = orjson.loads(literal)
        except orjson.JSONDecodeError:
            return literal
        changed = text
        for edit in edits:
            changed = changed.replace(edit.old, edit.new)
        return literal if changed == text else orjson.dumps(changed)

    return _JSON_STRING.sub(replace, raw)


def _apply_exact(raw: bytes, edits: list[Edit]) -> bytes:
    """``raw`` with each exact edit's string replaced; one that finds no such string is ``Unmaskable``
    (its delta would go out as the provider wrote it)."""
    waiting = list(edits)
    out: list[bytes] = []
    last = 0
    for match in _JSON_STRING.finditer(raw):
        if not waiting:
            break
        key = _FIELD_BEFORE.search(raw, max(0, match.start() - 64), match.start())
        if key is None or key.group(1) not in TEXT_FIELDS:
            continue
        try:
            text = orjson.loads(match.group(0))
        except orjson.JSONDecodeError:
            continue
        for index, edit in enumerate(waiting):
            if text == edit.old:
                out.append(raw[last:match.start()])
                out.append(orjson.dumps(edit.new))
                last = match.end()
                del waiting[index]
                break
    if waiting:
        raise Unmaskable("a masked delta was not found in its event's text field")
    out.append(raw[last:])
    return b"".join(out)


def _masked_delta(delta: str, start: int, masks: list[tuple[int, int, str]]) -> str:
    """``delta`` (the channel's text from ``start``) with each mask's stretch in it replaced: by the
    placeholder where the stretch begins in it, by nothing where it began in an earlier delta."""
    end = start + len(delta)
    out: list[str] = []
    at = start
    for mask_start, mask_end, placeholder in masks:
        if mask_end <= start or mask_start >= end:
            continue
        cut = max(mask_start, start)
        out.append(delta[at - start:cut - start])
        if mask_start >= start:
            out.append(placeholder)
        at = min(mask_end, end)
    out.append(delta[at - start:])
    return "".join(out)


class StreamRelease:
    """One stream's release state; see the module docstring for its rules.

    ``new_matcher`` makes a channel's matcher (``enforcement/holdbacks.py``,
    ``channel_matchers``); ``new_screen`` a channel's screen, where the
    policies declare what they refuse replies for (``channel_screens``; None:
    every check asks the policies); ``keeps_stored``: the reply is one the provider
    stores, whose completing event is marked; ``now``: the clock at the start
    (the check schedule's interval counts from it).
    """

    def __init__(
        self, schedule: CheckSchedule, new_matcher: Callable[[], Matcher], *, keeps_stored: bool = False,
        now: float = 0.0, new_screen: Callable[[], Screen] | None = None, signed_thoughts: bool = False,
    ) -> None:
        self.schedule = schedule
        # The thoughts are signed (Anthropic's thinking): a value in them is never masked, the stream is cut.
        self.signed_thoughts = signed_thoughts
        self.new_matcher = new_matcher
        self.new_screen = new_screen
        self.keeps_stored = keeps_stored
        self.stored_id = ""  # the id the stream states for a reply the provider stores
        self.stored_items: tuple[StoredItem, ...] = ()  # what else it delivers that requests may name
        self.started = False  # an event went out (the shell frames its error event by it)
        self._channels: dict[tuple[Any, bool], _Channel] = {}
        self._calls: dict[Any, _OpenCall] = {}
        self._pending: deque[_Pending] = deque()
        self._unchecked = 0  # characters of every channel not yet covered by a check
        self._checked_total = 0
        self._last_check = now
        self._last_check_cost = 0.0  # seconds the last round of text checks took
        # ... and the round before it (none yet: the first round alone decides, so that a costly policy's
        # first check throttles at once)
        self._previous_check_cost = float("inf")
        self._rounds = 0
        self._round_cost = 0.0
        self._text_released = False
        self._flush = False  # the next release holds nothing back (an upstream error went by)
        self._finished = False
        self._final_due = 0  # final checks asked at the event that ends the reply, not passed yet
        self._final_passed = False  # they passed: that event may go
        self._masked: dict[str, str] = {}  # value -> placeholder: what policies asked to mask in this reply
        self.read_checked = False  # the last event accepted made its read's read-over check (``accept``)

    # -- what comes in -------------------------------------------------------

    def accept(self, view: StreamView, raw: bytes, now: float, *, ends_read: bool = False) -> list[Check]:
        """One event: what it adds, and the checks due before anything more may go (in order).

        ``ends_read``: the event is the last of an upstream read. Where a release now could find nothing
        to let go (a token's event, below), the read-over check (``read_over``) is made with it, and
        ``read_checked`` says so: the shell then releases once, after its checks, and does not call
        ``read_over`` for this read (what a release between them would find is nothing)."""
        self.read_checked = False
        if view.error is not None:
            return self._error_end(view, raw, now)
        text = view.text
        if type(view) is TokenView or (
                len(text) == 1 and not view.thoughts and not view.content and not view.tool_fragments
                and not view.tool_closes and not view.finished and not (self.keeps_stored and view.stored_id)):
            # One text delta and nothing else (a token, as most providers stream them; a ``TokenView`` says
            # so by its type): what the general way below does for it, without its lists, loops and tests
            # of what the event does not carry.
            ((choice, delta),) = text
            channel, end = self._grow(choice, False, delta)
            self._pending.append(_Pending(raw, ((channel, end),), (), False, False, (), ((channel, end - len(delta), end),)))
            if self._check_due(now):
                return self._text_checks(now=now)
            if ends_read and delta and not self._flush:
                # Nothing may go before a check: everything pending before this event was held at the last
                # release (the shell releases after every change), this event's new text is unchecked,
                # and no check ran. The read-over check is made now, not after a release that finds nothing
                # (``read_over``, written out: the delta left text unchecked).
                self.read_checked = True
                if self._checks_cheap():
                    return self._text_checks(False, False, now)
            return []
        checks: list[Check] = []
        if view.content:
            checks.append(TextCheck(None, "\n".join(view.content), ""))
        # Each delta's end and its place in its channel, found in one pass (``_deltas`` walks them again:
        # a list, a zip and a tuple per event when a provider streams token by token, ``bench/events.py``).
        ends: list[tuple[_Channel, int]] = []
        deltas: list[tuple[_Channel, int, int]] = []
        for choice, delta in view.text:
            grown = channel, end = self._grow(choice, False, delta)
            ends.append(grown)
            deltas.append((channel, end - len(delta), end))
        for choice, delta in view.thoughts:
            grown = channel, end = self._grow(choice, True, delta)
            ends.append(grown)
            deltas.append((channel, end - len(delta), end))
        keys = self._add_fragments(view.tool_fragments) if view.tool_fragments else ()
        final = False
        if self.keeps_stored and view.stored_id:
            self.stored_id = self.stored_id or view.stored_id
            final = view.stored_final
            self.stored_items += view.stored_items
        self._pending.append(_Pending(raw, tuple(ends), keys, final, ALL_CHANNELS in view.finished,
                                      deltas=tuple(deltas)))
        for key in view.tool_closes:
            self._close_call(key, checks)
        for channel in view.finished:
            self._close_channel(channel, checks)
        if self.new_screen is not None and ALL_CHANNELS in view.finished and self._channels:
            # Screened text went without the policies: they decide on the whole reply before its end goes.
            finals = self._text_checks(every_choice=True, final=True)
            self._final_due += len(finals)
            return checks + finals
        if self._check_due(now):
            checks += self._text_checks(now=now)
        return checks

    def read_over(self, now: float = 0.0) -> list[Check]:
        """An upstream read was framed whole: while checks are cheap, check what it left unchecked now
        (``now``: the clock; a check the screens pass counts as one made then)."""
        if not self._unchecked:
            return []
        if self._checks_cheap():
            return self._text_checks(False, False, now)
        return []

    def _checks_cheap(self) -> bool:
        """Whether a check may run at the end of a read: the last round of checks or the one before it took
        under ``eager_check_seconds`` (one slow round alone does not throttle: either may be cheap)."""
        eager = self.schedule.eager_check_seconds
        return self._last_check_cost <= eager or self._previous_check_cost <= eager

    def finish(self) -> list[Check]:
        """The upstream ended: every open call and every choice's complete text, checked once more."""
        checks: list[Check] = []
        for key in list(self._calls):
            self._close_call(key, checks)
        if self._channels and not (self._final_passed and self._all_checked()):
            checks += self._text_checks(every_choice=True)
        self._flush = self._finished = True  # the text is complete: nothing is pending any more
        return checks

    def checked(self, check: Check, seconds: float = 0.0, now: float = 0.0) -> None:
        """``check`` passed; it took ``seconds``, and ended at ``now``."""
        if isinstance(check, ToolCallCheck):
            check.opened.checked = True
            return
        if check.final:
            self._final_due -= 1
            self._final_passed = self._final_due == 0
        if check.covers:  # else text that continues nothing: it holds no channel back
            self._covered(check.covers, seconds, now)

    def _covered(self, covers: tuple[tuple[_Channel, int], ...], seconds: float, now: float) -> None:
        """A check of ``covers`` (each channel up to a length) passed; it took ``seconds``, ended at ``now``."""
        for channel, length in covers:
            self._checked_total += length - channel.checked
            channel.checked = length
            scan = channel.matcher.feed(channel.between(channel.fed, length))
            channel.fed = length
            channel.releasable = length if scan.pending is None else scan.pending
        self._round_cost += seconds
        self._last_check_cost = self._round_cost
        self._last_check = now

    # -- what goes out -------------------------------------------------------

    def release(self) -> Release | None:
        """The pending events the checks cover, in order (None: nothing may go yet)."""
        if self._flush:
            for channel in self._channels.values():
                channel.releasable = channel.checked
            self._flush = self._finished
        pending = self._pending
        events: list[bytes] | None = None  # allocated once something goes: most calls release nothing
        edits: list[tuple[Edit, ...]] | None = None  # allocated once an event has edits
        completes_stored = ends_reply = False
        while pending:
            head = pending[0]
            ends = head.text_ends
            if head.ends_reply or head.tool_keys or len(ends) != 1:
                if not self._releasable(head):
                    break
            elif ends[0][1] > ends[0][0].releasable:  # ``_releasable`` for an event of one delta, written out
                break
            if ends:
                self._text_released = True
            completes_stored = completes_stored or head.final
            ends_reply = ends_reply or head.ends_reply
            pending.popleft()
            if events is None:
                events = []
            event_edits = self._edits_of(head) if self._masked else head.edits
            if event_edits and edits is None:
                edits = [()] * len(events)
            events.append(head.raw)
            if edits is not None:
                edits.append(event_edits)
            for channel, end in head.text_ends:
                channel.sent = max(channel.sent, end)
        if events is None:
            return None
        self.started = True
        return Release(events, edits or [], completes_stored, ends_reply)

    def mask(self, values: dict[str, str]) -> int:
        """Mask ``values`` (value -> placeholder) wherever a channel's text not yet released has them, and
        in every event still to go; how many places in the channels were masked. An occurrence that
        began in released text raises ``Unmaskable``."""
        count = 0
        for value, placeholder in values.items():
            if not value:
                continue
            self._masked.setdefault(value, placeholder)
            for channel in self._channels.values():
                text = channel.whole()
                at = text.find(value, 0)
                while at != -1:
                    end = at + len(value)
                    if not any(start < end and at < stop for start, stop, _ in channel.masks):
                        if channel.thought and self.signed_thoughts:
                            raise Unmaskable("a value the model wrote is in its signed thinking, which the client "
                                             "sends back and the provider would refuse changed")
                        if at < channel.sent:
                            if end > channel.sent:
                                raise Unmaskable("part of a value the model wrote had already been released")
                        else:
                            channel.masks.append((at, end, placeholder))
                            count += 1
                    at = text.find(value, end)
                channel.masks.sort()
        return count

    def _edits_of(self, head: _Pending) -> tuple[Edit, ...]:
        """The edits that mask ``head``: its deltas with their masked stretches, and every masked value
        inside its other strings (text it restates whole)."""
        edits = list(head.edits)
        for channel, start, end in head.deltas:
            if not channel.masks or start == end:
                continue
            delta = channel.between(start, end) if end == channel.length else channel.whole()[start:end]
            changed = _masked_delta(delta, start, channel.masks)
            if changed != delta:
                edits.append(Edit(delta, changed, exact=True))
        edits.extend(Edit(value, placeholder) for value, placeholder in self._masked.items())
        return tuple(edits)

    def _releasable(self, head: _Pending) -> bool:
        """Each channel's text of ``head`` is releasable, and each call it carries is checked.

        With screens, the event that ends the reply waits for the final checks, asked when it
        arrives: the screens let text go without asking the policies, so the policies' own decision
        on the whole reply (and its audit record) comes only then, and a client that stops reading
        at the ending event (the OpenAI SDKs at ``[DONE]``) would never see that decision's refusal.
        An upstream that stays open after its last event keeps nothing back."""
        if head.ends_reply and self.new_screen is not None and not (self._final_passed or self._finished):
            return False
        for channel, end in head.text_ends:
            if end > channel.releasable:
                return False
        if head.tool_keys:
            calls = self._calls
            return all(calls[key].checked for key in head.tool_keys)
        return True

    # -- rules ---------------------------------------------------------------

    def _grow(self, choice: Any, thought: bool, delta: str) -> tuple[_Channel, int]:
        channel = self._channels.get((choice, thought))
        if channel is None:
            channel = self._channels[(choice, thought)] = _Channel(choice, thought, self.new_matcher())
            if self.new_screen is not None:
                channel.screen = self.new_screen()
        channel.parts.append(delta)
        channel.length += len(delta)
        self._unchecked += len(delta)
        return channel, channel.length

    def _add_fragments(self, fragments: list[ToolFragment]) -> tuple[Any, ...]:
        for fragment in fragments:
            call = self._calls.get(fragment.key)
            if call is None or (call.closed and not fragment.replace):
                call = self._calls[fragment.key] = _OpenCall()
            if fragment.replace:
                # The client reads both the pieces it was sent and the restated whole: both are checked.
                call.wholes.append(fragment.arguments)
                call.checked = call.asked = False
            elif fragment.arguments:
                call.arguments.append(fragment.arguments)
            for path, value in fragment.values:
                call.values.setdefault(path, []).append(value)
            if fragment.name and call.name and fragment.name != call.name:
                call.other_names.append(fragment.name)  # the client saw both names: both are checked
            call.name = call.name or fragment.name or ""
            call.call_id = fragment.call_id or call.call_id
            call.closed = False
        return tuple(fragment.key for fragment in fragments)

    def _close_channel(self, channel: Any, checks: list[Check]) -> None:
        """A choice finished: its calls are complete (every open call for ``ALL_CHANNELS``)."""
        for key in list(self._calls):
            if channel is ALL_CHANNELS or (isinstance(key, tuple) and key and key[0] == channel):
                self._close_call(key, checks)

    def _close_call(self, key: Any, checks: list[Check]) -> None:
        call = self._calls.get(key)
        if call is None or call.checked or call.asked:
            return
        call.closed = call.asked = True
        checks.append(ToolCallCheck(key, call.as_call(), call))

    def _error_end(self, view: StreamView, raw: bytes, now: float) -> list[Check]:
        """The upstream reported an error in-stream: the end of the reply, so nothing is held back after it.

        The error event is read like any event (its text deltas grow their
        channels, the rest of its text is checked whole). What a channel holds
        back may then go, but only checked together with the error event's own
        text, appended to the channel's text as a reader sees it follow: a
        term split between the held tail and the error's text (``response.failed``
        restates the output, a Chat chunk carries ``error`` and ``choices``)
        is seen whole, and if it is found, neither goes.
        """
        checks: list[Check] = []
        if view.content:
            checks.append(TextCheck(None, "\n".join(view.content), ""))
        ends = [self._grow(choice, False, delta) for choice, delta in view.text]
        ends += [self._grow(choice, True, delta) for choice, delta in view.thoughts]
        keys = self._add_fragments(view.tool_fragments) if view.tool_fragments else ()
        self._pending.append(_Pending(raw, tuple(ends), keys, deltas=_deltas(ends, view)))
        for key in view.tool_closes:
            self._close_call(key, checks)
        self._flush = True
        if not view.content:
            return checks + self._text_checks(now=now) if self._unchecked else checks
        choices: dict[Any, None] = {}
        for channel in self._channels.values():
            if channel.releasable < channel.length:  # held back, or not yet checked
                choices[channel.choice] = None
        for choice in choices:
            text = self._channels.get((choice, False))
            thoughts = self._channels.get((choice, True))
            covers = tuple((channel, channel.length) for channel in (text, thoughts) if channel is not None)
            checks.append(TextCheck(
                choice, _followed_by(text, view.content), _followed_by(thoughts, view.content), covers,
            ))
        self._unchecked = 0
        self._new_round()
        return checks

    def _new_round(self) -> None:
        """A round of text checks begins: the last round's cost becomes the one before it (``read_over``)."""
        if self._rounds:
            self._previous_check_cost = self._last_check_cost
        self._rounds += 1
        self._round_cost = 0.0

    def _check_due(self, now: float) -> bool:
        unchecked = self._unchecked
        if unchecked <= 0:
            return False
        schedule = self.schedule
        if unchecked >= max(schedule.check_chars, int(self._checked_total * schedule.check_growth)):
            return True
        if not self._text_released and self._pending and self._pending[0].text_ends:
            return True  # the first text goes out as soon as a check has covered it: no throttle wait
        return now - self._last_check >= schedule.check_interval

    def _all_checked(self) -> bool:
        return all(channel.checked == channel.length for channel in self._channels.values())

    def _text_checks(self, every_choice: bool = False, final: bool = False, now: float = 0.0) -> list[Check]:
        """One check per choice with unchecked text (``every_choice``: per choice), on all its text and
        thoughts so far; one whose new text its channels' screens find nothing in has passed (at ``now``)
        and is not asked for."""
        channels = self._channels
        if not every_choice and self.new_screen is not None and len(channels) == 1:
            # The common stream: one channel (one choice's text), screened, no list of choices to build.
            (channel,) = channels.values()
            length = channel.length
            checked = channel.checked
            if length <= checked:
                return []
            self._unchecked = 0
            # A new round (``_new_round``), written out: this runs once per event of a token-by-token stream.
            if self._rounds:
                self._previous_check_cost = self._last_check_cost
            self._rounds += 1
            self._round_cost = 0.0
            if channel.screened == channel.fed == checked:
                # What the screen reads next is what the matcher reads next: cut once, read by both
                # (the last part alone, most often: one event's delta, as ``between`` would cut it).
                last = channel.parts[-1]
                new_text = last if len(last) == length - checked else channel.between(checked, length)
                channel.screened = length
                if not channel.screen.feed(new_text):  # type: ignore[union-attr]  # new_screen is set
                    self._checked_total += length - checked
                    channel.checked = channel.fed = length
                    pending = channel.matcher.feed(new_text).pending
                    channel.releasable = length if pending is None else pending
                    self._last_check_cost = 0.0
                    self._last_check = now
                    return []
            elif _screened(channel):
                self._covered(((channel, length),), 0.0, now)
                return []
            alone = ((channel, length),)
            whole = channel.whole()
            said, thought = ("", whole) if channel.thought else (whole, "")
            return [TextCheck(channel.choice, said, thought, alone, final=final)]
        choices: dict[Any, None] = {}
        for channel in channels.values():
            if every_choice or channel.length > channel.checked:
                choices[channel.choice] = None
        checks: list[Check] = []
        passed: list[tuple[_Channel, int]] = []
        for choice in choices:
            text = channels.get((choice, False))
            thoughts = channels.get((choice, True))
            if not every_choice and self.new_screen is not None and _screened(text, thoughts):
                passed += ((channel, channel.length) for channel in (text, thoughts) if channel is not None)
                continue
            if thoughts is None and text is not None:
                checks.append(TextCheck(choice, text.whole(), "", ((text, text.length),), final=final))
                continue
            covers = tuple((channel, channel.length) for channel in (text, thoughts) if channel is not None)
            checks.append(TextCheck(
                choice, text.whole() if text is not None else "", thoughts.whole() if thoughts is not None else "",
                covers, final=final,
            ))
        self._unchecked = 0
        self._new_round()
        if passed:
            self._covered(tuple(passed), 0.0, now)
        return checks
