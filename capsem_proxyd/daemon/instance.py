"""One proxy instance: the composition root that builds, owns and closes what serving needs.

``open_instance`` builds the parts of one instance (one per worker process)
in the order they depend on each other, and closes them in the reverse
order when its ``async with`` ends, however it ends:

1. the recorders: request log, metrics, the audit log's recorder, and the
   OpenTelemetry span recorder (and its exporter thread) when export is on;
2. the upstream: one pooled httpx transport;
3. the ``--stored-content`` record of delivered replies, and the id of
   the placeholder key beside it in the state directory, read for
   ``/health`` (``start``'s preflight made it);
4. the tenant policies, started: the worker processes of CPU-heavy
   policies are warm before the instance is handed out;
5. the pipeline, which reads the policies through ``ActivePolicies`` on
   each request, so a reload swaps them without touching it;
6. with ``--mcp-server``, the MCP hop (``mcp/hop.py``): the same upstream
   transport and policies, its session ids keyed from the placeholder key.

Why here and not in the app: the app (``http/app.py``) is the HTTP face of
an instance, and the server (``server.py``) decides when it serves and
stops; neither should own sockets to the provider, files or threads, and a
test can open an instance without serving it. Each close is shielded from
cancellation (a cancelled server must still flush its spans and close its
store) and bounded by ``CLOSE_SECONDS`` (a stuck close must not hang the
exit).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import trio

from capsem_proxyd import __version__
from capsem_proxyd.config import Settings, reloaded, restart_only_changes
from capsem_proxyd.enforcement.shadow import ShadowTasks, open_shadow_tasks
from capsem_proxyd.enforcement.tenants import PolicyConfig, TenantPolicies
from capsem_proxyd.http.app import ControlPlane, create_app
from capsem_proxyd.mcp.hop import McpHop
from capsem_proxyd.observe.audit import AuditLog, AuditRecorder
from capsem_proxyd.observe.audit_head import head_path
from capsem_proxyd.observe.metrics import Metrics
from capsem_proxyd.observe.recorders import Recorder, Recorders
from capsem_proxyd.observe.request_log import RequestLog
from capsem_proxyd.observe.tracing import trace_export
from capsem_proxyd.proxy.limits import Limits
from capsem_proxyd.proxy.pipeline import Pipeline
from capsem_proxyd.proxy.placeholder_key import PlaceholderKey, key_id, read_placeholder_key
from capsem_proxyd.proxy.reply_memory import ReplyMemory
from capsem_proxyd.proxy.response_store import state_directory
from capsem_proxyd.proxy.stored_content import StoredContent, open_store
from capsem_proxyd.proxy.streaming import StreamSettings
from capsem_proxyd.proxy.upstream import Upstream, UpstreamTimeouts
from capsem_proxyd.redaction.masker import Masker

if TYPE_CHECKING:  # only imported when tracing is on
    from capsem_proxyd.observe.otel import SpanRecorder

log = logging.getLogger("capsem_proxyd")

# Seconds each part may take to close (the span export bounds its own flush below this).
CLOSE_SECONDS = 10.0


class ActivePolicies:
    """The tenant policies new requests run under, swapped whole on reload.

    The pipeline is given ``current`` and calls it once per request: a
    request keeps the policies it started with, the next one gets the new
    ones. Policies are started (their worker processes warm) before they
    become current, so a reload never makes a request wait for a worker.
    """

    __slots__ = ("_policies", "_recorder", "_shadow_tasks")

    def __init__(self, policies: TenantPolicies, recorder: Recorder, shadow_tasks: ShadowTasks) -> None:
        self._policies = policies
        self._recorder = recorder
        self._shadow_tasks = shadow_tasks

    @classmethod
    async def start(
        cls, config: PolicyConfig, settings: Settings, recorder: Recorder, shadow_tasks: ShadowTasks
    ) -> ActivePolicies:
        return cls(await _started_policies(config, settings, recorder, shadow_tasks), recorder, shadow_tasks)

    def current(self) -> TenantPolicies:
        return self._policies

    async def aclose(self) -> None:
        """Close the current policies' worker processes (older ones close when their last request is done)."""
        await self._policies.aclose()

    async def replace(self, config: PolicyConfig, settings: Settings) -> None:
        """Build and start ``config``'s policies, then make them current (the old ones stay current meanwhile)."""
        replaced = self._policies
        self._policies = await _started_policies(config, settings, self._recorder, self._shadow_tasks)
        replaced.retire()  # its worker pool's counts are no longer what /metrics shows
        if self._policies.pool is None and replaced.pool is not None:
            self._recorder.policy_workers(0, 0)  # no CPU-heavy policy any more: no workers


