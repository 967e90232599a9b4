"""What a user feels of a stream: time to the first text, and how late each character arrives.

A 400-character answer streamed at a real model's pace (3–4 characters every
25 ms) in the OpenAI Chat, Anthropic and Gemini SSE shapes, read once
directly from the provider and once through capsem-proxyd under each policy
folder, one stream at a time, same run:

* (a) the Debug policy alone (holds only an end that may still become its marker);
* (b) a Rules policy of literal terms (the same, for its terms);
* (c) a Rules policy with an unbounded regex (holds only while a match is pending: a DFA per regex);
* (d) PII's pattern entities (``ner = false``, the agent section's ``pii.toml``) checking replies, beside Debug
  (held only while an entity may be pending, the word being written for the e-mail pattern; PII asked only once
  its screen finds a match of a recognizer's pattern, here at the end);
* (e) the default configuration, no ``--policy-dir``: Debug and Secrets (the rules' DFAs hold only from
  the start of a credential still pending). Its first text is compared with (a)'s, same run.

The Secrets policy runs by default in any folder (issue 23): (a) to (d) turn it off (``secrets.toml``,
``enabled = false``), so each measures the policy its name says.

The provider is the test suite's fake (``tests/support/fake_upstream``),
run as a child process with a paced default reply (each chunk at its place in
a fixed schedule from the first, as a model's tokens come). For each character the
delay is its arrival time through the proxy minus its arrival time directly
(both from the request's start, the direct time the median over the direct
runs); reported are the first text's added delay and the mean and p95 of
the per-character delay.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.agent import PII_TOML
from bench.processes import child_env, free_port, wait_listening
from bench.systems import REPO, CapsemProxydBaseline, Context, _capsem_proxyd_command

KEY = "sk-bench-latency-0123456789"
GEMINI_KEY = "AIzaBenchLatency0123456789abcdefXYZ"
APIS: dict[str, tuple[str, dict[str, str], dict[str, Any]]] = {
    "openai": ("/v1/chat/completions", {"authorization": f"Bearer {KEY}"},
               {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "tell me"}]}),
    "anthropic": ("/v1/messages", {"x-api-key": KEY, "anthropic-version": "2023-06-01"},
                  {"model": "claude-sonnet-4-6", "max_tokens": 500, "stream": True,
                   "messages": [{"role": "user", "content": "tell me"}]}),
    "gemini": ("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", {"x-goog-api-key": GEMINI_KEY},
               {"contents": [{"role": "user", "parts": [{"text": "tell me"}]}]}),
}
SECRETS_OFF = {"secrets.toml": "enabled = false\n"}
DEBUG = "(a) Debug"
DEFAULT = "(e) default: Debug + Secrets"
POLICIES: dict[str, dict[str, str] | None] = {  # None: no --policy-dir
    DEBUG: {"debug.toml": "", **SECRETS_OFF},
    "(b) Rules, literal terms": {"rules.toml": '[on_model_response]\nblock = ["project falcon", "wire transfer", '
                                               '"internal only"]\n', **SECRETS_OFF},
    "(c) Rules, unbounded regex": {"rules.toml": '[on_model_response]\nblock = [{ regex = "secret-[a-z]+" }]\n',
                                   **SECRETS_OFF},
    "(d) PII patterns + Debug": {"debug.toml": "", "pii.toml": "check_responses = true\n" + PII_TOML, **SECRETS_OFF},
    DEFAULT: None,
}
CHUNK_MS = 25  # the paced provider's interval between chunks
TARGET_TTFT_MS = 30.0
TARGET_DEFAULT_VS_DEBUG_MS = 30.0  # issue 23: the default configuration's first text within 30 ms of Debug alone
# Issue 22's done-when: a character may wait one chunk interval (the hold-back keeps a chunk that may still
# begin a match until the next one comes) plus 10 ms of the proxy's own; not a flat 25 ms.
TARGET_P95_MS = CHUNK_MS + 10.0


def answer(length: int) -> list[str]:
    """``length`` characters of ordinary prose in 3- and 4-character chunks."""
    words = ("the quick answer to your question depends on what you measure and how often you measure it "
             "so here is a careful explanation that takes its time ")
    text = (words * (length // len(words) + 1))[:length]
    chunks, start, size = [], 0, 3
    while start < len(text):
        chunks.append(text[start:start + size])
        start += size
        size = 7 - size
    return chunks


def measure(context: Context, length: int, runs: int, log: Any) -> dict[str, Any]:
    """Direct and proxied arrival times for every API and policy folder; the summary per pair. With
    ``--baseline REF``, the baseline's capsem-proxyd is measured too, right after the work tree's under
    each folder (its rows end in `` @commit``; the targets read the work tree's)."""
    children = context.children
    chunks = answer(length)
    fake_url = _start_fake(context, chunks)
    out: dict[str, Any] = {"answer_chars": length, "chunk_ms": CHUNK_MS, "runs": runs, "results": {}}
    direct = {api: _runs(fake_url, api, runs) for api in APIS}
    proxies = [("", None)]
    if context.baseline:
        baseline = CapsemProxydBaseline()
        baseline.prepare(context)
        proxies.append((" @" + baseline.label.rsplit("@", 1)[-1], baseline.tree))
    for name, files in POLICIES.items():
        folder: Path | None = None
        if files is not None:
            folder = context.work / "latency-policies" / name.split()[0].strip("()")
            folder.mkdir(parents=True, exist_ok=True)
            for file, text in files.items():
                (folder / file).write_text(text)
        for suffix, tree in proxies:
            url, child = _start_proxy(context, fake_url, folder, name.split()[0].strip("()"), tree)
            try:
                for api in APIS:
                    proxied = _runs(url, api, runs)
                    summary = _summary(direct[api], proxied)
                    out["results"][f"{api} {name}{suffix}"] = summary
                    log(f"   {api:9} {name + suffix:38} first text +{summary['ttfb_added_ms']:.1f} ms, per character "
                        f"mean {summary['delay_mean_ms']:.1f} ms, p95 {summary['delay_p95_ms']:.1f} ms")
            finally:
                children.stop(child)
    return out


def _start_fake(context: Context, chunks: list[str]) -> str:
    log = context.work / "logs" / "latency-fake.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [sys.executable, "-m", "bench.paced_upstream", "--port", str(port), "--chunk-delay", str(CHUNK_MS / 1000),
               "--chunk-clock", "schedule", "--chunks", json.dumps(chunks)]
    child = context.children.start("latency-fake", command, core=None, log=log, cwd=REPO)
    wait_listening(port, child.process, context.start_timeout, "paced upstream", log)
    return f"http://127.0.0.1:{port}"


