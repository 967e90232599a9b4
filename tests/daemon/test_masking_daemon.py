"""Masking in the real daemon with two worker processes (issue 23): one placeholder key, one placeholder.

The placeholder key lives in ``--state-dir`` (made once by ``start``'s
preflight, before the workers fork, whatever ``--stored-content`` says), so each worker masks a value with the
same placeholder; ``/health`` names the key by its id.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import upstream_args
from tests.support.fake_upstream import FakeUpstream
from tests.support.masking import MESSAGES, RULES, SECRET
from tests.support.proxy import OPENAI_AUTH


def served_by(log: str) -> set[str]:
    return {line.split("capsem_proxyd.request[")[1].split("]")[0]
            for line in log.splitlines() if "capsem_proxyd.request[" in line and "decision=redact" in line}


# The key is made whatever --stored-content says: with "refuse" each worker once fell back to a random key
# of its own (two placeholders for one value, and MCP session ids that verified in one worker only).
@pytest.mark.parametrize("stored", ["checked", "refuse"])
async def test_every_worker_masks_a_value_with_the_same_placeholder(
    tmp_path: Path, fake: FakeUpstream, daemons, stored: str
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "rules.toml").write_text(RULES)
    daemon = daemons("--workers", "2", "--state-dir", str(tmp_path / "state"), "--policy-dir", str(policies),
                     "--stored-content", stored, *upstream_args(fake.url))
    health = await daemon.wait_ready()
    assert health["masking"] == {"key_id": health["state"]["placeholder_key_id"], "key": "state_dir"}
    for _ in range(200):  # fresh connections until both workers served one (the kernel picks the worker)
        async with httpx.AsyncClient(timeout=10) as client:
            reply = await client.post(daemon.url + "/v1/chat/completions", headers=dict(OPENAI_AUTH),
                                      json={"model": "gpt-4o-mini", "messages": MESSAGES})
        assert reply.status_code == 200 and reply.headers["x-capsem-decision"] == "redact", reply.text
        if len(fake.requests) % 10 == 0 and len(served_by(daemon.log)) == 2:
            break
    assert await daemon.stop() == 0
    assert len(served_by(daemon.log)) == 2, daemon.log
    bodies = [request.body.decode() for request in fake.requests]
    assert not any(SECRET in body or SECRET.replace("/", "\\/") in body for body in bodies)
    placeholders = {found for body in bodies for found in re.findall(r"CAPSEM-MASKED-AWSSECRET-[A-Z2-7]{20}", body)}
    assert len(placeholders) == 1
