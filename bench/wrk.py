"""Closed-loop load with wrk: a Lua script POSTs the body, checks every reply
and prints wrk's own statistics as one JSON line from its ``done`` hook."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.processes import pinned

RESULT_MARKER = "BENCH_RESULT "

_SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
{extra_headers}
local expected = [==[{expected}]==]
local threads = {{}}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    good = 0
    bad = 0
end

-- Every reply is checked (status 200 and the upstream's marker), so a proxy
-- that answers fast with the wrong thing cannot look fast.
function response(status, headers, body)
    if status == 200 and string.find(body, expected, 1, true) then
        good = good + 1
    else
        bad = bad + 1
    end
end

function done(summary, latency, requests)
    local good, bad = 0, 0
    for _, thread in ipairs(threads) do
        good = good + thread:get("good")
        bad = bad + thread:get("bad")
    end
    local e = summary.errors
    io.write(string.format(
        '{marker}{{"requests":%d,"duration_us":%d,"bytes":%d,' ..
        '"errors":{{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}},' ..
        '"good":%d,"bad":%d,"latency_us":{{"min":%.1f,"mean":%.1f,"max":%.1f,"stdev":%.1f,' ..
        '"p50":%.1f,"p90":%.1f,"p99":%.1f,"p999":%.1f}}}}\\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout, good, bad,
        latency.min, latency.mean, latency.max, latency.stdev,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
"""


@dataclass
class LoadResult:
    connections: int
    requests: int
    duration_s: float
    requests_per_s: float
    errors: int
    bad_replies: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    raw: dict

    def as_dict(self) -> dict:
        return asdict(self)


def write_script(path: Path, body: bytes, expected: str, key: str) -> Path:
    for text in (body.decode(), expected):
        if "]==]" in text:
            raise ValueError("payload would end the Lua long string")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_SCRIPT.format(body=body.decode(), expected=expected, key=key, extra_headers="",
                                   marker=RESULT_MARKER))
    return path


def run(wrk: str, url: str, script: Path, *, connections: int, duration: int, core: int | str | None,
        timeout_s: int = 10, threads: int = 1) -> LoadResult:
    """Run wrk (one thread unless told: it shares its core with the upstream) and parse its JSON line."""
    command = pinned(
        [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", f"--timeout={timeout_s}s", "--latency", "-s", str(script), url],
        core,
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + timeout_s + 30)
    line = next((line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    raw = json.loads(line[len(RESULT_MARKER):])
    seconds = raw["duration_us"] / 1e6
    latency = raw["latency_us"]
    return LoadResult(
        connections=connections,
        requests=raw["requests"],
        duration_s=round(seconds, 3),
        requests_per_s=round(raw["requests"] / seconds, 1) if seconds else 0.0,
        errors=sum(raw["errors"].values()),
        bad_replies=raw["bad"],
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        p999_ms=latency["p999"] / 1000,
        mean_ms=latency["mean"] / 1000,
        max_ms=latency["max"] / 1000,
        raw=raw,
    )
