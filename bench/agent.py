"""The agent-session workload: what a coding agent's conversation costs, turn by turn.

Coding agents (Claude Code, Codex, Gemini CLI, the Agents SDKs) resend the
whole conversation every turn: a system prompt of several kB, their tool
definitions, and every earlier message and tool result. Each session here is
``turns`` turns in one API's shape (Chat Completions, Responses, Anthropic
Messages, Gemini generateContent); each turn adds a user message, the
model's tool call and a tool result of ``result_bytes`` (source code with
line numbers, as a file read returns it: digits are what PII analysis finds
slow), so 50 turns of 4 kB pass 200 kB of context. Every turn is sent to the
upstream directly and through each proxy, one after the other, on one
keep-alive connection each: the proxy's added latency is the difference, turn
by turn. Reported per policy (Debug alone; the default configuration, Debug and
Secrets with no ``--policy-dir``; Rules; PII with the pattern entities,
``ner = false``; and PII with ``processes = false``, its fallback in threads
of the proxy's process, in the Chat shape) and shape: the p50 added latency over the last turns
(40-50 of 50), the session's total added time, and how the second half's
total compares with the first half's (a proxy that re-analyses everything
grows with the context, about 2.7x here; one that analyses what is new stays
near 1x).

And two PII measurements of first-seen content: a whole 50-turn conversation
nobody sent before (its analysis speed, bytes per second of added latency),
and the latency of a small request from another tenant while that big one is
in flight, against its latency alone. And the Secrets policy's first-seen scan
speed on this conversation's text, per core (``bench/secrets_speed.py``), with
what it costs a process to start it (its rules and its stream hold-back).

The Secrets policy runs by default (issue 23): the Debug, Rules and PII folders
here turn it off (``secrets.toml``, ``enabled = false``), so each row measures the
policy its name says; ``default`` is what an operator gets without a folder.

The upstream is nginx answering each API's fixed reply (its own small config,
next to the main bench's). Nothing is pinned here: the section runs on every
core the machine has (``every_core``), undoing the runner's pin of itself and
its children to the load core, because the PII analysis runs in worker
processes that need the other cores. Pinned, the proxy, its workers, the
upstream and this client shared one core, and a small request during a big
first-seen one measured the scheduler (24x its latency alone) instead of the
proxy (1.2x on two cores).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import nginx, payloads
from bench.processes import Child, child_env, free_port, rss_bytes, wait_listening
from bench.systems import CapsemProxydBaseline, Context

Log = Callable[[str], None]
SHAPES = ("chat", "responses", "anthropic", "gemini")
# pii-threads: processes = false, the fallback; default: no --policy-dir (Debug and Secrets)
POLICIES = ("debug", "default", "rules", "pii", "pii-threads")
SECRETS_OFF = "enabled = false\n"
MODEL = "gpt-4o-mini"
REPLY = "Done. Reading the next file now."
RULES_TOML = """\
max_prompt_chars = 2000000
[on_model_call]
block = ["project falcon", { name = "aws-key", regex = 'AKIA[0-9A-Z]{16}' }]
log = ["password"]
[on_tool_response]
block = [{ name = "private-key", regex = '-----BEGIN [A-Z ]*PRIVATE KEY-----' }]
"""
PII_TOML = """\
ner = false
[entity_decisions]
EMAIL_ADDRESS = "BLOCK"
CREDIT_CARD = "BLOCK"
US_SSN = "BLOCK"
IBAN_CODE = "BLOCK"
CRYPTO = "BLOCK"
PHONE_NUMBER = "LOG"
IP_ADDRESS = "LOG"
US_BANK_NUMBER = "LOG"
"""


@dataclass
class Sizes:
    """How big a run is: ``--quick`` and ``--smoke`` are presets of this."""

    turns: int = 50
    result_bytes: int = 4000
    last_turns: int = 11  # the p50 is over the last ones (turns 40-50 of 50)
    shapes: tuple[str, ...] = SHAPES
    policies: tuple[str, ...] = POLICIES
    baseline_pii_shapes: tuple[str, ...] = SHAPES  # the baseline re-analyses everything: the slow part
    small_samples: int = 15


PRESETS = {
    "full": Sizes(),
    "quick": Sizes(baseline_pii_shapes=("chat",)),
    "smoke": Sizes(turns=3, result_bytes=600, last_turns=2, policies=("debug", "default", "pii"), baseline_pii_shapes=("chat",),
                   small_samples=3),
}
# The PII fallback (analysis in threads of the proxy's process) is measured in one shape, beside the workers.
SHAPES_OF = {"pii-threads": ("chat",)}


# -- the conversation -------------------------------------------------------------------------------------------


SYSTEM = ("You are a coding agent working in a large repository. " * 8 + "\n").join(
    f"Rule {number}: keep changes small, run the tests, explain why in the commit message. " * 4
    for number in range(12)
)
TOOLS = [
    ("read_file", "Read a file of the repository and return its lines, numbered.", {"path": "string"}),
    ("list_dir", "List the entries of a folder of the repository.", {"path": "string"}),
    ("run_tests", "Run the test suite, or the tests matching a pattern, and return the output.", {"pattern": "string"}),
    ("edit_file", "Replace a range of lines of a file with new text.", {"path": "string", "start": "integer",
                                                                        "end": "integer", "text": "string"}),
    ("search", "Search the repository for a regular expression and return the matching lines.", {"regex": "string"}),
]


def tool_result(rng: random.Random, size: int) -> str:
    """A file read: numbered lines of Python, ``size`` characters."""
    lines, total, number = [], 0, 1
    while total < size:
        line = (f"{number:6d}\tdef handler_{rng.randrange(10_000)}(request, timeout={rng.randrange(1, 600)}):"
                f"  # rev {rng.getrandbits(32):08x}, reviewed 2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}")
        lines.append(line)
        total += len(line) + 1
        number += 1
    return "\n".join(lines)[:size]


@dataclass
class Turn:
    ask: str
    call_id: str
    path: str
    result: str


def session(seed: int, turns: int, result_bytes: int) -> list[Turn]:
    rng = random.Random(seed)
    return [
        Turn(ask=f"Step {index + 1}: look at the handlers in module {rng.randrange(1000)} and tell me what changed.",
             call_id=f"call_{seed}_{index}", path=f"src/pkg_{rng.randrange(100)}/module_{index}.py",
             result=tool_result(rng, result_bytes))
        for index in range(turns)
    ]


def request(shape: str, turns: list[Turn]) -> tuple[str, dict[str, str], bytes]:
    """(path, headers, body) of the request that ends with ``turns``'s last tool result."""
    if shape == "chat":
        messages: list[Any] = [{"role": "system", "content": SYSTEM}]
        for turn in turns:
            arguments = json.dumps({"path": turn.path})
            messages += [
                {"role": "user", "content": turn.ask},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": turn.call_id, "type": "function", "function": {"name": "read_file", "arguments": arguments}}]},
                {"role": "tool", "tool_call_id": turn.call_id, "content": turn.result},
            ]
        tools = [{"type": "function", "function": {"name": name, "description": text, "parameters": _schema(props)}}
                 for name, text, props in TOOLS]
        body: dict[str, Any] = {"model": MODEL, "messages": messages, "tools": tools}
        return "/v1/chat/completions", _bearer(), _json(body)
    if shape == "responses":
        items: list[Any] = []
        for turn in turns:
            items += [
                {"role": "user", "content": turn.ask},
                {"type": "function_call", "call_id": turn.call_id, "name": "read_file",
                 "arguments": json.dumps({"path": turn.path})},
                {"type": "function_call_output", "call_id": turn.call_id, "output": turn.result},
            ]
        tools = [{"type": "function", "name": name, "description": text, "parameters": _schema(props)}
                 for name, text, props in TOOLS]
        body = {"model": MODEL, "instructions": SYSTEM, "input": items, "tools": tools, "store": False}
        return "/v1/responses", _bearer(), _json(body)
    if shape == "anthropic":
        messages = []
        previous: Turn | None = None
        for turn in turns:
            blocks: list[Any] = []
            if previous is not None:
                blocks.append({"type": "tool_result", "tool_use_id": previous.call_id, "content": previous.result})
            blocks.append({"type": "text", "text": turn.ask})
            messages += [{"role": "user", "content": blocks}, {"role": "assistant", "content": [
                {"type": "tool_use", "id": turn.call_id, "name": "read_file", "input": {"path": turn.path}}]}]
            previous = turn
        assert previous is not None
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": previous.call_id, "content": previous.result}]})
        tools = [{"name": name, "description": text, "input_schema": _schema(props)} for name, text, props in TOOLS]
        body = {"model": "claude-sonnet-4-6", "max_tokens": 1024, "system": SYSTEM, "messages": messages,
                "tools": tools}
        headers = {"x-api-key": payloads.BENCH_KEY, "anthropic-version": "2023-06-01"}
        return "/v1/messages", headers, _json(body)
    contents: list[Any] = []
    for turn in turns:
        contents += [
            {"role": "user", "parts": [{"text": turn.ask}]},
            {"role": "model", "parts": [{"functionCall": {"name": "read_file", "args": {"path": turn.path}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "read_file", "response": {"content": turn.result}}}]},
        ]
    declarations = [{"name": name, "description": text, "parameters": _schema(props)} for name, text, props in TOOLS]
    body = {"systemInstruction": {"parts": [{"text": SYSTEM}]}, "contents": contents,
            "tools": [{"functionDeclarations": declarations}]}
    return "/v1beta/models/gemini-2.5-flash:generateContent", {"x-goog-api-key": "AIza" + payloads.BENCH_KEY}, _json(body)


