"""A stream's outcome is how it really ended, as the metrics and the request log count it.

A streamed reply's status (200) goes out before its first event, so the
outcome is what tells a block, a broken upstream, a fault of the proxy's own,
a shutdown and a client that left apart. The hard cases are the endings that
race with the upstream's close: SDKs raise on a blocked stream's final error
event and close the connection at once, and the OpenAI SDKs close at
``[DONE]``; the server then cancels what still runs for that connection
(``_compat/hypercorn.py``) while the proxy may still be closing the
upstream. Each test drives the data plane's reply side (``_Reply.stream``)
with a real pump over an httpx response, the recorders the daemon uses, and
a ``send`` that plays the client.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import trio
import trio.testing

from capsem_proxyd.dialects.framing import SSEDecoder, StreamEvent
from capsem_proxyd.dialects.openai_chat import OpenAIChatDialect
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.http.data_plane import _Reply
from capsem_proxyd.observe.metrics import Metrics
from capsem_proxyd.observe.recorders import Recorder, Recorders
from capsem_proxyd.observe.request_log import RequestLog
from capsem_proxyd.proxy.pipeline import ProxyReply
from capsem_proxyd.proxy.streaming import OpenStreams, StreamPump, StreamSettings
from tests.support import exchanges
from tests.support.engines import engine
from tests.support.metrics import Scrape


def chunk(text: str) -> bytes:
    payload = {"id": "c", "object": "chat.completion.chunk", "model": "m",
               "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


class Upstream(httpx.AsyncByteStream):
    """Sends ``events``, then stays open until closed; closing takes ``close_seconds`` (a busy provider)."""

    def __init__(self, events: list[bytes], close_seconds: float = 0.0) -> None:
        self.events = events
        self.close_seconds = close_seconds
        self.closing = trio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self.events:
            yield event
            await trio.sleep(0)
        await trio.sleep_forever()

    async def aclose(self) -> None:
        self.closing.set()
        await trio.sleep(self.close_seconds)


class Outcomes(Recorder):
    def __init__(self) -> None:
        self.streams: list[str] = []
        self.requests: list[str] = []

    def stream_finished(self, exchange: Exchange, outcome: str) -> None:
        self.streams.append(outcome)

    def request_done(self, exchange: Exchange, status: int, outcome: str) -> None:
        self.requests.append(outcome)


Client = Callable[[bytes, trio.CancelScope], None]


async def serve(pump: StreamPump, recorder: Recorder, client: Client, *, started: trio.Event | None = None) -> list[bytes]:
    """Stream ``pump`` to a client that sees each body (``client``, which may hang up by cancelling)."""
    exchange = pump.exchange
    sent: list[bytes] = []
    hang_up = trio.CancelScope()

    async def send(message: dict) -> None:
        body = message.get("body", b"")
        sent.append(body)
        client(body, hang_up)
        if body and started is not None:
            started.set()

    with hang_up:
        await _Reply(send, exchange, []).stream(ProxyReply(200, [], stream=pump), recorder)
    return sent


def pump_for(upstream: httpx.AsyncByteStream, *, decoder: SSEDecoder | None = None,
             open_streams: OpenStreams | None = None) -> StreamPump:
    exchange = exchanges.exchange("openai", "chat", request_id="req_o", tenant_id="t" * 16)
    return StreamPump(exchange, OpenAIChatDialect(), engine(), httpx.Response(200, stream=upstream),
                      decoder or SSEDecoder(), StreamSettings(idle_timeout=5), open_streams)


def stays(body: bytes, hang_up: trio.CancelScope) -> None:
    """A client that reads until the proxy ends the reply."""


async def test_a_block_the_client_hangs_up_on_is_counted_as_a_block(autojump_clock: trio.testing.MockClock) -> None:
    upstream = Upstream([chunk("fine so far, "), chunk("then capsem_block arrives")], close_seconds=0.5)
    outcomes = Outcomes()

    def raises_on_the_error(body: bytes, hang_up: trio.CancelScope) -> None:
        if b"capsem_blocked" in body:
            hang_up.cancel()  # the SDK raised and hung up: the server cancels the connection's work

    sent = await serve(pump_for(upstream), outcomes, raises_on_the_error)
    assert upstream.closing.is_set()  # the proxy was still closing the upstream when the client left
    assert any(b"capsem_blocked" in body for body in sent)
    assert outcomes.streams == ["blocked"] and outcomes.requests == ["blocked"]


async def test_a_reply_the_client_got_whole_is_completed_though_the_upstream_closes_after_it_hung_up() -> None:
    """The OpenAI SDKs close at ``[DONE]``; the upstream closes a moment later. Counted as
    ``client_disconnected`` before (5 of 5 OpenAI-SDK streams): the client had everything."""
    upstream = Upstream([chunk("the whole "), chunk("answer"), b"data: [DONE]\n\n"])
    outcomes = Outcomes()

    def closes_at_done(body: bytes, hang_up: trio.CancelScope) -> None:
        if b"[DONE]" in body:
            hang_up.cancel()

    with trio.fail_after(5):
        sent = await serve(pump_for(upstream), outcomes, closes_at_done)
    assert b"[DONE]" in b"".join(sent)
    assert outcomes.streams == ["completed"] and outcomes.requests == ["completed"]


async def test_a_client_that_leaves_before_the_end_is_counted_as_disconnected() -> None:
    upstream = Upstream([chunk("the start of a long answer " * 3), chunk("and more " * 20)])
    outcomes = Outcomes()

    def leaves_after_the_first_text(body: bytes, hang_up: trio.CancelScope) -> None:
        if b"the start" in body:
            hang_up.cancel()

    with trio.fail_after(5):
        await serve(pump_for(upstream), outcomes, leaves_after_the_first_text)
    assert outcomes.streams == ["client_disconnected"] and outcomes.requests == ["client_disconnected"]


async def test_a_stream_cut_by_the_shutdown_logs_one_outcome_server_shutting_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its "stream cut" line said ``server_shutting_down`` while its request line said ``upstream_error``."""
    open_streams = OpenStreams()
    upstream = Upstream([chunk("the start of a long answer " * 3), chunk("and more " * 20)])
    outcomes = Outcomes()
    started = trio.Event()
    caplog.set_level(logging.INFO)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve_into, pump_for(upstream, open_streams=open_streams),
                               Recorders(outcomes, RequestLog()), started)
            await started.wait()  # the stream is flowing
            open_streams.end_all()
    assert outcomes.streams == ["server_shutting_down"] and outcomes.requests == ["server_shutting_down"]
    lines = [record.getMessage() for record in caplog.records if "req_o" in record.getMessage()]
    assert any("stream cut" in line and "code=server_shutting_down" in line for line in lines)
    assert any("outcome=server_shutting_down" in line and "stream cut" not in line for line in lines)
    assert not any("upstream_error" in line for line in lines)


