"""The daemon's lifecycle, run for real: systemd notify, reload, graceful stop, --daemon, audit, config."""

from __future__ import annotations

import json
import os
import secrets
import signal
from pathlib import Path

import httpx
import trio

from tests.support.daemon import daemon_env, free_port, run_cli, upstream_args, wait_for_log
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import OPENAI_KEY
from tests.support.waiting import wait_until

HEADERS = {"authorization": f"Bearer {OPENAI_KEY}"}
BLOCKED = {"model": "m", "messages": [{"role": "user", "content": "capsem_block"}]}


async def post(url: str, body: dict) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url + "/v1/chat/completions", json=body, headers=HEADERS)


class NotifySocket:
    """A systemd-style notify socket (abstract namespace) collecting datagrams."""

    def __init__(self) -> None:
        self.name = f"@capsem-test-{secrets.token_hex(6)}"
        self.sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_DGRAM)

    async def bind(self) -> None:
        await self.sock.bind("\0" + self.name[1:])

    async def receive(self, timeout: float = 15) -> str:
        with trio.fail_after(timeout):
            data = await self.sock.recv(4096)
        return data.decode()

    async def receive_until(self, state: str, timeout: float = 15) -> list[str]:
        seen = []
        with trio.fail_after(timeout):
            while True:
                message = await self.receive()
                seen.append(message)
                if state in message.split("\n"):
                    return seen


async def test_systemd_ready_only_once_listening_then_reload_watchdog_and_stopping(fake: FakeUpstream, daemons) -> None:
    notify = NotifySocket()
    await notify.bind()
    env = daemon_env(NOTIFY_SOCKET=notify.name, WATCHDOG_USEC="300000")
    daemon = daemons(*upstream_args(fake.url), env=env)
    messages = await notify.receive_until("READY=1")
    # READY arrives only when the port accepts connections.
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", daemon.port)
    await stream.aclose()
    assert "MAINPID=" in messages[-1]
    assert "WATCHDOG=1" in (await notify.receive_until("WATCHDOG=1"))[-1]
    daemon.process.send_signal(signal.SIGHUP)
    reload_messages = await notify.receive_until("READY=1")
    assert any("RELOADING=1" in message for message in reload_messages)
    daemon.process.send_signal(signal.SIGTERM)
    await notify.receive_until("STOPPING=1")
    assert await daemon.stop() == 0


async def test_signals_that_keep_arriving_while_it_stops_end_the_stop_with_status_0(fake: FakeUpstream, daemons) -> None:
    """A supervisor may signal again while the daemon stops (systemd's stop then `kill`, a second Ctrl-C, a
    reload racing the stop). trio delivers the signals still queued when its receiver closes to the handler
    from before it: a queued SIGTERM used to raise SystemExit inside a task (an exception group: status 1,
    seen once in a loaded CI run) and a queued SIGHUP to kill the process. Here they arrive the whole time."""
    daemon = daemons(*upstream_args(fake.url))
    await daemon.wait_ready()
    daemon.process.send_signal(signal.SIGTERM)
    with trio.fail_after(60):
        while daemon.process.poll() is None:
            for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                try:
                    os.kill(daemon.process.pid, signum)
                except ProcessLookupError:
                    break
            await trio.sleep(0)
    assert await daemon.wait_exit() == 0, daemon.log
    assert "Traceback" not in daemon.log


async def test_reload_swaps_policies_without_dropping_a_stream_and_rejects_a_broken_folder(
    tmp_path: Path, fake: FakeUpstream, daemons
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "debug.toml").write_text("enabled = true\n")
    (policies / "secrets.toml").write_text("enabled = false\n")  # on by default; this test turns Debug off
    daemon = daemons("--policy-dir", str(policies), *upstream_args(fake.url))
    await daemon.wait_ready()
    text = "a long and steady answer " * 40
    fake.script(Reply(text=text, chunk_delay=0.01))
    async with httpx.AsyncClient(timeout=20) as client, trio.open_nursery() as nursery:
        streamed: list[bytes] = []

        async def long_stream() -> None:
            body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "go"}]}
            async with client.stream("POST", daemon.url + "/v1/chat/completions", json=body, headers=HEADERS) as response:
                async for chunk in response.aiter_bytes():
                    streamed.append(chunk)

        nursery.start_soon(long_stream)
        with trio.fail_after(5):
            await fake.wait_for_streams(1)
        assert (await post(daemon.url, BLOCKED)).status_code == 400
        (policies / "debug.toml").write_text("enabled = false\n")
        daemon.process.send_signal(signal.SIGHUP)
        await wait_for_log(daemon, "reloaded: policies: NONE")
        assert (await post(daemon.url, BLOCKED)).status_code == 200  # new requests: new policies
    raw = b"".join(streamed).decode()
    assert raw.rstrip().endswith("data: [DONE]")
    assert "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for line in raw.split("\n\n") if line.startswith("data: {") and json.loads(line[6:])["choices"]
    ) == text

    (policies / "debug.toml").write_text("enabled = true\n")
    (policies / "broken.toml").write_text("this is = = not toml\n")
    daemon.process.send_signal(signal.SIGHUP)
    await wait_for_log(daemon, "reload rejected")
    assert (await post(daemon.url, BLOCKED)).status_code == 200  # the old (empty) policy set stays
    assert await daemon.stop() == 0


