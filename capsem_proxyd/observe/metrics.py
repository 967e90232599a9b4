"""Prometheus metrics for one proxy process, still right when several workers serve one port.

A ``Metrics`` object per app rather than module globals: the tests run several
apps in one process and each must count only its own traffic; the daemon
runs one app per worker process.

Several workers: the parent sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh empty
directory before it forks. prometheus_client then keeps every value in a
per-process file there, and ``render`` merges all the files, so a scrape that
lands on any worker reports the whole daemon. prometheus_client picks its
storage when it is first imported, which is why this module imports it only
inside functions: importing ``capsem_proxyd`` early never locks in the wrong
mode. When a worker exits, the parent calls ``mark_worker_dead(pid)`` so the
active-streams gauge forgets that worker (its counters are kept: totals never
go down when a worker is replaced).

Labels are bounded sets chosen by the code or the operator (provider,
endpoint, status, hook, verdict, policy name, stream outcome): never a key,
a model name, a tenant id or any other client-chosen text.
"""

from __future__ import annotations

import os
from typing import Any

from capsem.models import Decision

from capsem_proxyd.exchange import Exchange
from capsem_proxyd.observe.recorders import CacheUse, McpNote, Recorder
from capsem_proxyd.outcomes import StreamOutcome

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "capsem_proxyd"

