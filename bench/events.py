"""Proxy CPU per streamed event when the provider sends events as providers do: each in its own write.

The main ``sse`` row's upstream (nginx) writes all 50 events of a stream at
once, so a proxy reads them in one or two reads and checks once or twice: it
hides what each event costs. Here the provider is the test suite's fake
(``bench/paced_upstream.py``) sending a ``EVENTS``-event Chat Completions
stream, one short token per event, each event its own write with
``DELAY_S`` between them, so every event reaches the proxy on its own read
and is parsed, checked and sent on its own. Streams are read one at a time,
the systems taking turns (the proxies on one core, the fake and the reader on
the other); the proxy's CPU time over its streams, divided by the events it
relayed, is its CPU per event. The plain Hypercorn + httpx relay (``bench/floor.py``) under the same
streams is the floor: the target is capsem-proxyd at most 1.2× its CPU per
event, same run. ``--baseline`` adds the baseline commit beside it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import httpx

from bench import payloads
from bench.agent import PII_TOML
from bench.processes import cpu_seconds, free_port, wait_listening
from bench.systems import REPO, CapsemProxyd, Context, System

Log = Callable[[str], None]
EVENTS = 500  # text events per stream (plus the role, finish and [DONE] events the fake adds)
DELAY_S = 0.0005  # between events, as in the measurement
# Streams read per system, by preset: one stream takes ~0.4 s, so quick adds ~5 s per system.
STREAMS = {"full": 30, "quick": 12, "smoke": 2}
CPU_OVER_FLOOR = 1.2
FLOOR = "hypercorn-httpx"
WORKLOAD = "events"  # the Context's upstream_base names the paced fake by this workload
SYSTEMS = (FLOOR, "capsem-proxyd-baseline", "capsem-proxyd", "capsem-proxyd-pii")


class CapsemProxydPii(CapsemProxyd):
    """capsem-proxyd with PII's pattern entities (``ner = false``) checking replies, beside Debug:
    the figure the issue asks to be reported (no target)."""

    key, label = "capsem-proxyd-pii", "capsem-proxyd, PII patterns + Debug"

    def options(self, context: Context) -> list[str]:
        folder = context.work / "events-policies" / "pii"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "debug.toml").write_text("")
        (folder / "pii.toml").write_text("check_responses = true\n" + PII_TOML)
        (folder / "secrets.toml").write_text("enabled = false\n")  # on by default: this row is PII + Debug
        return ["--policy-dir", str(folder)]


def tokens(count: int = EVENTS) -> list[str]:
    """One short word per event, like a model's tokens."""
    return [f"tok{index % 1000:03d} " for index in range(count)]


def start_upstream(context: Context, log_name: str = "events-fake.log") -> str:
    """The paced fake provider; returns its base URL up to /v1."""
    log = context.work / "logs" / log_name
    log.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [sys.executable, "-m", "bench.paced_upstream", "--port", str(port), "--chunk-delay", str(DELAY_S),
               "--chunks", json.dumps(tokens())]
    core = None if context.proxy_core is None else 1  # the load core: never the proxy's
    child = context.children.start("events-fake", command, core=core, log=log, cwd=REPO)
    wait_listening(port, child.process, context.start_timeout, "paced upstream (events)", log)
    return f"http://127.0.0.1:{port}/v1"


def read_stream(client: httpx.Client, url: str) -> int:
    """One stream through ``url``; returns the number of SSE events it carried (``[DONE]`` included)."""
    events = 0
    with client.stream("POST", url, content=payloads.chat_request(stream=True),
                       headers={"authorization": f"Bearer {payloads.BENCH_KEY}",
                                "content-type": "application/json"}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"status {response.status_code}: {response.read()[:300]!r}")
        tail = b""
        for chunk in response.iter_raw():
            data = tail + chunk
            events += data.count(b"\n\n")
            tail = data[data.rfind(b"\n\n") + 2:] if b"\n\n" in data else data
            tail = tail[-1:]  # only a lone "\n" can start a separator split across reads
    return events


def measure(context: Context, systems: list[System], streams: int, log: Log) -> dict[str, Any]:
    """CPU µs per event of each system over ``streams`` paced streams, one at a time; ratios to the floor.

    The systems run side by side and take turns, one stream each per round (PII in the first quarter of
    the rounds only: its analysis runs on other processes per check, a few streams give its figure).
    Measured one system after the other, a shared machine's load drifting over the section moved the
    ratios by ±0.1 from run to run; taking turns, each system sees the same drift.
    """
    out: dict[str, Any] = {"events_per_stream": None, "delay_ms": DELAY_S * 1000, "streams": streams, "systems": {}}
    running: dict[str, Any] = {}
    counts = {system.key: max(1, streams // 4) if isinstance(system, CapsemProxydPii) else streams
              for system in systems}
    spent = dict.fromkeys(counts, 0.0)
    relayed = dict.fromkeys(counts, 0)
    try:
        for system in systems:
            running[system.key] = system.start(context, WORKLOAD)
            assert running[system.key].child is not None, "a proxy is measured"
        with httpx.Client(timeout=60) as client:
            for system in systems:  # warm: imports and first-use set-up are paid once
                out["events_per_stream"] = read_stream(client, running[system.key].url)
            for round_number in range(streams):
                for system in systems:
                    if round_number >= counts[system.key]:
                        continue
                    proxy = running[system.key]
                    before = cpu_seconds(proxy.child.pid)
                    relayed[system.key] += read_stream(client, proxy.url)
                    spent[system.key] += cpu_seconds(proxy.child.pid) - before
    finally:
        for proxy in running.values():
            context.children.stop(proxy.child)
    for system in systems:
        count, events = counts[system.key], relayed[system.key]
        per_event = round(spent[system.key] * 1e6 / events, 1) if events else None
        out["systems"][system.key] = {"label": system.label, "streams": count, "events": events,
                                      "cpu_us_per_event": per_event}
        log(f"   {system.label:36} {events} events in {count} streams, cpu {per_event} µs/event")
    floor = out["systems"].get(FLOOR, {}).get("cpu_us_per_event")
    for entry in out["systems"].values():
        value = entry["cpu_us_per_event"]
        entry["over_floor"] = round(value / floor, 2) if floor and value else None
    return out


def markdown(events: dict[str, Any] | None) -> str:
    if not events or "systems" not in events:
        return ""
    lines = [f"Per streamed event: streams of {events['events_per_stream']} events, each event its "
             f"own write, {events['delay_ms']:g} ms apart, read one at a time (the proxy on its own core)",
             "", "| system | streams | proxy CPU per event (µs) | × Hypercorn+httpx relay |", "|---|---|---|---|"]
    for entry in events["systems"].values():
        ratio = "—" if entry["over_floor"] is None else f"{entry['over_floor']}×"
        lines.append(f"| {entry['label']} | {entry['streams']} | {entry['cpu_us_per_event']} | {ratio} |")
    return "\n".join(lines)


def targets(events: dict[str, Any] | None) -> list[dict[str, Any]]:
    """capsem-proxyd's CPU per event at most 1.2× the relay floor's, same run."""
    if not events or "systems" not in events:
        return []
    ours = events["systems"].get("capsem-proxyd", {}).get("over_floor")
    if ours is None:
        return []
    return [{"target": f"proxy CPU per streamed event (each its own write) vs stack floor (×): "
                       f"{events['systems']['capsem-proxyd']['cpu_us_per_event']} vs "
                       f"{events['systems'][FLOOR]['cpu_us_per_event']} µs",
             "value": ours, "op": "<=", "limit": CPU_OVER_FLOOR, "met": ours <= CPU_OVER_FLOOR}]
