"""GET /metrics: the counts match the requests made, in one process and across worker processes.

Scrapes are parsed with prometheus_client's own parser, so a malformed
exposition fails here the way it would fail in Prometheus.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import openai
import pytest

from capsem_proxyd.observe.metrics import MULTIPROC_ENV, Metrics, mark_worker_dead
from tests.support.daemon import Daemon, daemon_env
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.metrics import CHAT, requests_total, scrape
from tests.support.proxy import ALL_TEST_KEYS, GEMINI_AUTH, OPENAI_AUTH, Proxy, in_thread
from tests.support.waiting import wait_until as poll_until

# Seconds a daemon may take to start: generous, since CI hosts are often busy (it takes ~3 s idle).
STARTUP_TIMEOUT = 60
USER = [{"role": "user", "content": "a private prompt about the weather"}]


async def post_chat(url: str, content: str = "hello", **extra: object) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(
            url + "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra},
            headers=OPENAI_AUTH,
        )


def stream_chat(proxy: Proxy) -> tuple[str, BaseException | None]:
    text: list[str] = []
    try:
        stream = proxy.openai().chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
        for chunk in stream:
            text.extend(choice.delta.content or "" for choice in chunk.choices)
    except openai.APIError as error:
        return "".join(text), error
    return "".join(text), None


async def first_bytes(response: httpx.Response) -> AsyncIterator[bytes]:
    """Wait for a stream's first bytes; hold on to the iterator: dropping it would close the stream."""
    chunks = response.aiter_bytes()
    await chunks.__anext__()
    return chunks


async def active_streams(url: str) -> float:
    return (await scrape(url))("capsem_proxyd_active_streams")


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    """Bounded polling on the metric itself (the cap stops a broken build hanging; it measures nothing)."""
    await poll_until(condition, timeout=timeout)


# -- one process ---------------------------------------------------------------


async def test_gemini_streams_are_labelled_apart_from_generate_content(
    proxy: Proxy, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """One dialect reads both actions; the log line and the metrics still say which one was called."""
    gemini = proxy.gemini()
    await in_thread(lambda: gemini.models.generate_content(model="gemini-2.5-flash", contents="hi"))
    await in_thread(lambda: list(gemini.models.generate_content_stream(model="gemini-2.5-flash", contents="hi")))
    metrics = await scrape(proxy.url)
    for endpoint in ("generateContent", "streamGenerateContent"):
        assert requests_total(metrics, "200", provider="gemini", endpoint=endpoint) == 1
    assert metrics("capsem_proxyd_streams_total", provider="gemini", endpoint="streamGenerateContent",
                   outcome="completed") == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "capsem_proxyd.request"]
    assert any("endpoint=streamGenerateContent" in line and ":streamGenerateContent" in line for line in lines), lines
    assert any("endpoint=generateContent " in line and ":generateContent" in line for line in lines), lines