# Time to upstream response headers: a non-streamed reply only sends its
# headers once the whole generation is done, so the range reaches minutes.
UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# One hook over all active policies: in-process checks take microseconds, a
# remote classifier can take seconds.
POLICY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def multiprocess_dir() -> str | None:
    """The shared directory when several workers serve, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


def mark_worker_dead(pid: int, directory: str | None = None) -> None:
    """Called by the parent when worker ``pid`` exits: its live gauges stop counting."""
    directory = directory or multiprocess_dir()
    if directory is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, directory)


class Metrics(Recorder):
    """The proxy's counters, histograms and gauge; one per app (one per worker process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.directory = multiprocess_dir()
        if self.directory is not None:
            _require_multiprocess_storage(self.directory)
            # Values go to the shared files; each scrape builds its own registry over them.
            registry: Any = None
            self.registry = None
        else:
            registry = self.registry = CollectorRegistry()
            _add_process_collectors(registry)
        self._requests = Counter(
            f"{PREFIX}_requests", "Proxied requests by provider API and HTTP status returned to the client.",
            ["provider", "endpoint", "status"], registry=registry,
        )
        self._streams = Counter(
            f"{PREFIX}_streams", f"Streamed replies by how they ended ({', '.join(StreamOutcome)}).",
            ["provider", "endpoint", "outcome"], registry=registry,
        )
        self._decisions = Counter(
            f"{PREFIX}_policy_decisions", "Policy decisions by hook, verdict and policy (ALLOW included).",
            ["hook", "verdict", "policy"], registry=registry,
        )
        self._blocks = Counter(
            f"{PREFIX}_blocks", "Content refused by a policy, by hook and policy (verdict BLOCK, or CONFIRM under "
            "--confirm-action block); monitor-mode would-be refusals are not counted here.",
            ["hook", "policy", "verdict"], registry=registry,
        )
        self._redactions = Counter(
            f"{PREFIX}_redactions", "Places a policy's findings were masked in the content instead of refusing it, "
            "by hook and policy.", ["hook", "policy"], registry=registry,
        )
        self._mcp_messages = Counter(
            f"{PREFIX}_mcp_messages", "JSON-RPC messages on the MCP hop by server, method (other: a method the hop "
            "does not name) and decision (ALLOW, BLOCK, FILTERED: a listing with tools removed).",
            ["server", "method", "decision"], registry=registry,
        )
        self._mcp_pending = Gauge(
            f"{PREFIX}_mcp_pending_tools", "Tools an MCP server listed that its pins do not know, held until accepted "
            "(each worker's last listing of the server; the highest over the workers).",
            ["server"], registry=registry, multiprocess_mode="livemax",
        )
        self._cache_hits = Counter(
            f"{PREFIX}_verdict_cache_hits", "Pieces of content a policy's verdict came from the verdict cache for.",
            ["hook"], registry=registry,
        )
        self._cache_misses = Counter(
            f"{PREFIX}_verdict_cache_misses", "Pieces of content a policy was asked about (no cached verdict).",
            ["hook"], registry=registry,
        )
        self._policy_seconds = Histogram(
            f"{PREFIX}_policy_check_seconds", "Time to run one hook over all active policies.",
            ["hook"], buckets=POLICY_BUCKETS, registry=registry,
        )
        self._upstream_seconds = Histogram(
            f"{PREFIX}_upstream_latency_seconds", "Time from sending a request upstream to its response headers.",
            ["provider", "endpoint"], buckets=UPSTREAM_BUCKETS, registry=registry,
        )
        self._active_streams = Gauge(
            f"{PREFIX}_active_streams", "Streamed replies being delivered right now.",
            registry=registry, multiprocess_mode="livesum",
        )
        # The CPU-heavy policies' worker processes, set by the pool as they are lost and replaced
        # (summed over --workers: each proxy process has a pool of its own).
        self._workers_ready = Gauge(
            f"{PREFIX}_policy_workers_ready", "Policy worker processes started and serving (CPU-heavy policies).",
            registry=registry, multiprocess_mode="livesum",
        )
        self._workers_configured = Gauge(
            f"{PREFIX}_policy_workers_configured", "Policy worker processes configured (--policy-processes).",
            registry=registry, multiprocess_mode="livesum",
        )
        self._registry = registry
        self._audit_writable: Any = None  # created with the audit log: no log, no gauge
        self._reply_memory = Gauge(
            f"{PREFIX}_reply_memory_held_bytes", "Bytes of non-streamed replies held right now (--reply-memory; "
            "summed over the workers, each of which has its own budget).",
            registry=registry, multiprocess_mode="livesum",
        )
        # Labelled children by label values: ``labels()`` validates and locks on every call
        # (~1.5 us), a dict lookup does not; the label sets are bounded (see above).
        self._children: dict[tuple[Any, ...], Any] = {}
        # A request's decisions not counted yet, by id of its exchange (``decision_made``).
        self._pending: dict[int, dict[tuple[str, str, str, int, int], int]] = {}

    # -- recording (the Recorder moments) -----------------------------------------

    def request_done(self, exchange: Exchange, status: int, outcome: str) -> None:
        """Proxied requests only: the control plane is not traffic."""
        self._flush(exchange)
        if exchange.proxied:
            self._child(self._requests, exchange.provider, exchange.endpoint, status).inc()

    def decision_made(
        self, exchange: Exchange, hook: str, policy: str, decision: Decision, mode: str, cache: CacheUse | None = None
    ) -> None:
        """Shadow decisions stay out of the live counts. A request's own decisions (before it went upstream)
        are added up and counted when it goes upstream or ends, whichever comes first (``forwarding``,
        ``request_done``), both before its client hears anything: an agent's turn takes a hundred decisions
        (two policies on each of its tool results), alike but for their content, and each increment takes
        a lock (a file write with ``--workers``)."""
        if mode == "shadow":
            return
        kind = (hook, decision.verdict.value, policy, cache.hits if cache else 0, cache.misses if cache else 0)
        if exchange.upstream:  # a reply's decision: counted at once (a stream may last)
            self._count(kind, 1)
            return
        pending = self._pending.get(id(exchange))
        if pending is None:
            pending = self._pending[id(exchange)] = {}
        pending[kind] = pending.get(kind, 0) + 1

    def forwarding(self, exchange: Exchange) -> None:
        self._flush(exchange)

    def _flush(self, exchange: Exchange) -> None:
        pending = self._pending.pop(id(exchange), None)
        if pending:
            for kind, times in pending.items():
                self._count(kind, times)

    def _count(self, kind: tuple[str, str, str, int, int], times: int) -> None:
        hook, verdict, policy, hits, misses = kind
        self._child(self._decisions, hook, verdict, policy).inc(times)
        if hits:
            self._child(self._cache_hits, hook).inc(hits * times)
        if misses:
            self._child(self._cache_misses, hook).inc(misses * times)

    def refused(self, exchange: Exchange, hook: str, decision: Decision) -> None:
        self._child(self._blocks, hook, decision.policy, decision.verdict.value).inc()

    def redacted(
        self, exchange: Exchange, hook: str, policy: str, count: int, kind: str = "", placeholder: str = "",
        key_id: str = "",
    ) -> None:
        self._child(self._redactions, hook, policy).inc(count)

    def mcp_message(self, exchange: Exchange, note: McpNote) -> None:
        self._child(self._mcp_messages, note.server, note.label, note.decision).inc()

    def mcp_pins(self, server: str, pending: int) -> None:
        self._child(self._mcp_pending, server).set(pending)

    def policy_checked(self, hook: str, seconds: float) -> None:
        self._child(self._policy_seconds, hook).observe(seconds)

    def upstream_answered(self, exchange: Exchange, seconds: float) -> None:
        self._child(self._upstream_seconds, exchange.provider, exchange.endpoint).observe(seconds)

    def _child(self, metric: Any, *labels: Any) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*(str(label) for label in labels))
        return child

    def policy_workers(self, ready: int, configured: int) -> None:
        self._workers_ready.set(ready)
        self._workers_configured.set(configured)

    def stream_started(self, exchange: Exchange) -> None:
        self._active_streams.inc()

    def stream_finished(self, exchange: Exchange, outcome: StreamOutcome) -> None:
        self._active_streams.dec()
        self._child(self._streams, exchange.provider, exchange.endpoint, outcome).inc()

    def audit_writable(self, writable: bool) -> None:
        """The audit log started or stopped failing (``AuditLog.on_change``); 0 on any live worker shows."""
        if self._audit_writable is None:
            from prometheus_client import Gauge

            self._audit_writable = Gauge(
                f"{PREFIX}_audit_log_writable", "1 while the audit log can be written, 0 while writes fail "
                "(--audit-failure block: proxied requests get 503).", registry=self._registry, multiprocess_mode="livemin",
            )
        self._audit_writable.set(1 if writable else 0)

    def reply_memory_changed(self, held: int) -> None:
        self._reply_memory.set(held)

    # -- exposition ------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition (body, content type); all workers merged in multiprocess mode."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.registry is not None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.directory)
        return generate_latest(registry), CONTENT_TYPE_LATEST


def _require_multiprocess_storage(directory: str) -> None:
    """Fail loudly if prometheus_client was imported before the directory was set.

    It would then count in process memory and every worker would report only
    its own share: wrong numbers that look right.
    """
    from prometheus_client import values

    if values.ValueClass is values.MutexValue:  # in-process storage (get_value_class saw no directory)
        raise RuntimeError(
            f"{MULTIPROC_ENV}={directory} was set after prometheus_client was imported; "
            "set it before the first import (before forking workers)"
        )
    if not os.path.isdir(directory):
        raise RuntimeError(f"{MULTIPROC_ENV}={directory} is not a directory")


def _add_process_collectors(registry: Any) -> None:
    """Process CPU, memory and file descriptors: meaningful only for a single process."""
    from prometheus_client import PlatformCollector, ProcessCollector

    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
