"""Load: nothing lost, nothing mis-classified, memory back afterwards; disconnects close upstream streams.

The load runs against a real ``capsem-proxyd start`` subprocess (one worker),
so its memory can be read from /proc without the test's own clients and fake
provider in the figure. Every request carries a unique number the fake echoes
back, so each reply can be matched to its request: an allowed prompt must come
back with exactly its own text (and, streamed, every event the provider sent),
a blocked one must be refused by the CAPSEM Debug policy — before the provider
sees it (request side), or, for the replies a second fake provider (on the
Anthropic upstream) always answers with the marker in them, with a 400 or as
an error event that ends the stream (reply side).
"""

from __future__ import annotations

import gc
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from capsem_proxyd.config import Settings
from tests.support.daemon import upstream_args
from tests.support.fake_upstream import FakeUpstream, Reply, run_fake_upstream
from tests.support.metrics import scrape
from tests.support.proxy import ANTHROPIC_AUTH, OPENAI_AUTH
from tests.support.waiting import wait_until

HEADERS = OPENAI_AUTH
ANTHROPIC_HEADERS = ANTHROPIC_AUTH
# What the second fake answers every request with: the marker split across events, after some text.
MARKED_REPLY = Reply(chunks=["Sure, here it is: ", "the capsem_", "block thing", " and more text"], chunk_delay=0.002)
STREAMS = 500
REQUESTS = 2_000
WARM_UP_REQUESTS = 200


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def prompt_for(number: int, kind: str) -> str:
    """Allowed, blocked on the request side, or blocked on the reply side (the fake echoes the marker)."""
    if kind == "blocked-request":
        return f"request {number}: please capsem_block this"
    words = " ".join(f"w{number}-{index}" for index in range(number % 17 + 3))
    return f"echo: reply {number} {words}"


def expected_text(prompt: str) -> str:
    return prompt.split("echo:", 1)[1].lstrip()


def kind_of(number: int) -> str:
    return ("allowed", "allowed", "blocked-request", "blocked-reply")[number % 4]


def sse_events(raw: bytes) -> list[dict[str, Any] | str]:
    events: list[dict[str, Any] | str] = []
    for block in raw.decode().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                data = line[len("data: "):]
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


def anthropic_request(prompt: str, stream: bool) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-6", "max_tokens": 50, "stream": stream, "messages": [{"role": "user", "content": prompt}]}


class Outcomes:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.problems: list[str] = []

    def check(self, ok: bool, label: str, detail: str) -> None:
        self.counts[label] += 1
        if not ok:
            self.problems.append(f"{label}: {detail}")


async def one_stream(client: httpx.AsyncClient, url: str, number: int, outcomes: Outcomes, fake: FakeUpstream) -> None:
    kind = kind_of(number)
    prompt = prompt_for(number, kind)
    if kind == "blocked-reply":
        response = await client.post(url + "/v1/messages", json=anthropic_request(prompt, True), headers=ANTHROPIC_HEADERS)
        events = sse_events(response.content)
        text = "".join(e["delta"].get("text", "") for e in events if isinstance(e, dict) and e.get("type") == "content_block_delta")
        last = events[-1] if events else {}
        blocked = isinstance(last, dict) and last.get("error", {}).get("capsem", {}).get("verdict") == "BLOCK"
        outcomes.check(response.status_code == 200 and blocked and "capsem_block" not in text.lower(),
                       "stream blocked mid-reply", f"{number}: {events[-2:]}")
        return
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    response = await client.post(url + "/v1/chat/completions", json=body, headers=HEADERS)
    if kind == "blocked-request":
        outcomes.check(response.status_code == 400 and response.json()["error"]["code"] == "capsem_blocked",
                       "stream blocked before upstream", f"{number}: {response.status_code}")
        return
    events = sse_events(response.content)
    text = "".join(
        choice["delta"].get("content") or ""
        for event in events if isinstance(event, dict) and "choices" in event for choice in event["choices"]
    )
    record = next(r for r in fake.streams if prompt.encode() in r.request.body)
    complete = text == expected_text(prompt) and events[-1] == "[DONE]" and len(events) == record.events_sent
    outcomes.check(response.status_code == 200 and complete, "stream delivered whole",
                   f"{number}: {len(events)} events of {record.events_sent}, text {text!r}")