async def test_counts_match_the_requests_made(proxy: Proxy, fake: FakeUpstream) -> None:
    before = await scrape(proxy.url)
    assert requests_total(before, "200") == 0

    fake.script(Reply(text="one"), Reply(text="two"))
    for _ in range(2):
        await in_thread(lambda: proxy.openai().chat.completions.create(model="gpt-4o-mini", messages=USER))
    with pytest.raises(openai.BadRequestError):
        await in_thread(lambda: proxy.openai().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "capsem_block me"}]))
    fake.script(Reply(status=500, error_message="provider broke"), Reply(fault="reset_before_headers"))
    assert (await post_chat(proxy.url)).status_code == 500
    assert (await post_chat(proxy.url)).status_code == 502
    fake.script(
        Reply(text="A calm streamed answer. " * 20),
        Reply(chunks=["fine so far, ", "then capsem_", "block arrives", " and more"]),
        Reply(chunks=["part one. "] * 10, fault="reset_mid_stream", fault_after_events=3),
    )
    text, error = await in_thread(stream_chat, proxy)
    assert error is None and text == "A calm streamed answer. " * 20
    text, error = await in_thread(stream_chat, proxy)
    assert isinstance(error, openai.APIError) and "capsem_block" not in text.lower()
    _, error = await in_thread(stream_chat, proxy)
    assert isinstance(error, openai.APIError)
    async with httpx.AsyncClient() as client:
        gemini = await client.post(
            proxy.url + "/v1beta/models/gemini-2.0-flash:generateContent",
            json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
            headers=GEMINI_AUTH,
        )
    assert gemini.status_code == 200

    metrics = await scrape(proxy.url)
    # requests by provider/endpoint/status: 2 allowed + 3 streams answered 200, one block, one provider error, one reset
    assert requests_total(metrics, "200") == 5
    assert requests_total(metrics, "400") == 1
    assert requests_total(metrics, "500") == 1
    assert requests_total(metrics, "502") == 1
    assert requests_total(metrics, "200", provider="gemini", endpoint="generateContent") == 1
    streams = "capsem_proxyd_streams_total"
    assert metrics(streams, **CHAT, outcome="completed") == 1
    assert metrics(streams, **CHAT, outcome="blocked") == 1
    assert metrics(streams, **CHAT, outcome="upstream_error") == 1
    assert metrics("capsem_proxyd_active_streams") == 0

    # decisions by hook/verdict/policy, ALLOW included: every request but the blocked one passed its prompt check
    decisions = "capsem_proxyd_policy_decisions_total"
    assert metrics(decisions, hook="on_model_call", verdict="ALLOW", policy="Debug") == 8
    assert metrics(decisions, hook="on_model_call", verdict="BLOCK", policy="Debug") == 1
    assert metrics(decisions, hook="on_model_response", verdict="BLOCK", policy="Debug") == 1
    # 3 whole replies checked once each; the completed stream at least once (the others may end before a pass)
    assert metrics(decisions, hook="on_model_response", verdict="ALLOW", policy="Debug") >= 3 + 1
    # Debug decides once per hook run (Secrets, on by default, too), so the latency histogram counts Debug's runs
    for hook in ("on_model_call", "on_model_response"):
        runs = sum(metrics(decisions, hook=hook, verdict=v, policy="Debug") for v in ("ALLOW", "BLOCK"))
        assert metrics("capsem_proxyd_policy_check_seconds_count", hook=hook) == runs
        assert metrics("capsem_proxyd_policy_check_seconds_bucket", hook=hook, le="+Inf") == runs

    # upstream latency: every request that got response headers (not the block, not the reset)
    assert metrics("capsem_proxyd_upstream_latency_seconds_count", **CHAT) == 2 + 1 + 3
    assert metrics("capsem_proxyd_upstream_latency_seconds_count", provider="gemini", endpoint="generateContent") == 1
    assert metrics("capsem_proxyd_upstream_latency_seconds_sum", **CHAT) > 0

    for key in ALL_TEST_KEYS:
        assert key not in metrics.text
    assert "private prompt" not in metrics.text and "gpt-4o-mini" not in metrics.text


async def test_labels_are_bounded_sets(proxy: Proxy, fake: FakeUpstream) -> None:
    """Client-chosen text (model names, odd paths) never becomes a label value."""
    fake.script(Reply(text="x"))
    await post_chat(proxy.url, model="model-" + "z" * 40)
    async with httpx.AsyncClient() as client:
        await client.post(proxy.url + "/v1/made/up/path-abc123", headers=OPENAI_AUTH)
    metrics = await scrape(proxy.url)
    assert "z" * 40 not in metrics.text and "abc123" not in metrics.text
    assert metrics.label_values("capsem_proxyd_requests_total", "status") <= {"200", "404"}
    assert metrics.label_values("capsem_proxyd_policy_decisions_total", "policy") == {"Debug", "Secrets"}  # the default set


async def test_active_streams_gauge_follows_open_streams(proxy: Proxy, fake: FakeUpstream) -> None:
    # The first stream outlasts the test (socket buffers could otherwise absorb it whole).
    fake.script(Reply(chunks=["tick "] * 3000, chunk_delay=0.01), Reply(chunks=["tock "] * 30, chunk_delay=0.01))
    url = proxy.url

    async with httpx.AsyncClient(timeout=30) as client:
        body = {"model": "m", "messages": USER, "stream": True}
        headers = OPENAI_AUTH
        async with client.stream("POST", proxy.url + "/v1/chat/completions", json=body, headers=headers) as first:
            held = await first_bytes(first)  # noqa: F841 - kept unread: the stream stays open
            assert await active_streams(url) == 1
            async with client.stream("POST", proxy.url + "/v1/chat/completions", json=body, headers=headers) as second:
                rest = await first_bytes(second)
                assert await active_streams(url) == 2
                async for _ in rest:
                    pass
            # the server leaves the stream before it sends the body's end, so this is already settled
            assert await active_streams(url) == 1
        # the first client hung up mid-stream: the proxy notices and the gauge comes back down
        await wait_until(lambda: _equals(active_streams(url), 0))
    metrics = await scrape(proxy.url)
    assert metrics("capsem_proxyd_streams_total", **CHAT, outcome="completed") == 1
    assert metrics("capsem_proxyd_streams_total", **CHAT, outcome="client_disconnected") == 1