async def _serve_into(pump: StreamPump, recorder: Recorder, started: trio.Event) -> None:
    await serve(pump, recorder, stays, started=started)


class KeyErrorDecoder(SSEDecoder):
    """The issue's reproduction: a decoder whose ``feed`` raises ``KeyError``."""

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        raise KeyError("choices")


async def test_a_decoder_fault_reaches_the_client_as_an_error_and_is_logged_and_counted_as_internal_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: the stream ended ``completed`` with nothing written and the request log said completed, 200."""
    metrics = Metrics()
    caplog.set_level(logging.INFO)
    with trio.fail_after(5):
        sent = await serve(pump_for(Upstream([chunk("anything")]), decoder=KeyErrorDecoder()),
                           Recorders(RequestLog(), metrics), stays)
    error = json.loads(b"".join(sent).removeprefix(b"data: "))["error"]  # OpenAI's shape
    assert error["code"] == "internal_error"
    request_lines = [r.getMessage() for r in caplog.records if r.name == "capsem_proxyd.request"]
    assert len(request_lines) == 1 and "outcome=internal_error" in request_lines[0]
    faults = [r for r in caplog.records if r.name == "capsem_proxyd.stream" and r.exc_info is not None]
    assert faults and "request_id=req_o" in faults[0].getMessage() and "tenant_id=tttt" in faults[0].getMessage()
    body, _ = metrics.render()
    assert Scrape(body.decode())("capsem_proxyd_streams_total", provider="openai", endpoint="chat",
                                 outcome="internal_error") == 1
