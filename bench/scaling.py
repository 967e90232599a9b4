"""Two scaling measurements of capsem-proxyd, issue 7's last targets.

* Stream size: proxy CPU per upstream byte for a ~10 kB and a ~1 MB SSE
  stream (short text deltas, every event checked). Checking must stay linear:
  the 1 MB stream may cost at most 2x per byte what the 10 kB one does.
* Workers: JSON requests/s with ``--workers 2`` against one worker. Both runs
  run on every core and share them with the load generator (two
  threads) and the upstream, as the issue asks; that contention is part of
  the number (on 2 cores the workers cannot have a core each).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import nginx, payloads, wrk
from bench.processes import cpu_seconds, free_port, rss_bytes, wait_listening
from bench.systems import LOAD_CORE, Context, _capsem_proxyd_command

Log = Callable[[str], None]


def write_scripts(work: Path) -> dict[str, Path]:
    return {
        "sized": wrk.write_script(work / "wrk-sse-sized.lua", payloads.chat_request(stream=True),
                                  "data: [DONE]", payloads.BENCH_KEY),
        "json": wrk.write_script(work / "wrk-json-workers.lua", payloads.chat_request(stream=False),
                                 '"chat.completion"', payloads.BENCH_KEY),
    }


def stream_sizes(context: Context, tools: dict[str, str], scripts: dict[str, Path], duration: int, warmup: int,
                 log: Log, connections: int = 8) -> dict[str, Any]:
    """CPU µs per stream and per upstream byte, one fresh proxy per size, pinned like the main rows."""
    out: dict[str, Any] = {}
    for name, size in payloads.SIZED_STREAMS.items():
        body_bytes = len(payloads.sized_stream(size))
        base = f"http://127.0.0.1:{context.upstream_port}{nginx.SIZED_PREFIX}{name}/v1"
        url, child = _start(context, ["--openai-upstream", base], f"sizes-{name}", context.proxy_core)
        try:
            load_core = None if context.proxy_core is None else LOAD_CORE

            def load(seconds: int, url: str = url, load_core: int | None = load_core) -> wrk.LoadResult:
                return wrk.run(tools["wrk"], url, scripts["sized"], connections=connections, duration=seconds,
                               core=load_core, timeout_s=30)

            if warmup:
                load(warmup)
            before = cpu_seconds(child.pid)
            result = load(duration)
            spent = cpu_seconds(child.pid) - before
            streams = result.requests
            per_stream = spent * 1e6 / streams if streams else None
            out[name] = {
                "bytes": body_bytes, "streams": streams, "streams_per_s": result.requests_per_s,
                "errors": result.errors + result.bad_replies,
                "cpu_us_per_stream": round(per_stream, 1) if per_stream else None,
                "cpu_ns_per_byte": round(per_stream * 1000 / body_bytes, 2) if per_stream else None,
                "rss_mib": round(rss_bytes(child.pid) / 2**20, 1),
            }
            log(f"   stream {name} ({body_bytes:,} B): {result.requests_per_s:.1f} streams/s, "
                f"cpu {out[name]['cpu_us_per_stream']} µs/stream = {out[name]['cpu_ns_per_byte']} ns/byte, "
                f"errors {out[name]['errors']}")
        finally:
            context.children.stop(child)
    small, large = out.get("10k", {}).get("cpu_ns_per_byte"), out.get("1m", {}).get("cpu_ns_per_byte")
    out["per_byte_ratio_1m_vs_10k"] = round(large / small, 2) if small and large else None
    return out


def workers(context: Context, tools: dict[str, str], scripts: dict[str, Path], duration: int, warmup: int,
            log: Log, connections: int = 64) -> dict[str, Any]:
    """JSON requests/s of 1 and 2 workers, each run on every core, shared with wrk and the upstream."""
    out: dict[str, Any] = {}
    base = f"http://127.0.0.1:{context.upstream_port}/v1"
    # Every core, explicitly: the bench itself runs pinned to the load core and children inherit that.
    cores = f"0-{(os.cpu_count() or 1) - 1}"
    for count in (1, 2):
        url, child = _start(context, ["--openai-upstream", base, "--workers", str(count)], f"workers-{count}", cores)
        try:
            def load(seconds: int, url: str = url) -> wrk.LoadResult:
                return wrk.run(tools["wrk"], url, scripts["json"], connections=connections, duration=seconds,
                               core=cores, threads=2)

            if warmup:
                load(warmup)
            before = cpu_seconds(child.pid)
            result = load(duration)
            spent = cpu_seconds(child.pid) - before
            out[str(count)] = {
                "requests_per_s": result.requests_per_s, "p99_ms": result.p99_ms,
                "errors": result.errors + result.bad_replies,
                "cpu_us_per_request": round(spent * 1e6 / result.requests, 1) if result.requests else None,
                "cores_busy": round(spent / result.duration_s, 2) if result.duration_s else None,
            }
            log(f"   {count} worker(s): {result.requests_per_s:,.0f} req/s, p99 {result.p99_ms:.1f} ms, "
                f"proxy cores busy {out[str(count)]['cores_busy']}, errors {out[str(count)]['errors']}")
        finally:
            context.children.stop(child)
    one, two = out["1"]["requests_per_s"], out["2"]["requests_per_s"]
    out["speedup_2_vs_1"] = round(two / one, 2) if one else None
    return out


def _start(context: Context, args: list[str], label: str, core: int | str | None) -> tuple[str, Any]:
    port = free_port()
    log_path = context.work / "logs" / f"capsem-proxyd-{label}.log"
    command = [*_capsem_proxyd_command(), "start", "--port", str(port), *args]
    child = context.children.start("capsem-proxyd", command, core=core, log=log_path)
    wait_listening(port, child.process, context.start_timeout, f"capsem-proxyd ({label})", log_path)
    # The port listens before the workers are up (the parent binds it before forking);
    # "listening on" is logged once every worker is ready.
    deadline = time.monotonic() + context.start_timeout
    while "listening on" not in log_path.read_text(errors="replace"):
        if child.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"capsem-proxyd ({label}) did not report ready; see {log_path}")
        time.sleep(0.1)
    return f"http://127.0.0.1:{port}/v1/chat/completions", child
