"""Policy worker processes that die, through the real daemon: the pool replaces them in the background
(never inside a request's --policy-timeout, however slow their start), a request that finds none ready
gets a retryable 503 in the provider's shape (at the prompt, and as the stream's error event mid-stream),
/health says how many are ready, and once they are back requests are decided as before."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.support.daemon import REPO, Daemon, daemon_env, upstream_args
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.processes import policy_worker_pids
from tests.support.proxy import OPENAI_KEY
from tests.support.waiting import wait_until

# A replacement's start: longer than --policy-timeout (1 s), as the PII policy's is (2.5-6 s), and long
# enough that the requests below are over before it is ready, however slow the machine.
START_DELAY = 6.0


def slow_start_folder(tmp_path: Path, name: str = "SlowStartHeavyPolicy") -> tuple[Path, Path]:
    """A policy folder with the slow-starting CPU-heavy stub, and the file that slows its start when present."""
    folder = tmp_path / "policies"
    folder.mkdir()
    delay_file = tmp_path / "start-delay"
    (folder / "heavy.toml").write_text(
        f'class = "tests.support.policies:{name}"\nstart_delay_file = {json.dumps(str(delay_file))}\n'
    )
    return folder, delay_file


async def ask(url: str, prompt: str, *, stream: bool = False) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as client:
        return await client.post(
            url + "/v1/chat/completions", headers={"authorization": f"Bearer {OPENAI_KEY}"},
            json={"model": "m", "stream": stream, "messages": [{"role": "user", "content": prompt}]},
        )


async def health(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        body: dict[str, Any] = (await client.get(url + "/health")).json()
        return body


async def metric(url: str, name: str) -> float:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(url + "/metrics")).text
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


def policy_workers(daemon: Daemon) -> list[int]:
    """The daemon's policy worker processes."""
    return sorted(policy_worker_pids(daemon.process.pid))


async def start_daemon(daemons: Callable[..., Daemon], fake: FakeUpstream, folder: Path, processes: int) -> Daemon:
    daemon = daemons(
        *upstream_args(fake.url), "--policy-dir", str(folder), "--policy-processes", str(processes),
        "--policy-timeout", "1", env=daemon_env(PYTHONPATH=str(REPO)),
    )
    await daemon.wait_ready(timeout=120)
    ready = await health(daemon.url)
    assert ready["status"] == "ok" and ready["policy_workers"] == {"ready": processes, "configured": processes}
    return daemon


async def back_to_full_strength(daemon: Daemon, processes: int) -> None:
    """Until /health says every worker is ready again (a cap, not a measure: replacements start in the background)."""
    async def full() -> bool:
        body = await health(daemon.url)
        return body["status"] == "ok" and body["policy_workers"]["ready"] == processes

    await wait_until(full, timeout=90, what="every policy worker ready again in /health")


def kill_workers(daemon: Daemon, expected: int) -> None:
    workers = policy_workers(daemon)
    assert len(workers) == expected, workers
    for pid in workers:
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("name", ["SlowStartHeavyPolicy", "SplittableSlowStartHeavyPolicy"])  # one call; batches
async def test_killed_workers_are_replaced_outside_the_requests_deadline_and_requests_get_503_meanwhile(
    daemons: Callable[..., Daemon], fake: FakeUpstream, tmp_path: Path, name: str
) -> None:
    folder, delay_file = slow_start_folder(tmp_path, name)
    daemon = await start_daemon(daemons, fake, folder, processes=2)
    assert (await ask(daemon.url, "nothing to see")).status_code == 200

    delay_file.write_text(str(START_DELAY))  # from now on a worker takes 6 s to start, the timeout is 1 s
    kill_workers(daemon, 2)

    async def is_degraded() -> dict[str, Any] | None:
        body = await health(daemon.url)
        return body if body["status"] == "degraded" else None

    body = await wait_until(is_degraded, timeout=30, what="/health degraded after the kill")
    assert body["policy_workers"]["configured"] == 2 and body["policy_workers"]["ready"] < 2
    assert await metric(daemon.url, "capsem_proxyd_policy_workers_ready") < 2
    assert await metric(daemon.url, "capsem_proxyd_policy_workers_configured") == 2

    refused = await ask(daemon.url, "something not seen before")  # a prompt the verdict cache cannot answer
    assert refused.status_code == 503, refused.text
    assert refused.headers["x-capsem-decision"] == "block"  # refused unchecked, though no policy decided
    error = refused.json()["error"]
    assert error["code"] == "policy_workers_unavailable"
    assert "worker processes are restarting" in error["message"] and "Heavy" in error["message"]
    assert len(fake.generation_requests) == 1, "nothing reached the provider while it could not be checked"

    await back_to_full_strength(daemon, 2)
    assert await metric(daemon.url, "capsem_proxyd_policy_workers_ready") == 2
    assert (await ask(daemon.url, "nothing to see")).status_code == 200
    blocked = await ask(daemon.url, "heavy_block")
    assert blocked.status_code == 400 and blocked.json()["error"]["code"] == "capsem_blocked"
    assert "replaced" in daemon.log


async def test_a_stream_whose_reply_finds_no_worker_ends_with_the_apis_error_event(
    daemons: Callable[..., Daemon], fake: FakeUpstream, tmp_path: Path
) -> None:
    folder, delay_file = slow_start_folder(tmp_path)
    daemon = await start_daemon(daemons, fake, folder, processes=1)
    fake.script(Reply(text="a reply the policy must read", delay=3.0))
    delay_file.write_text(str(START_DELAY))
    async with trio.open_nursery() as nursery:
        replies: list[httpx.Response] = []

        async def stream() -> None:
            replies.append(await ask(daemon.url, "nothing to see", stream=True))

        nursery.start_soon(stream)
        with trio.fail_after(60):
            await fake.wait_for_requests(1)  # the prompt was checked; the reply comes 3 s later
        kill_workers(daemon, 1)
    (reply,) = replies
    assert reply.status_code == 200  # the stream had started: its end is the error event
    assert "policy_workers_unavailable" in reply.text and "worker processes are restarting" in reply.text
    assert "a reply the policy must read" not in reply.text
    await daemon.wait_for_log("outcome=policy_unavailable")  # not an upstream error: the operator looks here
    await back_to_full_strength(daemon, 1)
    assert (await ask(daemon.url, "nothing to see", stream=True)).status_code == 200