async def _equals(value: Awaitable[float], expected: float) -> bool:
    return await value == expected


async def test_a_reloaded_engine_is_still_counted(tmp_path: Path, fake: FakeUpstream) -> None:
    """SIGHUP swaps in a new policy engine; its decisions and check times must land in the same metrics."""
    upstreams = ["--openai-upstream", fake.url + "/v1", "--gemini-upstream", fake.url, "--anthropic-upstream", fake.url]
    daemon = Daemon(upstreams, tmp_path / "daemon.log")
    try:
        await daemon.wait_ready(STARTUP_TIMEOUT)
        assert (await post_chat(daemon.url)).status_code == 200
        daemon.process.send_signal(signal.SIGHUP)
        await daemon.wait_for_log("reloaded:", STARTUP_TIMEOUT)
        assert (await post_chat(daemon.url)).status_code == 200
        assert (await post_chat(daemon.url, "capsem_block")).status_code == 400
        metrics = await scrape(daemon.url)
        decisions = "capsem_proxyd_policy_decisions_total"
        assert metrics(decisions, hook="on_model_call", verdict="ALLOW", policy="Debug") == 2
        assert metrics(decisions, hook="on_model_call", verdict="BLOCK", policy="Debug") == 1
        assert metrics("capsem_proxyd_policy_check_seconds_count", hook="on_model_call") == 3
    finally:
        daemon.kill()


