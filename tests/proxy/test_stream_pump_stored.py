"""The stream pump and a reply the provider stores: the id is usable from the moment the completing event
goes out (a client following up at once finds it), and withdrawn when a block comes after that."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import trio

from capsem_proxyd.config import Settings
from capsem_proxyd.dialects.framing import SSEDecoder
from capsem_proxyd.dialects.openai_responses import OpenAIResponsesDialect
from capsem_proxyd.observe.recorders import Recorder
from capsem_proxyd.proxy.stored_content import StoredContent, open_store
from capsem_proxyd.proxy.streaming import StreamPump, StreamSettings
from tests.support import exchanges
from tests.support.engines import engine

TENANT = "0" * 16
RESPONSE_ID = "resp_pump"


def event(kind: str, **fields: object) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()


def lifecycle(kind: str, status: str) -> bytes:
    return event(kind, response={"id": RESPONSE_ID, "object": "response", "status": status, "store": True, "output": []})


async def run(
    tmp_path: Path, reads: list[bytes], screens: bool = True
) -> tuple[list[bytes], list[bool | None], StoredContent]:
    """What the client gets, write by write, and whether the id was usable as each write went out.

    ``screens=False``: Debug is asked at every check, as a policy that declares no ``reply_terms`` is."""
    stored = StoredContent(Settings(state_dir=str(tmp_path)), open_store(Settings(state_dir=str(tmp_path))), Recorder())

    async def upstream() -> AsyncIterator[bytes]:
        for piece in reads:
            yield piece

    exchange = exchanges.exchange("openai", "responses", request_id="req_test", tenant_id=TENANT)
    policies = engine()
    if not screens:
        policies.reply_screens = None
    pump = StreamPump(exchange, OpenAIResponsesDialect(), policies, httpx.Response(200, content=upstream()), SSEDecoder(),
                      StreamSettings(idle_timeout=5), stored=stored.stream(exchange))
    writes: list[bytes] = []
    usable: list[bool | None] = []
    async def write(data: bytes) -> None:
        writes.append(data)
        usable.append(await stored.store.usable(TENANT, RESPONSE_ID))

    await pump.relay(write)
    return writes, usable, stored


async def test_the_id_is_usable_before_the_completion_reaches_the_client(tmp_path: Path) -> None:
    reads = [lifecycle("response.created", "in_progress"),
             event("response.output_text.delta", output_index=0, content_index=0, item_id="m", delta="All fine."),
             lifecycle("response.completed", "completed")]
    writes, usable, stored = await run(tmp_path, reads)
    completing = next(index for index, data in enumerate(writes) if b"response.completed" in data)
    assert usable[completing] is True and not any(usable[:completing])
    await stored.store.aclose()


async def test_a_block_after_the_completion_went_out_withdraws_the_id(tmp_path: Path) -> None:
    reads = [lifecycle("response.created", "in_progress"),
             event("response.output_text.delta", output_index=0, content_index=0, item_id="m", delta="All fine."),
             lifecycle("response.completed", "completed"),
             event("response.output_text.delta", output_index=0, content_index=0, item_id="m", delta=" capsem_block")]
    writes, usable, stored = await run(tmp_path, reads, screens=False)
    assert any(b"response.completed" in data for data in writes) and b"event: error" in writes[-1]
    completing = next(index for index, data in enumerate(writes) if b"response.completed" in data)
    assert usable[completing] is True  # it was delivered...
    assert await stored.store.usable(TENANT, RESPONSE_ID) is False  # ...and then withdrawn
    await stored.store.aclose()


async def test_with_screens_the_completion_waits_for_the_final_check(tmp_path: Path) -> None:
    """A screened stream asks the policy about the whole reply only when its end arrives: the completing
    event goes after that decision (and its audit record), so a refusal there reaches a client that stops
    reading at the completion; the upstream closing later asks nothing again."""
    decisions: list[str] = []

    class Decisions(Recorder):
        def decision_made(self, exchange: Any, hook: str, policy: str, decision: Any, mode: str,
                          cache: Any = None) -> None:
            decisions.append(hook)

    reads = [lifecycle("response.created", "in_progress"),
             event("response.output_text.delta", output_index=0, content_index=0, item_id="m", delta="All fine."),
             event("response.output_text.delta", output_index=0, content_index=0, item_id="m", delta=" Still fine."),
             lifecycle("response.completed", "completed")]
    stored = StoredContent(Settings(state_dir=str(tmp_path)), open_store(Settings(state_dir=str(tmp_path))), Recorder())

    async def upstream() -> AsyncIterator[bytes]:
        for piece in reads:
            yield piece

    exchange = exchanges.exchange("openai", "responses", request_id="req_test", tenant_id=TENANT)
    pump = StreamPump(exchange, OpenAIResponsesDialect(), engine(recorder=Decisions()),
                      httpx.Response(200, content=upstream()), SSEDecoder(), StreamSettings(idle_timeout=5),
                      stored=stored.stream(exchange))
    asked_before: list[int] = []
    async def write(data: bytes) -> None:
        if b"response.completed" in data:
            asked_before.append(decisions.count("on_model_response"))

    await pump.relay(write)
    assert asked_before == [1]  # the text before went screened; the whole reply was decided before its end
    assert decisions.count("on_model_response") == 1  # and not asked again when the upstream closed
    await stored.store.aclose()


async def test_a_stream_that_never_completes_records_nothing(tmp_path: Path) -> None:
    reads = [lifecycle("response.created", "in_progress"),
             event("response.output_text.delta", output_index=0, content_index=0, item_id="m", delta="and then")]
    _, usable, stored = await run(tmp_path, reads)
    assert usable[-1] is None
    await stored.store.aclose()


async def test_a_client_that_leaves_mid_stream_has_the_id_withdrawn(tmp_path: Path) -> None:
    """The clean-up runs in a ``finally``: a hang-up (the server cancels the client's task) withdraws it too."""
    stored = StoredContent(Settings(state_dir=str(tmp_path)), open_store(Settings(state_dir=str(tmp_path))), Recorder())

    async def upstream() -> AsyncIterator[bytes]:
        yield lifecycle("response.created", "in_progress")
        yield event("response.output_text.delta", output_index=0, content_index=0, item_id="m", delta="All fine so far.")
        await trio.sleep_forever()

    exchange = exchanges.exchange("openai", "responses", request_id="req_test", tenant_id=TENANT)
    pump = StreamPump(exchange, OpenAIResponsesDialect(), engine(), httpx.Response(200, content=upstream()), SSEDecoder(),
                      StreamSettings(idle_timeout=5), stored=stored.stream(exchange))
    with trio.fail_after(5), trio.CancelScope() as client:
        async def write(data: bytes) -> None:
            if b"All fine" in data:
                client.cancel()  # the client hangs up

        await pump.relay(write)
    assert await stored.store.usable(TENANT, RESPONSE_ID) is False  # withdrawn: never admitted later
    await stored.store.aclose()


async def test_a_block_in_the_same_read_as_the_completion_leaves_the_id_withdrawn(tmp_path: Path) -> None:
    """The completion passed its checks and goes out with the block's batch, but the stream was blocked:
    the id is withdrawn and stays so (writing the batch's passed events records nothing)."""
    reads = [lifecycle("response.created", "in_progress"),
             event("response.output_text.delta", output_index=0, content_index=0, item_id="m", delta="All fine.")
             + lifecycle("response.completed", "completed")
             + event("response.output_text.delta", output_index=0, content_index=0, item_id="m", delta=" capsem_block")]
    writes, _, stored = await run(tmp_path, reads, screens=False)
    assert b"response.completed" in b"".join(writes) and b"event: error" in writes[-1]
    assert await stored.store.usable(TENANT, RESPONSE_ID) is False
    await stored.store.aclose()
