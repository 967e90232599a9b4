"""A policy of one's own, written as a user would: ``policy new``, then ``--policy-path`` (issue 24, item 7).

The README gave only ``class = "package.module:ClassName"``: the module was
not importable until PYTHONPATH was set, and the hook signatures had to be
read from capsem's source. The skeleton is loaded exactly as written, in the
proxy's process and, once it says ``cpu_heavy = True``, in the policy worker
processes, which are spawned afresh and must find the folder too.
"""

from __future__ import annotations

import os
from pathlib import Path

import openai
import pytest

from capsem_proxyd.daemon.skeleton import EXAMPLE_WORD
from tests.support.daemon import assert_startup_error, daemon_env, run_cli, upstream_args
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import OPENAI_KEY, in_thread


def write_policy(folder: Path, name: str = "acme_guard") -> Path:
    result = run_cli("policy", "new", name, "--dir", str(folder))
    assert result.returncode == 0, result.stderr
    assert f"--policy-path {folder}" in result.stdout
    return folder / f"{name}.py"


def ask(url: str, prompt: str) -> str:
    with openai.OpenAI(base_url=url + "/v1", api_key=OPENAI_KEY, max_retries=0, timeout=20) as client:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}])
    return reply.choices[0].message.content or ""


async def blocked_by(url: str, prompt: str) -> str:
    with pytest.raises(openai.BadRequestError) as caught:
        await in_thread(lambda: ask(url, prompt))
    return str(caught.value)


def test_the_skeleton_loads_only_with_its_folder_on_the_policy_path(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    write_policy(folder)
    assert_startup_error(run_cli("check", "--policy-dir", str(folder)), "acme_guard.toml", "cannot load policy class")
    listed = run_cli("policies", "--policy-dir", str(folder), "--policy-path", str(folder))
    assert listed.returncode == 0, listed.stderr
    assert "hooks: on_model_call, on_tool_call, on_tool_response, on_model_response" in listed.stdout
    assert_startup_error(run_cli("check", "--policy-path", str(tmp_path / "missing")), "--policy-path", "missing")


def test_policy_new_refuses_to_overwrite_and_bad_names(tmp_path: Path) -> None:
    write_policy(tmp_path)
    assert_startup_error(run_cli("policy", "new", "acme_guard", "--dir", str(tmp_path)), "exists", "--force")
    assert_startup_error(run_cli("policy", "new", "acme-guard", "--dir", str(tmp_path)), "module")


async def test_the_skeleton_blocks_in_the_proxys_process(tmp_path: Path, fake: FakeUpstream, daemons) -> None:
    folder = tmp_path / "policies"
    write_policy(folder)
    daemon = daemons("--policy-dir", str(folder), "--policy-path", str(folder), *upstream_args(fake.url))
    health = await daemon.wait_ready()
    assert health["policies"] == ["Secrets", "acme_guard"] and "policy_workers" not in health
    assert await in_thread(lambda: ask(daemon.url, "hello")) != ""
    message = await blocked_by(daemon.url, f"please say {EXAMPLE_WORD.upper()} twice")
    assert "acme_guard" in message and EXAMPLE_WORD in message
    assert len(fake.requests) == 1  # the blocked request never reached the provider
    assert await daemon.stop() == 0


async def test_the_skeleton_blocks_as_a_cpu_heavy_policy_in_worker_processes(
    tmp_path: Path, fake: FakeUpstream, daemons
) -> None:
    folder = tmp_path / "policies"
    module = write_policy(folder)
    module.write_text(module.read_text().replace("# cpu_heavy = True", "cpu_heavy = True"))
    # The folder given by environment (os.pathsep-separated, as PYTHONPATH), beside another one.
    env = daemon_env(CAPSEM_PROXYD_POLICY_PATH=os.pathsep.join([str(tmp_path), str(folder)]))
    assert "PYTHONPATH" not in env or str(folder) not in env["PYTHONPATH"]
    daemon = daemons("--policy-dir", str(folder), "--policy-processes", "1", *upstream_args(fake.url), env=env)
    health = await daemon.wait_ready(timeout=60)
    assert health["policies"] == ["Secrets", "acme_guard"]
    assert health["policy_workers"] == {"ready": 1, "configured": 1}  # it runs in a worker, not in the proxy
    message = await blocked_by(daemon.url, f"{EXAMPLE_WORD}")
    assert "acme_guard" in message
    assert await in_thread(lambda: ask(daemon.url, "hello")) != ""
    assert await daemon.stop() == 0