def stream_body() -> dict:
    return {"model": "m", "stream": True, "messages": [{"role": "user", "content": "go"}]}


async def test_sigterm_lets_a_stream_finish_within_the_grace_period(fake: FakeUpstream, daemons) -> None:
    daemon = daemons("--graceful-timeout", "10", *upstream_args(fake.url))
    await daemon.wait_ready()
    text = "still talking while the daemon drains " * 20
    fake.script(Reply(text=text, chunk_delay=0.01))
    async with httpx.AsyncClient(timeout=20) as client:
        async with client.stream("POST", daemon.url + "/v1/chat/completions", json=stream_body(), headers=HEADERS) as response:
            chunks = []
            async for chunk in response.aiter_bytes():
                if not chunks:
                    daemon.process.send_signal(signal.SIGTERM)
                chunks.append(chunk)
    raw = b"".join(chunks)
    assert raw.rstrip().endswith(b"data: [DONE]") and b'"error"' not in raw
    assert await daemon.wait_exit() == 0  # one SIGTERM, as a supervisor sends


async def test_stream_longer_than_the_grace_period_ends_with_an_error_event(fake: FakeUpstream, daemons) -> None:
    daemon = daemons("--graceful-timeout", "0.5", *upstream_args(fake.url))
    await daemon.wait_ready()
    fake.script(Reply(chunks=["never ending "] * 2000, chunk_delay=0.01))
    async with httpx.AsyncClient(timeout=20) as client:
        async with client.stream("POST", daemon.url + "/v1/chat/completions", json=stream_body(), headers=HEADERS) as response:
            chunks = []
            async for chunk in response.aiter_bytes():
                if not chunks:
                    daemon.process.send_signal(signal.SIGTERM)
                chunks.append(chunk)
    raw = b"".join(chunks)
    assert b"server_shutting_down" in raw
    with trio.fail_after(2):
        await fake.streams[0].closed.wait()
    assert not fake.streams[0].completed
    assert await daemon.wait_exit() == 0  # one SIGTERM, as a supervisor sends


