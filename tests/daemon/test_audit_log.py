"""The audit log under a full disk, and what ``audit verify`` sees, run through the real daemon.

The fault is a real one: the daemon's file-size limit (RLIMIT_FSIZE, set on the running process with
``prlimit``) makes its next audit write stop part-way and fail with EFBIG, as a full disk stops one with
ENOSPC; raising the limit again is space coming back. Python ignores SIGXFSZ, so the write fails instead
of killing the process. The limit sits above every other file the daemon writes (its log goes to a file
in this test too), because the audit log is first filled past them.
"""

from __future__ import annotations

import json
import os
import resource
import signal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
from google.genai import errors as genai_errors

from capsem_proxyd.config import DEFAULTS
from capsem_proxyd.observe.audit import AuditLog
from capsem_proxyd.observe.audit_head import head_path
from tests.support.daemon import assert_startup_error, run_cli, upstream_args, wait_for_log
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import OPENAI_KEY, Proxy, in_thread
from tests.support.sdk import PROVIDERS, message_of, sdk_call, sdk_error, status_of
from tests.support.waiting import wait_until

HEADERS = {"authorization": f"Bearer {OPENAI_KEY}"}
CLEAN = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
# Bigger than the daemon's own log file will grow in a test, so that only audit writes hit the limit.
FILLED = 256 * 1024
SDK_503 = {"openai": openai.InternalServerError, "anthropic": anthropic.InternalServerError,
           "gemini": genai_errors.ServerError}


def filled_log(path: Path, state: Path) -> None:
    """An audit log of FILLED bytes, written as the proxy writes it (chained, its head under ``state``)."""
    audit = AuditLog(str(path), head=head_path(state, path))
    while path.stat().st_size < FILLED:
        audit.write({"type": "note", "pad": "x" * 1000})
    audit.close()


def limit_file_size(pid: int, limit: int) -> None:
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


async def health(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.get(url + "/health")).json()


async def post(url: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url + "/v1/chat/completions", json=body, headers=HEADERS)


async def test_a_full_audit_disk_refuses_every_request_with_503_until_space_returns(
    tmp_path: Path, fake: FakeUpstream, daemons
) -> None:
    audit, state = tmp_path / "audit.jsonl", tmp_path / "state"
    filled_log(audit, state)
    daemon = daemons("--audit-log", str(audit), "--state-dir", str(state), *upstream_args(fake.url))
    await daemon.wait_ready()
    limit_file_size(daemon.process.pid, audit.stat().st_size + 100)  # the next decision is cut after 100 bytes

    proxy = Proxy(daemon.url, DEFAULTS)
    for provider in PROVIDERS:
        error = await sdk_error(provider, proxy)
        assert isinstance(error, SDK_503[provider]) and status_of(error) == 503, (provider, error)
        assert "audit log" in message_of(error)
    assert fake.requests == []  # nothing reached the provider unrecorded
    body = await health(daemon.url)
    assert body["status"] == "degraded" and body["audit"]["writable"] is False and body["audit"]["since"]
    async with httpx.AsyncClient() as client:
        assert "capsem_proxyd_audit_log_writable 0.0" in (await client.get(daemon.url + "/metrics")).text
    assert daemon.log.count("cannot be written") == 1 and "Traceback" not in daemon.log  # alarmed once

    limit_file_size(daemon.process.pid, resource.RLIM_INFINITY)  # space is back
    recovered = await health(daemon.url)  # a probe retries the log: it recovers by itself
    assert recovered["status"] == "ok" and recovered["audit"]["writable"] is True
    assert await in_thread(lambda: sdk_call("openai", proxy)) and len(fake.requests) == 1
    await wait_for_log(daemon, "writable again")
    assert await daemon.stop() == 0

    lines = audit.read_bytes().splitlines()
    fences = [json.loads(line) for line in lines if b'"gap"' in line]
    assert len(fences) == 1 and fences[0]["after_failure"]["lost"] >= 3  # the partial decision, fenced
    verified = run_cli("audit", "verify", "--state-dir", str(state), str(audit))
    assert verified.returncode == 0, verified.stderr
    assert "matches the chain head" in verified.stdout


