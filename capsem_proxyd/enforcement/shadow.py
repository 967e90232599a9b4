"""Shadow policies: evaluated on live traffic after each enforced decision, never on the client's path.

``--shadow-policy-dir`` names a second policy folder, a candidate for the
next configuration. Each enforced hook call is put to it too, in a task of
its own started *after* the main decision, so it adds nothing to the
client's latency and can never change a response; its would-be verdicts are
logged on ``capsem_proxyd.shadow`` and recorded with ``mode="shadow"``.

Those tasks run in a nursery the process instance owns (``open_shadow_tasks``),
not as system tasks nobody waits for: closing the instance cancels the ones
still running before the recorders they report to are closed, and a test
awaits ``ShadowTasks.wait_idle()`` instead of polling for their records.
At most ``MAX_PENDING_SHADOW`` run at once; beyond that an evaluation is
dropped and counted, never queued on live traffic.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Protocol

import trio
from capsem.models import Decision

from capsem_proxyd.enforcement.hook_calls import Invoke
from capsem_proxyd.exchange import Exchange

shadow_log = logging.getLogger("capsem_proxyd.shadow")

# Shadow evaluations in flight at once; beyond it they are dropped (and counted), never queued
# on the client's path.
MAX_PENDING_SHADOW = 256


class ShadowTasks:
    """Background tasks for shadow evaluations, in a nursery ``open_shadow_tasks`` owns.

    ``pending``: evaluations in flight; ``dropped``: evaluations not started
    because ``MAX_PENDING_SHADOW`` were. A task that raises is logged and
    forgotten: nothing a shadow does reaches live traffic.
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._idle = trio.Event()
        self._idle.set()
        self.pending = 0
        self.dropped = 0

    def start(self, run: Callable[[], Awaitable[None]], name: str) -> None:
        """Run ``run()`` in the background, or drop it (counted) when too many are in flight."""
        if self.pending >= MAX_PENDING_SHADOW:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                shadow_log.warning("shadow evaluation dropped (%d so far): too many in flight", self.dropped)
            return
        if self.pending == 0:
            self._idle = trio.Event()
        self.pending += 1
        self._nursery.start_soon(self._run, run, name, name=name)

    async def wait_idle(self) -> None:
        """Return once no shadow evaluation is in flight (at once when none is)."""
        await trio.lowlevel.checkpoint()
        while self.pending:
            await self._idle.wait()

    async def _run(self, run: Callable[[], Awaitable[None]], name: str) -> None:
        try:
            await run()
        except Exception:  # noqa: BLE001 - a shadow failure must never reach live traffic
            shadow_log.exception("shadow task %s failed", name)
        finally:
            self.pending -= 1
            if self.pending == 0:
                self._idle.set()


@asynccontextmanager
async def open_shadow_tasks() -> AsyncIterator[ShadowTasks]:
    """A nursery for shadow evaluations; on exit, the ones still running are cancelled."""
    async with trio.open_nursery() as nursery:
        try:
            yield ShadowTasks(nursery)
        finally:
            nursery.cancel_scope.cancel()


class Evaluates(Protocol):
    """What the shadow runner needs of an engine (``PolicyEngine.evaluate``)."""

    async def evaluate(
        self, exchange: Exchange, hook: str, invoke: Invoke, *, mode: str = "enforce", split: None = None
    ) -> tuple[Decision | None, str]: ...


class ShadowRunner:
    """Puts each enforced hook call to the shadow policies' engine, in ``tasks``."""

    def __init__(self, engine: Evaluates, tasks: ShadowTasks) -> None:
        self.engine = engine
        self.tasks = tasks

    def start(self, exchange: Exchange, hook: str, invoke: Invoke) -> None:
        self.tasks.start(partial(self._run, exchange, hook, invoke), name=f"capsem shadow {hook}")

    async def _run(self, exchange: Exchange, hook: str, invoke: Invoke) -> None:
        try:
            await self.engine.evaluate(exchange, hook, invoke, mode="shadow")
        except Exception:  # noqa: BLE001 - a shadow failure must never reach live traffic
            shadow_log.exception("shadow evaluation failed request_id=%s", exchange.request_id)
