"""--stored-content in the real daemon: worker processes share one record of delivered replies, a reload
switches the mode, and a state directory that cannot be used stops start-up with one line."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from tests.support.daemon import Daemon, assert_startup_error, run_cli, upstream_args, wait_for_log
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import OPENAI_KEY

HEADERS = {"authorization": f"Bearer {OPENAI_KEY}", "connection": "close"}  # a fresh connection: any worker


async def respond(client: httpx.AsyncClient, daemon: Daemon, **fields: object) -> httpx.Response:
    return await client.post(daemon.url + "/v1/responses", json={"model": "gpt-4.1", "input": "hi", **fields},
                             headers=HEADERS)


def served_by(daemon: Daemon) -> dict[str, str]:
    """request id -> pid of the worker that logged its request line."""
    served = {}
    for line in daemon.log.splitlines():
        if "capsem_proxyd.request[" in line and "request_id=" in line:
            pid = line.split("capsem_proxyd.request[")[1].split("]")[0]
            served[line.split("request_id=")[1].split()[0]] = pid
    return served


async def test_two_workers_admit_each_others_replies(tmp_path: Path, fake: FakeUpstream, daemons) -> None:
    daemon = daemons("--workers", "2", "--state-dir", str(tmp_path / "state"), *upstream_args(fake.url))
    await daemon.wait_ready()
    pairs: list[tuple[str, str]] = []
    async with httpx.AsyncClient(timeout=10) as client:
        # Pairs until a follow-up crossed workers: which worker accepts a connection is the kernel's
        # choice, and on a busy machine one worker may still be starting while the other serves dozens.
        for _ in range(1000):
            first = await respond(client, daemon)
            assert first.status_code == 200, first.text
            follow_up = await respond(client, daemon, previous_response_id=first.json()["id"])
            assert follow_up.status_code == 200, follow_up.text
            pairs.append((first.headers["x-capsem-request-id"], follow_up.headers["x-capsem-request-id"]))
            if len(pairs) % 20 == 0 and _crossed(served_by(daemon), pairs):
                break
        other = await client.post(daemon.url + "/v1/responses", json={
            "model": "gpt-4.1", "input": "hi", "previous_response_id": first.json()["id"]},
            headers={"authorization": "Bearer sk-test-another-tenant-1f2e3d4c"})
        assert other.status_code == 400
    assert await daemon.stop() == 0
    served = served_by(daemon)
    assert len(set(served.values())) == 2, daemon.log
    assert _crossed(served, pairs), "no follow-up crossed workers"


def _crossed(served: dict[str, str], pairs: list[tuple[str, str]]) -> bool:
    """Whether some reply was recorded by one worker and its follow-up admitted by the other."""
    return any(first in served and second in served and served[first] != served[second] for first, second in pairs)


async def test_a_reload_switches_the_mode(tmp_path: Path, fake: FakeUpstream, daemons) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text('stored-content = "allow"\n')
    daemon = daemons("--config", str(config), "--state-dir", str(tmp_path / "state"), *upstream_args(fake.url))
    await daemon.wait_ready()
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await respond(client, daemon, conversation="conv_1")).status_code == 200
        config.write_text('stored-content = "refuse"\n')
        daemon.process.send_signal(signal.SIGHUP)
        await wait_for_log(daemon, "reloaded:")
        refused = await respond(client, daemon, conversation="conv_1")
    assert refused.status_code == 400 and "(--stored-content refuse)" in refused.json()["error"]["message"]
    assert "stored content referenced, NOT checked (--stored-content allow)" in daemon.log
    assert "takes effect only after a restart" not in daemon.log
    assert await daemon.stop() == 0


def test_an_unusable_state_directory_stops_start_and_check(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for command in ("start", "check"):
        assert_startup_error(run_cli(command, "--state-dir", str(blocker / "state")), "--state-dir", "cannot keep")
    checked = run_cli("check", "--state-dir", str(tmp_path / "state"))
    assert checked.returncode == 0 and f"stored content: checked, delivered replies recorded in {tmp_path}" in checked.stdout
    assert run_cli("check", "--stored-content", "refuse", "--state-dir", str(blocker / "s")).returncode == 0


async def test_a_reload_applies_every_reloadable_setting(tmp_path: Path, fake: FakeUpstream, daemons) -> None:
    """Not only --stored-content: --confirm-action took the value the process started with before."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "rules.toml").write_text('[on_model_call]\nconfirm = ["wire transfer"]\n')
    config = tmp_path / "proxy.toml"
    config.write_text('confirm-action = "block"\n')
    daemon = daemons("--config", str(config), "--policy-dir", str(policies), *upstream_args(fake.url))
    await daemon.wait_ready()
    body = {"model": "m", "messages": [{"role": "user", "content": "make a wire transfer"}]}
    async with httpx.AsyncClient(timeout=10) as client:
        url = daemon.url + "/v1/chat/completions"
        assert (await client.post(url, json=body, headers=HEADERS)).status_code == 400
        config.write_text('confirm-action = "allow"\n')
        daemon.process.send_signal(signal.SIGHUP)
        await wait_for_log(daemon, "reloaded:")
        assert (await client.post(url, json=body, headers=HEADERS)).status_code == 200
    assert await daemon.stop() == 0