async def _started_policies(
    config: PolicyConfig, settings: Settings, recorder: Recorder, shadow_tasks: ShadowTasks
) -> TenantPolicies:
    policies = TenantPolicies(config, settings, recorder, shadow_tasks=shadow_tasks)
    await policies.start()  # CPU-heavy policies' worker processes, warm before they serve
    return policies


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """The last reload's verdict, in ``/health`` as ``reload``.

    ``capsem-proxyd reload`` sends SIGHUP and waits for a verdict whose
    ``requested`` (wall-clock seconds when the signal arrived) is not older
    than its signal: that is how it learns that the new configuration was
    rejected, and why (``error``, one line), which used to be only in the log.
    """

    requested: float
    finished: float
    ok: bool
    error: str | None = None
    summary: str | None = None


class Instance:
    """A built instance: what the server and the app ask of it, and the parts it owns.

    ``settings`` are the settings in effect (after a reload: the reloadable
    ones new, the others as started); ``config`` the policy configuration
    loaded last.
    """

    def __init__(
        self,
        settings: Settings,
        config: PolicyConfig,
        *,
        recorder: Recorder,
        metrics: Metrics,
        audit: AuditLog | None,
        spans: SpanRecorder | None,
        upstream: Upstream,
        stored: StoredContent,
        shadow_tasks: ShadowTasks,
        policies: ActivePolicies,
        pipeline: Pipeline,
        placeholder_key: PlaceholderKey | None = None,
        mcp: McpHop | None = None,
    ) -> None:
        self.mcp = mcp
        self.settings = settings
        self.config = config
        self.recorder = recorder
        self.metrics = metrics
        self.audit = audit
        self.spans = spans
        self.upstream = upstream
        self.stored = stored
        self.shadow_tasks = shadow_tasks
        self.active = policies
        self.pipeline = pipeline
        self.placeholder_key = placeholder_key
        self.last_reload: ReloadResult | None = None

    @property
    def policies(self) -> TenantPolicies:
        """The tenant policies new requests run under."""
        return self.active.current()

    def health(self) -> dict[str, Any]:
        """The body of ``/health``: version, upstreams, the default policies' names, the audit log's state
        (a failing one is retried first, so a probe sees it recover), the state directory and, with
        CPU-heavy policies, how many of their worker processes are ready. ``"degraded"`` while the audit
        log fails or some workers are being replaced (their requests wait, then get 503)."""
        audit = self.audit
        writable = audit is None or audit.retry()
        body: dict[str, Any] = {
            "status": "ok" if writable else "degraded",
            "version": __version__,
            "providers": {
                "openai": self.settings.openai_upstream,
                "gemini": self.settings.gemini_upstream,
                "anthropic": self.settings.anthropic_upstream,
            },
            "policies": self.policies.default.names,
            "state": self.state(),
            # the key masking's placeholders are made with (its id; "process": no state directory key, so
            # placeholders differ between worker processes and restarts)
            "masking": self.masking(),
            # the last reload's verdict (None: none since start); a rejected one leaves the old configuration
            "reload": asdict(self.last_reload) if self.last_reload is not None else None,
            # --reply-memory in this process (each worker of --workers has its own)
            "reply_memory": {
                "capacity": self.pipeline.reply_memory.capacity,
                "held": self.pipeline.reply_memory.held,
                "waiting": self.pipeline.reply_memory.waiting,
            },
        }
        if audit is not None:
            body["audit"] = {
                "writable": writable, "since": audit.failing_since, "lost": audit.lost,
                "failure": "block" if audit.block else "allow",
            }
        if self.mcp is not None:  # the MCP hop's servers and pins (this process's view)
            body["mcp"] = self.mcp.describe()
        pool = self.policies.pool
        if pool is not None:
            body["policy_workers"] = {"ready": pool.ready, "configured": pool.count}
            if pool.ready < pool.count:
                body["status"] = "degraded"
        return body

    def state(self) -> dict[str, Any]:
        """``/health``'s ``state``: the state directory in use (None: none, no placeholder key was made
        there and ``--stored-content`` is not ``checked``) and the id of the placeholder key kept there
        (None: none made, as in an instance started without ``start``'s preflight), which changes only
        when the key was lost or damaged and had to be replaced (logged at ERROR)."""
        in_use = self.settings.stored_content == "checked" or self.placeholder_key is not None
        return {
            "directory": str(self.stored.store.path.parent) if in_use else None,
            "placeholder_key_id": self.placeholder_key.id if self.placeholder_key is not None else None,
        }

    def masking(self) -> dict[str, Any]:
        """``/health``'s ``masking``: the placeholder key's id and where it comes from."""
        masker = self.pipeline.masker
        shared = self.placeholder_key is not None
        return {"key_id": masker.key_id if masker is not None else None, "key": "state_dir" if shared else "process"}

    def render_metrics(self) -> tuple[bytes, str]:
        """The body of ``/metrics`` and its content type (every worker's, in multiprocess mode)."""
        return self.metrics.render()

    async def install(self, config: PolicyConfig, settings: Settings) -> None:
        """Make ``config``'s policies and ``settings``' reloadable values what new requests use.

        Settings a reload cannot apply keep their started value (each change is
        logged); requests in flight keep the policies they started with.
        """
        for name in restart_only_changes(self.settings, settings):
            log.warning("setting %s changed; it takes effect only after a restart", name)
        effective = reloaded(self.settings, settings)
        await self.active.replace(config, effective)
        self.settings, self.config = effective, config
        self.stored.configure(effective)
        if self.audit is not None:
            self.audit.block = effective.audit_failure == "block"
        if self.mcp is not None:  # accepted pin changes (the file edited) take effect
            await trio.to_thread.run_sync(self.mcp.pins.reload)

    def reopen_logs(self) -> None:
        """Reopen the audit log's file (after logrotate moved it)."""
        if self.audit is not None:
            self.audit.reopen()

    def end_streams(self) -> None:
        """The shutdown's grace period is over: every open stream ends with an error event, and so
        does any stream that opens from now on."""
        self.pipeline.open_streams.end_all()

    async def wait_idle(self) -> None:
        """Return once no shadow evaluation is in flight: what a test awaits instead of polling."""
        await self.shadow_tasks.wait_idle()


