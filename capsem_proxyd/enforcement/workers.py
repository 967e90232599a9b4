"""CPU-heavy policies (``cpu_heavy = True``: the PII analysis) in worker processes beside the event loop.

Why processes: Presidio's analysis is pure Python, and a thread still holds
the interpreter lock, so one tenant's 200 kB first turn (seconds of
analysis) slowed every other request in the process. Worker processes run
it on the other cores while the event loop keeps serving.

How (``trio-parallel``, trio's own process pool): each worker is forked
from multiprocessing's *forkserver* (never from the proxy itself: forking a
running trio process is not supported) and builds its own copy of every
CPU-heavy policy of the configuration from the same policy file and
settings (``PolicySpec``), once, when it starts; only a hook's arguments
and its ``Decision`` cross the pipe (~60 us a call). The forkserver is a
fresh interpreter started once per proxy process; it imports the shipped
policy modules the configuration uses (``capsem_proxyd.policies.pii``:
Presidio and spaCy, ~2.5 s of CPU) once, so a worker, a replacement for a
killed one, and a reload's new workers pay only for building the policy,
and share those modules' pages with each other. Policy modules of a
``--policy-dir`` or ``--policy-path`` are never preloaded: a reload must
read their files again, and each worker imports them fresh.
The proxy's process never imports the policy's libraries at all: at load
time one short-lived worker builds the policy and reports what the engine
needs to know about it (``Manifest``: name, hooks, hold-back declarations,
warnings), and the engine talks to a ``RemotePolicy`` standing in for it.
Presidio and spaCy would add ~65 MiB to the proxy's own memory; each worker
costs about that plus the interpreter.

The pool: ``--policy-processes`` workers (0: one per usable core, shared
among ``--workers``), started and warmed (every worker has built its
policies) before the proxy reports ready, and on reload before the new
configuration takes over; an old configuration's workers exit once no
request uses that configuration any more. A call that outlives
``--policy-timeout`` is cancelled and its worker killed; a worker that dies
fails its call: either way the engine blocks the request under the policy's
name (fail closed). The pool replaces a lost worker in the background, never
inside a request's deadline (a replacement takes as long as the policies
take to build: PII seconds, more than a short ``--policy-timeout``); while
no worker is ready a call waits up to its deadline and then gets a
retryable 503 (``WorkersUnavailable``), and ``/health`` says how many are
ready (``PolicyWorkers``).

Where processes cannot be used: a policy file that says ``processes =
false`` keeps the policy in the proxy's process, and so does a pool that
cannot start (no worker within ``START_TIMEOUT``, spawning refused): it
logs a warning and the policy is built in the proxy's process, where the
PII policy analyses in ``analysis_threads`` threads (pii.toml), as before.
"""

from __future__ import annotations

import functools
import gc
import logging
import math
import os
import pickle
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from capsem.models import Agent, Decision, Media
from capsem.policies import Policy
from capsem.tools import Tool

from capsem_proxyd.enforcement.building import build_from_class, extend_import_path, implemented_hooks
from capsem_proxyd.policies.declarations import mark_worker, masks, reply_screen
from capsem_proxyd.policies.term_screen import Screen

log = logging.getLogger("capsem_proxyd.enforcement.workers")

START_TIMEOUT = 120.0  # seconds for every worker of a pool to build its policies
_WATCH_SECONDS = 1.0  # how often a keeper looks whether its idle worker's process is still alive (a waitpid)
_MANIFEST_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """How to build one policy anywhere: its file, the settings read from it, and the folders its class
    may be imported from (``--policy-path``) (picklable)."""

    file: str
    class_path: str
    config: dict[str, Any]
    import_path: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Manifest:
    """What the engine needs to know about a policy built elsewhere."""

    name: str
    description: str
    hooks: tuple[str, ...]
    splittable: bool
    stream_holdback: Any
    split_holdback: Any
    has_split_holdback: bool
    warnings: tuple[str, ...]
    masking: bool = False
    # What makes a stream channel's screen for it (``declarations.reply_screen``; None: asked at every check).
    reply_screen: Callable[[], Screen] | None = None


# -- in the worker processes -----------------------------------------------------------------------------------

