"""A policy of the proxy's process that blocks the thread (``time.sleep``, a synchronous client), through
the real daemon: no cancellation can reach it, so its late ALLOW must still count as the timeout it is,
whether the hook never awaits or awaits a helper that blocks; and the operator is told, once, which
policy kept the event loop and where it belongs (the worker processes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import REPO, Daemon, daemon_env, upstream_args
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import OPENAI_KEY


async def ask(url: str, prompt: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(url + "/v1/chat/completions", headers={"authorization": f"Bearer {OPENAI_KEY}"},
                                 json={"model": "m", "messages": [{"role": "user", "content": prompt}]})


@pytest.mark.parametrize(("name", "policy"), [("BlockingPolicy", "Blocking"), ("AwaitsBlockingPolicy", "AwaitsBlocking")])
async def test_a_decision_that_comes_after_the_policy_timeout_is_a_timeout(
    daemons: Callable[..., Daemon], fake: FakeUpstream, tmp_path: Path, name: str, policy: str
) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "blocking.toml").write_text(f'class = "tests.support.policies:{name}"\nseconds = 1.0\n')
    daemon = daemons(*upstream_args(fake.url), "--policy-dir", str(folder), "--policy-timeout", "0.5",
                     env=daemon_env(PYTHONPATH=str(REPO)))
    await daemon.wait_ready(timeout=60)
    assert (await ask(daemon.url, "nothing to see")).status_code == 200

    late = await ask(daemon.url, "block_loop")  # the policy allows, after 1 s; the deadline was 0.5 s
    assert late.status_code == 400, late.text
    error = late.json()["error"]
    assert error["code"] == "capsem_blocked"
    assert error["capsem"]["policy"] == policy and "policy timed out after 0.5s" in error["capsem"]["details"]
    assert len(fake.generation_requests) == 1, "the late ALLOW let nothing through"

    await daemon.wait_for_log(f"policy {policy} kept the event loop for")
    warning = next(line for line in daemon.log.splitlines() if f"policy {policy} kept the event loop" in line)
    assert "WARNING" in warning and "on_model_call" in warning and "cpu_heavy = True" in warning
    assert (await ask(daemon.url, "block_loop")).status_code == 400
    assert daemon.log.count("kept the event loop") == 1, "named once, not once per request"


async def test_pieces_that_together_take_longer_than_the_policy_timeout_are_a_timeout(
    daemons: Callable[..., Daemon], fake: FakeUpstream, tmp_path: Path
) -> None:
    """Asked about a conversation piece by piece, each answer in time, the last one past the deadline of the
    whole view: a timeout, as the same policy asked about the whole would be."""
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "blocking.toml").write_text('class = "tests.support.policies:SplittableBlockingPolicy"\nseconds = 0.3\n')
    daemon = daemons(*upstream_args(fake.url), "--policy-dir", str(folder), "--policy-timeout", "0.5",
                     env=daemon_env(PYTHONPATH=str(REPO)))
    await daemon.wait_ready(timeout=60)
    # messages of an agent's length: a piece each (short texts would be one piece, ``pieces.grouped``)
    turns = [{"role": "user", "content": f"block_loop, turn {number}: " + "read the next file and say what changed. " * 2}
             for number in range(3)]
    async with httpx.AsyncClient(timeout=30) as client:
        late = await client.post(daemon.url + "/v1/chat/completions", headers={"authorization": f"Bearer {OPENAI_KEY}"},
                                 json={"model": "m", "messages": turns})
    assert late.status_code == 400, late.text
    assert "policy timed out after 0.5s" in late.json()["error"]["capsem"]["details"]
    assert not fake.generation_requests
