"""The stream pump: the trio shell that reads the upstream stream and runs the release core.

What may go and what must be checked first is decided by the release core
(``release.py``, no I/O); this module does the I/O around it:

* one task reads, checks and writes (``StreamPump.relay``, awaited by the
  data plane with the client's write): it reads the upstream, frames the
  bytes (the reply's ``StreamDecoder``), asks the dialect for each event's
  view, feeds the core, runs the checks it asks for against the policy
  engine, and writes what it releases, then reads again. A slow client
  slows the upstream read and memory per stream stays flat. After the very
  first release, which goes out at once, what one read releases goes to the
  client in one write (a provider that sends many events per read costs one
  client write, not one per event). Why one task and not a reader task
  feeding a checker through a memory channel: when a provider sends its
  events one by one (``bench/events.py``), the channel and the task switch
  it costs were paid per event, a tenth of the proxy's CPU per event; a
  second task bought nothing a single one does not do (its only other task
  is the idle watch, which wakes once per idle timeout);
* every way a stream can end becomes a provider-shaped final error event
  (``Dialect.stream_error``, framed for the reply's media type) and one
  honest outcome (``outcomes.StreamOutcome``): a block, a broken or idle
  upstream, a shutdown, and any exception of the reader, the decoder, the
  dialect or the core (``internal_error``, logged with its traceback,
  request id and tenant id);
* a block closes the upstream response at once (within a short shielded
  grace), before the final error event is written; so does the client
  hanging up (the server cancels the relay) and a shutdown (which cancels
  a pending read, or is seen before the next one).

A reply the provider stores under an id (a Responses stream, ``stored``) is
recorded as delivered just before the event that completes it goes to the
client, and withdrawn (in a ``finally``, so a hang-up withdraws it too) if
the stream ends any other way than completed: its id is usable in later
requests only if the client got all of it, checked.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import cast

import httpx
import trio

from capsem_proxyd._compat.httpcore import without_read_timeout
from capsem_proxyd.config import DEFAULTS
from capsem_proxyd.dialects.base import Dialect
from capsem_proxyd.dialects.framing import FramingError, StreamDecoder, StreamEvent
from capsem_proxyd.enforcement.engine import PolicyEngine
from capsem_proxyd.enforcement.holdbacks import channel_matchers
from capsem_proxyd.errors import (
    ProxyError,
    internal_error,
    response_too_large,
    shutting_down,
    transport_cause,
    unmaskable,
    upstream_timeout,
    upstream_unavailable,
)
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.outcomes import StreamOutcome
from capsem_proxyd.proxy.release import Check, CheckSchedule, Release, StreamRelease, TextCheck
from capsem_proxyd.proxy.stored_content import StoredReply
from capsem_proxyd.proxy.upstream import UpstreamResponse
from capsem_proxyd.redaction.masker import Masker
from capsem_proxyd.redaction.rewrite import Unmaskable

log = logging.getLogger("capsem_proxyd.stream")

_CLOSE_GRACE_SECONDS = 1.0


@dataclass(slots=True)
class StreamSettings:
    """How the pump trades latency against checking cost (``release.CheckSchedule``), and its I/O bounds."""

    check_chars: int = 256
    check_growth: float = 0.25
    check_interval: float = 0.05
    eager_check_seconds: float = 0.0005  # see release.CheckSchedule
    idle_timeout: float | None = DEFAULTS.upstream_timeout
    max_bytes: int | None = None  # upstream bytes one stream may carry; beyond, it ends with an error event

    def schedule(self) -> CheckSchedule:
        return CheckSchedule(self.check_chars, self.check_growth, self.check_interval, self.eager_check_seconds)


# Where the pump writes what it releases: the client's connection (``data_plane``), or a test's list.
Write = Callable[[bytes], Awaitable[None]]


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


def stream_outcome(error: ProxyError) -> StreamOutcome:
    """How a stream ended by ``error`` ended."""
    if error.decision is not None:
        return StreamOutcome.BLOCKED
    if error.code == "server_shutting_down":
        return StreamOutcome.SERVER_SHUTTING_DOWN
    if error.code == "internal_error":
        return StreamOutcome.INTERNAL_ERROR
    if error.code == "policy_workers_unavailable":
        return StreamOutcome.POLICY_UNAVAILABLE
    if error.code == "audit_log_unavailable":
        return StreamOutcome.AUDIT_UNAVAILABLE
    return StreamOutcome.UPSTREAM_ERROR


class StreamPump:
    """One streamed reply: ``await pump.relay(write)`` relays it, ``write`` taking each piece for the client.

    ``outcome`` says how it ended (``INCOMPLETE`` until it knows); it is
    ``COMPLETED`` as soon as the event that ends the reply was written, so a
    client that hangs up on it (the OpenAI SDKs close at ``[DONE]``) while
    the upstream is still closing got the whole reply.
    """

    def __init__(
        self,
        exchange: Exchange,
        dialect: Dialect,
        engine: PolicyEngine,
        response: UpstreamResponse,
        decoder: StreamDecoder,
        settings: StreamSettings,
        open_streams: OpenStreams | None = None,
        *,
        read_usage: bool = False,
        stored: StoredReply | None = None,
        masker: Masker | None = None,
    ) -> None:
        self.exchange = exchange
        self.masker = masker  # placeholders for what policies ask to mask in the reply
        self.dialect = dialect
        self.engine = engine
        self.response = response
        self.decoder = decoder  # chosen by the reply's content type (Dialect.stream_decoder)
        self.settings = settings
        self.open_streams = open_streams
        self.read_usage = read_usage  # a recorder wants the usage the stream states (see Dialect.stream_usage)
        self.stored = stored  # a reply the provider stores, to record once delivered (None: nothing to record)
        self.core = StreamRelease(settings.schedule(), channel_matchers(engine.holdbacks),
                                  keeps_stored=stored is not None, now=time.monotonic(),
                                  new_screen=engine.reply_screens, signed_thoughts=dialect.provider == "anthropic")
        self.outcome = StreamOutcome.INCOMPLETE
        self._ended_by_shutdown = False
        self._first_written = False
        self._last_write: float | None = None  # trio time of the last write to the client
        self._completes_stored = False  # what goes out next carries the event completing the stored reply
        self._ends_reply = False  # what goes out next carries the event ending the reply
        # The idle timeout (``_watch_idle``): when the pending upstream read began (None: not reading),
        # the scope around the reads that the watch (or a shutdown) cancels, and the watch's own scope.
        self._read_since: float | None = None
        self._reads_scope = trio.CancelScope()
        self._reads_cancelled = False
        self._watch_scope = trio.CancelScope()
        # trio's clock, read directly: ``trio.current_time()`` is three calls, paid twice per event.
        self._clock = trio.current_time

    async def relay(self, write: Write) -> None:
        """Read the upstream, check, and ``write`` what is released, in this one task, until the stream ends.

        However it ends (the stream is over, a check refused, the client left,
        the server is going away), the upstream response is closed before
        anything more is written: a refused stream stops reading at once.
        """
        self._clock = trio.lowlevel.current_clock().current_time
        if self.open_streams is not None:
            self.open_streams.add(self)
        try:
            async with trio.open_nursery() as nursery:
                if self.settings.idle_timeout:
                    nursery.start_soon(self._watch_idle, self.settings.idle_timeout)
                try:
                    await self._relay(write)
                finally:
                    self._watch_scope.cancel()
        except BaseExceptionGroup as group:
            # The watch never raises, so a group holds what the relay raised (the client left):
            # raised as it is, not wrapped.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            if self.open_streams is not None:
                self.open_streams.discard(self)

    def end_for_shutdown(self) -> None:
        """Stop reading; the stream then ends with a ``server_shutting_down`` event.

        A read waiting now is cancelled; otherwise the relay sees it before its next read. What is
        being checked or written goes on: a write is never cut in the middle.
        """
        self._ended_by_shutdown = True
        if self._read_since is not None:
            self._cancel_reads()

    # -- the relay -----------------------------------------------------------

    async def _relay(self, write: Write) -> None:
        """The read-check-write loop, then the end: the last checks, or the final error event.

        A final error event is written on its own, never joined to text released
        before it, and at least ``Dialect.stream_error_gap`` after it: the JS SDK
        for Gemini (Gemini CLI) recognises the error only in a network read of
        its own. That SDK tests ``JSON.parse`` on each read ``fetch`` hands it,
        and Node's fetch joins HTTP chunks that arrived together; text and error
        in one read fail the parse and end in "Incomplete JSON segment at the
        end", which Gemini CLI retries as a network error, sending the blocked
        turn to the model again.
        """
        out: list[bytes] = []  # released, not yet written
        final = b""  # the error event that ends a cut stream
        try:
            try:
                failure = await self._read_and_deliver(write, out)
            finally:
                self._watch_scope.cancel()
                with trio.CancelScope(deadline=trio.current_time() + _CLOSE_GRACE_SECONDS, shield=True):
                    await self.response.aclose()
            if failure is not None:
                final = self._cut(failure)
            else:
                await self._finish(out)
        except ProxyError as error:
            final = self._cut(error)
        except Unmaskable as error:  # a masked piece with no text field of its own to carry it (logprobs)
            final = self._cut(unmaskable("capsem-proxyd", "on_model_response", str(error), "Response"))
        except Exception:  # noqa: BLE001 - fail closed: an event we cannot read is never released
            self._log_fault("stream check failed")
            final = self._cut(internal_error())
        finally:
            await self._settle_stored()
        # Events of the read released before a block or failure did pass their checks. A stored reply
        # among them was settled above: recorded if the stream completed, withdrawn otherwise.
        if out:
            await write(b"".join(out))
            self._last_write = trio.current_time()
        if final:
            if self._last_write is not None:
                await trio.sleep_until(self._last_write + self.dialect.stream_error_gap)
            await write(final)

    async def _read_and_deliver(self, write: Write, out: list[bytes]) -> ProxyError | None:
        """Each upstream read framed, checked and its release written; None when the upstream ended
        normally, else the error that ends the stream (a broken or idle upstream, a shutdown, a fault
        of the reader or the decoder). A check's refusal or fault is raised, not returned.

        The idle timeout is kept by ``_watch_idle``, not by a ``fail_after`` around each read: a cancel
        scope with a deadline costs 7-12 µs to enter and leave (the run loop's deadline heap), paid once
        per upstream read, i.e. once per event when a provider sends them one by one. Here a read costs
        two attribute writes; the watch (and a shutdown) cancels ``_reads_scope`` only while a read is
        pending, and a read that returned as it was cancelled is dropped before anything else can wait
        in the cancelled scope: checks and writes are never cancelled by it.
        """
        budget = self.settings.max_bytes
        decoder = self.decoder
        clock = self._clock
        response = self.response
        # A reply without a content coding is read from its stream: its bytes are what ``aiter_bytes``
        # (and ``aiter_raw``) would give, without a decoder's and a chunker's call and two generators' steps
        # per read, once per event when a provider writes them one by one (``bench/events.py``).
        # ``Response.stream`` is httpx's public byte stream (a custom transport hands one in); it maps
        # httpcore's errors to httpx's as ``aiter_raw`` does, and ``_relay`` closes the response after.
        stream = response.stream
        if "content-encoding" in response.headers or not isinstance(stream, httpx.AsyncByteStream):
            reads = response.aiter_bytes()
        else:
            reads = aiter(stream)
        if self.settings.idle_timeout:
            # The watch keeps the timeout: httpcore's per-read deadline would cost each read ~9 µs more.
            without_read_timeout(response)
        # httpx types them as iterators; they are async generators, closed here, not left to the GC.
        async with aclosing(cast(AsyncGenerator[bytes, None], reads)) as chunks:
            with self._reads_scope:
                while not self._ended_by_shutdown:
                    self._read_since = clock()
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        chunk = None
                    except Exception as error:  # noqa: BLE001 - every way a read fails ends the stream
                        return self._reading_failed(error)
                    finally:
                        self._read_since = None
                    if self._reads_cancelled:
                        break  # idle, or a shutdown, as this read returned
                    try:
                        if chunk is None:
                            events = decoder.close()
                        else:
                            if budget is not None:
                                budget -= len(chunk)
                                if budget < 0:
                                    raise response_too_large(self.settings.max_bytes or 0)
                            events = decoder.feed(chunk)
                    except Exception as error:  # noqa: BLE001 - garbage, or a fault of the decoder
                        return self._reading_failed(error)
                    if events:
                        await self._deliver(events, write, out)
                    if chunk is None:
                        return None
        if self._ended_by_shutdown:
            return shutting_down()
        return upstream_timeout("Upstream stream went idle for too long.")

    def _reading_failed(self, error: Exception) -> ProxyError:
        """What ends a stream whose upstream read (or its framing) failed with ``error``."""
        if isinstance(error, ProxyError):
            return error
        if isinstance(error, FramingError):
            return upstream_unavailable(f"Upstream stream is malformed: {error}")
        if isinstance(error, httpx.TimeoutException):
            return upstream_timeout("Upstream stream timed out.", transport_cause(error))
        if isinstance(error, (httpx.HTTPError, OSError)):
            return upstream_unavailable(f"Upstream stream broke off ({type(error).__name__}).",
                                        transport_cause(error))
        self._log_fault("stream reader failed")  # a fault of ours (the decoder...): an honest internal error
        return internal_error()

    async def _watch_idle(self, idle: float) -> None:
        """Cancel the reads when one has been pending ``idle`` seconds (the upstream went idle).

        Checking and writing (a slow client) is not reading: the watch only fires while a read is
        pending, as a deadline around each read would. It wakes about once per ``idle`` seconds, and at
        a pending read's deadline; the end of reading cancels it.
        """
        with self._watch_scope:
            while True:
                since = self._read_since
                await trio.sleep_until((trio.current_time() if since is None else since) + idle)
                since = self._read_since
                if since is not None and trio.current_time() >= since + idle:
                    self._cancel_reads()
                    return

    def _cancel_reads(self) -> None:
        """The pending read is cancelled (idle, or a shutdown); the relay drops what it may still return."""
        self._reads_cancelled = True
        self._reads_scope.cancel()

    async def _deliver(self, events: list[StreamEvent], write: Write, out: list[bytes]) -> None:
        """Check the events of one read and write what they released in one piece (the very first
        release at once: time to first byte does not wait for the rest of the read).

        Only checks and writes are awaited here: reading an event and collecting what it releases are
        plain calls, not a coroutine each (a provider sending its events one by one pays this loop once
        per event, ``bench/events.py``: it was two coroutines and five calls more per event); the read's
        last event brings its read-over check with it where nothing could go before it
        (``StreamRelease.accept``, ``ends_read``)."""
        core, dialect = self.core, self.dialect
        last = events[-1]
        for event in events:
            view = dialect.stream_view(event)
            if self.read_usage and (usage := dialect.stream_usage(event)) is not None:
                self.exchange.record_usage(usage.input_tokens, usage.output_tokens, usage.model)
            if view.error is not None:
                self.outcome = StreamOutcome.UPSTREAM_ERROR  # an upstream's in-stream error ends the stream's story
            checks = core.accept(view, event.raw, time.monotonic(), ends_read=event is last)
            if checks:
                await self._run(checks)
            release = core.release()
            if release is not None:
                self._collect(release, out)
                if not self._first_written:
                    self._first_written = True
                    await self._send(write, out)
        if not core.read_checked:
            # The read is over: nothing more to wait for before a cheap check (made with the last event
            # when nothing could go before it: ``StreamRelease.accept``).
            await self._check_and_collect(core.read_over(time.monotonic()), out)
        if out:
            await self._send(write, out)

    async def _finish(self, out: list[bytes]) -> None:
        """The upstream ended: the last checks on everything, then all that passed goes."""
        await self._check_and_collect(self.core.finish(), out)
        if self.outcome is StreamOutcome.INCOMPLETE:  # an upstream's in-stream error stays what ended it
            self.outcome = StreamOutcome.COMPLETED

    async def _run(self, checks: list[Check]) -> None:
        """The checks the core asked for, in order; a refusal raises ``ProxyError`` and ends the stream."""
        redactions = self.exchange.redactions
        for check in checks:
            if isinstance(check, TextCheck):
                begun = time.monotonic()
                asked = len(redactions)
                await self.engine.check_model_response(self.exchange, check.text, check.thoughts)
                if len(redactions) > asked:
                    self._mask(redactions[asked:])
                now = time.monotonic()
                self.core.checked(check, now - begun, now)
            else:
                asked = len(redactions)
                await self.engine.check_tool_call(self.exchange, check.call)
                if len(redactions) > asked:  # a streamed call's arguments are never rewritten: refused instead
                    policy, hook = redactions[asked][2:]
                    raise unmaskable(policy, hook, "a streamed tool call is not masked", "Response")
                self.core.checked(check)

    def _mask(self, found: list[tuple[str, str, str, str]]) -> None:
        """What a policy asked to mask in the reply, masked in what is still to go (``StreamRelease.mask``),
        each value under its placeholder for the tenant; told to the recorders (never the value)."""
        masker = self.masker
        if masker is None:
            masker = self.masker = Masker(os.urandom(32), "ephemeral")
        for value, kind, policy, hook in found:
            placeholder = masker.placeholder_for(self.exchange.tenant_id, value, kind)
            try:
                count = self.core.mask({value: placeholder})
            except Unmaskable as error:
                raise unmaskable(policy, hook, str(error), "Response") from None
            if count:
                self.engine.recorder.redacted(self.exchange, hook, policy, count, kind, placeholder, masker.key_id)

    async def _check_and_collect(self, checks: list[Check], out: list[bytes]) -> None:
        """Run ``checks``, then collect what the core releases (``_deliver``'s loop does the same per event,
        written out: it runs once per event of a token-by-token stream)."""
        if checks:
            await self._run(checks)
        release = self.core.release()
        if release is not None:
            self._collect(release, out)

    def _collect(self, release: Release, out: list[bytes]) -> None:
        """What the core released, collected in ``out``."""
        out.append(release.data())
        if release.completes_stored or release.ends_reply:
            self._marks(release)

    def _marks(self, release: Release) -> None:
        """What goes out next carries the event completing the stored reply, or the one ending the reply."""
        self._completes_stored = self._completes_stored or release.completes_stored
        self._ends_reply = self._ends_reply or release.ends_reply

    async def _send(self, write: Write, out: list[bytes]) -> None:
        """Write what was released in one piece; a stored reply it completes is recorded just before.
        Once written, if it carried the reply's end, the client has the whole reply."""
        if self._completes_stored:
            await self._record_stored()
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        await write(data)
        self._last_write = self._clock()
        if self._ends_reply and self.outcome is StreamOutcome.INCOMPLETE:
            self.outcome = StreamOutcome.COMPLETED

    async def _record_stored(self) -> None:
        """The stored reply is complete and checked, and its last event is about to go: its id is usable."""
        self._completes_stored = False
        if self.stored is not None:
            self.stored.id = self.stored.id or self.core.stored_id
            self.stored.items = self.core.stored_items
            await self.stored.delivered()

    async def _settle_stored(self) -> None:
        """A stored reply that did not complete is withdrawn (the id the client may hold is never admitted)."""
        if self.stored is None:
            return
        with trio.CancelScope(deadline=trio.current_time() + _CLOSE_GRACE_SECONDS, shield=True):
            self.stored.id = self.stored.id or self.core.stored_id
            self.stored.items = self.core.stored_items
            if self.outcome is not StreamOutcome.COMPLETED:
                await self.stored.cut()
            elif self._completes_stored:
                await self._record_stored()

    def _cut(self, error: ProxyError) -> bytes:
        """The final error event (the upstream is closed already)."""
        self.outcome = stream_outcome(error)
        if self.outcome is StreamOutcome.UPSTREAM_ERROR:
            self.exchange.failure = error.cause or error.message  # the request's line is a WARNING that says why
        log.info(
            "stream cut request_id=%s tenant_id=%s status=%s code=%s outcome=%s",
            self.exchange.request_id, self.exchange.tenant_id, error.status, error.code, self.outcome,
        )
        return self.dialect.stream_error(error, self.core.started, self.decoder.media_type)

    def _log_fault(self, what: str) -> None:
        log.exception("%s request_id=%s tenant_id=%s", what, self.exchange.request_id, self.exchange.tenant_id)


async def check_stream_body(
    exchange: Exchange, dialect: Dialect, engine: PolicyEngine, decoder: StreamDecoder, body: bytes,
    schedule: CheckSchedule,
) -> None:
    """A whole stream read at once (an upstream error status with an event-stream body): every event
    checked as the pump checks a stream, so its text is read per channel as the client reads it;
    a refusal raises ``ProxyError`` before any byte of it goes. Nothing is released: the caller
    sends the body as it is, or the refusal.
    """
    core = StreamRelease(schedule, channel_matchers(engine.holdbacks), now=time.monotonic(),
                         new_screen=engine.reply_screens)

    async def run(checks: list[Check]) -> None:
        for check in checks:
            asked = len(exchange.redactions)
            if isinstance(check, TextCheck):
                await engine.check_model_response(exchange, check.text, check.thoughts)
            else:
                await engine.check_tool_call(exchange, check.call)
            if len(exchange.redactions) > asked:  # an error body is relayed as it is, never rewritten
                policy, hook = exchange.redactions[asked][2:]
                raise unmaskable(policy, hook, "an upstream error body is never rewritten", "Response")
            core.checked(check, 0.0, time.monotonic())
        core.release()

    for event in [*decoder.feed(body), *decoder.close()]:
        await run(core.accept(dialect.stream_view(event), event.raw, time.monotonic()))
    await run(core.finish())
