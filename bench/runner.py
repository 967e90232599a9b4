"""One benchmark run: upstream up, then each system fresh per workload —
check it, warm it, load it at 1 and at N connections, probe stream TTFB,
read its CPU time and memory — and everything stopped in ``finally``."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import agent, events, latency, mcp, nginx, payloads, probe, profile, scaling, wrk
from bench.processes import Children, cpu_seconds, free_port, rss_bytes, wait_listening
from bench.systems import (
    ALL,
    DEFAULT_SYSTEMS,
    LOAD_CORE,
    PROXY_CORE,
    WORKLOADS,
    CapsemProxydOtel,
    Context,
    Running,
    System,
)

Log = Callable[[str], None]
# Answer length and runs per pair of the latency section, by preset (a 400-character answer streams ~3 s).
LATENCY_PRESETS = {"full": (400, 5), "quick": (400, 3), "smoke": (40, 1)}


@dataclass
class Plan:
    """How long and how hard; ``--quick`` and ``--smoke`` are presets of this."""

    duration: int = 10
    warmup: int = 2
    ttfb_samples: int = 300
    connections: int = 32
    systems: list[str] = field(default_factory=lambda: list(DEFAULT_SYSTEMS))
    workloads: list[str] = field(default_factory=lambda: list(WORKLOADS))
    profile: bool = False
    pin: bool = True
    mode: str = "full"
    scaling: bool = True  # stream-size and --workers measurements of capsem-proxyd (bench/scaling.py)
    baseline: str | None = None  # git ref measured as capsem-proxyd-baseline
    latency: bool = True  # the user-felt latency section (bench/latency.py)
    agent: bool = True  # the agent-session workload (bench/agent.py)
    agent_policies: tuple[str, ...] | None = None  # its policy rows (None: the preset's)
    events: bool = True  # CPU per streamed event, each event its own write (bench/events.py)
    mcp: bool = True  # the MCP hop: CPU per tools/call, 100-tool listings, a 1 MB result under PII (bench/mcp.py)


def run(plan: Plan, tools: dict[str, str], work: Path, log: Log = print) -> dict[str, Any]:
    """Measure every system of the plan; ``work`` keeps shared venvs, each run its own folder."""
    shared = work
    work = _run_folder(shared)
    pin = plan.pin and _two_cores()
    if plan.pin and not pin:
        log("warning: fewer than two usable cores; running unpinned (numbers will be noisy)")
    if pin:
        os.sched_setaffinity(0, {LOAD_CORE})  # the probe and every child default to the load core
    children = Children()
    started = time.time()
    results: dict[str, Any] = {"meta": _meta(plan, tools, pin), "systems": {}}
    results["meta"]["run_folder"] = str(work)
    if os.getloadavg()[0] > 0.5:
        log(f"warning: load average {os.getloadavg()[0]:.2f} before the run; other work on this machine skews the numbers")
    try:
        upstream_port = free_port()
        prefix = (work / "nginx-upstream").resolve()
        config = nginx.write_config(prefix, nginx.upstream_config(prefix, upstream_port))
        upstream = children.start("nginx-upstream", nginx.command(tools["nginx"], prefix, config),
                                  core=LOAD_CORE if pin else None, log=prefix / "stdout.log")
        wait_listening(upstream_port, upstream.process, 30, "nginx upstream", prefix / "error.log")
        context = Context(nginx=tools["nginx"], work=work, shared=shared, upstream_port=upstream_port, children=children,
                          proxy_core=PROXY_CORE if pin else None, baseline=plan.baseline)
        scripts = _scripts(work)
        context.profiler = profile.py_spy(shared) if plan.profile else None
        for key in plan.systems:
            system = ALL[key]()
            results["systems"][key] = entry = {"label": system.label, "enforces_policy": system.enforces_policy}
            try:
                system.prepare(context)
            except Exception as error:  # noqa: BLE001 - report it, measure the others
                log(f"   {system.label} could not be prepared: {error}")
                entry.update({w: {"skipped": f"setup failed: {error}"} for w in plan.workloads})
                continue
            entry["label"] = system.label  # prepare() may name it (the baseline's commit)
            for workload in plan.workloads:
                log(f"== {system.label} / {workload}")
                try:
                    entry[workload] = _measure(system, workload, context, plan, tools, scripts[workload], work, pin, log)
                except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                    log(f"   FAILED: {error}")
                    entry[workload] = {"skipped": f"failed: {error}"}
        if CapsemProxydOtel.key in plan.systems:
            exports = nginx.otlp_exports(prefix)
            results["otlp_sink"] = {"exports": exports}
            log(f"== OTLP sink: {exports} span exports received from {CapsemProxydOtel.label}")
        if plan.scaling and "capsem-proxyd" in plan.systems:
            results["scaling"] = _scaling(context, plan, tools, work, log)
        if plan.events:
            results["events"] = _events(context, plan, log)
        if plan.latency:
            results["latency"] = _latency(context, plan, log)
        if plan.agent and "capsem-proxyd" in plan.systems:
            try:
                results["agent"] = agent.run(context, tools["nginx"], plan.mode, log, plan.agent_policies)
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                log(f"   agent sessions FAILED: {error}")
                results["agent"] = {"skipped": f"failed: {error}", "sessions": {}}
        if plan.mcp and "capsem-proxyd" in plan.systems:
            results["mcp"] = _mcp(context, plan, log)
    finally:
        children.close()
        results["meta"]["processes"] = children.started
    results["meta"]["wall_s"] = round(time.time() - started, 1)
    results["meta"]["loadavg_after"] = [round(value, 2) for value in os.getloadavg()]
    return results


def _scaling(context: Context, plan: Plan, tools: dict[str, str], work: Path, log: Log) -> dict[str, Any]:
    out: dict[str, Any] = {}
    scripts = scaling.write_scripts(work)
    for key, label, measure in (("stream_sizes", "stream size (10 kB vs 1 MB)", scaling.stream_sizes),
                                ("workers", "--workers 1 vs 2 (both cores, shared with wrk and the upstream)", scaling.workers)):
        log(f"== capsem-proxyd / {label}")
        try:
            out[key] = measure(context, tools, scripts, plan.duration, plan.warmup, log)
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            log(f"   FAILED: {error}")
            out[key] = {"skipped": f"failed: {error}"}
    return out


def _events(context: Context, plan: Plan, log: Log) -> dict[str, Any]:
    log(f"== CPU per streamed event: {events.EVENTS}-event streams, each event its own write, vs the relay floor")
    keys = [key for key in events.SYSTEMS if key != "capsem-proxyd-baseline" or plan.baseline]
    try:
        context.events_upstream = events.start_upstream(context)
        systems = []
        for key in keys:
            system = events.CapsemProxydPii() if key == events.CapsemProxydPii.key else ALL[key]()
            system.prepare(context)
            systems.append(system)
        return events.measure(context, systems, events.STREAMS.get(plan.mode, 12), log)
    except (RuntimeError, OSError, subprocess.SubprocessError, httpx.HTTPError) as error:
        log(f"   FAILED: {error}")
        return {"skipped": f"failed: {error}"}


def _latency(context: Context, plan: Plan, log: Log) -> dict[str, Any]:
    length, runs = LATENCY_PRESETS.get(plan.mode, (400, 5))
    log("== user-felt latency: paced streams, direct vs capsem-proxyd under each policy folder")
    try:
        return latency.measure(context, length, runs, log)
    except (RuntimeError, OSError, subprocess.SubprocessError, httpx.HTTPError) as error:
        log(f"   FAILED: {error}")
        return {"skipped": f"failed: {error}"}


def _mcp(context: Context, plan: Plan, log: Log) -> dict[str, Any]:
    log("== MCP hop: CPU per tools/call vs the relay, tools/list of 100 tools, a 1 MB result under PII")
    try:
        return mcp.run(context, plan.mode, log)
    except (RuntimeError, OSError, subprocess.SubprocessError, httpx.HTTPError) as error:
        log(f"   FAILED: {error}")
        return {"skipped": f"failed: {error}"}


def _run_folder(shared: Path, keep: int = 5) -> Path:
    """A fresh folder per run (nginx prefixes, logs), so concurrent runs never share one; old ones pruned."""
    runs = shared / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for old in sorted(runs.iterdir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    folder = runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    folder.mkdir()
    return folder


def _measure(system: System, workload: str, context: Context, plan: Plan, tools: dict[str, str],
             script: Path, work: Path, pin: bool, log: Log) -> dict[str, Any]:
    load_core = LOAD_CORE if pin else None
    begun = time.monotonic()
    running = system.start(context, workload)
    out: dict[str, Any] = {"startup_s": round(time.monotonic() - begun, 2)}
    try:
        out["checks"] = _checks(system, running, workload)
        failed = [name for name, check in out["checks"].items() if not check["ok"]]
        if failed:
            out["skipped"] = f"failed checks: {', '.join(failed)}"
            log(f"   CHECK FAILED ({', '.join(failed)}): {out['checks']}")
            return out
        pid = running.child.pid if running.child else None

        def load(connections: int, seconds: int) -> wrk.LoadResult:
            return wrk.run(tools["wrk"], running.url, script, connections=connections, duration=seconds,
                           core=load_core)

        if plan.warmup:
            load(plan.connections, plan.warmup)
        cpu_before = cpu_seconds(pid) if pid else None
        low = load(1, plan.duration)
        cpu_low = cpu_seconds(pid) if pid else None
        if workload == "sse" and plan.ttfb_samples:
            out["ttfb"] = probe.stream_timing(running.url, plan.ttfb_samples).as_dict()
        cpu_mid = cpu_seconds(pid) if pid else None
        recorder = None
        if context.profiler and system.key == "capsem-proxyd" and pid:
            recorder = profile.start(context.profiler, pid, plan.duration, work / "profiles" / f"{system.key}-{workload}",
                                     context.children, load_core)
        high = load(plan.connections, plan.duration)
        cpu_high = cpu_seconds(pid) if pid else None
        if recorder is not None:
            out["profile"] = profile.finish(recorder, context.children)
        out["low"], out["high"] = low.as_dict(), high.as_dict()
        if pid:
            out["cpu"] = {
                "low_us_per_request": _per_request(cpu_low - cpu_before, low.requests),
                "high_us_per_request": _per_request(cpu_high - cpu_mid, high.requests),
                "high_core_share": round((cpu_high - cpu_mid) / high.duration_s, 3) if high.duration_s else None,
            }
            out["rss_mib"] = round(rss_bytes(pid) / 2**20, 1)
        log(_summary_line(out, workload))
        return out
    finally:
        if running.child is not None:
            context.children.stop(running.child)


def _checks(system: System, running: Running, workload: str) -> dict[str, Any]:
    checks = {"reply": probe.check_stream(running.url) if workload == "sse" else probe.check_json(running.url)}
    if system.enforces_policy:
        checks["block"] = probe.check_block(running.url, stream=workload == "sse")
    return checks


def _scripts(work: Path) -> dict[str, Path]:
    return {
        "json": wrk.write_script(work / "wrk-json.lua", payloads.chat_request(stream=False),
                                 '"chat.completion"', payloads.BENCH_KEY),
        "sse": wrk.write_script(work / "wrk-sse.lua", payloads.chat_request(stream=True),
                                "data: [DONE]", payloads.BENCH_KEY),
    }


def _per_request(cpu_s: float, requests: int) -> float | None:
    return round(cpu_s * 1e6 / requests, 1) if requests else None


def _summary_line(out: dict[str, Any], workload: str) -> str:
    low, high = out["low"], out["high"]
    parts = [f"   1c p50 {low['p50_ms']:.3f} ms p99 {low['p99_ms']:.3f} ms",
             f"{out.get('connections', high['connections'])}c {high['requests_per_s']:.0f}/s p99 {high['p99_ms']:.2f} ms",
             f"errors {low['errors'] + high['errors'] + low['bad_replies'] + high['bad_replies']}"]
    if "ttfb" in out:
        parts.append(f"ttfb p50 {out['ttfb']['ttfb_p50_ms']:.3f} ms")
    if "cpu" in out:
        parts.append(f"cpu {out['cpu']['high_us_per_request']} µs/req rss {out['rss_mib']} MiB")
    return " | ".join(parts)


def _two_cores() -> bool:
    try:
        return {PROXY_CORE, LOAD_CORE} <= os.sched_getaffinity(0)
    except AttributeError:
        return False


def _meta(plan: Plan, tools: dict[str, str], pin: bool) -> dict[str, Any]:
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_before": [round(value, 2) for value in os.getloadavg()],
        "plan": asdict(plan),
        "pinned": pin,
        "cores": {"proxy": PROXY_CORE, "load_and_upstream": LOAD_CORE} if pin else None,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "cpu_model": _cpu_model()},
        "tools": tools,
        "upstream": {"json_bytes": len(payloads.chat_completion()), "sse_bytes": len(payloads.chat_stream()),
                     "sse_events": payloads.STREAM_EVENTS},
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
