"""Run the real ``capsem-proxyd`` executable as a subprocess for CLI and daemon tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.support.waiting import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    """A started ``capsem-proxyd start`` process, its log file and its URL."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("w")
        command = [sys.executable, "-m", "capsem_proxyd", "start", *args]
        if port is None:
            command += ["--port", str(self.port)]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env or daemon_env())

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    async def wait_for_log(self, text: str, timeout: float = 15) -> None:
        """Until ``text`` appears in the daemon's log (a subprocess can only tell us through it)."""
        await wait_until(lambda: text in self.log, timeout=timeout, what=f"{text!r} in the daemon's log")

    async def wait_ready(self, timeout: float = 20) -> dict[str, Any]:
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
