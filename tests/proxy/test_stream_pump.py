"""The stream pump on its own, fed a real httpx response: batching, the early first
release, the hold-back guarantee under any split of the upstream bytes, and how a
stream ends (shutdown, a fault of the proxy's own)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

from capsem_proxyd.dialects.framing import JSONArrayDecoder, SSEDecoder, StreamEvent
from capsem_proxyd.dialects.gemini import GeminiDialect
from capsem_proxyd.dialects.openai_chat import OpenAIChatDialect
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.outcomes import StreamOutcome
from capsem_proxyd.proxy.streaming import OpenStreams, StreamPump, StreamSettings
from tests.support import exchanges
from tests.support.engines import engine

ENGINE = engine()
DIALECT = OpenAIChatDialect()


def _event(text: str) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m",
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _exchange() -> Exchange:
    return exchanges.exchange("openai", "chat.completions", request_id="req_test", tenant_id="0" * 16)


async def _run(pump: StreamPump) -> list[bytes]:
    """What ``pump`` writes to the client, write by write."""
    writes: list[bytes] = []
    async def write(data: bytes) -> None:
        writes.append(data)

    await pump.relay(write)
    return writes


async def _pump(pieces: list[bytes], settings: StreamSettings | None = None) -> list[bytes]:
    """What the pump writes to the client, write by write, for an upstream sending ``pieces``."""

    async def upstream() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    response = httpx.Response(200, content=upstream())
    return await _run(StreamPump(_exchange(), DIALECT, ENGINE, response, SSEDecoder(), settings or StreamSettings(idle_timeout=5)))


async def test_a_burst_is_written_in_few_pieces_the_first_text_early() -> None:
    events = [_event(f"word{index:02d} ") for index in range(49)] + [b"data: [DONE]\n\n"]
    writes = await _pump([b"".join(events)])  # every event in one upstream read
    assert b"".join(writes) == b"".join(events)  # lossless, in order
    assert 2 <= len(writes) <= 3  # the first release, then the rest of the batch (and the end)
    # The first write holds the first text event and not much more: one check covering
    # it plus the 64-character tail let it go, without waiting for 256 characters.
    first_text = writes[0].count(b"word")
    assert 1 <= first_text <= 11


async def test_events_trickling_one_per_read_go_out_one_per_write() -> None:
    events = [_event("x" * 100) for _ in range(6)]
    writes = await _pump(events, StreamSettings(idle_timeout=5, check_chars=1, check_growth=0))  # a check per event
    assert writes == events  # each released as soon as the next one's check covers it and its tail


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 39), st.lists(st.integers(1, 400), min_size=1, max_size=30))
def test_a_marker_split_anywhere_never_reaches_the_client_whole(position: int, cuts: list[int]) -> None:
    texts = [f"t{index:02d} " for index in range(40)]
    texts[position] = "capsem_"
    if position + 1 < len(texts):
        texts[position + 1] = "block "
    else:
        texts.append("block ")
    raw = b"".join(_event(text) for text in texts) + b"data: [DONE]\n\n"
    pieces, start = [], 0
    for cut in cuts:
        if start >= len(raw):
            break
        pieces.append(raw[start : start + cut])
        start += cut
    if start < len(raw):
        pieces.append(raw[start:])
    writes = trio.run(_pump, pieces)
    delivered = b"".join(writes)
    released, _, error = delivered.rpartition(b"data: ")
    assert b"capsem_block" in error  # ended by the block
    text = "".join(
        choice["delta"].get("content") or ""
        for block in released.split(b"\n\n") if block.startswith(b"data: {")
        for choice in json.loads(block[6:])["choices"]
    )
    assert "capsem_block" not in text


def _endless_response() -> httpx.Response:
    """An upstream that sends two events and then stays open, as a long generation does
    (the second carries enough text for the first to pass the hold-back)."""
    closed = trio.Event()

    async def upstream() -> AsyncIterator[bytes]:
        try:
            yield _event("the start of a long answer ")
            yield _event("and more words after it " * 4)
            await trio.sleep_forever()
        finally:
            closed.set()

    response = httpx.Response(200, content=upstream())
    response.extensions["closed"] = closed
    return response


async def test_ending_all_open_streams_cuts_each_with_a_shutdown_event_and_closes_its_upstream() -> None:
    open_streams = OpenStreams()
    outputs: list[bytes] = []
    pumps: list[StreamPump] = []
    first_writes = [trio.Event() for _ in range(3)]

    async def stream(response: httpx.Response, first_write: trio.Event) -> None:
        pump = StreamPump(_exchange(), DIALECT, ENGINE, response, SSEDecoder(), StreamSettings(idle_timeout=5), open_streams)
        pumps.append(pump)
        writes = []
        async def write(data: bytes) -> None:
            writes.append(data)
            first_write.set()

        await pump.relay(write)
        outputs.append(b"".join(writes))

    responses = [_endless_response() for _ in range(3)]
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for response, first_write in zip(responses, first_writes):
                nursery.start_soon(stream, response, first_write)
            for first_write in first_writes:
                await first_write.wait()  # each has written its first event and waits for more
            open_streams.end_all()
    assert len(outputs) == 3
    for output in outputs:
        assert b"the start of a long answer" in output and b"server_shutting_down" in output
    assert all(response.extensions["closed"].is_set() for response in responses)
    assert not open_streams._pumps  # each left the registry when it ended
    # One outcome, the one its "stream cut" line names: not upstream_error.
    assert [pump.outcome for pump in pumps] == [StreamOutcome.SERVER_SHUTTING_DOWN] * 3


async def test_a_shutdown_during_a_write_lets_it_finish_then_ends_the_stream() -> None:
    """The pump reads, checks and writes in one task: a shutdown that comes while it writes to a slow
    client is seen once the write is done (a write cut in the middle would break the client's
    framing), then the stream ends with the shutdown event and the upstream is closed."""
    open_streams = OpenStreams()
    response = _endless_response()
    pump = StreamPump(_exchange(), DIALECT, ENGINE, response, SSEDecoder(), StreamSettings(idle_timeout=5),
                      open_streams)
    writing, go_on = trio.Event(), trio.Event()
    writes: list[bytes] = []

    async def slow_client(data: bytes) -> None:
        if not writing.is_set():
            writing.set()
            await go_on.wait()  # the client reads slowly: the first write takes a while
        writes.append(data)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump.relay, slow_client)
            await writing.wait()
            open_streams.end_all()  # the server is going away while the first write is in progress
            go_on.set()
    assert b"the start of a long answer" in writes[0]  # written whole, not cut
    assert b"server_shutting_down" in writes[-1] and pump.outcome is StreamOutcome.SERVER_SHUTTING_DOWN
    assert response.is_closed  # no read was pending: the pump closed the response itself


async def test_a_stream_opened_after_the_shutdown_ends_at_once() -> None:
    open_streams = OpenStreams()
    open_streams.end_all()
    pump = StreamPump(_exchange(), DIALECT, ENGINE, _endless_response(), SSEDecoder(), StreamSettings(idle_timeout=5), open_streams)
    with trio.fail_after(5):
        written = b"".join(await _run(pump))
    assert b"server_shutting_down" in written
    assert pump.outcome is StreamOutcome.SERVER_SHUTTING_DOWN


class BrokenDecoder(SSEDecoder):
    """A decoder with a bug of the proxy's own: ``feed`` raises ``KeyError`` on the second read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        self.reads += 1
        if self.reads > 1:
            raise KeyError("choices")
        return super().feed(chunk)


