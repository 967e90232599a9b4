"""The composition root: an instance built from real settings, served on a real socket, then closed.

What it must own is checked by what the outside world sees: the fake
provider counts the proxy's upstream connections, the process's file
descriptors show the store's file, a stream a client reads ends with the
shutdown event.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from capsem_proxyd import __version__
from capsem_proxyd._compat.hypercorn import serve_hypercorn
from capsem_proxyd.config import Settings
from capsem_proxyd.daemon.instance import Instance, app_for, open_instance
from capsem_proxyd.daemon.server import bind_sockets, hypercorn_config, reload
from capsem_proxyd.enforcement.tenants import TenantPolicies, load_policy_config
from capsem_proxyd.observe.audit import AuditLog
from capsem_proxyd.proxy.response_store import ResponseStore
from capsem_proxyd.proxy.upstream import Upstream
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.metrics import Scrape, requests_total
from tests.support.proxy import OPENAI_KEY

HEADERS = {"authorization": f"Bearer {OPENAI_KEY}"}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
BLOCKED = {"model": "m", "messages": [{"role": "user", "content": "capsem_block"}]}


@asynccontextmanager
async def served(instance: Instance) -> AsyncIterator[str]:
    """``instance``'s app on a loopback port until the block ends (then a graceful stop)."""
    shutdown = trio.Event()
    settings = instance.settings
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(serve_hypercorn, app_for(instance), hypercorn_config(settings), bind_sockets(settings), shutdown)
        )
        try:
            yield binds[0]
        finally:
            shutdown.set()


def policy_folder(tmp_path: Path, enabled: bool) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir(exist_ok=True)
    (folder / "debug.toml").write_text(f"enabled = {'true' if enabled else 'false'}\n")
    (folder / "secrets.toml").write_text("enabled = false\n")  # on by default: these tests turn Debug off
    return folder


def files_open_at(path: Path) -> int:
    """How many of this process's file descriptors point at ``path`` (or its SQLite companions)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += target.startswith(str(path))
    return count


async def test_health_and_metrics_describe_the_instance(proxy_settings: Settings, fake: FakeUpstream) -> None:
    async with open_instance(proxy_settings, load_policy_config(proxy_settings)) as instance:
        health = instance.health()
        assert health == {
            "status": "ok",
            "version": __version__,
            "providers": {"openai": fake.url + "/v1", "gemini": fake.url, "anthropic": fake.url},
            "policies": ["Secrets", "Debug"],  # masking policies are asked, and listed, first
            # No placeholder key: start's preflight makes it, and this instance never went through one.
            "state": {"directory": proxy_settings.state_dir, "placeholder_key_id": None},
            # so masking (issue 23) uses a key of this process's own, named by its id
            "masking": {"key_id": instance.pipeline.masker.key_id, "key": "process"},
            "reply_memory": {"capacity": proxy_settings.reply_memory, "held": 0, "waiting": 0},
            "reload": None,  # no reload since start
        }
        async with served(instance) as url, httpx.AsyncClient() as client:
            assert (await client.post(url + "/v1/chat/completions", json=CHAT, headers=HEADERS)).status_code == 200
            assert (await client.get(url + "/health")).json() == health
            served_metrics = await client.get(url + "/metrics")
        body, content_type = instance.render_metrics()
        assert served_metrics.headers["content-type"] == content_type and content_type.startswith("text/plain")
        assert requests_total(Scrape(body.decode()), "200") == requests_total(Scrape(served_metrics.text), "200") == 1


async def test_closing_the_instance_closes_its_upstream_connections_and_its_store(
    proxy_settings: Settings, fake: FakeUpstream
) -> None:
    async with open_instance(proxy_settings, load_policy_config(proxy_settings)) as instance:
        async with served(instance) as url, httpx.AsyncClient() as client:
            assert (await client.post(url + "/v1/chat/completions", json=CHAT, headers=HEADERS)).status_code == 200
        await instance.stored.store.record("tenant", "resp_1")  # the store opens its file on first use
        store_file = instance.stored.store.path
        # The server has stopped; the instance still holds what it built.
        assert fake.open_connections == 1  # the pooled keep-alive connection to the provider
        assert files_open_at(store_file) >= 1
    with trio.fail_after(10):
        await fake.wait_for_open_connections(0)
    assert files_open_at(store_file) == 0


def recording(monkeypatch: pytest.MonkeyPatch, closed: list[str]) -> None:
    """Note each part's close (then run the real one): the store, the upstream, the span export, the audit log."""

    def note(owner: type, method: str, name: str) -> None:
        real = getattr(owner, method)
        if method == "close":
            def close(self: Any) -> None:
                closed.append(name)
                real(self)
            monkeypatch.setattr(owner, method, close)
            return

        async def aclose(self: Any) -> None:
            closed.append(name)
            await real(self)

        monkeypatch.setattr(owner, method, aclose)

    from capsem_proxyd.observe.otel import SpanRecorder

    note(TenantPolicies, "aclose", "policies")
    note(ResponseStore, "aclose", "store")
    note(Upstream, "aclose", "upstream")
    note(SpanRecorder, "aclose", "spans")
    note(AuditLog, "close", "audit")


