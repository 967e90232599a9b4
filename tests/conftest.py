"""Shared fixtures: the fake provider, the real proxy app on a real socket, SDK clients.

The proxy runs in-process (``capsem_proxyd.daemon.server.serve`` under the test's
trio loop, Hypercorn on a loopback port); the official SDKs are synchronous
clients driven from worker threads, exactly as an application would use them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, settings

from capsem_proxyd.config import Settings
from capsem_proxyd.daemon.server import serve
from capsem_proxyd.enforcement.tenants import load_policy_config
from tests.support.fake_upstream import FakeUpstream, run_fake_upstream
from tests.support.key_watch import (  # noqa: F401 - session-wide: no key in anything the daemons wrote
    DAEMON_LOGGERS,
    KeyWatchCounts,
    key_watch,
)
from tests.support.proxy import ALL_TEST_KEYS, Proxy

# A developer's own OpenTelemetry settings (OTEL_EXPORTER_OTLP_ENDPOINT...) would turn trace export on
# in every proxy the tests start, subprocesses included: tests that trace set what they need.
for _name in [name for name in os.environ if name.startswith("OTEL_")]:
    del os.environ[_name]

# Hypothesis profiles, loaded here so every property test (imported after this file) inherits one.
# A per-example deadline measures the machine, not the code: on a loaded 2-core box an example that
# takes 5 ms alone can take 300 ms, so no profile has one; a hang is still caught by the test's own
# trio.fail_after. Derandomized: the same examples every run, so a failure reproduces and CI does not
# flake on a seed; no example database written into the repository.
#   capsem       the default locally: 60 examples per test unless the test asks for more
#   ci           loaded when CI is set: the same, so CI runs exactly what a developer ran
#   capsem-deep  2,000 examples per test, random seeds, for a longer hunt (HYPOTHESIS_PROFILE=capsem-deep)
settings.register_profile(
    "capsem",
    derandomize=True,
    max_examples=60,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
settings.register_profile("ci", settings.get_profile("capsem"))
settings.register_profile("capsem-deep", settings.get_profile("capsem"), derandomize=False, max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "capsem"))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker more than the cores, four at most. Most of a test's time is spent waiting
    (a daemon or a policy worker process starting, a stream paced by the fake provider), and a third
    worker fills those waits on a 2-core machine; beyond four, daemons starting at once only contend."""
    return min(4, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) + 1)


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist) reports the key watch
        config.pluginmanager.register(KeyWatchCounts(), "key-watch-counts")


@pytest.fixture(scope="session", autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The default --state-dir of every proxy the tests start (in-process, subprocesses, `check`) is
    under the run's temporary directory, never the developer's ~/.local/state."""
    path = tmp_path_factory.mktemp("xdg-state")
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(path)
    yield path
    if before is None:
        del os.environ["XDG_STATE_HOME"]
    else:
        os.environ["XDG_STATE_HOME"] = before


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with run_fake_upstream() as upstream:
        yield upstream


@pytest.fixture
def proxy_settings(fake: FakeUpstream, tmp_path: Path) -> Settings:
    return Settings(
        host="127.0.0.1",
        port=0,
        openai_upstream=fake.url + "/v1",
        gemini_upstream=fake.url,
        anthropic_upstream=fake.url,
        # Generous: the fake upstream and the proxy share this test's process, and a loaded 2-core machine
        # once kept a small Gemini request past 5 s (a 504 in test_counts_match_the_requests_made). Tests of
        # the timeouts themselves set their own, shorter ones.
        upstream_timeout=30.0,
        connect_timeout=10.0,
        graceful_timeout=1.0,
        state_dir=str(tmp_path / "state"),  # one per test; a second proxy of the test shares it
        # One policy worker process (the default is one per core): each builds its CPU-heavy policies
        # (PII: seconds of CPU) at start. Tests of the pool's spreading and restarts ask for more.
        policy_processes=1,
    )


@pytest.fixture
async def start_proxy(nursery: trio.Nursery) -> Callable[..., Any]:
    """Start another proxy instance with given settings; returns a Proxy."""

    async def start(settings: Settings, **changes: Any) -> Proxy:
        settings = replace(settings, **changes)
        config = load_policy_config(settings)
        binds = await nursery.start(lambda task_status: serve(settings, config, handle_signals=False, task_status=task_status))
        return Proxy(url=binds[0], settings=settings)

    return start


@pytest.fixture
async def proxy(start_proxy: Callable[..., Any], proxy_settings: Settings) -> Proxy:
    return await start_proxy(proxy_settings)


@pytest.fixture(autouse=True)
def no_key_in_daemon_logs(caplog: pytest.LogCaptureFixture) -> Any:
    """Every test: nothing the daemon logged may contain a test key."""
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        if not record.name.startswith(DAEMON_LOGGERS):
            continue
        text = record.getMessage() + (caplog.handler.formatter.formatException(record.exc_info) if record.exc_info else "")
        for key in ALL_TEST_KEYS:
            assert key not in text, f"API key leaked into log record {record.name}: {text[:200]}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test, so a fixture's teardown can tell that the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def daemons(tmp_path: Any, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """Start real ``capsem-proxyd start`` subprocesses; all are killed after the test.

    When the test failed, each daemon's log ends up in the report ("Captured stdout teardown"): a failure in
    a loaded CI run is often seen once, and pytest keeps only its last three temporary folders. (A plain
    fixture, not a trio one: pytest-trio tears its fixtures down inside the test's call, before its outcome
    is known.)
    """
    from tests.support.daemon import Daemon

    started: list[Daemon] = []

    def start(*args: str, env: dict[str, str] | None = None, port: int | None = None, command: str = "start") -> Daemon:
        daemon = Daemon(list(args), tmp_path / f"daemon{len(started)}.log", env=env, port=port, command=command)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()
    failed = getattr(request.node, "report_call", None)
    if failed is not None and failed.failed:
        for daemon in started:
            lines = daemon.log_path.read_text(errors="replace").splitlines()
            print(f"--- {daemon.log_path.name}, its last {min(len(lines), 80)} of {len(lines)} lines ---")
            print("\n".join(lines[-80:]))