async def test_a_decoder_that_raises_ends_the_stream_with_an_error_event_and_outcome_internal_error() -> None:
    """The issue's reproduction: it ended ``completed``, nothing written, and ``__aexit__`` raised."""
    response = httpx.Response(200, content=_chunks([_event("a fine start of an answer " * 4), _event("more")]))
    pump = StreamPump(_exchange(), DIALECT, ENGINE, response, BrokenDecoder(), StreamSettings(idle_timeout=5))
    with trio.fail_after(5):
        writes = await _run(pump)
    assert pump.outcome is StreamOutcome.INTERNAL_ERROR
    assert b"a fine start" in b"".join(writes[:-1])  # what passed before the fault did go
    error = json.loads(writes[-1].removeprefix(b"data: "))["error"]  # OpenAI's shape, a chunk of its own
    assert error["code"] == "internal_error"


async def test_an_event_the_dialect_cannot_read_ends_the_stream_as_an_internal_error() -> None:
    """A fault while checking (here the dialect's, on an event it cannot read) fails closed, honestly."""

    class BrokenDialect(OpenAIChatDialect):
        def stream_view(self, event: StreamEvent) -> object:  # type: ignore[override]
            raise RuntimeError("a bug")

    response = httpx.Response(200, content=_chunks([_event("anything")]))
    pump = StreamPump(_exchange(), BrokenDialect(), ENGINE, response, SSEDecoder(), StreamSettings(idle_timeout=5))
    with trio.fail_after(5):
        writes = await _run(pump)
    assert pump.outcome is StreamOutcome.INTERNAL_ERROR
    assert writes and b"anything" not in b"".join(writes) and b"internal_error" in writes[-1]