_BUILT: list[Policy] = []


def build(spec: PolicySpec) -> Policy | None:
    """The policy ``spec`` describes (in whichever process calls this)."""
    extend_import_path(spec.import_path)
    return build_from_class(Path(spec.file), spec.class_path, spec.config, [])


def describe(spec: PolicySpec) -> Manifest | None:
    """Build the policy in this (short-lived) process and say what it is."""
    mark_worker()
    policy = build(spec)
    if policy is None:
        return None
    return Manifest(
        name=policy.name,
        description=policy.description,
        hooks=tuple(implemented_hooks(policy)),
        # A whole-request check would have to run here, in line: such a policy is asked about whole views.
        splittable=getattr(policy, "splittable", False) is True and not hasattr(policy, "whole_prompt_decision"),
        stream_holdback=getattr(policy, "stream_holdback", None),
        split_holdback=getattr(policy, "split_holdback", None),
        has_split_holdback=hasattr(policy, "split_holdback"),
        warnings=tuple(getattr(policy, "warnings", None) or ()),
        masking=masks(policy),
        reply_screen=_handed_over(reply_screen(policy)),
    )


def _handed_over(make: Callable[[], Screen] | None) -> Callable[[], Screen] | None:
    """``make`` if it can travel to the proxy's process (pickles); else None: asked at every check, as
    without a screen (a third-party policy's screen maker may be a lambda)."""
    try:
        pickle.dumps(make)
    except (pickle.PicklingError, TypeError, AttributeError):
        return None
    return make


def init_worker(specs: tuple[PolicySpec, ...]) -> bool:
    """A pool worker's start: build every CPU-heavy policy of the configuration, once."""
    mark_worker()
    _BUILT.clear()
    for spec in specs:
        policy = build(spec)
        assert policy is not None, f"{spec.file} built nothing"
        _BUILT.append(policy)
    # What the policies keep for their life (spaCy's vocabulary, Presidio's recognizers, phonenumbers'
    # metadata: some 160,000 objects for PII) is moved out of the collector's reach, so that its full
    # collections, which the analysis's many short-lived objects trigger, stop walking it every time
    # (PII on first-seen text took 11% less CPU, bench/pii_speed.py's digit-heavy corpus).
    gc.collect()
    gc.freeze()
    return True


def ready() -> int:
    return os.getpid()


def run_hook(index: int, hook: str, args: tuple[Any, ...]) -> Decision:
    """One hook call on this worker's copy of policy ``index``.

    A hook that finishes without suspending (the PII policy's, in a worker) is driven here without
    an event loop; one that suspends is run again from the start under ``trio.run``.
    """
    method = getattr(_BUILT[index], hook)
    coroutine = method(*args)
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: Decision = done.value
        return result
    coroutine.close()
    return trio.run(functools.partial(method, *args))


def run_hooks(index: int, hook: str, calls: list[tuple[Any, ...]]) -> list[Decision]:
    """Several calls of one hook, in order, up to and including the first BLOCK (what follows it
    could not make the decision stricter)."""
    decisions = []
    for args in calls:
        decision = run_hook(index, hook, args)
        decisions.append(decision)
        if isinstance(decision, Decision) and decision.verdict.value == "BLOCK":
            break
    return decisions


# -- in the proxy's process --------------------------------------------------------------------------------------


def manifest(spec: PolicySpec) -> Manifest | None:
    """Build ``spec`` once in a forked worker process and return what it is (raises what building raised)."""
    from concurrent.futures import ProcessPoolExecutor  # imported only where a CPU-heavy policy is configured
    from multiprocessing import get_context

    preload_shipped_modules([spec])
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("forkserver")) as executor:
        return executor.submit(describe, spec).result(timeout=_MANIFEST_TIMEOUT)


SHIPPED_PACKAGE = "capsem_proxyd."