@asynccontextmanager
async def open_instance(settings: Settings, config: PolicyConfig) -> AsyncIterator[Instance]:
    """Build one instance from ``settings`` and ``config``; close its parts in reverse order on exit."""
    async with AsyncExitStack() as stack:
        audit = open_audit_log(settings)
        if audit is not None:
            stack.callback(audit.close)
        metrics = Metrics()
        if audit is not None:
            audit.on_change(metrics.audit_writable)
        spans = _span_recorder(settings)
        if spans is not None:
            stack.push_async_callback(_bounded(spans.aclose, "the trace export"))
        recorder = Recorders(
            RequestLog(),
            metrics,
            *([AuditRecorder(audit)] if audit is not None else []),
            *([spans] if spans is not None else []),
        )
        upstream = Upstream(UpstreamTimeouts(connect=settings.connect_timeout, read=settings.upstream_timeout))
        stack.push_async_callback(_bounded(upstream.aclose, "the upstream connections"))
        stored = StoredContent(settings, open_store(settings), recorder)
        # Read, never made here: start's preflight made (or replaced) it, once, before the workers fork,
        # whatever --stored-content says (placeholders and MCP session tags are keyed from it).
        placeholder_key = await trio.to_thread.run_sync(read_placeholder_key, stored.store.path.parent)
        stack.push_async_callback(_bounded(stored.store.aclose, "the record of delivered replies"))
        # After the recorders and before the policies: what shadow evaluations are left is cancelled
        # before the recorders they report to close, and after the pipeline that starts them.
        shadow_tasks = await stack.enter_async_context(open_shadow_tasks())
        policies = await ActivePolicies.start(config, settings, recorder, shadow_tasks)
        stack.push_async_callback(_bounded(policies.aclose, "the policy worker processes"))
        pipeline = Pipeline(
            upstream,
            policies.current,
            StreamSettings(idle_timeout=settings.upstream_timeout, max_bytes=settings.max_response_size),
            Limits.from_settings(settings),
            recorder,
            stored,
            request_timeout=settings.request_timeout or None,
            reply_memory=ReplyMemory(settings.reply_memory, recorder.reply_memory_changed),
            trace_headers=spans.upstream_headers if spans is not None else None,
            masker=_masker(placeholder_key),
        )
        mcp = McpHop(settings, upstream, policies.current, recorder, _session_key(placeholder_key),
                     masker=pipeline.masker) if settings.mcp_servers else None
        yield Instance(
            settings, config, recorder=recorder, metrics=metrics, audit=audit, spans=spans, upstream=upstream,
            stored=stored, shadow_tasks=shadow_tasks, policies=policies, pipeline=pipeline,
            placeholder_key=placeholder_key, mcp=mcp,
        )