async def _chunks(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


@pytest.mark.parametrize(("decoder", "upstream", "ending"), [
    (SSEDecoder, b'data: {"candidates": [{"content": {"parts": [{"text": "say capsem_block"}]}}]}\r\n\r\n', b"\r\n"),
    (JSONArrayDecoder, b'[{"candidates": [{"content": {"parts": [{"text": "say capsem_block"}]}}]}', b"]"),
])
async def test_gemini_frames_its_final_error_by_the_replys_own_media_type(
    decoder: type[SSEDecoder | JSONArrayDecoder], upstream: bytes, ending: bytes,
) -> None:
    """No query is rewritten to choose the framing: the decoder the reply's content type chose says it."""
    response = httpx.Response(200, content=_chunks([upstream]))
    exchange = exchanges.exchange("gemini", "generateContent", request_id="req_g", tenant_id="t")
    pump = StreamPump(exchange, GeminiDialect(), ENGINE, response, decoder(), StreamSettings(idle_timeout=5))
    with trio.fail_after(5):
        writes = await _run(pump)
    final = writes[-1]
    assert pump.outcome is StreamOutcome.BLOCKED and final.endswith(ending)
    body = final.removeprefix(b"[").removesuffix(b"]") if decoder is JSONArrayDecoder else final
    assert json.loads(body)["error"]["code"] == 400  # INVALID_ARGUMENT, what the Gemini SDKs raise on


def _gemini_event(text: str) -> bytes:
    chunk = {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}]}
    return b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"


@pytest.mark.parametrize(("dialect", "event"), [(GeminiDialect(), _gemini_event), (OpenAIChatDialect(), _event)],
                         ids=["gemini", "openai"])
async def test_a_block_error_waits_the_dialects_gap_after_the_last_text(
    dialect: GeminiDialect | OpenAIChatDialect, event: object, autojump_clock: MockClock
) -> None:
    """Gemini's error goes out ``stream_error_gap`` after the text before it (virtual time: exact, never flaky).

    Node's fetch joins HTTP chunks waiting in the socket into one read, and the
    JS SDK (Gemini CLI) recognises the error only in a read of its own; read
    together with the text it is "Incomplete JSON segment", and Gemini CLI
    sends the blocked turn to the model again.
    """
    assert callable(event)
    events = [event("A harmless start, long enough to be released at once. " * 3), event("then capsem_block")]
    response = httpx.Response(200, content=_chunks(events))
    pump = StreamPump(_exchange(), dialect, ENGINE, response, SSEDecoder(), StreamSettings(idle_timeout=5))
    times: list[float] = []
    writes: list[bytes] = []
    async def write(data: bytes) -> None:
        writes.append(data)
        times.append(trio.current_time())

    await pump.relay(write)
    assert b"A harmless start" in writes[0] and b"capsem_block" not in b"".join(writes[:-1])
    assert b"error" in writes[-1] and pump.outcome is StreamOutcome.BLOCKED
    assert times[-1] - times[-2] >= dialect.stream_error_gap
    assert (dialect.stream_error_gap > 0) is isinstance(dialect, GeminiDialect)


