"""Run the real ``capsem-proxyd`` executable as a subprocess for CLI and daemon tests."""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.support.waiting import wait_until

# Ports for daemons the tests start: a block per pytest-xdist worker, below the kernel's ephemeral range.
PORT_BLOCK = 2_000
FIRST_PORT = 12_000


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _worker_ports() -> range:
    """This test process's own block of ports (``gw3`` -> the fourth block; no xdist -> the first)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    start = FIRST_PORT + index * PORT_BLOCK
    return range(start, start + PORT_BLOCK)


_next_port = itertools.count(random.randrange(PORT_BLOCK))


def free_port() -> int:
    """A loopback port nothing listens on now, for a daemon a test is about to start.

    A port taken with ``bind(0)`` is in the ephemeral range, where the kernel hands the same
    port to the next ``bind(0)`` or outgoing connection of any process once it is free again:
    between this pick and the daemon's own bind, another test worker's fake provider could
    take it, and the test would talk to the wrong server. Each xdist worker picks instead
    from a block of its own below the ephemeral range, walking it in order so a port is not
    reused until the block wraps. Where the machine's ephemeral range starts too low for the
    blocks, ``bind(0)`` it is.
    """
    ports = _worker_ports()
    if ports.stop > _ephemeral_floor():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for _ in range(len(ports)):
        port = ports[next(_next_port) % len(ports)]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")


def daemon_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPSEM_PROXYD_", "PROXY_CONFIG_DIR"))}
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command that is expected to exit by itself."""
    return subprocess.run(
        [sys.executable, "-m", "capsem_proxyd", *args],
        capture_output=True, text=True, timeout=timeout, env=env or daemon_env(),
    )


class Daemon:
    """A started ``capsem-proxyd start`` (or ``demo``) process, its log file and its URL."""

    def __init__(
        self, args: list[str], log_path: Path, env: dict[str, str] | None = None, port: int | None = None,
        command: str = "start",
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("w")
        argv = [sys.executable, "-m", "capsem_proxyd", command, *args]
        if port is None:
            argv += ["--port", str(self.port)]
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env or daemon_env())

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    async def wait_for_log(self, text: str, timeout: float = 15) -> None:
        """Until ``text`` appears in the daemon's log (a subprocess can only tell us through it)."""
        await wait_until(lambda: text in self.log, timeout=timeout, what=f"{text!r} in the daemon's log")

    async def wait_ready(self, timeout: float = 60) -> dict[str, Any]:
        with trio.fail_after(timeout):
            async with httpx.AsyncClient() as client:
                while True:
                    if self.process.poll() is not None:
                        raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.log}")
                    try:
                        response = await client.get(self.url + "/health")
                    except httpx.TransportError:
                        await trio.sleep(0.05)
                        continue
                    # Only this daemon's answer counts: another process may hold the port for a moment
                    # between free_port() and the daemon's bind (a daemon that cannot bind exits, above).
                    if "x-capsem-request-id" in response.headers:
                        return response.json()
                    await trio.sleep(0.05)

    async def wait_exit(self, timeout: float = 30) -> int:
        """Wait for the process to exit by itself (after a signal the test already sent)."""
        with trio.fail_after(timeout):
            while self.process.poll() is None:
                await trio.sleep(0.05)
        self._log.close()
        return self.process.returncode

    async def stop(self, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(timeout):
            while self.process.poll() is None:
                await trio.sleep(0.05)
        self._log.close()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self._log.close()


async def wait_for_log(daemon: Daemon, text: str, timeout: float = 15) -> None:
    """Until ``text`` appears in ``daemon``'s log (bounded polling on the log itself)."""
    await daemon.wait_for_log(text, timeout)


def upstream_args(fake_url: str) -> list[str]:
    """Point every provider of a daemon at the fake upstream."""
    return ["--openai-upstream", fake_url + "/v1", "--gemini-upstream", fake_url, "--anthropic-upstream", fake_url]


REPO = Path(__file__).resolve().parents[2]
EXECUTABLE = Path(sys.executable).with_name("capsem-proxyd")


def run_capsem_proxyd(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, from the repository root (so ``tests.*`` classes import)."""
    return subprocess.run(
        [str(EXECUTABLE), *args], capture_output=True, text=True, timeout=60, cwd=REPO,
        env=env or daemon_env(PYTHONPATH=str(REPO)), input=stdin,
    )


def assert_startup_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit code 2 and exactly one line on stderr, containing every fragment."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("capsem-proxyd: error:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