async def one_request(client: httpx.AsyncClient, url: str, number: int, outcomes: Outcomes) -> None:
    kind = kind_of(number)
    prompt = prompt_for(number, kind)
    if kind == "blocked-reply":
        response = await client.post(url + "/v1/messages", json=anthropic_request(prompt, False), headers=ANTHROPIC_HEADERS)
        blocked = response.status_code == 400 and response.json()["error"]["capsem"]["hook"] == "on_model_response"
        outcomes.check(blocked, "reply blocked", f"{number}: {response.status_code}")
        return
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
    response = await client.post(url + "/v1/chat/completions", json=body, headers=HEADERS)
    if kind == "allowed":
        reply = response.json()
        outcomes.check(response.status_code == 200 and reply["choices"][0]["message"]["content"] == expected_text(prompt)
                       and response.headers["x-capsem-decision"] == "allow", "request delivered", f"{number}")
        return
    outcomes.check(response.status_code == 400 and response.json()["error"]["code"] == "capsem_blocked",
                   "request blocked before upstream", f"{number}: {response.status_code}")


BURST_SECONDS = 170  # the cap of one burst (a broken build must not hang the suite), its requests' own timeout


async def run_load(url: str, fake: FakeUpstream, streams: int, requests: int, first: int = 0) -> tuple[Outcomes, float]:
    outcomes = Outcomes()
    limits = httpx.Limits(max_connections=streams + 100, max_keepalive_connections=streams + 100)
    started = time.perf_counter()
    # A request's own timeout no shorter than the burst's cap (BURST_SECONDS): on a loaded machine 600
    # connections to one daemon may wait long for their turn, and only losing one is a failure here.
    async with httpx.AsyncClient(timeout=BURST_SECONDS, limits=limits) as client, trio.open_nursery() as nursery:
        for number in range(first, first + streams):
            nursery.start_soon(one_stream, client, url, number, outcomes, fake)

        async def requests_in_sequence(lane: int) -> None:  # 100 lanes, requests back to back
            for number in range(first + streams + lane, first + streams + requests, 100):
                await one_request(client, url, number, outcomes)

        for lane in range(min(100, requests)):
            nursery.start_soon(requests_in_sequence, lane)
    return outcomes, time.perf_counter() - started


async def idle_after(url: str, requests: int) -> bool:
    """Whether the daemon has logged all ``requests`` and holds no stream open: the load is over for it
    too, not only for its clients."""
    metrics = await scrape(url)
    done = sum(value for (name, _), value in metrics.samples.items() if name == "capsem_proxyd_requests_total")
    return done >= requests and metrics("capsem_proxyd_active_streams") == 0


# It stays in the default run because what it asserts holds on a loaded machine: nothing lost or
# mis-classified (no timing in it), and memory back within 10 % of the level after a first burst
# (measured +0.9 % with a load average of 4 on 2 cores). Its time is only capped: about 45 s on an idle
# 2-core machine, 76 s on that loaded one; each burst may take 180 s and the whole test 300 s.
@pytest.mark.timeout(300)
async def test_500_streams_and_2000_requests_lose_nothing_and_memory_comes_back(
    daemons: Callable[..., Any], fake: FakeUpstream
) -> None:
    fake.default_reply = Reply(chunk_delay=0.002)
    async with run_fake_upstream() as marking:
        marking.default_reply = MARKED_REPLY
        daemon = daemons(*upstream_args(fake.url), "--anthropic-upstream", marking.url, "--log-level", "warning",
                         "--upstream-timeout", str(BURST_SECONDS))
        await daemon.wait_ready(timeout=60)
        await _load_and_measure(daemon, fake)