async def test_an_upstream_silent_past_the_idle_timeout_ends_the_stream(autojump_clock: MockClock) -> None:
    """The idle timeout fires while a read has waited ``idle_timeout`` (virtual time: exact), and only then."""
    response = _endless_response()
    pump = StreamPump(_exchange(), DIALECT, ENGINE, response, SSEDecoder(), StreamSettings(idle_timeout=5))
    started = trio.current_time()
    written = b"".join(await _run(pump))
    assert trio.current_time() - started == pytest.approx(5, abs=0.01)  # the last read began at once
    assert b"the start of a long answer" in written and b"idle" in written
    assert b"upstream_timeout" in written and pump.outcome is StreamOutcome.UPSTREAM_ERROR
    assert response.extensions["closed"].is_set()


async def test_a_slow_client_is_not_an_idle_upstream(autojump_clock: MockClock) -> None:
    """Time the reader spends waiting for room to send (the client reads slowly) is not an upstream
    read: a client that takes longer than the idle timeout between reads gets the whole stream."""
    events = [_event(f"word{index:02d} ") for index in range(20)] + [b"data: [DONE]\n\n"]

    async def upstream() -> AsyncIterator[bytes]:
        for event in events:
            yield event  # each its own read, always ready: the upstream is never idle

    pump = StreamPump(_exchange(), DIALECT, ENGINE, httpx.Response(200, content=upstream()), SSEDecoder(),
                      StreamSettings(idle_timeout=5))
    writes: list[bytes] = []
    async def write(data: bytes) -> None:
        writes.append(data)
        await trio.sleep(12)  # longer than the idle timeout before the next read of the client

    await pump.relay(write)
    assert b"".join(writes) == b"".join(events)
    assert pump.outcome is StreamOutcome.COMPLETED


async def test_a_compressed_stream_is_read_decoded_and_a_plain_one_from_its_byte_stream() -> None:
    """The pump reads a reply without a content coding from httpx's byte stream itself (issue 22: no
    ``aiter_raw`` generator per read); one with a coding still goes through httpx's decoder."""
    import gzip

    body = b"".join([_event("Hello "), _event("world"), b"data: [DONE]\n\n"])
    packed = gzip.compress(body)
    for headers, content in (({"content-encoding": "gzip"}, packed), ({}, body)):
        response = httpx.Response(200, headers=headers, content=_chunks([content[:9], content[9:30], content[30:]]))
        pump = StreamPump(_exchange(), DIALECT, ENGINE, response, SSEDecoder(), StreamSettings(idle_timeout=5))
        with trio.fail_after(5):
            writes = await _run(pump)
        assert b"".join(writes) == body and pump.outcome is StreamOutcome.COMPLETED


async def test_an_upstream_that_breaks_mid_stream_ends_it_as_an_upstream_error() -> None:
    """A read that fails (httpx's own error, as its byte stream raises it) ends the stream honestly:
    what passed before it went, then the provider-shaped error event."""

    async def breaking() -> AsyncIterator[bytes]:
        yield _event("a fine start")
        raise httpx.ReadError("connection reset")

    pump = StreamPump(_exchange(), DIALECT, ENGINE, httpx.Response(200, content=breaking()), SSEDecoder(),
                      StreamSettings(idle_timeout=5))
    with trio.fail_after(5):
        writes = await _run(pump)
    assert pump.outcome is StreamOutcome.UPSTREAM_ERROR
    assert b"a fine start" in b"".join(writes[:-1])
    assert json.loads(writes[-1].removeprefix(b"data: "))["error"]["code"] == "upstream_unavailable"
