"""Streams every provider's end-to-end tests script the same way.

A marker split across upstream chunks is the case a per-chunk check would
miss; a blocked stream that keeps coming is the case where a proxy that only
stops *forwarding* would keep paying for the generation. Each dialect's tests
run both through its own SDK; the scripts live here once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx
import pytest
import trio

from capsem_proxyd.dialects.base import Dialect
from capsem_proxyd.dialects.framing import SSEDecoder
from capsem_proxyd.dialects.openai_chat import OpenAIChatDialect
from capsem_proxyd.enforcement.engine import PolicyEngine
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.proxy.streaming import StreamPump, StreamSettings
from tests.support import exchanges
from tests.support.exchanges import exchange_for
from tests.support.fake_upstream import FakeUpstream, Reply

LONG_TEXT = "All work and no play makes Jack a dull boy. " * 40

split_marker_chunks = pytest.mark.parametrize(
    "chunks",
    [
        ["Once upon a time caps", "em_bl", "ock appeared"],
        ["c", "a", "p", "s", "e", "m", "_", "b", "l", "o", "c", "k"],
        [LONG_TEXT, "the end: CAPSEM_", "BLOCK", LONG_TEXT],
    ],
    ids=["three-way-split", "char-by-char", "after-long-text"],
)


def endless_blocked_reply() -> Reply:
    """A marker first, then ~10 s of text: the proxy must not wait for it to end."""
    return Reply(chunks=["here comes capsem_block"] + ["and more text "] * 2000, chunk_delay=0.005)


async def assert_upstream_closed_at_once(fake: FakeUpstream) -> None:
    """The blocked stream's upstream connection was closed by the proxy, unfinished.

    The endless reply runs about 10 s (``endless_blocked_reply``): closed before it could end is the
    proxy cutting it at the block, with ten seconds of margin for a loaded machine. No wall-clock limit
    below that: how soon measures the machine (the bench measures it)."""
    with trio.fail_after(30):  # a cap against hanging, not a measure
        await fake.streams[0].closed.wait()
    assert fake.streams[0].client_closed and not fake.streams[0].completed


async def pump_writes(
    dialect: Dialect,
    engine: PolicyEngine,
    pieces: Iterable[bytes],
    *,
    exchange: Exchange | None = None,
    settings: StreamSettings | None = None,
    decoder: Any = None,
) -> list[bytes]:
    """What the stream pump writes to the client, write by write, for an upstream sending ``pieces``
    (one upstream read each): the pump driven alone, no socket. The one place tests build a pump."""

    async def upstream() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    pump = StreamPump(
        exchange or exchange_for(dialect), dialect, engine, httpx.Response(200, content=upstream()),
        decoder or SSEDecoder(), settings or StreamSettings(idle_timeout=5),
    )
    writes: list[bytes] = []
    async def write(data: bytes) -> None:
        writes.append(data)

    await pump.relay(write)
    return writes


def _chat_event(text: str) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m",
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def chat_stream_through(pieces: list[str], policy_engine: object) -> tuple[list[str], bytes]:
    """What a client of the stream pump receives (each write's texts, and every byte) when a Chat upstream
    sends ``pieces`` one event per read: the release core and the checks, without sockets."""

    async def upstream() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield _chat_event(piece)
            await trio.sleep(0)
        yield b"data: [DONE]\n\n"

    exchange = exchanges.exchange("openai", "chat", request_id="req_s", tenant_id="t")
    pump = StreamPump(exchange, OpenAIChatDialect(), policy_engine, httpx.Response(200, content=upstream()),  # type: ignore[arg-type]
                      SSEDecoder(), StreamSettings(idle_timeout=5))
    texts: list[str] = []
    raw = b""

    async def write(chunk: bytes) -> None:
        nonlocal raw
        raw += chunk
        for event in SSEDecoder().feed(chunk):
            if event.data.startswith("{") and "choices" in event.data:
                texts.extend(c["delta"].get("content") or "" for c in json.loads(event.data)["choices"])

    await pump.relay(write)
    return texts, raw