def preload_shipped_modules(specs: Iterable[PolicySpec]) -> None:
    """Have the forkserver import the shipped policy modules among ``specs`` (before it starts).

    Only the first call before the forkserver starts counts (it starts once per process); later
    calls add nothing, so a configuration loaded later simply imports its modules in each worker.
    Third-party modules are left out on purpose: their files may change before a reload.
    """
    from multiprocessing import get_context

    context = get_context("forkserver")
    modules = {"capsem_proxyd.enforcement.workers"}
    for spec in specs:  # "package.module:Class" (the known policies) or "package.module.Class"
        module = spec.class_path.split(":", 1)[0] if ":" in spec.class_path else spec.class_path.rpartition(".")[0]
        if module.startswith(SHIPPED_PACKAGE):
            modules.add(module)
    context.set_forkserver_preload(sorted(modules))


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class RemotePolicy(Policy):
    """Stands in for a CPU-heavy policy that runs in the worker processes (or, failing those, locally)."""

    cpu_heavy = False  # it is the remote handle already

    def __init__(self, spec: PolicySpec, manifest: Manifest) -> None:
        super().__init__(name=manifest.name, description=manifest.description, authors="", url="")
        self.spec = spec
        self.manifest = manifest
        self.remote_hooks = manifest.hooks  # what loader.implemented_hooks reports for it
        self.splittable = manifest.splittable
        self.stream_holdback = manifest.stream_holdback
        self.masking = manifest.masking
        self._reply_screen = manifest.reply_screen
        if manifest.has_split_holdback:
            self.split_holdback = manifest.split_holdback
        self.warnings = list(manifest.warnings)
        self.pool: PolicyWorkers | None = None
        self.index = 0
        self.local: Policy | None = None  # built in this process when the pool could not start

    def reply_screen(self) -> Callable[[], Screen] | None:
        """The screen maker the policy declared where it was built (``declarations.reply_screen``)."""
        return self._reply_screen

    async def _call(self, hook: str, *args: Any) -> Decision:
        pool = self.pool
        if pool is None:  # used outside a configuration (a test, a script): a worker of its own
            pool = self.pool = PolicyWorkers([self.spec], 1)
        await pool.start()
        local = pool.local_copy(self.index) if pool.failed else None
        if local is not None:
            result: Decision = await getattr(local, hook)(*args)
            return result
        return await pool.run(self.index, hook, args)

    async def decide_many(self, hook: str, calls: list[tuple[Any, ...]]) -> list[Decision]:
        """The engine's batch of pieces: one round trip to a worker for all of them (up to the first
        BLOCK, as ``run_hooks``)."""
        pool = self.pool
        if pool is None:
            pool = self.pool = PolicyWorkers([self.spec], 1)
        await pool.start()
        local = pool.local_copy(self.index) if pool.failed else None
        if local is None:
            return await pool.run_many(self.index, hook, calls)
        decisions = []
        for args in calls:
            decision: Decision = await getattr(local, hook)(*args)
            decisions.append(decision)
            if decision.verdict.value == "BLOCK":
                break
        return decisions

    async def on_model_call(
        self, invocation_id: str, agent: Agent, model_name: str, system_instructions: str, prompt: str,
        media: list[Media],
    ) -> Decision:
        return await self._call("on_model_call", invocation_id, agent, model_name, system_instructions, prompt, media)

    async def on_tool_call(self, invocation_id: str, agent: Agent, tool: Tool, args: dict) -> Decision:
        return await self._call("on_tool_call", invocation_id, agent, tool, args)

    async def on_tool_response(self, invocation_id: str, agent: Agent, tool: Tool, response: dict) -> Decision:
        return await self._call("on_tool_response", invocation_id, agent, tool, response)

    async def on_model_response(
        self, invocation_id: str, agent: Agent, response: str, thoughts: str, media: list[Media]
    ) -> Decision:
        return await self._call("on_model_response", invocation_id, agent, response, thoughts, media)


class WorkersUnavailable(Exception):
    """No worker process was ready for a call before its deadline: they are being replaced.

    Not a decision of the policy: ``calling.py`` answers it with the
    provider-shaped, retryable 503 ``policy_workers_unavailable``."""


