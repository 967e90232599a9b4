"""stop, status and reload do what they say, with the daemon start configured (issue 24, item 5).

Found as an operator: a second ``start --daemon`` overwrote the running
one's pidfile (``stop`` then stopped only the newcomer, the first kept
serving); the control commands took no ``--config`` and ignored the
pidfile set there; ``status`` probed :8000 whatever the port; ``reload``
said "reload requested" and exited 0 when the daemon rejected the new
configuration, whose reason was only in the daemon's log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from tests.support.daemon import assert_startup_error, daemon_env, free_port, run_cli, upstream_args
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import OPENAI_KEY

HEADERS = {"authorization": f"Bearer {OPENAI_KEY}"}
BLOCKED = {"model": "m", "messages": [{"role": "user", "content": "capsem_block"}]}


async def post(url: str, body: dict) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url + "/v1/chat/completions", json=body, headers=HEADERS)


async def cli(*args: str, env: dict[str, str] | None = None):  # noqa: ANN201 - a CompletedProcess
    return await trio.to_thread.run_sync(lambda: run_cli(*args, env=env, timeout=90))


@pytest.fixture
def pidfiles() -> Iterator[list[Path | int]]:
    """Pidfiles (and pids) whose daemons are killed after the test, whatever it left running: a daemon
    whose pidfile another one overwrote (the bug) included."""
    started: list[Path | int] = []
    yield started
    for item in started:
        try:
            pid = item if isinstance(item, int) else int(item.read_text())
            if pid != os.getpid():
                os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass


async def test_a_second_daemon_with_the_same_pidfile_is_refused_and_stop_stops_the_first(
    tmp_path: Path, fake: FakeUpstream, pidfiles: list[Path | int]
) -> None:
    pidfile = tmp_path / "proxy.pid"
    pidfiles.append(pidfile)
    first_port, second_port = free_port(), free_port()
    common = ["--pidfile", str(pidfile), "--log-file", str(tmp_path / "proxy.log"), *upstream_args(fake.url)]
    first = await cli("start", "--daemon", "--port", str(first_port), *common)
    assert first.returncode == 0, first.stderr
    first_pid = int(pidfile.read_text())
    pidfiles.append(first_pid)

    second = await cli("start", "--daemon", "--port", str(second_port), *common)
    assert_startup_error(second, "already running", f"pid {first_pid}", str(pidfile))
    foreground = await cli("start", "--port", str(second_port), *common)
    assert_startup_error(foreground, "already running")
    assert int(pidfile.read_text()) == first_pid
    with pytest.raises(httpx.ConnectError):  # the second one never listened
        await post(f"http://127.0.0.1:{second_port}", BLOCKED)

    stopped = await cli("stop", "--pidfile", str(pidfile))
    assert stopped.returncode == 0 and f"pid {first_pid}" in stopped.stdout, stopped.stderr
    with pytest.raises(httpx.ConnectError):  # the first one, the only one, is gone
        await post(f"http://127.0.0.1:{first_port}", BLOCKED)
    assert not pidfile.exists()


async def test_a_pidfile_left_by_a_killed_daemon_is_taken_over(
    tmp_path: Path, fake: FakeUpstream, pidfiles: list[Path | int]
) -> None:
    pidfile = tmp_path / "proxy.pid"
    bystander = subprocess.Popen(["sleep", "60"])  # a live pid that is no proxy: as after pid reuse
    try:
        pidfile.write_text(f"{bystander.pid}\n")
        pidfiles.append(pidfile)
        status = await cli("status", "--pidfile", str(pidfile))
        assert status.returncode == 1 and "stale pidfile" in status.stderr
        port = free_port()
        started = await cli("start", "--daemon", "--port", str(port), "--pidfile", str(pidfile),
                            "--log-file", str(tmp_path / "proxy.log"), *upstream_args(fake.url))
        assert started.returncode == 0, started.stderr
        assert int(pidfile.read_text()) != bystander.pid
        assert (await cli("stop", "--pidfile", str(pidfile))).returncode == 0
        assert bystander.poll() is None  # never signalled
    finally:
        bystander.kill()
        bystander.wait()


async def test_control_commands_read_the_config_file_and_reload_reports_the_verdict(
    tmp_path: Path, fake: FakeUpstream, pidfiles: list[Path | int]
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "debug.toml").write_text("enabled = true\n")
    (policies / "secrets.toml").write_text("enabled = false\n")  # on by default; this test turns Debug off
    pidfile = tmp_path / "run" / "proxy.pid"
    pidfiles.append(pidfile)
    port = free_port()
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'port = {port}\npidfile = "{pidfile}"\npolicy-dir = "{policies}"\n'
        f'openai-upstream = "{fake.url}/v1"\n'
    )
    env = daemon_env(CAPSEM_PROXYD_CONFIG=str(config))
    started = await cli("start", "--daemon", "--log-file", str(tmp_path / "proxy.log"), env=env)
    assert started.returncode == 0, started.stderr
    assert pidfile.exists()
    url = f"http://127.0.0.1:{port}"

    # status: the pidfile and the port come from the config file (through CAPSEM_PROXYD_CONFIG, then --config).
    status = await cli("status", env=env)
    assert status.returncode == 0, status.stderr
    assert f"{url}," in status.stdout and "policies Debug" in status.stdout
    assert (await cli("status", "--config", str(config))).returncode == 0
    by_pid = await cli("status", "--pid", pidfile.read_text().strip(), "--port", str(port))  # no pidfile needed
    assert by_pid.returncode == 0 and f"{url}," in by_pid.stdout, by_pid.stderr
    assert (await post(url, BLOCKED)).status_code == 400

    # reload of a broken folder: exit 2 with the daemon's reason; the old policies stay; /health says so.
    (policies / "debug.toml").write_text("enabled = false\n")
    (policies / "broken.toml").write_text("this is = = not toml\n")
    rejected = await cli("reload", "--config", str(config))
    assert_startup_error(rejected, "reload rejected", "broken.toml", "invalid TOML")
    async with httpx.AsyncClient() as client:
        health = (await client.get(url + "/health")).json()
    assert health["reload"]["ok"] is False and "broken.toml" in health["reload"]["error"]
    assert health["status"] == "ok" and health["policies"] == ["Debug"]
    assert (await post(url, BLOCKED)).status_code == 400
    assert "last reload rejected" in (await cli("status", env=env)).stdout

    # reload of a good one: exit 0 once the daemon runs it (by pid, as the systemd unit's ExecReload does).
    (policies / "broken.toml").unlink()
    accepted = await cli("reload", "--pid", pidfile.read_text().strip(), env=env)
    assert accepted.returncode == 0, accepted.stderr
    assert "reloaded" in accepted.stdout and "NONE" in accepted.stdout
    assert (await post(url, BLOCKED)).status_code == 200  # at once: reload returned after the swap
    async with httpx.AsyncClient() as client:
        health = (await client.get(url + "/health")).json()
    assert health["reload"]["ok"] is True and health["reload"]["error"] is None
    json.dumps(health)

    stopped = await cli("stop", "--config", str(config))
    assert stopped.returncode == 0, stopped.stderr
    assert not pidfile.exists()
