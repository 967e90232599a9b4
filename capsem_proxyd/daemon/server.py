"""Serve the app with Hypercorn's trio worker, and run its lifecycle.

The instance it serves is built and closed by ``instance.py``; this module
decides when it serves and when it stops.

Signals: SIGINT/SIGTERM start a graceful shutdown (stop accepting, let requests
and streams finish for ``graceful_timeout`` seconds, then end the remaining
streams with an error event); SIGHUP reloads configuration and policies and
reopens the audit log. systemd is told READY/RELOADING/STOPPING and the
watchdog is pinged when configured.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets

from capsem_proxyd import __version__
from capsem_proxyd._compat.hypercorn import serve_hypercorn
from capsem_proxyd.config import Settings
from capsem_proxyd.daemon import notify
from capsem_proxyd.daemon.instance import Instance, ReloadResult, app_for, open_instance
from capsem_proxyd.enforcement.tenants import PolicyConfig, load_policy_config
from capsem_proxyd.observe.tracing import trace_export

log = logging.getLogger("capsem_proxyd")

# Extra seconds Hypercorn waits after our grace period, so streams can send their final event.
_FINAL_EVENT_MARGIN = 2.0
SettingsLoader = Callable[[], Settings]
LISTEN_BACKLOG = 4096


def hypercorn_config(settings: Settings) -> HypercornConfig:
    """Hypercorn's settings, client-facing limits included.

    ``keep_alive_timeout`` closes idle connections and also bounds how long a
    client may take to send a request's headers (Hypercorn's idle timer runs
    until the head is complete): a slow-header (slowloris) client is cut then.
    The body is bounded by Quart's ``BODY_TIMEOUT`` (``--body-timeout``, 408).
    Hypercorn's own ``read_timeout`` stays off on purpose: it limits every wait
    for client bytes, including the minutes a client sits silent while its reply
    streams, so it would cut long streams. h11 refuses a head longer than twice
    ``--max-header-size`` with a bare 431; below that, the app answers a
    provider-shaped 431 (guard.py).
    """
    config = HypercornConfig()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.accesslog = None  # our own request line replaces it (it would print ?key=)
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = settings.graceful_timeout + _FINAL_EVENT_MARGIN
    config.include_server_header = False
    config.keep_alive_timeout = settings.keep_alive_timeout
    # Hypercorn listens with a backlog of 100: a burst of new connections beyond it (500
    # SDK clients starting at once) overflowed the accept queue and a third of them were
    # reset. The kernel caps this at net.core.somaxconn.
    config.backlog = LISTEN_BACKLOG
    config.read_timeout = None
    config.h11_max_incomplete_size = 2 * settings.max_header_size
    config.h2_max_header_list_size = 2 * settings.max_header_size
    if settings.certfile and settings.keyfile:
        config.certfile = settings.certfile
        config.keyfile = settings.keyfile
    return config


def bind_sockets(settings: Settings) -> Sockets:
    """Bind and listen before serving (or forking workers): the port accepts connections from here on."""
    config = hypercorn_config(settings)
    sockets = config.create_sockets()
    for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
        sock.listen(config.backlog)
    return sockets


def describe(settings: Settings, config: PolicyConfig, binds: list[str]) -> str:
    export = trace_export(settings)
    traces = f" | traces: OTLP/HTTP to {export.describe()}" if export is not None else ""
    stored = f" | stored content: {settings.stored_content}"
    return (
        f"capsem-proxyd {__version__} listening on {', '.join(binds)} | upstreams: openai={settings.openai_upstream} "
        f"gemini={settings.gemini_upstream} anthropic={settings.anthropic_upstream} | {config.describe(settings.stream_holdback)}{traces}{stored}"
    )


async def serve(
    settings: Settings,
    config: PolicyConfig,
    *,
    handle_signals: bool = True,
    sockets: Sockets | None = None,
    reload_settings: SettingsLoader | None = None,
    announce: bool = True,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGINT/SIGTERM (or cancellation); reports the bound URLs via ``task_status``.

    The instance (``open_instance``) is built, its policy workers warm, before
    the port is served, and closed once the server has stopped.
    """
    async with open_instance(settings, config) as instance:
        app = app_for(instance)
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:

            async def run_server(task_status: trio.TaskStatus[list[str]]) -> None:
                bound = sockets if sockets is not None else bind_sockets(settings)
                await serve_hypercorn(app, hypercorn_config(settings), bound, shutdown, task_status=task_status)
                nursery.cancel_scope.cancel()

            if handle_signals:  # before READY: a signal that follows READY must find its handler
                await nursery.start(_handle_signals, instance, shutdown, reload_settings)
            binds = await nursery.start(run_server)
            for warning in config.warnings:
                log.warning("%s", warning)
            if announce:
                log.info("%s", describe(settings, config, binds))
                notify.ready(f"serving {len(instance.policies.default.names)} policies")
            nursery.start_soon(notify.run_watchdog)
            nursery.start_soon(_end_streams_after_grace, instance, shutdown)
            task_status.started(binds)