async def test_audit_failure_allow_keeps_serving_unrecorded_and_says_so(
    tmp_path: Path, fake: FakeUpstream, daemons
) -> None:
    audit, state = tmp_path / "audit.jsonl", tmp_path / "state"
    filled_log(audit, state)
    daemon = daemons("--audit-log", str(audit), "--state-dir", str(state), "--audit-failure", "allow",
                     *upstream_args(fake.url))
    await daemon.wait_ready()
    limit_file_size(daemon.process.pid, audit.stat().st_size + 100)
    assert (await post(daemon.url, CLEAN)).status_code == 200
    assert (await post(daemon.url, CLEAN)).status_code == 200
    assert len(fake.requests) == 2
    body = await health(daemon.url)
    assert body["status"] == "degraded" and body["audit"] == {
        "writable": False, "since": body["audit"]["since"], "lost": body["audit"]["lost"], "failure": "allow"}
    assert daemon.log.count("cannot be written") == 1 and "served unrecorded" in daemon.log
    assert "Traceback" not in daemon.log


async def rotated_log(tmp_path: Path, fake: FakeUpstream, daemons) -> tuple[Path, Path]:
    """Three files of one log, rotated as logrotate does (rename, then SIGHUP): audit.jsonl.2, .1 and the
    current one, five requests each (a chain of eleven lines per file)."""
    audit, state = tmp_path / "audit.jsonl", tmp_path / "state"
    daemon = daemons("--audit-log", str(audit), "--state-dir", str(state), *upstream_args(fake.url))
    await daemon.wait_ready()
    for rotation in (2, 1, 0):
        for _ in range(5):
            assert (await post(daemon.url, CLEAN)).status_code == 200
        if rotation:
            audit.rename(f"{audit}.{rotation}")
            daemon.process.send_signal(signal.SIGHUP)
            await wait_until(lambda: audit.exists(), timeout=15, what="the reopened audit log")
    assert await daemon.stop() == 0
    return audit, state


def verify(state: Path, *paths: Path) -> Any:
    return run_cli("audit", "verify", "--state-dir", str(state), *map(str, paths))


async def test_verify_follows_rotated_files_and_finds_a_deleted_one(tmp_path: Path, fake: FakeUpstream, daemons) -> None:
    audit, state = await rotated_log(tmp_path, fake, daemons)
    older, old = Path(f"{audit}.2"), Path(f"{audit}.1")
    together = verify(state, older, old, audit)
    assert together.returncode == 0, together.stderr
    assert "matches the chain head" in together.stdout
    gap = verify(state, older, audit)  # audit.jsonl.1 deleted
    assert gap.returncode == 1 and "line 1:" in gap.stderr and "a file between them is missing" in gap.stderr
    assert verify(state, old, older, audit).returncode == 1  # out of order


async def test_verify_reports_an_edited_line_at_its_own_number_and_an_edited_last_line(
    tmp_path: Path, fake: FakeUpstream, daemons
) -> None:
    audit, state = await rotated_log(tmp_path, fake, daemons)
    original = audit.read_bytes()
    lines = original.splitlines(keepends=True)
    assert len(lines) >= 11
    lines[7] = lines[7].replace(b'"status":200', b'"status":201').replace(b'"verdict":"ALLOW"', b'"verdict":"LOG"')
    assert lines[7] != original.splitlines(keepends=True)[7]
    audit.write_bytes(b"".join(lines))
    edited = verify(state, audit)
    assert edited.returncode == 1 and "line 8: line edited" in edited.stderr, edited.stderr

    lines = original.splitlines(keepends=True)
    lines[-1] = lines[-1].replace(b'"status":200', b'"status":403')  # the last line: no later line vouches for it
    audit.write_bytes(b"".join(lines))
    last = verify(state, audit)
    assert last.returncode == 1 and f"line {len(lines)}: line edited" in last.stderr, last.stderr

    audit.write_bytes(b"".join(lines[:-1]))  # the last line removed
    cut = verify(state, audit)
    assert cut.returncode == 1 and f"line {len(lines) - 1}:" in cut.stderr and "removed" in cut.stderr

    audit.write_bytes(original)
    assert verify(state, audit).returncode == 0
    os.remove(head_path(state, audit))
    unanchored = verify(state, audit)
    assert unanchored.returncode == 0 and "no chain head" in unanchored.stdout


