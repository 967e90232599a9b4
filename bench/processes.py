"""Child processes of a run: start pinned to a core, wait until they listen,
read their CPU time and memory from /proc, stop them by PID.

Every process the bench starts goes through :class:`Children`, whose ``close``
runs in a ``finally``: nothing the bench started outlives it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1
# Variables that would change what a child does behind the bench's back.
_SCRUBBED_PREFIXES = ("CAPSEM_PROXYD_",)
_SCRUBBED = {"PROXY_CONFIG_DIR", "VIRTUAL_ENV", "PYTHONPATH"}


def child_env(**extra: str) -> dict[str, str]:
    """The bench's environment minus HTTP proxies and capsem-proxyd settings."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.lower().endswith("_proxy")
        and name not in _SCRUBBED
        and not name.startswith(_SCRUBBED_PREFIXES)
    }
    env.update(extra)
    return env


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the bench dies, even by SIGKILL."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pinned(command: list[str], core: int | str | None) -> list[str]:
    """Prefix ``taskset -c core`` (it execs, so the PID stays the child's)."""
    if core is None:
        return command
    return [shutil.which("taskset") or "taskset", "-c", str(core), *command]


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float, name: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} before listening; see {log}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on port {port} within {timeout:.0f} s; see {log}:\n{tail(log)}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def descendants(pid: int) -> list[int]:
    """PIDs of ``pid``'s children, grandchildren, ... (from /proc/*/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    frontier = [pid]
    while frontier:
        children = parents.get(frontier.pop(), [])
        found.extend(children)
        frontier.extend(children)
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process and its live descendants, in seconds."""
    total = 0
    for member in (pid, *descendants(pid)):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """VmRSS of the process and its live descendants."""
    total = 0
    for member in (pid, *descendants(pid)):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


class Children:
    """Owns every process the bench starts; ``close`` stops them all by PID."""

    def __init__(self) -> None:
        self._running: list[Child] = []
        self.started: list[dict[str, object]] = []  # name and PID of everything ever started

    def start(self, name: str, command: list[str], *, core: int | str | None, log: Path,
              env: dict[str, str] | None = None, cwd: Path | None = None) -> Child:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as output:
            process = subprocess.Popen(
                pinned(command, core), stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env if env is not None else child_env(), cwd=cwd, preexec_fn=_die_with_parent,
            )
        child = Child(name, process, log)
        self._running.append(child)
        self.started.append({"name": name, "pid": process.pid})
        return child

    def stop(self, child: Child, timeout: float = 10.0) -> None:
        """SIGTERM the child, then SIGKILL it and any descendant still alive."""
        if child in self._running:
            self._running.remove(child)
        if child.process.poll() is not None:
            return
        family = descendants(child.pid)
        child.process.send_signal(signal.SIGTERM)
        try:
            child.process.wait(timeout)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait(5)
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        for child in reversed(list(self._running)):
            try:
                self.stop(child)
            except Exception:  # noqa: BLE001 - keep stopping the others
                pass