async def test_daemon_mode_status_reload_and_stop(tmp_path: Path, fake: FakeUpstream) -> None:
    port = free_port()
    pidfile, log_file = tmp_path / "proxy.pid", tmp_path / "proxy.log"
    common = ["--pidfile", str(pidfile)]
    started = await trio.to_thread.run_sync(
        lambda: run_cli("start", "--daemon", "--port", str(port), "--log-file", str(log_file), *common, *upstream_args(fake.url))
    )
    try:
        assert started.returncode == 0, started.stderr
        assert "started in the background" in started.stdout
        status = await trio.to_thread.run_sync(lambda: run_cli("status", *common, "--port", str(port)))
        assert status.returncode == 0 and "running: pid" in status.stdout
        assert (await post(f"http://127.0.0.1:{port}", BLOCKED)).status_code == 400
        reloaded = await trio.to_thread.run_sync(lambda: run_cli("reload", *common, "--port", str(port)))
        assert reloaded.returncode == 0 and "reloaded" in reloaded.stdout, reloaded.stderr
        stopped = await trio.to_thread.run_sync(lambda: run_cli("stop", *common))
        assert stopped.returncode == 0, stopped.stderr
        assert not pidfile.exists()
        after = await trio.to_thread.run_sync(lambda: run_cli("status", *common, "--port", str(port)))
        assert after.returncode != 0 and "not running" in after.stderr
        assert "listening on" in log_file.read_text()
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_check_exit_codes(tmp_path: Path) -> None:
    ok = run_cli("check")
    assert ok.returncode == 0 and "policies" in ok.stdout and "Debug" in ok.stdout
    (tmp_path / "debug.toml").write_text("enabled = [\n")
    bad = run_cli("check", "--policy-dir", str(tmp_path))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_config_shows_each_values_source(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text('gemini-upstream = "http://file.example"\nlog_level = "debug"\n')
    env_file = tmp_path / "proxy.env"
    env_file.write_text("CAPSEM_PROXYD_CONNECT_TIMEOUT=7\nOPENAI_API_KEY=sk-from-env-file-must-not-show\n")
    env = daemon_env(CAPSEM_PROXYD_GRACEFUL_TIMEOUT="12", CAPSEM_PROXYD_LOG_LEVEL="warning")
    result = run_cli("config", "--config", str(config), "--env-file", str(env_file), "--port", "9999", env=env)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "9999" in lines["port"] and "(flag)" in lines["port"]
    assert "12.0" in lines["graceful_timeout"] and "(environment)" in lines["graceful_timeout"]
    assert "'warning'" in lines["log_level"] and "(environment)" in lines["log_level"]  # env beats file
    assert "7.0" in lines["connect_timeout"] and "(env file)" in lines["connect_timeout"]
    assert "file.example" in lines["gemini_upstream"] and "(config file)" in lines["gemini_upstream"]
    assert "(default)" in lines["host"]
    assert "sk-from-env-file" not in result.stdout


async def test_provider_key_in_env_file_never_authenticates_clients(tmp_path: Path, fake: FakeUpstream, daemons) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("OPENAI_API_KEY=sk-operator-key-0000000000\n")
    daemon = daemons("--env-file", str(env_file), *upstream_args(fake.url))
    await daemon.wait_ready()
    async with httpx.AsyncClient() as client:
        response = await client.post(daemon.url + "/v1/chat/completions", json={"model": "m", "messages": []})
    assert response.status_code == 401 and fake.requests == []
    await daemon.stop()
    assert "sk-operator-key" not in daemon.log


async def test_audit_log_records_decisions_and_requests_and_detects_tampering(
    tmp_path: Path, fake: FakeUpstream, daemons
) -> None:
    audit = tmp_path / "audit.jsonl"
    daemon = daemons("--audit-log", str(audit), *upstream_args(fake.url))
    await daemon.wait_ready()
    assert (await post(daemon.url, {"model": "m", "messages": [{"role": "user", "content": "hello"}]})).status_code == 200
    assert (await post(daemon.url, BLOCKED)).status_code == 400
    daemon.process.send_signal(signal.SIGHUP)  # reopen: a new chain segment linked to the last line
    await wait_for_log(daemon, "reloaded")
    assert (await post(daemon.url, BLOCKED)).status_code == 400
    assert await daemon.stop() == 0

    records = [json.loads(line) for line in audit.read_text().splitlines()]
    decisions = [r for r in records if r["type"] == "decision"]
    requests = [r for r in records if r["type"] == "request"]
    assert {(d["hook"], d["verdict"]) for d in decisions} >= {("on_model_call", "ALLOW"), ("on_model_call", "BLOCK")}
    assert [r["status"] for r in requests] == [200, 400, 400]
    assert all(r["tenant_id"] and r["request_id"] for r in decisions + requests)
    assert sum(r["type"] == "chain_start" for r in records) == 2
    text = audit.read_text()
    assert OPENAI_KEY not in text and "hello" not in text  # no keys; no prompt text unless opted in
    verified = run_cli("audit", "verify", str(audit))
    opted_in = tmp_path / "with-prompts.jsonl"
    second = daemons("--audit-log", str(opted_in), "--audit-prompts", *upstream_args(fake.url))
    await second.wait_ready()
    await post(second.url, {"model": "m", "messages": [{"role": "user", "content": "hello prompt"}]})
    await second.stop()
    assert any(json.loads(line).get("prompt") == "hello prompt" for line in opted_in.read_text().splitlines())
    assert verified.returncode == 0, verified.stderr

    lines = audit.read_text().splitlines(keepends=True)
    blocked_line = next(i for i, line in enumerate(lines) if '"verdict":"BLOCK"' in line)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("".join(lines[:blocked_line] + lines[blocked_line + 1 :]))  # delete a block decision
    result = run_cli("audit", "verify", str(tampered))
    assert result.returncode != 0 and f"line {blocked_line + 1}" in result.stderr
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(lines).replace('"verdict":"BLOCK"', '"verdict":"ALLOW"', 1))
    assert run_cli("audit", "verify", str(edited)).returncode != 0


async def test_workers_stop_when_their_supervisor_is_killed(fake: FakeUpstream, daemons) -> None:
    """SIGKILL reaches only the supervisor (kill -9, the OOM killer) and nothing forwards it: its workers used
    to go on serving the shared port with nobody to stop them (each suite run left a few such pairs behind)."""
    daemon = daemons("--workers", "2", *upstream_args(fake.url))
    await daemon.wait_ready()
    workers = [int(pid) for pid in Path(f"/proc/{daemon.process.pid}/task/{daemon.process.pid}/children")
               .read_text().split()]
    assert len(workers) == 2
    daemon.process.kill()
    daemon.process.wait(10)

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    await wait_until(lambda: not any(alive(pid) for pid in workers), timeout=60, what="the orphaned workers gone")


async def test_workers_share_one_port_and_stop_together(fake: FakeUpstream, daemons) -> None:
    daemon = daemons("--workers", "2", *upstream_args(fake.url))
    await daemon.wait_ready()
    async with httpx.AsyncClient() as client:
        for _ in range(40):
            # a fresh connection each time, so the kernel spreads them over the workers
            response = await client.post(
                daemon.url + "/v1/chat/completions", json=BLOCKED, headers={**HEADERS, "connection": "close"}
            )
            assert response.status_code == 400
    assert await daemon.stop() == 0
    pids = {line.split("capsem_proxyd.request[")[1].split("]")[0] for line in daemon.log.splitlines() if "capsem_proxyd.request[" in line}
    assert len(pids) == 2, daemon.log