def test_a_multiprocess_dir_set_after_import_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting in process memory under several workers would give wrong numbers that look right."""
    import prometheus_client  # noqa: F401 - imported in single-process mode, as the test process does

    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match="before the first import"):
        Metrics()


# -- several processes ---------------------------------------------------------
#
# `--workers N` (N processes forked by one parent, sharing one port) sets
# PROMETHEUS_MULTIPROC_DIR before forking; the last test below runs it. The
# tests before it stand two `capsem-proxyd start` processes on two ports in for
# two workers, sharing one directory the test owns: the storage and the merge
# are the same, and the test can aim requests at each worker and call
# mark_worker_dead itself.


@pytest.fixture
async def workers(tmp_path: Path, fake: FakeUpstream) -> AsyncIterator[tuple[Daemon, Daemon, Path]]:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = daemon_env(**{MULTIPROC_ENV: str(directory)})
    upstreams = ["--openai-upstream", fake.url + "/v1", "--gemini-upstream", fake.url, "--anthropic-upstream", fake.url]
    started = [Daemon(upstreams, tmp_path / f"worker{index}.log", env=env) for index in range(2)]
    try:
        for daemon in started:
            await daemon.wait_ready(STARTUP_TIMEOUT)
        yield started[0], started[1], directory
    finally:
        for daemon in started:
            daemon.kill()


async def test_workers_sharing_a_directory_report_the_sum(workers: tuple[Daemon, Daemon, Path], fake: FakeUpstream) -> None:
    one, two, directory = workers
    for _ in range(3):
        assert (await post_chat(one.url)).status_code == 200
    for _ in range(2):
        assert (await post_chat(two.url)).status_code == 200
    assert (await post_chat(two.url, "capsem_block")).status_code == 400

    for daemon in (one, two):  # whichever worker answers the scrape reports the whole daemon
        metrics = await scrape(daemon.url)
        assert requests_total(metrics, "200") == 5
        assert requests_total(metrics, "400") == 1
        assert metrics("capsem_proxyd_policy_decisions_total", hook="on_model_call", verdict="ALLOW", policy="Debug") == 5
        assert metrics("capsem_proxyd_upstream_latency_seconds_count", **CHAT) == 5
        assert metrics("capsem_proxyd_policy_check_seconds_count", hook="on_model_call") == 6
    # each worker kept its own file; the scrape merged them
    assert {path.name for path in directory.iterdir() if path.name.startswith("counter_")} == {
        f"counter_{one.process.pid}.db", f"counter_{two.process.pid}.db"
    }


async def test_a_dead_workers_streams_are_forgotten_its_counts_kept(
    workers: tuple[Daemon, Daemon, Path], fake: FakeUpstream
) -> None:
    one, two, directory = workers
    assert (await post_chat(two.url)).status_code == 200
    assert (await post_chat(one.url)).status_code == 200
    fake.script(Reply(chunks=["tick "] * 1000, chunk_delay=0.01))
    async with httpx.AsyncClient(timeout=30) as client:
        body = {"model": "m", "messages": USER, "stream": True}
        headers = OPENAI_AUTH
        async with client.stream("POST", two.url + "/v1/chat/completions", json=body, headers=headers) as stream:
            held = await first_bytes(stream)  # noqa: F841 - kept unread: the stream stays open
            assert (await scrape(one.url))("capsem_proxyd_active_streams") == 1
            os.kill(two.process.pid, signal.SIGKILL)  # dies mid-stream, its gauge file still says 1
            two.process.wait(5)
    assert (await scrape(one.url))("capsem_proxyd_active_streams") == 1
    mark_worker_dead(two.process.pid, str(directory))
    metrics = await scrape(one.url)
    assert metrics("capsem_proxyd_active_streams") == 0
    assert requests_total(metrics, "200") == 2


def child_pids(parent: int) -> set[int]:
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            children.add(int(stat.parent.name))
    return children


async def test_workers_flag_scrapes_report_every_worker(tmp_path: Path, fake: FakeUpstream) -> None:
    """The real thing: `start --workers 2`, one port; any worker answering /metrics reports the sum,
    and workers the parent replaces take their open streams off the gauge but not their counts."""
    env = daemon_env(TMPDIR=str(tmp_path))  # the parent makes its metrics directory here
    upstreams = ["--openai-upstream", fake.url + "/v1", "--gemini-upstream", fake.url, "--anthropic-upstream", fake.url]
    daemon = Daemon([*upstreams, "--workers", "2"], tmp_path / "daemon.log", env=env)
    try:
        await daemon.wait_ready(STARTUP_TIMEOUT)
        workers = child_pids(daemon.process.pid)
        assert len(workers) == 2, daemon.log
        (directory,) = tmp_path.glob("capsem-proxyd-metrics-*")

        def served_by() -> set[int]:
            return {int(path.stem.split("_")[1]) for path in directory.glob("counter_*.db")}

        sent = blocked = 0
        while served_by() != workers:  # new connections until the kernel has handed some to each worker
            assert sent < 300, f"one worker took every connection: {served_by()} of {workers}"
            if sent % 3 == 2:
                assert (await post_chat(daemon.url, "capsem_block")).status_code == 400
                blocked += 1
            else:
                assert (await post_chat(daemon.url)).status_code == 200
            sent += 1
        for _ in range(6):  # each scrape is answered by whichever worker accepts it
            metrics = await scrape(daemon.url)
            assert requests_total(metrics, "200") == sent - blocked
            assert requests_total(metrics, "400") == blocked
            assert metrics("capsem_proxyd_upstream_latency_seconds_count", **CHAT) == sent - blocked

        fake.script(Reply(chunks=["tick "] * 1000, chunk_delay=0.01))
        async with httpx.AsyncClient(timeout=30) as client:
            body = {"model": "m", "messages": USER, "stream": True}
            headers = OPENAI_AUTH
            async with client.stream("POST", daemon.url + "/v1/chat/completions", json=body, headers=headers) as stream:
                held = await first_bytes(stream)  # noqa: F841 - kept unread: the stream stays open
                assert await active_streams(daemon.url) == 1
                for pid in workers:  # both die mid-stream; the parent replaces them and marks them dead
                    os.kill(pid, signal.SIGKILL)

        async def replaced_and_forgotten() -> bool:
            try:
                return len(child_pids(daemon.process.pid) - workers) == 2 and await active_streams(daemon.url) == 0
            except httpx.TransportError:
                return False

        await wait_until(replaced_and_forgotten, timeout=STARTUP_TIMEOUT)
        metrics = await scrape(daemon.url)
        assert requests_total(metrics, "200") == sent - blocked and requests_total(metrics, "400") == blocked
        assert await daemon.stop() == 0
    finally:
        daemon.kill()


async def test_an_in_stream_upstream_error_is_counted_as_one(proxy: Proxy, fake: FakeUpstream) -> None:
    """The provider's own error event ends the stream: an upstream error, not a completed stream."""
    fake.script(Reply(chunks=["part one. "] * 10, fault="error_mid_stream", fault_after_events=4, status=500,
                      error_message="provider broke mid-stream"))
    _, error = await in_thread(stream_chat, proxy)
    assert isinstance(error, openai.APIError) and "provider broke mid-stream" in str(error)
    streams = "capsem_proxyd_streams_total"

    async def counted() -> bool:
        return (await scrape(proxy.url))(streams, **CHAT, outcome="upstream_error") >= 1

    await wait_until(counted)
    assert (await scrape(proxy.url))(streams, **CHAT, outcome="completed") == 0