def _schema(props: dict[str, str]) -> dict[str, Any]:
    return {"type": "object", "properties": {name: {"type": kind, "description": f"the {name}"}
                                             for name, kind in props.items()}, "required": sorted(props)}


def _bearer(key: str = payloads.BENCH_KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def tenant_headers(headers: dict[str, str], tenant: str) -> dict[str, str]:
    """The same request under another key (another tenant: nothing cached for it)."""
    out = {}
    for name, value in headers.items():
        if name in ("authorization", "x-api-key", "x-goog-api-key"):
            value = value + tenant
        out[name] = value
    return out


# -- the upstream -----------------------------------------------------------------------------------------------


REPLIES = {
    "chat": {"id": "chatcmpl-agent", "object": "chat.completion", "created": 1735689600, "model": MODEL,
             "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}},
    "responses": {"id": "resp_agent", "object": "response", "created_at": 1735689600, "status": "completed",
                  "model": MODEL, "output": [{"type": "message", "id": "msg_agent", "status": "completed",
                                              "role": "assistant",
                                              "content": [{"type": "output_text", "text": REPLY, "annotations": []}]}],
                  "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}},
    "anthropic": {"id": "msg_agent", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
                  "content": [{"type": "text", "text": REPLY}], "stop_reason": "end_turn", "stop_sequence": None,
                  "usage": {"input_tokens": 1, "output_tokens": 1}},
    "gemini": {"candidates": [{"content": {"role": "model", "parts": [{"text": REPLY}]}, "finishReason": "STOP",
                               "index": 0}],
               "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2},
               "modelVersion": "gemini-2.5-flash", "responseId": "agent"},
}
# One server beside the main bench's (bench/nginx.py holds the common http block): each API's fixed reply.
_UPSTREAM_SERVER = """\
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 64m;
        client_body_buffer_size 1m;
        default_type application/json;
        location = /v1/chat/completions {{ return 200 '{chat}'; }}
        location = /v1/responses {{ return 200 '{responses}'; }}
        location = /v1/messages {{ return 200 '{anthropic}'; }}
        location ~ ^/v1beta/models/[^/]+:generateContent$ {{ return 200 '{gemini}'; }}
    }}
"""


def start_upstream(context: Context, nginx_binary: str) -> int:
    port = free_port()
    prefix = (context.work / "agent-upstream").resolve()
    bodies = {shape: payloads.nginx_safe(_json(reply)) for shape, reply in REPLIES.items()}
    config = nginx.write_config(prefix, nginx.config_text(prefix, _UPSTREAM_SERVER.format(port=port, **bodies)))
    child = context.children.start("nginx-agent-upstream", nginx.command(nginx_binary, prefix, config), core=None,
                                   log=prefix / "stdout.log")
    wait_listening(port, child.process, 30, "agent upstream", prefix / "error.log")
    return port


# -- the proxies ------------------------------------------------------------------------------------------------


@dataclass
class Proxy:
    label: str
    url: str
    child: Child


def policy_folder(context: Context, policy: str, label: str = "capsem-proxyd", secrets: bool = True) -> Path | None:
    """The ``--policy-dir`` of ``policy`` (None: the default configuration); Secrets off but in ``default``.
    ``secrets``: the proxy knows the Secrets policy (a release before it refuses the name ``secrets.toml``,
    and has none to turn off)."""
    if policy == "default":
        return None
    folder = context.work / "agent-policies" / label / policy
    folder.mkdir(parents=True, exist_ok=True)
    if secrets:
        (folder / "secrets.toml").write_text(SECRETS_OFF)
    if policy == "debug":
        (folder / "debug.toml").write_text("")
        return folder
    name = policy.split("-")[0]
    text = RULES_TOML if policy == "rules" else ("processes = false\n" if policy == "pii-threads" else "") + PII_TOML
    (folder / f"{name}.toml").write_text(text)
    return folder


def start_proxy(context: Context, label: str, command: list[str], upstream_port: int, policy: str,
                env: dict[str, str] | None = None, cwd: Path | None = None) -> Proxy:
    port = free_port()
    base = f"http://127.0.0.1:{upstream_port}"
    folder = policy_folder(context, policy, label,
                           secrets=cwd is None or (cwd / "capsem_proxyd" / "policies" / "secrets.py").exists())
    log = context.work / "logs" / f"agent-{label}-{policy}.log"
    arguments = [*command, "start", "--port", str(port), "--openai-upstream", base + "/v1",
                 "--anthropic-upstream", base, "--gemini-upstream", base,
                 "--state-dir", str(context.work / f"agent-state-{label}-{policy}"),
                 *(["--policy-dir", str(folder)] if folder else [])]
    child = context.children.start(f"agent-{label}", arguments, core=None, log=log, env=env, cwd=cwd)
    wait_listening(port, child.process, context.start_timeout, label, log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + context.start_timeout
    while True:  # the port is bound before the policy workers are warm: wait for /health
        try:
            if _get(url + "/health") == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline or child.process.poll() is not None:
            raise RuntimeError(f"{label} did not become ready; see {log}")
        time.sleep(0.1)
    return Proxy(label, url, child)


def _get(url: str) -> int:
    host, port = url.split("//")[1].split("/")[0].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status
    finally:
        connection.close()


class Client:
    """One keep-alive connection; ``post`` returns (status, seconds to the whole reply)."""

    def __init__(self, url: str, timeout: float = 600) -> None:
        host, port = url.split("//")[1].split("/")[0].split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def post(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, float]:
        started = time.perf_counter()
        self.connection.request("POST", path, body=body, headers={**headers, "content-type": "application/json"})
        response = self.connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - started

    def close(self) -> None:
        self.connection.close()


# -- measuring --------------------------------------------------------------------------------------------------


@dataclass
class SessionResult:
    turns: list[dict[str, Any]] = field(default_factory=list)  # per turn: context bytes, seconds per system
    errors: int = 0


def run_session(shape: str, targets: dict[str, str], sizes: Sizes, seed: int, tenant: str) -> SessionResult:
    """Every turn, to every target in order (direct first); the proxies under ``tenant``'s key."""
    clients = {name: Client(url) for name, url in targets.items()}
    out = SessionResult()
    turns = session(seed, sizes.turns, sizes.result_bytes)
    try:
        for index in range(1, len(turns) + 1):
            path, headers, body = request(shape, turns[:index])
            row: dict[str, Any] = {"turn": index, "bytes": len(body)}
            for name, client in clients.items():
                status, seconds = client.post(path, headers if name == "direct" else tenant_headers(headers, tenant), body)
                row[name] = round(seconds * 1000, 3)
                if status != 200:
                    out.errors += 1
                    row[f"{name}_status"] = status
            out.turns.append(row)
    finally:
        for client in clients.values():
            client.close()
    return out


def summarize(result: SessionResult, systems: list[str], last: int) -> dict[str, Any]:
    turns = result.turns
    half = len(turns) // 2
    summary: dict[str, Any] = {"turns": len(turns), "context_kb": round(turns[-1]["bytes"] / 1000, 1),
                               "errors": result.errors}
    first_bytes = sum(row["bytes"] for row in turns[:half]) or 1
    summary["context_ratio_2nd_vs_1st_half"] = round(sum(row["bytes"] for row in turns[half:]) / first_bytes, 2)
    for name in systems:
        added = [row[name] - row["direct"] for row in turns]
        summary[name] = {
            "added_p50_last_ms": round(statistics.median(added[-last:]), 2),
            "added_total_s": round(sum(added) / 1000, 3),
            "added_first_half_s": round(sum(added[:half]) / 1000, 3),
            "added_second_half_s": round(sum(added[half:]) / 1000, 3),
        }
        first = sum(added[:half])
        summary[name]["ratio_2nd_vs_1st_half"] = round(sum(added[half:]) / first, 2) if first > 0 else None
    return summary


def first_seen(proxy: Proxy, direct: str, sizes: Sizes, seed: int, small_samples: int) -> dict[str, Any]:
    """A whole conversation nobody sent before (PII): its analysis speed, and a small request's latency
    (another tenant, new text each time) alone and while the big one is in flight."""
    turns = session(seed, sizes.turns, sizes.result_bytes)
    path, headers, body = request("chat", turns)
    direct_client = Client(direct)
    _, direct_s = direct_client.post(path, headers, body)
    direct_client.close()

    def small(number: int) -> bytes:
        return _json({"model": MODEL, "messages": [{"role": "user", "content": f"quick question {seed}-{number}?"}]})

    small_client = Client(proxy.url)
    alone = [small_client.post(path, tenant_headers(headers, f"s{seed}"), small(number))[1]
             for number in range(small_samples)]
    big: dict[str, Any] = {}

    def send_big() -> None:
        client = Client(proxy.url)
        status, seconds = client.post(path, tenant_headers(headers, f"b{seed}"), body)
        big.update(status=status, seconds=seconds)
        client.close()

    thread = threading.Thread(target=send_big)
    thread.start()
    during: list[float] = []
    number = small_samples
    time.sleep(0.02)
    while thread.is_alive():
        status, seconds = small_client.post(path, tenant_headers(headers, f"s{seed}"), small(number))
        if thread.is_alive():
            during.append(seconds)
        number += 1
    thread.join()
    small_client.close()
    added = big["seconds"] - direct_s
    alone_p50 = statistics.median(alone)
    return {
        "big_kb": round(len(body) / 1000, 1), "big_status": big["status"], "big_ms": round(big["seconds"] * 1000, 1),
        "big_added_ms": round(added * 1000, 1),
        "analysed_mb_per_s": round(len(body) / added / 1e6, 3) if added > 0 else None,
        "small_alone_p50_ms": round(alone_p50 * 1000, 2),
        "small_during_p50_ms": round(statistics.median(during) * 1000, 2) if during else None,
        "small_during_samples": len(during),
        "small_ratio": round(statistics.median(during) / alone_p50, 2) if during else None,
    }


@contextlib.contextmanager
def every_core() -> Iterator[None]:
    """This process, and every child it starts meanwhile, on all of the machine's cores."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, range(os.cpu_count() or 1))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def run(context: Context, nginx_binary: str, mode: str, log: Log,
        policies: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The whole agent section, on every core: per policy, the proxies side by side with the direct upstream.
    ``policies``: only these rows (``--agent-policies``; None: the preset's)."""
    with every_core():
        return _run(context, nginx_binary, mode, log, policies)


def _run(context: Context, nginx_binary: str, mode: str, log: Log, policies: tuple[str, ...] | None) -> dict[str, Any]:
    sizes = PRESETS.get(mode, PRESETS["full"])
    if policies:
        sizes = replace(sizes, policies=policies)
    upstream_port = start_upstream(context, nginx_binary)
    direct = f"http://127.0.0.1:{upstream_port}"
    baseline: CapsemProxydBaseline | None = None
    if context.baseline:
        baseline = CapsemProxydBaseline()
        baseline.prepare(context)
    out: dict[str, Any] = {"sizes": {"turns": sizes.turns, "result_bytes": sizes.result_bytes,
                                     "last_turns": sizes.last_turns},
                           "baseline": baseline.label if baseline else None, "sessions": {}, "first_seen": {}}
    after_command = _capsem_proxyd_command()
    for policy in sizes.policies:
        proxies: list[Proxy] = []
        try:
            if baseline is not None and policy != "pii-threads":  # main has no worker processes: its pii is this
                assert baseline.tree is not None
                proxies.append(start_proxy(context, "baseline", [sys.executable, "-m", "capsem_proxyd"], upstream_port,
                                           policy, env=child_env(PYTHONPATH=str(baseline.tree)), cwd=baseline.tree))
            proxies.append(start_proxy(context, "capsem-proxyd", after_command, upstream_port, policy))
            for number, shape in enumerate(SHAPES_OF.get(policy, sizes.shapes)):
                targets = {"direct": direct}
                for proxy in proxies:
                    if proxy.label == "baseline" and policy == "pii" and shape not in sizes.baseline_pii_shapes:
                        continue
                    targets[proxy.label] = proxy.url
                log(f"== agent session / {policy} / {shape}: {sizes.turns} turns, {', '.join(targets)}")
                result = run_session(shape, targets, sizes, seed=1000 + number, tenant=f"{policy}{number}")
                summary = summarize(result, [name for name in targets if name != "direct"], sizes.last_turns)
                summary["per_turn"] = result.turns
                out["sessions"][f"{policy}/{shape}"] = summary
                log("   " + "; ".join(
                    f"{name} +{summary[name]['added_p50_last_ms']} ms p50 last turns, +{summary[name]['added_total_s']} s total"
                    for name in targets if name != "direct") + f" | errors {summary['errors']}")
            if policy.startswith("pii"):
                for proxy in proxies:
                    key = proxy.label + (" (threads)" if policy == "pii-threads" else "")
                    log(f"== agent first-seen / {policy} / {proxy.label}")
                    seen = first_seen(proxy, direct, sizes, seed=7, small_samples=sizes.small_samples)
                    seen["rss_mib"] = _rss_mib(proxy.child.pid)
                    out["first_seen"][key] = seen
                    log(f"   {seen}")
        finally:
            for proxy in proxies:
                context.children.stop(proxy.child)
    out["secrets"] = secrets_measurements(sizes, log)
    return out


def secrets_measurements(sizes: Sizes, log: Log) -> dict[str, Any]:
    """The Secrets policy on this workload's text: first-seen scan speed per core, and a process's start-up
    CPU for it (``bench/secrets_speed.py``)."""
    from bench import pii_corpora, secrets_speed

    text = pii_corpora.agent_text(turns=sizes.turns, result_bytes=sizes.result_bytes)
    scan = secrets_speed.measure({"agent": text}, repeat=3)["agent"]
    startup = secrets_speed.startup_cpu()
    log(f"== Secrets on the agent text: {scan['kb']} kB at {scan['mb_per_s']} MB/s per core, {scan['findings']} "
        f"findings; start-up CPU: rules {startup['rules_s']} s, stream hold-back {startup['holdback_s']} s")
    return {"scan": scan, "startup": startup}


def _rss_mib(pid: int) -> dict[str, float]:
    """The proxy's own RSS, and with its child processes (the policy workers)."""
    own = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                own = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"proxy": round(own / 2**20, 1), "with_workers": round(rss_bytes(pid) / 2**20, 1)}


def _capsem_proxyd_command() -> list[str]:
    script = Path(sys.executable).parent / "capsem-proxyd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "capsem_proxyd"]


# -- reporting --------------------------------------------------------------------------------------------------


def markdown(agent: dict[str, Any] | None) -> str:
    if not agent:
        return ""
    sizes = agent["sizes"]
    lines = [f"Agent sessions: {sizes['turns']} turns of {sizes['result_bytes']:,} B tool results; added latency "
             f"over direct (p50 of the last {sizes['last_turns']} turns; session total; 2nd half / 1st half)",
             "", "| policy / shape | context | system | added p50, last turns | added, session | 2nd/1st half |",
             "|---|---|---|---|---|---|"]
    for key, summary in agent["sessions"].items():
        for name, item in summary.items():
            if not isinstance(item, dict) or "added_p50_last_ms" not in item:
                continue
            label = agent["baseline"] if name == "baseline" and agent["baseline"] else name
            lines.append(f"| {key} | {summary['context_kb']} kB ({summary['context_ratio_2nd_vs_1st_half']}x) | {label} | "
                         f"{item['added_p50_last_ms']:,} ms | {item['added_total_s']:,} s | {item['ratio_2nd_vs_1st_half']} |")
    for name, seen in agent.get("first_seen", {}).items():
        label = agent["baseline"] if name == "baseline" and agent["baseline"] else name
        if name.endswith("(threads)"):
            label = "capsem-proxyd, PII in threads (processes = false)"
        lines.append("")
        lines.append(f"First-seen PII, {label}: {seen['big_kb']} kB conversation +{seen['big_added_ms']:,} ms "
                     f"({seen['analysed_mb_per_s']} MB/s); a small request {seen['small_alone_p50_ms']} ms alone, "
                     f"{seen['small_during_p50_ms']} ms during it ({seen['small_ratio']}x, "
                     f"{seen['small_during_samples']} samples); RSS {seen['rss_mib']['proxy']} MiB "
                     f"({seen['rss_mib']['with_workers']} MiB with its workers)")
    secrets = agent.get("secrets")
    if secrets:
        scan, startup = secrets["scan"], secrets["startup"]
        lines.append("")
        lines.append(f"Secrets (default rules), first-seen scan of the agent text: {scan['kb']} kB at {scan['mb_per_s']} "
                     f"MB/s per core ({scan['findings']} findings); a process's CPU to start it: rules "
                     f"{startup['rules_s']} s, stream hold-back {startup['holdback_s']} s")
        secrets_turn = _secrets_turn(agent)
        if secrets_turn is not None:
            lines.append(f"Debug + Secrets (the default configuration) vs Debug alone, added p50 per turn at the "
                         f"session's end, worst shape: {secrets_turn['default_ms']} ms vs {secrets_turn['debug_ms']} ms "
                         f"(context {secrets_turn['context_kb']} kB)")
    return "\n".join(lines)


def _secrets_turn(agent: dict[str, Any]) -> dict[str, Any] | None:
    """The default configuration's added p50 per turn at the session's end (worst shape), beside Debug alone's."""
    ours = "capsem-proxyd"
    sessions = agent.get("sessions", {})
    default = {key: item for key, item in sessions.items() if key.startswith("default/") and ours in item}
    debug = [item[ours]["added_p50_last_ms"] for key, item in sessions.items() if key.startswith("debug/") and ours in item]
    if not default:
        return None
    worst = max(default.values(), key=lambda item: item[ours]["added_p50_last_ms"])
    return {"default_ms": worst[ours]["added_p50_last_ms"], "debug_ms": max(debug) if debug else None,
            "context_kb": worst.get("context_kb")}


def targets(agent: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The agent workload's targets for capsem-proxyd (the work tree), PII on."""
    if not agent:
        return []
    ours = "capsem-proxyd"
    pii = {key: summary[ours] for key, summary in agent["sessions"].items() if key.startswith("pii/") and ours in summary}
    seen = agent.get("first_seen", {}).get(ours, {})
    checks: list[tuple[str, float | None, str, float]] = []
    if pii:
        checks.append(("PII: added p50 per turn at the session's end, worst shape (ms)",
                       max(item["added_p50_last_ms"] for item in pii.values()), "<=", 50))
        ratios = [item["ratio_2nd_vs_1st_half"] for item in pii.values() if item["ratio_2nd_vs_1st_half"] is not None]
        checks.append(("PII: session's 2nd-half added time / 1st half, worst shape (×; linear ≈ 1)",
                       max(ratios) if ratios else None, "<=", 1.5))
    if seen:
        checks.append(("PII: first-seen content analysed (MB/s, one worker)", seen.get("analysed_mb_per_s"), ">=", 1.0))
        checks.append(("PII: small request during a big first-seen one vs alone (×)", seen.get("small_ratio"), "<=", 2.0))
        checks.append(("PII: proxy process RSS, workers apart (MiB)", seen.get("rss_mib", {}).get("proxy"), "<=", 80))
    secrets_turn = _secrets_turn(agent)
    if secrets_turn is not None:
        checks.append((f"Debug + Secrets (default): added p50 per turn at the session's end, worst shape, "
                       f"{secrets_turn['context_kb']} kB context (ms)", secrets_turn["default_ms"], "<=", 5))
    secrets = agent.get("secrets")
    if secrets:
        checks.append(("Secrets: first-seen scan of the agent text (MB/s per core)", secrets["scan"]["mb_per_s"],
                       ">=", 20))
    errors = sum(summary["errors"] for summary in agent["sessions"].values())
    checks.append(("agent sessions: errors", errors, "<=", 0))
    return [{"target": label, "value": value, "op": op, "limit": limit,
             "met": None if value is None else (value <= limit if op == "<=" else value >= limit)}
            for label, value, op, limit in checks]
