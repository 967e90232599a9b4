"""A stream's outcome is what the pump decided, even when the client hangs up on its last event.

SDKs raise on a blocked stream's final error event and close the connection
at once. The server then cancels what still runs for that connection
(``_compat/hypercorn.py``), and the proxy may still be closing the
upstream: that stream was blocked, not cut short by its client, and the
metrics and the request log must say so.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import trio

from capsem_proxyd.dialects.framing import SSEDecoder
from capsem_proxyd.dialects.openai_chat import OpenAIChatDialect
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.http.data_plane import _Reply
from capsem_proxyd.observe.recorders import Recorder
from capsem_proxyd.proxy.pipeline import ProxyReply
from capsem_proxyd.proxy.streaming import StreamPump, StreamSettings
from tests.support.engines import engine


class SlowToClose(httpx.AsyncByteStream):
    """An upstream that sends a marker and then takes its time to close (a busy provider, a slow network)."""

    def __init__(self) -> None:
        self.closing = trio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for text in ["fine so far, ", "then capsem_block arrives"]:
            chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m",
                     "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            await trio.sleep(0)
        await trio.sleep_forever()

    async def aclose(self) -> None:
        self.closing.set()
        await trio.sleep(0.5)


class Outcomes(Recorder):
    def __init__(self) -> None:
        self.streams: list[str] = []
        self.requests: list[str] = []

    def stream_finished(self, exchange: Exchange, outcome: str) -> None:
        self.streams.append(outcome)

    def request_done(self, exchange: Exchange, status: int, outcome: str) -> None:
        self.requests.append(outcome)


async def test_a_block_the_client_hangs_up_on_is_counted_as_a_block() -> None:
    exchange = Exchange(request_id="req_o", started=0.0, tenant_id="t", provider="openai", endpoint="chat")
    upstream = SlowToClose()
    pump = StreamPump(exchange, OpenAIChatDialect(), engine(), httpx.Response(200, stream=upstream),
                      SSEDecoder(), {}, StreamSettings(idle_timeout=5))
    outcomes = Outcomes()
    sent: list[bytes] = []
    async with trio.open_nursery() as nursery:
        client_gone = trio.CancelScope()

        async def send(message: dict) -> None:
            sent.append(message.get("body", b""))
            if b"capsem_blocked" in message.get("body", b""):
                client_gone.cancel()  # the SDK raised and hung up: the server cancels the connection's work

        async def serve() -> None:
            with client_gone:
                await _Reply(send, exchange, []).stream(ProxyReply(200, [], stream=pump), outcomes)

        nursery.start_soon(serve)
    assert upstream.closing.is_set()  # the proxy was still closing the upstream when the client left
    assert any(b"capsem_blocked" in body for body in sent)
    assert outcomes.streams == ["blocked"] and outcomes.requests == ["blocked"]
