"""The state directory's faults, in the real daemon (issue 21, item 6): a record deleted while running, a
damaged record at start, a lost or damaged placeholder key. Each is logged at ERROR and answered by starting
afresh, never by staying down or by recording into a file nobody reads; ids the proxy can no longer vouch
for are refused as unknown ids are."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import httpx

from tests.support.daemon import Daemon, run_cli, upstream_args
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import OPENAI_KEY

HEADERS = {"authorization": f"Bearer {OPENAI_KEY}"}
RECORD = "relayed-responses.sqlite3"
GARBAGE = b"this is not a database, whatever its name says " * 40


async def respond(client: httpx.AsyncClient, daemon: Daemon, **fields: object) -> httpx.Response:
    return await client.post(daemon.url + "/v1/responses", json={"model": "gpt-4.1", "input": "hi", **fields},
                             headers=HEADERS)


async def delivered_id(client: httpx.AsyncClient, daemon: Daemon) -> str:
    reply = await respond(client, daemon)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["id"])


async def test_a_record_deleted_while_running_is_reopened_and_logged_and_old_ids_refused(
    tmp_path: Path, fake: FakeUpstream, daemons
) -> None:
    state = tmp_path / "state"
    daemon = daemons("--state-dir", str(state), *upstream_args(fake.url))
    await daemon.wait_ready()
    async with httpx.AsyncClient(timeout=10) as client:
        before = await delivered_id(client, daemon)
        assert (await respond(client, daemon, previous_response_id=before)).status_code == 200
        shutil.rmtree(state)
        after = await delivered_id(client, daemon)  # recorded: the deletion is found here
        assert (await respond(client, daemon, previous_response_id=after)).status_code == 200
        refused = await respond(client, daemon, previous_response_id=before)
    assert refused.status_code == 400 and "stored-content checked" in refused.json()["error"]["message"]
    assert (state / RECORD).is_file()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert await daemon.stop() == 0
    assert daemon.log.count("was deleted or replaced while running") == 1, daemon.log
    assert "ERROR" in daemon.log


async def test_a_damaged_record_at_start_is_moved_aside_and_the_daemon_serves(
    tmp_path: Path, fake: FakeUpstream, daemons
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / RECORD).write_bytes(GARBAGE)
    checked = run_cli("check", "--state-dir", str(state))
    assert checked.returncode == 0, checked.stderr
    assert "damaged" in checked.stderr and "start moves it aside" in checked.stderr
    assert (state / RECORD).read_bytes() == GARBAGE  # check reports; it changes nothing
    daemon = daemons("--state-dir", str(state), *upstream_args(fake.url))
    await daemon.wait_ready()
    async with httpx.AsyncClient(timeout=10) as client:
        first = await delivered_id(client, daemon)
        assert (await respond(client, daemon, previous_response_id=first)).status_code == 200
    assert await daemon.stop() == 0
    aside = list(state.glob(f"{RECORD}.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == GARBAGE  # the evidence is kept
    assert "ERROR" in daemon.log and "file is not a database" in daemon.log and "moved aside" in daemon.log


async def test_a_truncated_record_at_start_is_moved_aside(tmp_path: Path, fake: FakeUpstream, daemons) -> None:
    state = tmp_path / "state"
    daemon = daemons("--state-dir", str(state), *upstream_args(fake.url))
    await daemon.wait_ready()
    async with httpx.AsyncClient(timeout=10) as client:
        await delivered_id(client, daemon)
    assert await daemon.stop() == 0
    record = state / RECORD
    record.write_bytes(record.read_bytes()[:60])  # the header cut short
    restarted = daemons("--state-dir", str(state), *upstream_args(fake.url))
    await restarted.wait_ready()
    async with httpx.AsyncClient(timeout=10) as client:
        first = await delivered_id(client, restarted)
        assert (await respond(client, restarted, previous_response_id=first)).status_code == 200
    assert await restarted.stop() == 0
    assert list(state.glob(f"{RECORD}.damaged-*")) and "moved aside" in restarted.log


async def health_state(daemon: Daemon) -> dict:
    return dict((await daemon.wait_ready())["state"])


async def test_a_damaged_or_missing_placeholder_key_is_replaced_with_a_new_id_and_logged(
    tmp_path: Path, fake: FakeUpstream, daemons
) -> None:
    state = tmp_path / "state"
    key = state / "placeholder.key"
    first = daemons("--state-dir", str(state), *upstream_args(fake.url))
    shown = await health_state(first)
    assert shown["directory"] == str(state) and len(shown["placeholder_key_id"]) == 16
    assert await first.stop() == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    assert "ERROR" not in first.log and key.read_bytes().hex() not in first.log

    again = daemons("--state-dir", str(state), *upstream_args(fake.url))
    assert (await health_state(again))["placeholder_key_id"] == shown["placeholder_key_id"]  # kept
    assert await again.stop() == 0

    key.write_bytes(b"short")
    checked = run_cli("check", "--state-dir", str(state))
    assert checked.returncode == 0 and "placeholder key is damaged" in checked.stderr, checked.stderr
    damaged = daemons("--state-dir", str(state), *upstream_args(fake.url))
    replaced = (await health_state(damaged))["placeholder_key_id"]
    assert replaced != shown["placeholder_key_id"]
    assert await damaged.stop() == 0
    assert "ERROR" in damaged.log and "placeholder key" in damaged.log and "is damaged" in damaged.log
    assert [path.read_bytes() for path in state.glob("placeholder.key.damaged-*")] == [b"short"]

    key.unlink()
    lost = daemons("--state-dir", str(state), *upstream_args(fake.url))
    renewed = (await health_state(lost))["placeholder_key_id"]
    assert renewed not in (replaced, shown["placeholder_key_id"])
    assert await lost.stop() == 0
    assert "ERROR" in lost.log and f"(id {replaced}) is missing" in lost.log


async def test_every_worker_process_moves_to_the_one_new_record(tmp_path: Path, fake: FakeUpstream, daemons) -> None:
    """Two workers: each notices the deletion on its own next access and opens the file the first made, so
    a reply recorded by one is admitted by the other (requests on fresh connections land on either)."""
    state = tmp_path / "state"
    daemon = daemons("--workers", "2", "--state-dir", str(state), *upstream_args(fake.url))
    await daemon.wait_ready()
    fresh = {**HEADERS, "connection": "close"}
    async with httpx.AsyncClient(timeout=10) as client:
        async def turn(**fields: object) -> httpx.Response:
            return await client.post(daemon.url + "/v1/responses", headers=fresh,
                                     json={"model": "gpt-4.1", "input": "hi", **fields})

        for _ in range(4):
            assert (await turn()).status_code == 200  # both workers have the file open
        shutil.rmtree(state)
        for _ in range(12):
            first = await turn()
            assert first.status_code == 200, first.text
            follow_up = await turn(previous_response_id=first.json()["id"])
            assert follow_up.status_code == 200, follow_up.text
    assert await daemon.stop() == 0
    assert 1 <= daemon.log.count("was deleted or replaced while running") <= 2, daemon.log
    assert (state / RECORD).is_file()
