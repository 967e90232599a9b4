"""Shadow tasks (``enforcement/shadow.py``): bounded, awaited, owned by a nursery, never a failure on live traffic."""

from __future__ import annotations

import logging

import pytest
import trio

from capsem_proxyd.enforcement.shadow import MAX_PENDING_SHADOW, ShadowRunner, open_shadow_tasks
from capsem_proxyd.exchange import Exchange
from tests.support import exchanges


async def test_wait_idle_returns_once_every_evaluation_has_ended() -> None:
    done: list[int] = []
    gate = trio.Event()

    async def evaluation(number: int) -> None:
        await gate.wait()
        done.append(number)

    async with open_shadow_tasks() as tasks:
        await tasks.wait_idle()  # nothing in flight: at once
        for number in range(3):
            tasks.start(lambda number=number: evaluation(number), name=f"shadow {number}")
        assert tasks.pending == 3
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tasks.wait_idle)
            await trio.testing.wait_all_tasks_blocked()
            assert done == []
            gate.set()
        assert sorted(done) == [0, 1, 2] and tasks.pending == 0


async def test_beyond_the_bound_evaluations_are_dropped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    gate = trio.Event()
    async with open_shadow_tasks() as tasks:
        for number in range(MAX_PENDING_SHADOW + 2):
            tasks.start(gate.wait, name=f"shadow {number}")
        assert (tasks.pending, tasks.dropped) == (MAX_PENDING_SHADOW, 2)
        gate.set()
        await tasks.wait_idle()
        tasks.start(trio.lowlevel.checkpoint, name="after")  # room again
        await tasks.wait_idle()
        assert (tasks.pending, tasks.dropped) == (0, 2)
    assert [r.getMessage() for r in caplog.records if r.name == "capsem_proxyd.shadow"] == [
        "shadow evaluation dropped (1 so far): too many in flight"
    ]


async def test_a_failing_evaluation_is_logged_and_the_others_go_on(caplog: pytest.LogCaptureFixture) -> None:
    finished = []

    async def broken() -> None:
        raise RuntimeError("candidate policy bug")

    async def fine() -> None:
        await trio.lowlevel.checkpoint()
        finished.append(True)

    async with open_shadow_tasks() as tasks:
        tasks.start(broken, name="broken")
        tasks.start(fine, name="fine")
        await tasks.wait_idle()
    assert finished == [True]
    failures = [r for r in caplog.records if r.name == "capsem_proxyd.shadow" and r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == ["shadow task broken failed"] and failures[0].exc_info is not None


async def test_leaving_the_context_cancels_what_is_still_running() -> None:
    cancelled = []

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(True)
            raise

    async with open_shadow_tasks() as tasks:
        tasks.start(forever, name="forever")
        await trio.testing.wait_all_tasks_blocked()
    assert cancelled == [True] and tasks.pending == 0


async def test_the_runner_puts_each_hook_call_to_the_shadow_engine(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[str, str]] = []

    class Engine:
        async def evaluate(self, exchange: Exchange, hook: str, invoke: object, *, mode: str = "enforce",
                           split: None = None) -> tuple[None, str]:
            calls.append((hook, mode))
            if hook == "on_tool_call":
                raise RuntimeError("engine bug")
            return None, "ALLOW"

    exchange = exchanges.exchange("openai", "chat", request_id="req_7", tenant_id="a" * 16)
    async with open_shadow_tasks() as tasks:
        runner = ShadowRunner(Engine(), tasks)
        runner.start(exchange, "on_model_call", invoke=None)  # type: ignore[arg-type]
        runner.start(exchange, "on_tool_call", invoke=None)  # type: ignore[arg-type]
        await tasks.wait_idle()
    assert sorted(calls) == [("on_model_call", "shadow"), ("on_tool_call", "shadow")]
    assert any("shadow evaluation failed request_id=req_7" in r.getMessage() for r in caplog.records)