def test_check_refuses_an_audit_log_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_cli("check", "--audit-log", str(blocker / "audit.jsonl"), "--state-dir", str(tmp_path / "state"))
    assert_startup_error(result, "--audit-log", "audit.jsonl")
    result = run_cli("check", "--audit-log", str(tmp_path / "audit.jsonl"), "--state-dir", str(blocker / "state"),
                     "--stored-content", "allow")
    assert_startup_error(result, "--audit-log", "chain head")


async def test_moving_the_full_log_away_recovers_on_sighup_and_both_files_verify(
    tmp_path: Path, fake: FakeUpstream, daemons
) -> None:
    audit, state = tmp_path / "audit.jsonl", tmp_path / "state"
    filled_log(audit, state)
    daemon = daemons("--audit-log", str(audit), "--state-dir", str(state), *upstream_args(fake.url))
    await daemon.wait_ready()
    limit_file_size(daemon.process.pid, audit.stat().st_size + 100)
    refused = await post(daemon.url, CLEAN)
    assert refused.status_code == 503 and fake.requests == []
    assert refused.headers["x-capsem-decision"] == "block"  # refused, though every policy allowed it
    moved = Path(f"{audit}.1")
    audit.rename(moved)  # the operator makes room: logrotate's rename, then SIGHUP
    daemon.process.send_signal(signal.SIGHUP)
    await wait_for_log(daemon, "writable again")
    assert (await health(daemon.url))["status"] == "ok"
    assert (await post(daemon.url, CLEAN)).status_code == 200 and len(fake.requests) == 1
    assert await daemon.stop() == 0
    assert not moved.read_bytes().endswith(b"\n")  # the cut line is left where the disk was full...
    assert run_cli("audit", "verify", "--state-dir", str(state), str(moved)).returncode == 1
    together = run_cli("audit", "verify", "--state-dir", str(state), str(moved), str(audit))
    assert together.returncode == 0, together.stderr  # ...and recorded by the first line of the next file


async def test_a_disk_that_fills_mid_stream_ends_the_stream_with_the_apis_error_event(
    tmp_path: Path, fake: FakeUpstream, daemons
) -> None:
    """The stream began while the log could be written; its final decision cannot be: the client gets the
    API's error event instead of the stream's normal end, and the partial record is fenced once space returns."""
    audit, state = tmp_path / "audit.jsonl", tmp_path / "state"
    filled_log(audit, state)
    fake.script(Reply(chunks=[f"word{index} " for index in range(12)], chunk_delay=0.05))
    daemon = daemons("--audit-log", str(audit), "--state-dir", str(state), *upstream_args(fake.url))
    await daemon.wait_ready()
    lines: list[str] = []
    async with httpx.AsyncClient(timeout=30) as client:
        async with client.stream("POST", daemon.url + "/v1/chat/completions", json={**CLEAN, "stream": True},
                                 headers=HEADERS) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data:") and not lines:
                    limit_file_size(daemon.process.pid, audit.stat().st_size + 100)  # full from the next write on
                if line.startswith("data:"):
                    lines.append(line)
    assert lines[-1] != "data: [DONE]", lines[-3:]
    ending = json.loads(lines[-1].removeprefix("data:"))
    assert ending["error"]["code"] == "audit_log_unavailable", ending
    assert "Traceback" not in daemon.log and "outcome=audit_unavailable" in daemon.log
    limit_file_size(daemon.process.pid, resource.RLIM_INFINITY)
    assert (await health(daemon.url))["audit"]["writable"] is True
    assert await daemon.stop() == 0
    verified = run_cli("audit", "verify", "--state-dir", str(state), str(audit))
    assert verified.returncode == 0, verified.stderr