async def _end_streams_after_grace(instance: Instance, shutdown: trio.Event) -> None:
    await shutdown.wait()
    await trio.sleep(instance.settings.graceful_timeout)
    instance.end_streams()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
Handler = Callable[[int, FrameType | None], Any] | int | None  # what signal.getsignal returns


async def _handle_signals(
    instance: Instance,
    shutdown: trio.Event,
    reload_settings: SettingsLoader | None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = _quiet_once_stopping(shutdown) if in_main_thread else {}
    try:
        await _receive_signals(instance, shutdown, reload_settings, task_status)
    finally:
        for signum, handler in previous.items():
            # Once stopping, the instance still closes after this task: a signal then (a supervisor's second
            # SIGTERM, a `stop` racing the exit) asks for what is under way. Otherwise the handlers go back.
            signal.signal(signum, signal.SIG_IGN if shutdown.is_set() else handler)


def _quiet_once_stopping(shutdown: trio.Event) -> dict[int, Handler]:
    """Install, under trio's signal receiver, handlers that ignore the stop signals once a stop is under way.

    When the receiver closes, trio hands the signals still queued in it to the handlers that were there before
    it. A stop is exactly when that happens (the receiving task is cancelled with the server's nursery), and a
    supervisor may be signalling again by then: the launcher's SIGTERM handler would raise ``SystemExit``
    inside a task (the stop ending with status 1) and SIGHUP's default action would kill the process. These
    handlers pass a signal to the one from before only while no stop is under way. Returns the handlers
    replaced.
    """
    previous: dict[int, Handler] = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def handle(signum: int, frame: FrameType | None) -> None:
        if shutdown.is_set():
            return
        before = previous[signum]
        if callable(before):
            before(signum, frame)
        elif before != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, handle)
    return previous


async def _receive_signals(
    instance: Instance,
    shutdown: trio.Event,
    reload_settings: SettingsLoader | None,
    task_status: trio.TaskStatus[None],
) -> None:
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        task_status.started()
        async for signum in signals:
            if shutdown.is_set():
                log.info("received %s while draining: ignored", signal.Signals(signum).name)
                continue
            if signum == signal.SIGHUP:
                await reload(instance, reload_settings, requested=time.time())
                continue
            log.info(
                "received %s: draining (up to %ss), no new connections", signal.Signals(signum).name,
                instance.settings.graceful_timeout,
            )
            notify.stopping()
            shutdown.set()  # keep the receiver open: a second signal must not kill the drain


async def reload(instance: Instance, reload_settings: SettingsLoader | None, *, requested: float | None = None) -> bool:
    """Re-read settings and policies and swap them in; a broken configuration keeps the old one.

    The verdict is kept for ``/health`` (``Instance.last_reload``), stamped with ``requested``, the
    wall-clock time the SIGHUP arrived.
    """
    requested = time.time() if requested is None else requested
    notify.reloading()
    try:
        settings = reload_settings() if reload_settings is not None else instance.settings
        config = await trio.to_thread.run_sync(load_policy_config, settings)
    except Exception as error:  # noqa: BLE001 - any failure keeps the running configuration
        reason = _one_line(error)
        log.error("reload rejected, keeping the active configuration: %s", reason)
        instance.last_reload = ReloadResult(requested, time.time(), ok=False, error=reason)
        notify.ready("reload rejected")
        return False
    await instance.install(config, settings)  # the new policies' workers are warm before they take over
    instance.reopen_logs()
    summary = config.describe(settings.stream_holdback)
    instance.last_reload = ReloadResult(requested, time.time(), ok=True, summary=summary)
    log.info("reloaded: %s", summary)
    for warning in config.warnings:
        log.warning("%s", warning)
    notify.ready("reloaded")
    return True


def _one_line(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return " ".join(str(message).split())