@dataclass(eq=False)
class _Worker:
    """One worker process of the pool: a trio-parallel context of its own, holding at most one process.

    One context per worker (not one context of ``count`` workers) so that the pool, not the
    library, decides when a process is started: a context starts a process inside whichever call
    finds none idle, and that call is timed by ``--policy-timeout`` and kills what it started when
    cancelled (``kill_on_cancel``). Here a request only ever uses a worker that is ``ready`` (started,
    its policies built, found alive just before); starting one is the keeper's job (``_keep``).
    The one case left: a process that dies between that look and the call's first write is started
    again by the library inside the call (a window of microseconds); if that call then times out,
    the half-started process is killed and the keeper starts the next one, as for any loss.
    """

    number: int
    context: Any = None
    limiter: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(1))
    ready: bool = False
    busy: bool = False
    pid: int = 0
    lost: trio.Event = field(default_factory=trio.Event)  # set when it is found dead: its keeper replaces it

    def alive(self) -> bool:
        """Its process is alive and idle (only asked when no call runs on it; reaps a dead one)."""
        return bool(self.context.statistics().idle_workers)


@dataclass(eq=False)
class _Holder:
    """The workers and the task keeping their contexts open (never the pool: it must be collectable)."""

    workers: list[_Worker]
    report: Callable[[int, int], None] | None = None  # told (ready, configured) on every change
    close: trio.Event = field(default_factory=trio.Event)
    closed: trio.Event = field(default_factory=trio.Event)  # the worker contexts have exited
    nursery: trio.Nursery | None = None  # where the keepers run
    capacity: trio.CapacityLimiter | None = None  # one token per worker: the queue of calls, first come first served
    _change: trio.Event = field(default_factory=trio.Event)

    @property
    def ready(self) -> int:
        return sum(worker.ready for worker in self.workers)

    def changed(self) -> None:
        """A worker became ready or free: the calls waiting for one look again."""
        self._change.set()
        self._change = trio.Event()

    def tell(self) -> None:
        if self.report is not None and not self.close.is_set():
            self.report(self.ready, len(self.workers))

    def lose(self, worker: _Worker) -> None:
        """``worker``'s process is gone (died, killed, or killed with a call that outlived its deadline)."""
        if worker.ready:
            worker.ready = False
            worker.lost.set()
            self.tell()

    def regained(self, worker: _Worker, pid: int) -> None:
        worker.pid, worker.ready, worker.lost = pid, True, trio.Event()
        self.changed()
        self.tell()

    async def acquire(self) -> _Worker:
        """A ready, idle, live worker, marked busy (the caller holds a ``capacity`` token).

        Holding a token and finding no such worker means some are being replaced: the call waits
        for one to become ready or free, up to its own deadline (``--policy-timeout``, or the
        view's pieces' deadline) and at most ``START_TIMEOUT`` without one. Reaching either
        while waiting raises ``WorkersUnavailable`` (the 503), never the policy's timeout: the
        policy was not asked.
        """
        while True:
            for worker in self.workers:
                if worker.ready and not worker.busy:
                    if worker.alive():
                        worker.busy = True
                        return worker
                    self.lose(worker)  # died while idle (kill -9, OOM killer): its keeper replaces it
            await self._wait_for_change()

    async def _wait_for_change(self) -> None:
        change = self._change
        waiting = f"{self.ready} of {len(self.workers)} ready"
        try:
            with trio.move_on_after(START_TIMEOUT) as capped:
                await change.wait()
        except trio.Cancelled:
            if trio.current_effective_deadline() <= trio.current_time():  # the call's deadline, not a hang-up
                raise WorkersUnavailable(f"no worker ready before the deadline; {waiting}") from None
            raise
        if capped.cancelled_caught:
            raise WorkersUnavailable(f"no worker ready within {START_TIMEOUT:g}s; {waiting}")


