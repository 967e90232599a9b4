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
from capsem_proxyd.daemon.options import ConfigError
from capsem_proxyd.daemon.process import DEFAULT_PIDFILE, PidFile, ProcessError, ServerWorkers, daemonize
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

    A failure before the proxy serves (the pidfile held by a running proxy or unwritable, the port taken,
    anything ``check`` could not foresee) is a ``ConfigError``: one line and exit code 2, as ``check``
    reports what it finds, not a traceback (which is logged at DEBUG). Nothing is bound while another
    proxy holds the pidfile.
    """
    path = settings.pidfile or (DEFAULT_PIDFILE if detach else None)
    pidfile = PidFile(os.path.abspath(path)) if path else None
    if pidfile is not None:
        try:
            pidfile.acquire()
        except ProcessError as error:
            raise ConfigError(str(error)) from None
    try:
        sockets = bind_sockets(settings)
    except BaseException as error:
        if pidfile is not None:
            pidfile.release()
        if isinstance(error, OSError):
            raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {error.strerror or error}") from None
        raise
    # Outside the window where serve() listens for signals (start-up, final clean-up),
    # SIGTERM still means "stop": exit 0 instead of dying by the signal.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    report: Callable[[str], None] = lambda message: None  # noqa: E731
    if detach:
        assert pidfile is not None
        report = daemonize(os.path.abspath(log_file), pidfile)
    serving: list[bool] = []  # set once the proxy serves: a failure after that is no start-up failure
    try:
        if settings.workers > 1:
            return _run_workers(settings, config, reload_settings, sockets, report)
        trio.run(partial(_serve_and_report, settings, config, reload_settings, sockets, report, serving))
        return 0
    except Exception as error:
        if serving:
            report(f"{type(error).__name__}: {error}")
            raise
        log.debug("start-up failed", exc_info=True)
        failure = ConfigError(f"cannot start: {startup_failure(error)}")
        report(failure.format_message())
        raise failure from None
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


def startup_failure(error: BaseException) -> str:
    """One line for what stopped a start: the innermost error of trio's groups, with its reason."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    reason = getattr(error, "strerror", None) or getattr(error, "reason", None) or str(error)
    where = getattr(error, "filename", None)
    text = f"{type(error).__name__}: {reason}" + (f" ({where})" if where else "")
    return " ".join(text.split())


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


async def _serve_and_report(
    settings: Settings,
    config: PolicyConfig,
    reload_settings: SettingsLoader,
    sockets: Sockets,
    report: Callable[[str], None],
    serving: list[bool],
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, settings, config, sockets=sockets, reload_settings=reload_settings))
        serving.append(True)
        report("ready")


def _run_workers(
    settings: Settings,
    config: PolicyConfig,
    reload_settings: SettingsLoader,
    sockets: Sockets,
    report: Callable[[str], None],
) -> int:
    def run_worker(index: int, ready: Callable[[], None]) -> None:
        supervisor = os.getppid()

        async def worker() -> None:
            async with trio.open_nursery() as watching:
                watching.start_soon(_stop_when_orphaned, supervisor)
                async with trio.open_nursery() as nursery:
                    await nursery.start(
                        partial(serve, settings, config, sockets=sockets, reload_settings=reload_settings,
                                announce=False)
                    )
                    ready()
                watching.cancel_scope.cancel()

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


ORPHAN_CHECK_SECONDS = 1.0


async def _stop_when_orphaned(supervisor: int) -> None:
    """Stop this worker, as SIGTERM does, once the supervisor that forked it is gone.

    The supervisor forwards SIGTERM to its workers, but nothing forwards a SIGKILL (``kill -9``, the OOM
    killer): its workers would go on serving the shared socket with nobody to stop, restart or count them
    (and without systemd's cgroup to clean up after ``--daemon``). A worker re-parented away from its
    supervisor drains and exits like any stopped worker.
    """
    while os.getppid() == supervisor:
        await trio.sleep(ORPHAN_CHECK_SECONDS)
    log.error("the supervisor (pid %s) is gone: this worker stops", supervisor)
    os.kill(os.getpid(), signal.SIGTERM)