def _start_proxy(context: Context, fake_url: str, folder: Path | None, tag: str,
                 tree: Path | None = None) -> tuple[str, Any]:
    """The work tree's capsem-proxyd, or (``tree``) the baseline's sources run on the same venv."""
    port = free_port()
    tag += "-baseline" if tree is not None else ""
    log = context.work / "logs" / f"latency-proxy-{tag}.log"
    command = [*(_capsem_proxyd_command() if tree is None else [sys.executable, "-m", "capsem_proxyd"]),
               "start", "--port", str(port), *(["--policy-dir", str(folder)] if folder is not None else []),
               "--openai-upstream", fake_url + "/v1", "--anthropic-upstream", fake_url,
               "--gemini-upstream", fake_url, "--log-level", "warning"]
    paths = {"PYTHONPATH": str(tree)} if tree is not None else {}
    env = child_env(CAPSEM_PROXYD_STATE_DIR=str(context.work / "latency-state"), **paths)
    child = context.children.start(f"latency-proxy-{tag}", command, core=context.proxy_core, log=log, env=env,
                                   cwd=tree)
    wait_listening(port, child.process, context.start_timeout, "capsem-proxyd", log)
    return f"http://127.0.0.1:{port}", child


def _runs(base: str, api: str, runs: int) -> list[list[float]]:
    """``runs`` measured reads after one that is not counted: a user talks to a warm daemon (its first
    request of an API pays for imports and first-use set-up once per process, not per stream)."""
    _read(base, api)
    return [_read(base, api) for _ in range(runs)]


def _read(base: str, api: str) -> list[float]:
    """Seconds from the request's start to the arrival of each character of the answer, in order."""
    path, headers, body = APIS[api]
    arrivals: list[float] = []
    with httpx.Client(timeout=30) as client:
        started = time.perf_counter()
        with client.stream("POST", base + path, json=body, headers=headers) as response:
            if response.status_code != 200:
                raise RuntimeError(f"{api}: status {response.status_code}")
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                text = _text(api, line[5:].strip())
                if text:
                    now = time.perf_counter() - started
                    arrivals.extend([now] * len(text))
    return arrivals