async def _load_and_measure(daemon: Any, fake: FakeUpstream) -> None:
    pid = daemon.process.pid
    idle = vm_rss_kib(pid)
    rounds: list[tuple[Outcomes, float, int, int]] = []
    served = 0
    # The first burst reaches the peak concurrency (it sets the allocator's size), the second is the full load.
    for number, requests in enumerate((WARM_UP_REQUESTS, REQUESTS)):
        with trio.fail_after(BURST_SECONDS + 10):
            outcomes, seconds = await run_load(daemon.url, fake, STREAMS, requests, first=10_000_000 * number)
        peak = vm_rss_kib(pid)
        served += STREAMS + requests
        # Idle again: every request logged, no stream open (the cap only stops a broken build hanging).
        await wait_until(partial(idle_after, daemon.url, served), timeout=60, what="the daemon idle after the burst")
        rounds.append((outcomes, seconds, peak, vm_rss_kib(pid)))
        print(f"\nload burst {number + 1}: {STREAMS} streams + {requests} requests in {seconds:.1f} s; "
              f"{dict(outcomes.counts)}; daemon VmRSS right after {peak / 1024:.1f} MiB, idle {rounds[-1][3] / 1024:.1f} MiB")
        assert outcomes.problems == [], outcomes.problems[:10]
        assert sum(outcomes.counts.values()) == STREAMS + requests  # nothing lost
        assert outcomes.counts["stream delivered whole"] == STREAMS // 2
        assert outcomes.counts["stream blocked before upstream"] == STREAMS // 4
        assert outcomes.counts["stream blocked mid-reply"] == STREAMS // 4
        assert outcomes.counts["request delivered"] == requests // 2
        assert outcomes.counts["request blocked before upstream"] == requests // 4
        assert outcomes.counts["reply blocked"] == requests // 4
    # Blocked before upstream means the provider never saw the prompt.
    assert not any(b"please capsem_block" in request.body for request in fake.requests)
    # CPython keeps the arenas a first burst grew to (measured: the same with no Python object
    # left over, tracemalloc flat across rounds), so the starting level is the daemon idle after
    # a first burst of the same size; the second must leave it where it was.
    start, end = rounds[0][3], rounds[1][3]
    print(f"memory: idle before any load {idle / 1024:.1f} MiB; after burst 1 {start / 1024:.1f} MiB; "
          f"after burst 2 {end / 1024:.1f} MiB ({(end - start) / start:+.1%})")
    assert end <= start * 1.10, f"memory {start} KiB -> {end} KiB"
    assert await daemon.stop() == 0


async def test_client_disconnects_at_random_points_close_every_upstream_stream(
    start_proxy: Any, proxy_settings: Settings, fake: FakeUpstream
) -> None:
    """200 streams, each abandoned after a random number of chunks: the provider sees each one closed before
    it could end by itself.

    Each reply takes 2,000 x 10 ms = 20 s to send whole and its client leaves after at most 31 chunks, so
    a stream that is closed and not completed was closed by the proxy, early: that is the property (20 s
    is the margin, for a machine twenty times slower than an idle one). How
    soon is printed (about 10-100 ms on an idle machine; over 1 s on a loaded 2-core one), not asserted:
    a wall-clock limit measures the machine. The wait is capped at 60 s only so a broken build fails.
    """
    # 200 streams open at once in one process (clients, proxy and provider): on a loaded machine the
    # suite's 2 s connect timeout answered some of them 504 before their upstream connection was made.
    proxy = await start_proxy(proxy_settings, connect_timeout=30.0, upstream_timeout=60.0)
    fake.default_reply = Reply(chunks=[f"chunk {i} " for i in range(2000)], chunk_delay=0.01)
    rng = random.Random(8)
    late: list[str] = []
    lags: list[float] = []

    async def abandon(client: httpx.AsyncClient, number: int) -> None:
        prompt = f"stream {number} to be abandoned"
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": prompt}]}
        keep = rng.randint(0, 30)
        async with client.stream("POST", proxy.url + "/v1/chat/completions", json=body, headers=HEADERS) as response:
            assert response.status_code == 200
            chunks = 0
            async for _ in response.aiter_raw():
                chunks += 1
                if chunks > keep:
                    break
        gone = trio.current_time()
        record = next(r for r in fake.streams if prompt.encode() in r.request.body)
        with trio.move_on_after(60):
            await record.closed.wait()
        if not record.closed.is_set() or record.completed:
            late.append(f"{number}: closed={record.closed.is_set()} completed={record.completed}")
        lags.append(trio.current_time() - gone)

    limits = httpx.Limits(max_connections=250, max_keepalive_connections=0)
    with trio.fail_after(180):
        async with httpx.AsyncClient(timeout=60, limits=limits) as client, trio.open_nursery() as nursery:
            for number in range(200):
                nursery.start_soon(abandon, client, number)
    gc.collect()
    print(f"\ndisconnects: 200 streams abandoned; upstream closed after {max(lags) * 1000:.0f} ms at most "
          f"(median {sorted(lags)[100] * 1000:.0f} ms)")
    assert late == []
    assert len(fake.streams) == 200 and all(record.client_closed for record in fake.streams)
