"""The benchmark still runs end to end (smoke mode: 1 s loads, nothing measured), every section included.

Not a performance test: it asserts only that ``python -m bench --smoke``
checked every system (the upstream's reply comes back, ``capsem_block`` is
refused by the CAPSEM proxies), loaded each one without errors, wrote a
results JSON with one row per system, that capsem-proxyd-otel's spans reached
the OTLP sink, and that it left none of its processes behind.
It needs nginx and wrk (Debian packages) and is skipped without them; it never
installs anything itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import tools

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ["direct", "nginx", "hypercorn-fixed", "hypercorn-httpx", "capsem-proxy-0.1.0", "capsem-proxyd",
           "capsem-proxyd-otel"]

pytestmark = pytest.mark.skipif(
    bool(tools.missing()),
    reason=f"benchmark smoke test needs {', '.join(tools.missing())} "
           "(apt-get install nginx wrk, or run bench/run.sh once, which installs them)",
)


# A cap against a hung run, not a measure: the smoke run takes ~100 s on an idle 2-core machine and
# ~130 s with both cores loaded (a clean clone also builds capsem-proxy 0.1.0's environment first).
SMOKE_CAP_SECONDS = 600


@pytest.mark.timeout(SMOKE_CAP_SECONDS + 60)
def test_bench_smoke_run_writes_a_row_per_system(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    bench = subprocess.Popen(
        [sys.executable, "-m", "bench", "--smoke", "--no-install", "--output", str(output)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        printed, _ = bench.communicate(timeout=SMOKE_CAP_SECONDS)
    except subprocess.TimeoutExpired:
        bench.terminate()  # SIGTERM: the bench stops its children on the way out
        printed, _ = bench.communicate(timeout=30)
        pytest.fail(f"smoke run did not finish within its {SMOKE_CAP_SECONDS} s cap:\n{printed[-3000:]}")
    assert bench.returncode == 0, printed[-5000:]

    results = json.loads(output.read_text())
    rows = {row["system"]: row for row in results["rows"]}
    assert list(rows) == SYSTEMS
    for name, row in rows.items():
        assert row["checks_ok"] and not row["skipped"], (name, row)
        assert row["errors"] == 0, (name, row)
        assert row["json_p50_1c_ms"] > 0 and row["sse_total_p50_1c_ms"] > 0, (name, row)
        assert row["sse_ttfb_p50_ms"] > 0, (name, row)
    # capsem-proxy 0.1.0 may finish no request at all in a 1 s load of 32 connections
    # (~30 ms of CPU each), so its throughput and CPU per request are not asserted.
    for name in ("direct", "nginx", "hypercorn-fixed", "hypercorn-httpx", "capsem-proxyd", "capsem-proxyd-otel"):
        assert rows[name]["json_rps"] > 0 and rows[name]["sse_streams_per_s"] > 0, rows[name]
    for name in ("nginx", "hypercorn-fixed", "hypercorn-httpx", "capsem-proxyd", "capsem-proxyd-otel"):
        assert rows[name]["json_cpu_us"] > 0 and rows[name]["sse_cpu_us"] > 0, rows[name]
    # capsem-proxyd-otel exported its spans (flushed at the latest when each run stopped it).
    assert results["otlp_sink"]["exports"] > 0, results["otlp_sink"]
    # The scaling measurements ran: both stream sizes and both worker counts, without errors.
    scaling = results["scaling"]
    for size in ("10k", "1m"):
        assert scaling["stream_sizes"][size]["errors"] == 0, scaling
    # A 1 MB stream may not finish within a 1 s load on a loaded machine (none did in one stressed CI run).
    assert scaling["stream_sizes"]["10k"]["streams"] > 0, scaling
    for count in ("1", "2"):
        assert scaling["workers"][count]["errors"] == 0 and scaling["workers"][count]["requests_per_s"] > 0, scaling
    for name in ("nginx", "capsem-proxy-0.1.0", "capsem-proxyd", "capsem-proxyd-otel"):
        assert rows[name]["json_rss_mib"] > 0 and rows[name]["sse_rss_mib"] > 0, rows[name]
    # The per-event section ran: every event of the paced streams relayed by the relay and capsem-proxyd.
    events = results["events"]["systems"]
    for name in ("hypercorn-httpx", "capsem-proxyd", "capsem-proxyd-pii"):
        assert events[name]["events"] > 0 and events[name]["cpu_us_per_event"] > 0, events
    for name in ("capsem-proxyd", "capsem-proxyd-otel"):
        checks = results["systems"][name]
        assert checks["json"]["checks"]["block"]["status"] == 400
        assert checks["sse"]["checks"]["block"]["status"] == 400
    assert "| capsem-proxyd target |" in output.with_suffix(".md").read_text()
    # The agent sessions ran in every API's shape, Debug and PII, without errors, and PII's first-seen probe too.
    agent = results["agent"]
    assert {key.split("/")[1] for key in agent["sessions"]} == {"chat", "responses", "anthropic", "gemini"}
    for key, summary in agent["sessions"].items():
        assert summary["errors"] == 0 and summary["capsem-proxyd"]["added_total_s"] is not None, (key, summary)
    seen = agent["first_seen"]["capsem-proxyd"]
    assert seen["big_status"] == 200 and seen["rss_mib"]["proxy"] > 0, seen
    assert "Agent sessions:" in output.with_suffix(".md").read_text()

    # The MCP hop section ran: calls through the proxy and the relay, listings, the big result under PII
    # (a bench call that the hop refuses, e.g. arguments its schema rejects, fails the run).
    mcp = results["mcp"]
    assert mcp["calls"]["capsem-proxyd"] > 0 and mcp["calls"]["hypercorn-httpx"] > 0, mcp
    assert mcp["listing"]["servers"] > 0 and mcp["pii_result"]["calls"] > 0, mcp

    for started in results["meta"]["processes"]:
        assert not _alive(started["pid"]), f"bench left {started['name']} (pid {started['pid']}) running"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