def _session_key(key: PlaceholderKey | None) -> bytes:
    """The key MCP session ids are bound to their client with: derived from the state directory's key, so
    every worker and a restarted proxy verify the same ids; a process's own without one."""
    secret = key.secret if key is not None else os.urandom(32)
    return hmac.new(secret, b"capsem-proxyd mcp session ids", hashlib.sha256).digest()


def _masker(key: PlaceholderKey | None) -> Masker:
    """Placeholders under the state directory's key; without one (no ``start`` preflight, ``--stored-content``
    not ``checked``), a key of this process's own: placeholders then differ between processes and restarts."""
    if key is not None:
        return Masker(key.secret, key.id)
    secret = os.urandom(32)
    return Masker(secret, key_id(secret))


def app_for(instance: Instance) -> ControlPlane:
    """The ASGI app that serves ``instance``: its data plane in front of a control plane that asks it
    for ``/health`` and ``/metrics``."""
    return create_app(
        instance.settings, instance.pipeline, instance.recorder,
        health=instance.health, render_metrics=instance.render_metrics, mcp=instance.mcp,
    )


def open_audit_log(settings: Settings) -> AuditLog | None:
    """The audit log ``--audit-log`` names (``-``: stdout), opened; None when it is off."""
    if not settings.audit_log:
        return None
    path = None if settings.audit_log == "-" else settings.audit_log
    head = head_path(state_directory(settings.state_dir), path) if path is not None else None
    return AuditLog(path, include_prompts=settings.audit_prompts, head=head, block=settings.audit_failure == "block")


def _span_recorder(settings: Settings) -> SpanRecorder | None:
    """The OpenTelemetry recorder when export is on; otherwise OpenTelemetry is not even imported."""
    export = trace_export(settings)
    if export is None:
        return None
    from capsem_proxyd.observe.otel import SpanRecorder

    return SpanRecorder.start(settings, export)


def _bounded(close: Callable[[], Awaitable[None]], what: str) -> Callable[[], Awaitable[None]]:
    """``close``, shielded from cancellation and given at most ``CLOSE_SECONDS``."""

    async def run() -> None:
        with trio.move_on_after(CLOSE_SECONDS, shield=True) as scope:
            await close()
        if scope.cancelled_caught:
            log.warning("%s did not close within %ss; left behind", what, CLOSE_SECONDS)

    return run