class PolicyWorkers:
    """The worker processes of one configuration's CPU-heavy policies.

    ``count`` workers, each a process of its own; ``ready`` says how many are
    started and serving (``/health`` and the metrics show it; ``report`` is told
    on every change). A worker that dies or is killed (a call that outlived
    ``--policy-timeout`` kills its process) is replaced by a keeper task that
    the pool runs beside the requests, bounded by ``START_TIMEOUT`` and never by
    a request's deadline, however long its policies take to build (the PII
    policy: seconds). Until it is ready, calls go to the other workers; with
    none ready, a call waits up to its own deadline (see ``_Holder.acquire``)
    and then gets ``WorkersUnavailable``.
    """

    def __init__(
        self, specs: list[PolicySpec], count: int, report: Callable[[int, int], None] | None = None
    ) -> None:
        self.specs = tuple(specs)
        self.count = max(1, count)
        self.failed = False
        self.report = report
        self._started: trio.Event | None = None
        self._holder: _Holder | None = None
        self._local: dict[int, Policy] = {}

    @property
    def ready(self) -> int:
        """Workers started and serving now (0 before the start, and when the pool could not start)."""
        holder = self._holder
        return 0 if holder is None or self.failed else holder.ready

    async def start(self) -> None:
        """Start and warm every worker (once; later calls wait for the first)."""
        if self._started is not None:
            await self._started.wait()
            return
        self._started = trio.Event()
        try:
            await self._start()
        except Exception as error:  # noqa: BLE001 - any failure: the policies run in this process instead
            log.warning(
                "policy worker processes could not start (%s: %s); CPU-heavy policies run in the proxy's process",
                type(error).__name__, " ".join(str(error).split()) or "no detail",
            )
            self.failed = True
            if self._holder is not None:
                self._holder.close.set()
            if self.report is not None:
                self.report(0, self.count)
            for index, spec in enumerate(self.specs):
                self._local[index] = await trio.to_thread.run_sync(_build_locally, spec)
        finally:
            self._started.set()

    async def _start(self) -> None:
        preload_shipped_modules(self.specs)
        holder = self._holder = _Holder([_Worker(number) for number in range(self.count)], self.report)
        holder.capacity = trio.CapacityLimiter(self.count)
        opened = trio.Event()
        failure: list[BaseException] = []
        trio.lowlevel.spawn_system_task(_hold, holder, self.specs, opened, failure, name="capsem policy workers")
        await opened.wait()
        if failure:
            raise failure[0]
        # Close the workers when this pool is no longer referenced (its configuration was replaced
        # and its last request is done); run_sync_soon is safe from a finalizer.
        weakref.finalize(self, _close_soon, trio.lowlevel.current_trio_token(), holder)
        with trio.fail_after(START_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for worker in holder.workers:  # all at once: each starts its own process
                    nursery.start_soon(_warm, worker)
        assert holder.nursery is not None
        for worker in holder.workers:
            holder.nursery.start_soon(_keep, holder, worker, name=f"capsem policy worker {worker.number} keeper")
        holder.tell()
        log.info("policy worker processes ready: %d (%s)", holder.ready,
                 ", ".join(Path(spec.file).name for spec in self.specs))

    async def run(self, index: int, hook: str, args: tuple[Any, ...]) -> Decision:
        result: Decision = await self._run(run_hook, index, hook, args)
        return result

    async def run_many(self, index: int, hook: str, calls: list[tuple[Any, ...]]) -> list[Decision]:
        result: list[Decision] = await self._run(run_hooks, index, hook, calls)
        return result

    async def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` on a ready worker; ``WorkersUnavailable`` when none is in time (``_Holder.acquire``).

        A call cancelled by its deadline kills its worker's process (trio-parallel's ``kill_on_cancel``:
        the work cannot be interrupted otherwise); the call that finds a worker gone, or fails with
        it, hands it to its keeper. Either way the call itself fails (the engine blocks, fail closed)."""
        holder = self._holder
        assert holder is not None and holder.capacity is not None
        async with holder.capacity:
            worker = await holder.acquire()
            try:
                return await worker.context.run_sync(
                    function, *args, limiter=worker.limiter, kill_on_cancel=True
                )
            except BaseException:
                if not worker.alive():
                    holder.lose(worker)
                raise
            finally:
                worker.busy = False
                holder.changed()

    def local_copy(self, index: int) -> Policy | None:
        return self._local.get(index)

    def retire(self) -> None:
        """A newer configuration's pool serves new requests: this one stops telling ``report``
        (its gauges are the newer pool's now); its workers still serve its last requests."""
        self.report = None
        if self._holder is not None:
            self._holder.report = None

    async def aclose(self) -> None:
        """Close the worker processes now and wait until they are gone (bounded by their grace period).

        The instance calls it for the policies in use when it closes; a pool that a reload replaced
        closes once nothing refers to it any more (its last request is done), through its finalizer.
        """
        holder = self._holder
        if holder is None:
            return
        holder.close.set()
        await holder.closed.wait()


async def _warm(worker: _Worker) -> None:
    """Start ``worker``'s process and wait until it has built its policies."""
    worker.pid = await worker.context.run_sync(ready, limiter=worker.limiter, kill_on_cancel=True)
    worker.ready = True


async def _keep(holder: _Holder, worker: _Worker) -> None:
    """Replace ``worker``'s process whenever it is found gone, for as long as the pool is open.

    Found gone: by a call (it died while idle, or with the call), or by this keeper's own look every
    ``_WATCH_SECONDS`` while no call runs on it, so that ``/health`` tells a death without traffic.
    """
    while True:
        with trio.move_on_after(_WATCH_SECONDS):
            await worker.lost.wait()
        if worker.ready and not worker.busy and not worker.alive():
            holder.lose(worker)
        if not worker.ready:
            await _replace(holder, worker)


async def _replace(holder: _Holder, worker: _Worker) -> None:
    """Start a new process for ``worker``, outside any request's deadline; retried until it serves."""
    log.warning(
        "policy worker process %d (pid %d) is gone; starting a replacement (%d of %d ready meanwhile)",
        worker.number, worker.pid, holder.ready, len(holder.workers),
    )
    pause = 1.0
    while True:
        began = trio.current_time()
        try:
            with trio.fail_after(START_TIMEOUT):
                pid = await worker.context.run_sync(ready, limiter=worker.limiter, kill_on_cancel=True)
        except Exception as error:  # noqa: BLE001 - logged and tried again: the pool must come back
            log.error("a replacement policy worker process could not start (%s: %s); trying again in %gs",
                      type(error).__name__, " ".join(str(error).split()) or "no detail", pause)
            await trio.sleep(pause)
            pause = min(pause * 2, 30.0)
            continue
        holder.regained(worker, pid)
        log.info("policy worker process %d replaced (pid %d, ready in %.1fs); %d of %d ready",
                 worker.number, pid, trio.current_time() - began, holder.ready, len(holder.workers))
        return


async def _hold(
    holder: _Holder, specs: tuple[PolicySpec, ...], opened: trio.Event, failure: list[BaseException]
) -> None:
    try:
        import trio_parallel  # imported only where a CPU-heavy policy is configured

        async with trio.open_nursery() as contexts:  # one task per context: they close together
            for worker in holder.workers:
                await contexts.start(_open_context, trio_parallel, worker, specs, holder.close)
            async with trio.open_nursery() as keepers:
                holder.nursery = keepers
                opened.set()
                await holder.close.wait()
                keepers.cancel_scope.cancel()  # a replacement starting is killed
    except BaseException as error:  # noqa: BLE001 - reported to start(), or logged at shutdown
        if isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        if not opened.is_set():
            failure.append(error)
            opened.set()
        elif not isinstance(error, trio.Cancelled):
            log.warning("policy worker processes ended with %s", type(error).__name__)
        if isinstance(error, trio.Cancelled):
            raise
    finally:
        holder.closed.set()


async def _open_context(
    trio_parallel: Any, worker: _Worker, specs: tuple[PolicySpec, ...], close: trio.Event,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``worker``'s trio-parallel context, open until ``close`` (closing ends its process, within its grace period)."""
    async with trio_parallel.open_worker_context(
        init=functools.partial(init_worker, specs), idle_timeout=math.inf, grace_period=5.0,
        worker_type=trio_parallel.WorkerType.FORKSERVER,
    ) as context:
        worker.context = context
        task_status.started()
        await close.wait()


def _close_soon(token: trio.lowlevel.TrioToken, holder: _Holder) -> None:
    try:
        token.run_sync_soon(holder.close.set)
    except trio.RunFinishedError:
        pass  # the event loop ended first: its system tasks closed the workers already


def _build_locally(spec: PolicySpec) -> Policy:
    policy = build(spec)
    assert policy is not None
    return policy