def _text(api: str, data: str) -> str:
    if not data.startswith("{"):
        return ""
    payload = json.loads(data)
    if api == "openai":
        return "".join(choice.get("delta", {}).get("content") or "" for choice in payload.get("choices", []))
    if api == "anthropic":
        delta = payload.get("delta", {})
        return delta.get("text", "") if payload.get("type") == "content_block_delta" else ""
    return "".join(part.get("text", "") for candidate in payload.get("candidates", [])
                   for part in candidate.get("content", {}).get("parts", []) if not part.get("thought"))


def _summary(direct: list[list[float]], proxied: list[list[float]]) -> dict[str, Any]:
    length = min(len(run) for run in direct + proxied)
    reference = [statistics.median(run[i] for run in direct) for i in range(length)]
    delays = sorted((run[i] - reference[i]) * 1000 for run in proxied for i in range(length))
    first_direct = statistics.median(run[0] for run in direct) * 1000
    first_proxied = statistics.median(run[0] for run in proxied) * 1000
    return {
        "chars": length,
        "ttfb_direct_ms": round(first_direct, 1),
        "ttfb_proxy_ms": round(first_proxied, 1),
        "ttfb_added_ms": round(first_proxied - first_direct, 1),
        "delay_mean_ms": round(statistics.fmean(delays), 1),
        "delay_p95_ms": round(delays[min(len(delays) - 1, int(0.95 * len(delays)))], 1),
    }


def markdown(latency: dict[str, Any] | None) -> str:
    if not latency or "results" not in latency:
        return ""
    lines = [
        f"User-felt latency: a {latency['answer_chars']}-character answer in 3-4 character chunks every "
        f"{latency['chunk_ms']} ms, one stream at a time, {latency['runs']} runs each, direct vs through capsem-proxyd",
        "",
        "| API, policy | first text direct (ms) | through the proxy (ms) | added (ms) | per-character delay mean / p95 (ms) |",
        "|---|---|---|---|---|",
    ]
    for name, row in latency["results"].items():
        lines.append(f"| {name} | {row['ttfb_direct_ms']} | {row['ttfb_proxy_ms']} | {row['ttfb_added_ms']} | "
                     f"{row['delay_mean_ms']} / {row['delay_p95_ms']} |")
    versus = default_vs_debug(latency)
    if versus:
        lines += ["", "The default configuration (Debug + Secrets) vs Debug alone, first text through the proxy: "
                  + ", ".join(f"{api} {value:+.1f} ms" for api, value in versus.items())]
    return "\n".join(lines)


def default_vs_debug(latency: dict[str, Any]) -> dict[str, float]:
    """Per API: the default configuration's first text through the proxy minus Debug alone's, same run."""
    results = latency.get("results", {})
    out = {}
    for api in APIS:
        default, debug = results.get(f"{api} {DEFAULT}"), results.get(f"{api} {DEBUG}")
        if default and debug:
            out[api] = round(default["ttfb_proxy_ms"] - debug["ttfb_proxy_ms"], 1)
    return out


def targets(latency: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Issue 22's targets, for every policy set: first text within 30 ms of direct, per-character p95
    within one chunk interval plus 10 ms (35 ms at 25 ms chunks)."""
    if not latency or "results" not in latency:
        return []
    out = []
    for name, row in latency["results"].items():
        if " @" in name:  # a baseline's row: shown beside, not a target
            continue
        for label, value, limit in (("first text added", row["ttfb_added_ms"], TARGET_TTFT_MS),
                                    ("per-character delay p95", row["delay_p95_ms"], TARGET_P95_MS)):
            what = f"{label} (ms, chunk interval {CHUNK_MS} + 10)" if limit is TARGET_P95_MS else f"{label} (ms)"
            out.append({"target": f"{what}, {name}", "value": value, "op": "<=", "limit": limit,
                        "met": value <= limit})
    for api, value in default_vs_debug(latency).items():
        out.append({"target": f"first text, default configuration (Debug + Secrets) minus Debug alone (ms), {api}",
                    "value": value, "op": "<=", "limit": TARGET_DEFAULT_VS_DEBUG_MS,
                    "met": value <= TARGET_DEFAULT_VS_DEBUG_MS})
    return out

