"""The stream pump: read the upstream stream, check it, release what passed.

One nursery per streamed request holds the upstream reader; the checking
consumer is the client-facing iteration itself. They are joined by a small
bounded memory channel, so a slow client slows the upstream read and memory
per stream stays flat.

Release rules, the heart of streaming enforcement:

* each choice's text (and its thoughts) is its own channel, released only as
  far as an ``on_model_response`` check has covered it, minus what the active
  policies need held (``PolicyEngine.held``: for literal terms, only an end
  of the text that could still become a term, usually nothing; for a bounded
  regex, its width; for a policy that may match text of any length, the
  ``--stream-holdback`` cap), so a forbidden term split across chunks is
  never delivered whole, nor is its beginning;
* checks run on the accumulated text. Until the first text has gone out,
  every event is checked at once, so the first text reaches the client
  without waiting; after that, as long as a check is cheap (under
  ``eager_check_seconds``), one runs after every upstream read that left
  text waiting, so no character waits for a throttle; when checks become
  costly (a heavy policy, a long text), the next one waits until the
  unchecked text is at least ``check_chars`` or a fraction of what is
  already checked, or ``check_interval`` has passed, so the total cost stays
  linear in the reply size;
* an event carrying part of a tool call is held until the call is complete
  and ``on_tool_call`` passed; events behind it wait, preserving order;
* at the end, one last check on the complete text, then everything goes.

Events travel from the reader in batches (what one upstream read framed),
and what a batch releases goes to the client in one write, after the first
release, which goes out at once: a provider that sends many events per read
costs one client write, not one per event.

A block, the client hanging up or a shutdown cancels the nursery and closes
the upstream response at once.

A reply the provider stores under an id (a Responses stream, ``stored``) is
recorded as delivered just before the event that completes it goes to the
client, and withdrawn if the stream is blocked or cut after that: its id is
usable in later requests only if the client got all of it, checked.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from capsem_proxyd.config import DEFAULTS
from capsem_proxyd.dialects.base import Dialect, parse_arguments
from capsem_proxyd.dialects.framing import FramingError, SSEDecoder, StreamEvent
from capsem_proxyd.enforcement.engine import PolicyEngine
from capsem_proxyd.errors import ProxyError, response_too_large, shutting_down, upstream_timeout, upstream_unavailable
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.proxy.stored_content import StoredReply
from capsem_proxyd.proxy.upstream import UpstreamResponse
from capsem_proxyd.views import ALL_CHANNELS, ToolCall, ToolFragment

log = logging.getLogger("capsem_proxyd.stream")

_CLOSE_GRACE_SECONDS = 1.0


@dataclass(slots=True)
class StreamSettings:
    """How the pump trades latency against checking cost."""

    check_chars: int = 256
    check_growth: float = 0.25
    check_interval: float = 0.05
    # A check that took less than this runs after every upstream read that left text waiting: cheap
    # checks (the Debug and Rules policies on an answer of tens of kB) keep no character waiting for
    # the throttle; costly ones (PII analysis, long texts) fall back to it.
    eager_check_seconds: float = 0.0005
    channel_size: int = 8
    idle_timeout: float | None = DEFAULTS.upstream_timeout
    max_bytes: int | None = None  # upstream bytes one stream may carry; beyond, it ends with an error event


@dataclass(slots=True)
class _PendingEvent:
    """An event waiting to be released: where its text ends in each channel, which calls it carries."""

    raw: bytes
    text_ends: tuple[tuple[_Channel, int], ...] = ()
    tool_keys: tuple[Any, ...] = ()
    final: bool = False  # completes a stored reply: it is recorded before this event goes out


@dataclass(slots=True)
class _Channel:
    """One text a reader reads as a whole (a choice's text, or its thoughts): its own buffer and check state."""

    choice: Any
    thought: bool
    parts: list[str] = field(default_factory=list)
    length: int = 0
    checked: int = 0
    releasable: int = 0  # what was checked, minus what the policies need held at its end


@dataclass(slots=True)
class _OpenCall:
    name: str = ""
    call_id: str = ""
    arguments: list[str] = field(default_factory=list)
    wholes: list[str] = field(default_factory=list)  # the whole arguments as a later event restates them
    other_names: list[str] = field(default_factory=list)  # a later event naming the call differently
    values: dict[str, list[str]] = field(default_factory=dict)  # streamed by JSON path (Gemini partialArgs)
    closed: bool = False
    checked: bool = False


class _UpstreamFailure:
    """Sent down the channel when the upstream stream breaks."""

    def __init__(self, error: ProxyError) -> None:
        self.error = error


# What travels from the reader to the checker: the events of one upstream read, or the end.
_Batch = list[StreamEvent] | _UpstreamFailure


class OpenStreams:
    """The pumps streaming now, so a shutdown can end them all at once.

    Why not a watcher task per stream waiting for a shutdown event: that task
    cost every stream a spawn and a cancellation (~40 us) for an event that
    happens once in a process's life.
    """

    def __init__(self) -> None:
        self._pumps: set[StreamPump] = set()
        self.ending = False

    def add(self, pump: StreamPump) -> None:
        self._pumps.add(pump)
        if self.ending:
            pump.end_for_shutdown()

    def discard(self, pump: StreamPump) -> None:
        self._pumps.discard(pump)

    def end_all(self) -> None:
        """The grace period is over: every open stream stops reading and ends with an error event."""
        self.ending = True
        for pump in list(self._pumps):
            pump.end_for_shutdown()


class StreamPump:
    """Async context manager; iterate it for the bytes to send to the client."""

    def __init__(
        self,
        exchange: Exchange,
        dialect: Dialect,
        engine: PolicyEngine,
        response: UpstreamResponse,
        decoder: Any,
        query: Mapping[str, str],
        settings: StreamSettings,
        open_streams: OpenStreams | None = None,
        *,
        read_usage: bool = False,
        stored: StoredReply | None = None,
    ) -> None:
        self.exchange = exchange
        self.dialect = dialect
        self.engine = engine
        self.response = response
        # The final error event is framed like the stream itself: Gemini's dialect frames by ``alt``,
        # so an SSE reply to a request without ``alt=sse`` ends in SSE too.
        self.query = {**query, "alt": "sse"} if isinstance(decoder, SSEDecoder) else query
        self.settings = settings
        self.open_streams = open_streams
        self.read_usage = read_usage  # a recorder wants the usage the stream states (see Dialect.stream_usage)
        self.decoder = decoder  # chosen by the reply's content type (Dialect.stream_decoder)
        self.stored = stored  # a reply the provider stores, to record once delivered (None: nothing to record)
        self._final_released = False  # the event completing the stored reply is in what goes out next
        self.outcome = "incomplete"
        self._nursery_manager: Any = None
        self._nursery: trio.Nursery | None = None
        self._events: trio.MemoryReceiveChannel[_Batch] | None = None
        # checking state
        self._channels: dict[tuple[Any, bool], _Channel] = {}
        self._unchecked = 0  # characters of every channel not yet covered by a check
        self._checked_total = 0
        self._last_check = time.monotonic()
        self._last_check_cost = 0.0  # seconds the last check took (eager checks while it is small)
        self._text_released = False
        self._pending: deque[_PendingEvent] = deque()
        self._calls: dict[Any, _OpenCall] = {}
        self._started = False
        # The nursery lives in the client-facing task, so cancelling its scope would
        # cancel the sending too: the reader gets a scope of its own.
        self._reader_scope = trio.CancelScope()
        self._ended_by_shutdown = False

    async def __aenter__(self) -> StreamPump:
        send, self._events = trio.open_memory_channel[_Batch](self.settings.channel_size)
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        self._nursery.start_soon(self._read_upstream, send)
        if self.open_streams is not None:
            self.open_streams.add(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Cancel the reader (which closes the upstream) and wait for it; never raises."""
        if self.open_streams is not None:
            self.open_streams.discard(self)
        self._reader_scope.cancel()
        await self._nursery_manager.__aexit__(None, None, None)

    def end_for_shutdown(self) -> None:
        """Stop reading; the reader then ends the stream with a ``server_shutting_down`` event."""
        self._ended_by_shutdown = True
        self._reader_scope.cancel()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._deliver()

    # -- upstream side -------------------------------------------------------

    async def _read_upstream(self, send: trio.MemorySendChannel[_Batch]) -> None:
        """Feed upstream events to the consumer; always closes the upstream response."""
        try:
            with send:
                with self._reader_scope:
                    failure = await self._read_events(send)
                    if failure is not None:
                        await send.send(_UpstreamFailure(failure))
                if self._ended_by_shutdown:
                    await send.send(_UpstreamFailure(shutting_down()))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the consumer is gone; nothing to tell
        finally:
            with trio.CancelScope(deadline=trio.current_time() + _CLOSE_GRACE_SECONDS, shield=True):
                await self.response.aclose()

    async def _read_events(self, send: trio.MemorySendChannel[_Batch]) -> ProxyError | None:
        """Pump events; a broken upstream becomes a ProxyError for the client's final event."""
        try:
            await self._pump_events(send)
        except ProxyError as error:
            return error
        except FramingError as error:
            return upstream_unavailable(f"Upstream stream is malformed: {error}")
        except trio.TooSlowError:
            return upstream_timeout("Upstream stream went idle for too long.")
        except httpx.TimeoutException:
            return upstream_timeout("Upstream stream timed out.")
        except (httpx.HTTPError, OSError) as error:
            return upstream_unavailable(f"Upstream stream broke off ({type(error).__name__}).")
        return None

    async def _pump_events(self, send: trio.MemorySendChannel[_Batch]) -> None:
        chunks = self.response.aiter_bytes()
        idle = self.settings.idle_timeout
        budget = self.settings.max_bytes
        while True:
            try:
                if idle:
                    with trio.fail_after(idle):
                        chunk = await chunks.__anext__()
                else:
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            if budget is not None:
                budget -= len(chunk)
                if budget < 0:
                    raise response_too_large(self.settings.max_bytes or 0)
            events = self.decoder.feed(chunk)
            if events:
                await send.send(events)
        events = self.decoder.close()
        if events:
            await send.send(events)

    # -- client side ---------------------------------------------------------

    async def _deliver(self) -> AsyncIterator[bytes]:
        """Check each batch and write what it released in one piece (the very first release at once).

        A final error event is written on its own, never joined to text released
        before it: it then reaches the client as an HTTP chunk of its own, which
        is how the JS SDK for Gemini (Gemini CLI) recognises it. That SDK tests
        ``JSON.parse`` on each chunk ``fetch`` hands it; text and error in one
        chunk fail the parse and end in "Incomplete JSON segment at the end",
        which Gemini CLI retries as a network error, sending the blocked turn
        to the model again.
        """
        assert self._events is not None
        out: list[bytes] = []  # released, not yet written
        final = b""  # the error event that ends a cut stream
        first_written = False
        try:
            async for batch in self._events:
                if isinstance(batch, _UpstreamFailure):
                    final = self._cut(batch.error)
                    break
                for event in batch:
                    released = await self._accept(event)
                    if not released:
                        continue
                    if first_written:
                        out.append(released)
                    else:
                        first_written = True
                        if self._final_released:
                            await self._record_stored()
                        yield released  # time to first byte: no waiting for the rest of the batch
                if self._unchecked and self._last_check_cost <= self.settings.eager_check_seconds:
                    await self._check_text()  # the batch is over: nothing more to wait for
                    released = self._release()
                    if released:
                        out.append(released)
                if out:
                    if self._final_released:
                        await self._record_stored()
                    yield b"".join(out)
                    out.clear()
            else:
                released = await self._finish()
                if self.outcome == "incomplete":  # an upstream's in-stream error stays what ended the stream
                    self.outcome = "completed"
                out.append(released)
        except ProxyError as error:
            final = self._cut(error)
        except Exception:  # noqa: BLE001 - fail closed: an event we cannot read is never released
            log.exception(
                "stream check failed request_id=%s tenant_id=%s", self.exchange.request_id, self.exchange.tenant_id
            )
            final = self._cut(upstream_unavailable("capsem-proxyd could not check an upstream stream event."))
        if self.stored is not None:
            if self.outcome != "completed":
                await self.stored.cut()  # blocked or cut: the id the client may hold is never admitted
            elif self._final_released:
                await self._record_stored()
        # Events of the batch released before a block or failure did pass their checks.
        last = b"".join(out)
        if last:
            yield last
        if final:
            yield final

    async def _record_stored(self) -> None:
        """The stored reply is complete and checked, and its last event is about to go: its id is usable."""
        self._final_released = False
        if self.stored is not None:
            await self.stored.delivered()

    def _cut(self, error: ProxyError) -> bytes:
        """Stop reading upstream now and return the final error event."""
        self._reader_scope.cancel()
        self.outcome = "blocked" if error.decision is not None else "upstream_error"
        log.info(
            "stream cut request_id=%s tenant_id=%s status=%s code=%s",
            self.exchange.request_id, self.exchange.tenant_id, error.status, error.code,
        )
        return self.dialect.stream_error(error, self._started, self.query)

    async def _accept(self, event: StreamEvent) -> bytes:
        view = self.dialect.stream_view(event)
        if self.read_usage and (usage := self.dialect.stream_usage(event)) is not None:
            self.exchange.record_usage(usage.input_tokens, usage.output_tokens, usage.model)
        if view.error is not None:
            # The upstream reported an error in-stream: pass its event on as is.
            self._pending.append(_PendingEvent(event.raw))
            self.outcome = "upstream_error"
            return await self._release_all()
        if view.content:
            # Text that continues nothing (a whole output item, an event we do not know): checked whole first.
            await self.engine.check_model_response(self.exchange, "\n".join(view.content), "")
        ends: list[tuple[_Channel, int]] = []
        for choice, delta in view.text:
            ends.append(self._grow(choice, False, delta))
        for choice, delta in view.thoughts:
            ends.append(self._grow(choice, True, delta))
        keys = self._add_fragments(view.tool_fragments)
        if self.stored is not None and view.stored_id:
            self.stored.id = self.stored.id or view.stored_id
            self._pending.append(_PendingEvent(event.raw, tuple(ends), keys, final=view.stored_final))
        else:
            self._pending.append(_PendingEvent(event.raw, tuple(ends), keys))
        for key in view.tool_closes:
            await self._close_call(key)
        for channel in view.finished:
            await self._close_channel(channel)
        if self._check_due():
            await self._check_text()
        return self._release()

    def _grow(self, choice: Any, thought: bool, delta: str) -> tuple[_Channel, int]:
        channel = self._channels.get((choice, thought))
        if channel is None:
            channel = self._channels[(choice, thought)] = _Channel(choice, thought)
        channel.parts.append(delta)
        channel.length += len(delta)
        self._unchecked += len(delta)
        return channel, channel.length

    def _add_fragments(self, fragments: list[ToolFragment]) -> tuple[Any, ...]:
        if not fragments:
            return ()
        for fragment in fragments:
            call = self._calls.get(fragment.key)
            if call is None or (call.closed and not fragment.replace):
                call = self._calls[fragment.key] = _OpenCall()
            if fragment.replace:
                # The client reads both the pieces it was sent and the restated whole: both are checked.
                call.wholes.append(fragment.arguments)
                call.checked = False
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

    async def _close_channel(self, channel: Any) -> None:
        """A choice finished: its calls are complete (every open call for ``ALL_CHANNELS``)."""
        for key in list(self._calls):
            if channel is ALL_CHANNELS or (isinstance(key, tuple) and key and key[0] == channel):
                await self._close_call(key)

    async def _close_call(self, key: Any) -> None:
        call = self._calls.get(key)
        if call is None or call.checked:
            return
        call.closed = True
        streamed = "".join(call.arguments)
        arguments = parse_arguments(streamed or (call.wholes[0] if call.wholes else ""))
        for number, whole in enumerate(dict.fromkeys(call.wholes)):
            if whole != streamed and (streamed or number):
                arguments = {**arguments, f"_restated_{number}": parse_arguments(whole)}
        if call.values:
            arguments = {**arguments, **{path: "".join(parts) for path, parts in call.values.items()}}
        if call.other_names:
            arguments = {**arguments, "_other_names": call.other_names}
        await self.engine.check_tool_call(self.exchange, ToolCall(name=call.name, arguments=arguments, call_id=call.call_id))
        call.checked = True

    def _check_due(self) -> bool:
        unchecked = self._unchecked
        if unchecked <= 0:
            return False
        threshold = max(self.settings.check_chars, int(self._checked_total * self.settings.check_growth))
        if unchecked >= threshold:
            return True
        if not self._text_released and self._pending and self._pending[0].text_ends:
            return True  # the first text goes out as soon as a check has covered it: no throttle wait
        return time.monotonic() - self._last_check >= self.settings.check_interval

    async def _check_text(self, every_choice: bool = False) -> None:
        """One ``on_model_response`` per choice with unchecked text (``every_choice``: per choice), on all
        its text and thoughts so far."""
        choices = {
            channel.choice for channel in self._channels.values() if every_choice or channel.length > channel.checked
        }
        begun = time.perf_counter()
        for choice in choices:
            text = self._whole(choice, False)
            thoughts = self._whole(choice, True)
            await self.engine.check_model_response(self.exchange, text, thoughts)
            for thought, whole in ((False, text), (True, thoughts)):
                channel = self._channels.get((choice, thought))
                if channel is not None:
                    self._checked_total += channel.length - channel.checked
                    channel.checked = channel.length
                    channel.releasable = channel.length - self.engine.held(whole)
        self._unchecked = 0
        self._last_check = time.monotonic()
        self._last_check_cost = time.perf_counter() - begun

    def _whole(self, choice: Any, thought: bool) -> str:
        channel = self._channels.get((choice, thought))
        if channel is None:
            return ""
        if len(channel.parts) > 1:
            channel.parts = ["".join(channel.parts)]
        return channel.parts[0] if channel.parts else ""

    def _release(self) -> bytes:
        """The pending events a check has covered, in order: each channel's text as far as it is
        releasable (checked, minus what the policies hold); calls only once checked."""
        out: list[bytes] = []
        pending = self._pending
        while pending:
            head = pending[0]
            if any(end > channel.releasable for channel, end in head.text_ends):
                break
            if head.tool_keys and not all(self._calls[key].checked for key in head.tool_keys):
                break
            if head.text_ends:
                self._text_released = True
            if head.final:
                self._final_released = True
            out.append(pending.popleft().raw)
        if out:
            self._started = True
        return b"".join(out)

    async def _release_all(self) -> bytes:
        if self._unchecked:
            await self._check_text()
        for channel in self._channels.values():
            channel.releasable = channel.checked
        return self._release()

    async def _finish(self) -> bytes:
        for key in list(self._calls):
            await self._close_call(key)
        if self._channels:
            await self._check_text(every_choice=True)  # once more, on the complete text of every choice
        for channel in self._channels.values():
            channel.releasable = channel.checked  # the text is complete: nothing is pending any more
        return self._release()
