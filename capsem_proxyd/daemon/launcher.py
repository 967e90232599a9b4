"""Start the proxy as the operator asked: foreground or detached, one worker or several."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from functools import partial

import trio
from hypercorn.config import Sockets

from capsem_proxyd.config import Settings
from capsem_proxyd.daemon import notify
from capsem_proxyd.daemon.process import DEFAULT_PIDFILE, PidFile, ServerWorkers, daemonize
from capsem_proxyd.daemon.server import SettingsLoader, bind_sockets, describe, serve
from capsem_proxyd.enforcement.tenants import PolicyConfig

log = logging.getLogger("capsem_proxyd")


def launch(
    settings: Settings,
    config: PolicyConfig,
    reload_settings: SettingsLoader,
    *,
    detach: bool = False,
    log_file: str = "capsem-proxyd.log",
) -> int:
    """Lock the pidfile, bind, then serve; returns the process exit code.

    ProcessError when the pidfile is held by a running proxy or cannot be written (nothing is bound
    then); binding errors raise OSError.
    """
    path = settings.pidfile or (DEFAULT_PIDFILE if detach else None)
    pidfile = PidFile(os.path.abspath(path)) if path else None
    if pidfile is not None:
        pidfile.acquire()
    try:
        sockets = bind_sockets(settings)
    except BaseException:
        if pidfile is not None:
            pidfile.release()
        raise
    # Outside the window where serve() listens for signals (start-up, final clean-up),
    # SIGTERM still means "stop": exit 0 instead of dying by the signal.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    report: Callable[[str], None] = lambda message: None  # noqa: E731
    if detach:
        assert pidfile is not None
        report = daemonize(os.path.abspath(log_file), pidfile)
    try:
        if settings.workers > 1:
            return _run_workers(settings, config, reload_settings, sockets, report)
        trio.run(partial(_serve_and_report, settings, config, reload_settings, sockets, report))
        return 0
    except BaseException as error:
        report(f"{type(error).__name__}: {error}")
        raise
    finally:
        if pidfile is not None:
            pidfile.release()
        # Serving is over: another SIGTERM (a supervisor's second, a `stop` racing the exit) asks for what is
        # happening already. Ignored: the interpreter's finalization restores the default action of the signals
        # it handled, which would end a clean stop "killed by SIGTERM" instead of with 0.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


async def _serve_and_report(
    settings: Settings,
    config: PolicyConfig,
    reload_settings: SettingsLoader,
    sockets: Sockets,
    report: Callable[[str], None],
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, settings, config, sockets=sockets, reload_settings=reload_settings))
        report("ready")


def _run_workers(
    settings: Settings,
    config: PolicyConfig,
    reload_settings: SettingsLoader,
    sockets: Sockets,
    report: Callable[[str], None],
) -> int:
    def run_worker(index: int, ready: Callable[[], None]) -> None:
        async def worker() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    partial(serve, settings, config, sockets=sockets, reload_settings=reload_settings, announce=False)
                )
                ready()

        trio.run(worker)

    pool = ServerWorkers(settings.workers, run_worker)

    def all_ready() -> None:
        binds = [f"https://{settings.host}:{sock.getsockname()[1]}" for sock in sockets.secure_sockets]
        binds += [f"http://{settings.host}:{sock.getsockname()[1]}" for sock in sockets.insecure_sockets]
        log.info("%s | %d workers", describe(settings, config, binds), settings.workers)
        notify.ready(f"{settings.workers} workers serving")
        report("ready")

    def reloading() -> None:
        notify.reloading()
        log.info("SIGHUP: workers reload their configuration")
        notify.ready("reload forwarded to workers")

    try:
        return pool.run(all_ready, reloading)
    finally:
        notify.stopping()
        pool.cleanup()