@pytest.mark.parametrize("ending", ["returns", "is cancelled"])
async def test_parts_close_in_the_reverse_order_of_building_even_when_cancelled(
    ending: str, proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []
    recording(monkeypatch, closed)
    # Spans to a collector nobody runs: nothing is queued, so the flush has nothing to send.
    settings = replace(proxy_settings, audit_log=str(tmp_path / "audit.log"), otlp_endpoint="http://127.0.0.1:9")
    with trio.CancelScope() as scope:
        async with open_instance(settings, load_policy_config(settings)) as instance:
            assert instance.spans is not None and instance.audit is not None
            if ending == "is cancelled":
                scope.cancel()
                await trio.sleep_forever()
    assert closed == ["policies", "store", "upstream", "spans", "audit"]


async def test_end_streams_ends_an_open_stream_with_the_shutdown_event(
    proxy_settings: Settings, fake: FakeUpstream
) -> None:
    fake.script(Reply(text="a long and steady answer ", repeat_events=2000, chunk_delay=0.02))  # ~40 s unless cut
    body = {**CHAT, "stream": True}
    async with open_instance(proxy_settings, load_policy_config(proxy_settings)) as instance:
        async with served(instance) as url, httpx.AsyncClient(timeout=30) as client:
            with trio.fail_after(30):
                async with client.stream("POST", url + "/v1/chat/completions", json=body, headers=HEADERS) as reply:
                    raw = b""
                    async for chunk in reply.aiter_bytes():
                        if b"data: " not in raw and b"data: " in raw + chunk:  # the stream is under way
                            instance.end_streams()
                        raw += chunk
    assert b"server_shutting_down" in raw
    assert b"[DONE]" not in raw  # cut, not completed


async def test_install_swaps_policies_for_new_requests_and_keeps_restart_only_settings(
    proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = replace(proxy_settings, policy_dir=str(policy_folder(tmp_path, enabled=True)))
    async with open_instance(settings, load_policy_config(settings)) as instance:
        before = instance.policies
        async with served(instance) as url, httpx.AsyncClient() as client:
            assert (await client.post(url + "/v1/chat/completions", json=BLOCKED, headers=HEADERS)).status_code == 400
            policy_folder(tmp_path, enabled=False)
            changed = replace(settings, port=1, stored_content="refuse")
            with caplog.at_level(logging.WARNING):
                await instance.install(load_policy_config(changed), changed)
            assert (await client.post(url + "/v1/chat/completions", json=BLOCKED, headers=HEADERS)).status_code == 200
        assert instance.policies is not before and instance.pipeline.current_policies() is instance.policies
        assert instance.health()["policies"] == []
        assert instance.settings.port == settings.port  # restart only: as started
        assert instance.settings.stored_content == instance.stored.mode == "refuse"  # reloadable: applied
        assert "setting port changed; it takes effect only after a restart" in caplog.text


async def test_reload_installs_a_good_configuration_and_keeps_the_running_one_on_a_broken_one(
    proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path
) -> None:
    settings = replace(proxy_settings, policy_dir=str(policy_folder(tmp_path, enabled=True)))
    loader: Callable[[], Settings] = lambda: settings  # noqa: E731 - the command line, resolved again
    async with open_instance(settings, load_policy_config(settings)) as instance:
        policy_folder(tmp_path, enabled=False)
        assert await reload(instance, loader) is True
        assert instance.health()["policies"] == []
        running = instance.policies
        (tmp_path / "policies" / "broken.toml").write_text("this is = = not toml\n")
        assert await reload(instance, loader) is False
        assert instance.policies is running

