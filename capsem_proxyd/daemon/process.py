"""Process management: pidfiles, detaching (--daemon) and worker processes (--workers).

All of it happens before trio starts: forking a running trio process is not
supported, and binding the listening sockets first means every worker shares
one port and the port accepts connections as soon as the parent is told ready.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("capsem_proxyd.daemon.process")


class ProcessError(Exception):
    """A process-management failure, reported as one line."""


# -- pidfiles -----------------------------------------------------------------

# What start --daemon writes, and what stop, status and reload read, when no --pidfile is configured.
DEFAULT_PIDFILE = "capsem-proxyd.pid"


class PidFile:
    """A pidfile held locked (``flock``) for as long as the proxy that wrote it runs.

    The lock, not the pid in the file, says whether a proxy owns it: a second
    ``start`` with the same pidfile finds it locked and refuses, instead of
    overwriting the running one's pid (after which ``stop`` stopped only the
    newcomer and the first kept serving). A pidfile left behind by a killed
    proxy is not locked, so it is taken over; a pid the kernel has since given
    to another process is never mistaken for a proxy. The lock lives in the
    open file, so the processes forked from the one that took it (the detached
    daemon, the ``--workers``) hold it until the last of them exits.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock the pidfile and write this process's id; ProcessError when another proxy holds it or it
        cannot be written."""
        import fcntl

        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise ProcessError(f"--pidfile {self.path}: cannot write it: {error.strerror or error}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            pid = read_pid(self.path)
            raise ProcessError(
                f"capsem-proxyd is already running (pid {pid if pid is not None else '?'}, pidfile {self.path}): "
                "stop it first, or give this one another --pidfile"
            ) from None
        self._fd = fd
        self.write()

    def write(self) -> None:
        """Record this process's id (again in the detached daemon, whose pid is not the one that locked)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Remove the pidfile if it names this process, and let go of the lock."""
        if self._fd is None:
            return
        if read_pid(self.path) == os.getpid():
            Path(self.path).unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def pidfile_held(path: str) -> bool:
    """Whether a running proxy holds the lock on ``path``."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def read_pid(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_pid(pidfile: str) -> int:
    """The pid of the proxy that holds ``pidfile``; ProcessError when none does."""
    pid = read_pid(pidfile)
    if pid is None:
        raise ProcessError(f"no pid in {pidfile}: is capsem-proxyd running with this --pidfile?")
    if not pid_alive(pid) or not pidfile_held(pidfile):
        raise ProcessError(f"process {pid} from {pidfile} is not running (stale pidfile)")
    return pid


def stop(pid: int, timeout: float) -> int:
    """SIGTERM the proxy ``pid`` (from ``running_pid``) and wait for it to exit; returns its pid."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return pid  # gone already
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise ProcessError(f"process {pid} did not exit within {timeout:.0f}s after SIGTERM")
        _reap(pid)
        time.sleep(0.05)
    return pid


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# -- detaching ----------------------------------------------------------------


def daemonize(log_file: str, pidfile: PidFile) -> Callable[[str], None]:
    """Double fork; the original process waits for the daemon's first word and exits with it.

    ``pidfile`` is locked before (a second daemon is refused in the foreground, as one line); the
    daemon inherits the lock and writes its own pid into it.

    Returns ``report(message)`` for the daemon: "ready" makes the original
    process exit 0, anything else is printed as its error (exit 2).
    """
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        _wait_for_daemon(read_end, pidfile.path)
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    _redirect_stdio(log_file)
    pidfile.write()

    def report(message: str) -> None:
        try:
            os.write(write_end, message.replace("\n", " ").encode()[:4000] + b"\n")
            os.close(write_end)
        except OSError:
            pass

    return report


def _wait_for_daemon(read_end: int, pidfile: str) -> None:
    # One line ends the wait: worker processes inherit the pipe, so EOF may never come.
    chunks = []
    while (chunk := os.read(read_end, 4096)) and b"\n" not in chunk:
        chunks.append(chunk)
    chunks.append(chunk)
    message = b"".join(chunks).decode(errors="replace").strip()
    if message == "ready":
        print(f"capsem-proxyd: started in the background, pid {read_pid(pidfile)} (pidfile {pidfile})")
        os._exit(0)
    sys.stderr.write(f"capsem-proxyd: error: {message or 'the daemon exited before it was ready; see its log file'}\n")
    os._exit(2)


def _redirect_stdio(log_file: str) -> None:
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null_fd)
    os.close(log_fd)
    os.chdir("/")


# -- workers ------------------------------------------------------------------


class ServerWorkers:
    """Forks ``count`` workers that serve the already-bound sockets, and supervises them.

    The parent forwards SIGTERM/SIGINT/SIGHUP, restarts a worker that dies
    unexpectedly, and exits once every worker has exited after a stop signal.
    """

    def __init__(self, count: int, run_worker: Callable[[int, Callable[[], None]], None]) -> None:
        self.count = count
        self.run_worker = run_worker
        self.children: dict[int, int] = {}  # pid -> worker index
        self.stopping = False
        self.metrics_dir = tempfile.mkdtemp(prefix="capsem-proxyd-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir

    def run(self, on_all_ready: Callable[[], None], on_reload: Callable[[], None]) -> int:
        ready_read, ready_write = os.pipe()
        for index in range(self.count):
            self._spawn(index, ready_write)
        os.close(ready_write)  # EOF on the pipe now means every worker died
        self._wait_ready(ready_read, on_all_ready)
        received: list[int] = []
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda number, _frame: received.append(number))
        exit_code = 0
        while self.children:
            while received:
                self._forward(received.pop(0), on_reload)
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)
                continue
            if pid not in self.children:
                continue
            index = self.children.pop(pid)
            self._worker_exited(pid)  # its live gauges stop counting
            code = os.waitstatus_to_exitcode(status)
            if not self.stopping:
                log.error("worker %s (pid %s) exited with %s; starting a new one", index, pid, code)
                self._spawn(index, None)
            elif code not in (0, -signal.SIGTERM):
                exit_code = 1
        os.close(ready_read)
        return exit_code

    def _spawn(self, index: int, ready_write: int | None) -> None:
        pid = os.fork()
        if pid == 0:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)

            def ready() -> None:
                if ready_write is not None:
                    os.write(ready_write, b"r")

            code = 0
            try:
                self.run_worker(index, ready)
            except BaseException:  # noqa: BLE001 - a worker must never return into the parent's code
                logging.getLogger("capsem_proxyd").exception("worker %s failed", index)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = index

    def _wait_ready(self, ready_read: int, on_all_ready: Callable[[], None], timeout: float = 120.0) -> None:
        import select

        count = 0
        deadline = time.monotonic() + timeout
        while count < self.count:
            if not select.select([ready_read], [], [], max(0.0, deadline - time.monotonic()))[0]:
                self._forward(signal.SIGTERM, lambda: None)
                raise ProcessError(f"workers were not ready within {timeout:.0f}s")
            data = os.read(ready_read, self.count)
            if not data:
                raise ProcessError("a worker exited before it was ready")
            count += len(data)
        on_all_ready()

    def _forward(self, signum: int, on_reload: Callable[[], None]) -> None:
        if signum == signal.SIGHUP:
            on_reload()
        else:
            self.stopping = True
        for pid in list(self.children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _worker_exited(self, pid: int) -> None:
        from capsem_proxyd.observe.metrics import mark_worker_dead

        mark_worker_dead(pid, self.metrics_dir)

    def cleanup(self) -> None:
        import shutil

        shutil.rmtree(self.metrics_dir, ignore_errors=True)
