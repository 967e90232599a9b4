"""CPU-heavy policies in worker processes, through a real proxy: they decide elsewhere, fail closed when
a worker dies or stalls, and the proxy's own process never loads what they need."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from capsem_proxyd.config import Settings
from capsem_proxyd.enforcement.loader import CPU_HEAVY_KNOWN
from capsem_proxyd.policies.pii import OfflinePIIPolicy
from tests.support.processes import policy_worker_pids
from tests.support.proxy import OPENAI_KEY
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def heavy_folder(tmp_path: Path, extra: str = "", name: str = "HeavyPolicy") -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "heavy.toml").write_text(f'class = "tests.support.policies:{name}"\n{extra}')
    return folder


async def ask(url: str, prompt: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(url + "/v1/chat/completions", headers={"authorization": f"Bearer {OPENAI_KEY}"},
                                 json={"model": "m", "messages": [{"role": "user", "content": prompt}]})


async def _all_ready(url: str, count: int) -> bool:
    async with httpx.AsyncClient(timeout=10) as client:
        body = (await client.get(url + "/health")).json()
    return bool(body["status"] == "ok" and body["policy_workers"] == {"ready": count, "configured": count})


def details(response: httpx.Response) -> str:
    return str(response.json()["error"]["capsem"]["details"])


@pytest.mark.parametrize("name", ["HeavyPolicy", "SplittableHeavyPolicy"])  # one call; batches of pieces
async def test_a_cpu_heavy_policy_decides_in_a_worker_and_a_dead_or_stalled_worker_fails_closed(
    start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path, name: str
) -> None:
    proxy = await start_proxy(proxy_settings, policy_dir=str(heavy_folder(tmp_path, name=name)), policy_timeout=3.0,
                              policy_processes=2)
    whoami = await ask(proxy.url, "whoami")
    assert whoami.status_code == 400
    assert details(whoami).startswith("decided in pid ") and details(whoami) != f"decided in pid {os.getpid()}"
    assert (await ask(proxy.url, "nothing to see")).status_code == 200
    assert (await ask(proxy.url, "heavy_block")).status_code == 400

    crashed = await ask(proxy.url, "crash_worker")
    assert crashed.status_code == 400
    assert "policy raised" in details(crashed) and "fail closed" in details(crashed)
    stalled = await ask(proxy.url, "stall_worker")
    assert stalled.status_code == 400
    assert "timed out after 3.0s" in details(stalled)
    # The pool replaces what it lost, in the background (/health says when): then requests are decided as before.
    await wait_until(lambda: _all_ready(proxy.url, 2), timeout=60, what="both policy workers ready again")
    assert (await ask(proxy.url, "nothing to see")).status_code == 200
    assert (await ask(proxy.url, "heavy_block")).status_code == 400


async def test_processes_false_keeps_the_policy_in_the_proxys_process(
    start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path
) -> None:
    proxy = await start_proxy(proxy_settings, policy_dir=str(heavy_folder(tmp_path, "processes = false\n")))
    whoami = await ask(proxy.url, "whoami")
    assert details(whoami) == f"decided in pid {os.getpid()}"


async def test_a_pool_that_cannot_start_falls_back_to_the_proxys_process(
    start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    import trio_parallel

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise OSError("spawning refused here")

    monkeypatch.setattr(trio_parallel, "open_worker_context", refused)  # the library's, not the proxy's
    proxy = await start_proxy(proxy_settings, policy_dir=str(heavy_folder(tmp_path)))
    assert details(await ask(proxy.url, "whoami")) == f"decided in pid {os.getpid()}"
    assert (await ask(proxy.url, "heavy_block")).status_code == 400
    assert any(record.levelno == logging.WARNING and "could not start" in record.getMessage()
               for record in caplog.records)


def test_the_proxys_process_never_imports_presidio_when_pii_runs_in_workers(tmp_path: Path) -> None:
    (tmp_path / "pii.toml").write_text('ner = false\n[entity_decisions]\nEMAIL_ADDRESS = "BLOCK"\n')
    script = (
        "import sys\n"
        "from capsem_proxyd.config import Settings\n"
        "from capsem_proxyd.enforcement.tenants import load_policy_config\n"
        f"config = load_policy_config(Settings(policy_dir={str(tmp_path)!r}))\n"
        "print(config.main.names, sorted(m for m in ('presidio_analyzer', 'spacy') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "['PIIDetection', 'Secrets'] []"  # Secrets: on by default, no presidio either


def test_the_known_cpu_heavy_policies_declare_it() -> None:
    assert {"capsem_proxyd.policies.pii:OfflinePIIPolicy"} == CPU_HEAVY_KNOWN
    assert OfflinePIIPolicy.cpu_heavy is True and OfflinePIIPolicy.splittable is True


async def test_closing_the_instance_ends_its_policy_worker_processes(proxy_settings: Settings, tmp_path: Path) -> None:
    """The instance owns the worker processes of the policies in use: when it closes, they are gone."""
    from dataclasses import replace

    from capsem_proxyd.daemon.instance import open_instance
    from capsem_proxyd.enforcement.tenants import load_policy_config

    settings = replace(proxy_settings, policy_dir=str(heavy_folder(tmp_path)), policy_processes=1)
    before = policy_worker_pids(os.getpid())
    async with open_instance(settings, load_policy_config(settings)) as instance:
        assert instance.policies.pool is not None
        workers = policy_worker_pids(os.getpid()) - before
        assert workers, "the worker process started with the instance"
    assert not workers & policy_worker_pids(os.getpid()), "a policy worker outlived the instance that owned it"
