"""The stream pump: the trio shell that reads the upstream stream and runs the release core.

What may go and what must be checked first is decided by the release core
(``release.py``, no I/O); this module does the I/O around it:

* one nursery per streamed request (``StreamPump.open``, an async context
  manager the data plane enters) holds the upstream reader; the checking and
  writing is the client-facing iteration itself. They are joined by a small
  bounded memory channel, so a slow client slows the upstream read and memory
  per stream stays flat; an event costs no task switch of its own, since
  events travel in batches (what one upstream read framed);
* the reader frames the upstream bytes (the reply's ``StreamDecoder``); the
  consumer asks the dialect for each event's view, feeds the core, runs the
  checks it asks for against the policy engine, and writes what it
  releases: after the very first release, which goes out at once, what one
  batch releases goes to the client in one write (a provider that sends many
  events per read costs one client write, not one per event);
* every way a stream can end becomes a provider-shaped final error event
  (``Dialect.stream_error``, framed for the reply's media type) and one
  honest outcome (``outcomes.StreamOutcome``): a block, a broken or idle
  upstream, a shutdown, and any exception of the reader, the decoder, the
  dialect or the core (``internal_error``, logged with its traceback,
  request id and tenant id);
* a block, the client hanging up or a shutdown cancels the reader, which
  closes the upstream response at once (within a short shielded grace).

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
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import cast

import httpx
import trio

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
    channel_size: int = 8
    idle_timeout: float | None = DEFAULTS.upstream_timeout
    max_bytes: int | None = None  # upstream bytes one stream may carry; beyond, it ends with an error event

    def schedule(self) -> CheckSchedule:
        return CheckSchedule(self.check_chars, self.check_growth, self.check_interval, self.eager_check_seconds)


class _UpstreamFailure:
    """Sent down the channel when the upstream stream breaks (or the reader fails)."""

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
    """One streamed reply: ``async with pump.open() as chunks: async for chunk in chunks: ...``.

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
        # The nursery lives in the client-facing task, so cancelling its scope would
        # cancel the sending too: the reader gets a scope of its own.
        self._reader_scope = trio.CancelScope()
        self._ended_by_shutdown = False
        self._first_written = False
        self._last_write: float | None = None  # trio time of the last write to the client
        self._completes_stored = False  # what goes out next carries the event completing the stored reply
        self._ends_reply = False  # what goes out next carries the event ending the reply
        # The idle timeout (``_watch_idle``): when the pending upstream read began (None: not reading),
        # the scope around the reads that the watch cancels, the watch's own scope, and whether it fired.
        self._read_since: float | None = None
        self._reads_scope = trio.CancelScope()
        self._watch_scope = trio.CancelScope()
        self._went_idle = False

    @asynccontextmanager
    async def open(self) -> AsyncIterator[AsyncIterator[bytes]]:
        """Start the upstream reader; yield the bytes to write to the client, as they are released.

        Leaving the block (the stream ended, the client left, the server is
        going away) cancels the reader, which closes the upstream, and waits
        for it.
        """
        send, batches = trio.open_memory_channel[_Batch](self.settings.channel_size)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_upstream, send)
                if self.settings.idle_timeout:
                    nursery.start_soon(self._watch_idle, self.settings.idle_timeout)
                if self.open_streams is not None:
                    self.open_streams.add(self)
                try:
                    async with aclosing(self._deliver(batches)) as chunks:
                        yield chunks
                finally:
                    if self.open_streams is not None:
                        self.open_streams.discard(self)
                    self._reader_scope.cancel()
        except BaseExceptionGroup as group:
            # The reader never raises (it ends the stream with an error event instead), so a group
            # holds what the block raised (the client left): raised as it is, not wrapped.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    def end_for_shutdown(self) -> None:
        """Stop reading; the reader then ends the stream with a ``server_shutting_down`` event."""
        self._ended_by_shutdown = True
        self._reader_scope.cancel()

    # -- upstream side -------------------------------------------------------

    async def _read_upstream(self, send: trio.MemorySendChannel[_Batch]) -> None:
        """Feed upstream events to the consumer; always closes the upstream response; never raises."""
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
            self._watch_scope.cancel()
            with trio.CancelScope(deadline=trio.current_time() + _CLOSE_GRACE_SECONDS, shield=True):
                await self.response.aclose()

    async def _read_events(self, send: trio.MemorySendChannel[_Batch]) -> ProxyError | None:
        """Pump events; a broken upstream, or a fault of our own, becomes the error of the final event."""
        try:
            await self._pump_events(send)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise
        except ProxyError as error:
            return error
        except FramingError as error:
            return upstream_unavailable(f"Upstream stream is malformed: {error}")
        except trio.TooSlowError:
            return upstream_timeout("Upstream stream went idle for too long.")
        except httpx.TimeoutException as error:
            return upstream_timeout("Upstream stream timed out.", transport_cause(error))
        except (httpx.HTTPError, OSError) as error:
            return upstream_unavailable(f"Upstream stream broke off ({type(error).__name__}).", transport_cause(error))
        except Exception:  # noqa: BLE001 - a fault of ours (the decoder...): an honest internal error
            self._log_fault("stream reader failed")
            return internal_error()
        return None

    async def _pump_events(self, send: trio.MemorySendChannel[_Batch]) -> None:
        # httpx types ``aiter_bytes`` as an iterator; it is an async generator, closed here, not left to the GC.
        async with aclosing(cast(AsyncGenerator[bytes, None], self.response.aiter_bytes())) as chunks:
            await self._frame(chunks, send)
        events = self.decoder.close()
        if events:
            await send.send(events)

    async def _frame(self, chunks: AsyncIterator[bytes], send: trio.MemorySendChannel[_Batch]) -> None:
        """Each upstream read's events, one batch per read; the idle timeout and the byte budget enforced.

        The idle timeout is kept by ``_watch_idle``, not by a ``fail_after`` around each read: a cancel
        scope with a deadline costs 7-12 µs to enter and leave (the run loop's deadline heap), paid once
        per upstream read, i.e. once per event when a provider sends them one by one. Here a read costs
        two attribute writes; the watch cancels ``_reads_scope`` only while a read is pending.
        """
        budget = self.settings.max_bytes
        with self._reads_scope:
            while True:
                self._read_since = trio.current_time()
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                finally:
                    self._read_since = None
                if budget is not None:
                    budget -= len(chunk)
                    if budget < 0:
                        raise response_too_large(self.settings.max_bytes or 0)
                events = self.decoder.feed(chunk)
                if events:
                    await send.send(events)
        if self._went_idle:
            raise trio.TooSlowError

    async def _watch_idle(self, idle: float) -> None:
        """Cancel the reads when one has been pending ``idle`` seconds (the upstream went idle).

        Waiting to send a batch (a slow client) is not reading: the watch only fires while a read is
        pending, as a deadline around each read would. It wakes about once per ``idle`` seconds, and at
        a pending read's deadline; the reader's end cancels it.
        """
        with self._watch_scope:
            while True:
                since = self._read_since
                await trio.sleep_until((trio.current_time() if since is None else since) + idle)
                since = self._read_since
                if since is not None and trio.current_time() >= since + idle:
                    self._went_idle = True
                    self._reads_scope.cancel()
                    return

    # -- client side ---------------------------------------------------------

    async def _deliver(self, batches: trio.MemoryReceiveChannel[_Batch]) -> AsyncGenerator[bytes, None]:
        """Check each batch and write what it released in one piece (the very first release at once).

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
            async for batch in batches:
                if isinstance(batch, _UpstreamFailure):
                    final = self._cut(batch.error)
                    break
                for event in batch:
                    if await self._take(event, out):
                        yield await self._write(out)  # time to first byte: no waiting for the rest of the batch
                        self._written()
                await self._read_over(out)
                if out:
                    yield await self._write(out)
                    self._written()
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
        # Events of the batch released before a block or failure did pass their checks. A stored reply
        # among them was settled above: recorded if the stream completed, withdrawn otherwise.
        if out:
            yield b"".join(out)
            self._last_write = trio.current_time()
        if final:
            if self._last_write is not None:
                await trio.sleep_until(self._last_write + self.dialect.stream_error_gap)
            yield final

    async def _take(self, event: StreamEvent, out: list[bytes]) -> bool:
        """Feed one event to the core, run the checks it asks for, collect what it releases.

        True when this is the stream's very first release: it goes out at once.
        """
        view = self.dialect.stream_view(event)
        if self.read_usage and (usage := self.dialect.stream_usage(event)) is not None:
            self.exchange.record_usage(usage.input_tokens, usage.output_tokens, usage.model)
        if view.error is not None:
            self.outcome = StreamOutcome.UPSTREAM_ERROR  # an upstream's in-stream error ends the stream's story
        checks = self.core.accept(view, event.raw, time.monotonic())
        if checks:
            await self._run(checks)
        release = self.core.release()
        if release is None:
            return False
        out.append(release.data())
        if release.completes_stored or release.ends_reply:
            self._marks(release)
        if self._first_written:
            return False
        self._first_written = True
        return True

    async def _read_over(self, out: list[bytes]) -> None:
        """The batch is over: nothing more to wait for before a cheap check."""
        checks = self.core.read_over()
        if checks:
            await self._check_and_collect(checks, out)

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
                if check.screened:  # the new text holds nothing any policy refuses replies for
                    self.core.checked(check, 0.0, time.monotonic())
                    continue
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
        """Run ``checks``, then collect what the core releases."""
        if checks:
            await self._run(checks)
        release = self.core.release()
        if release is not None:
            out.append(release.data())
            if release.completes_stored or release.ends_reply:
                self._marks(release)

    def _marks(self, release: Release) -> None:
        """What goes out next carries the event completing the stored reply, or the one ending the reply."""
        self._completes_stored = self._completes_stored or release.completes_stored
        self._ends_reply = self._ends_reply or release.ends_reply

    async def _write(self, out: list[bytes]) -> bytes:
        """What goes out now; a stored reply it completes is recorded just before."""
        if self._completes_stored:
            await self._record_stored()
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def _written(self) -> None:
        """A write reached the client: if it carried the reply's end, the client has the whole reply."""
        self._last_write = trio.current_time()
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
        """Stop reading upstream now and return the final error event."""
        self._reader_scope.cancel()
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
                if not check.screened:
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
