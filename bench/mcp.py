"""The MCP hop's costs: CPU per ``tools/call``, a 100-tool ``tools/list`` first-seen and cached, and a
1 MB ``tools/call`` result under PII.

The upstream is ``bench/mcp_upstream.py`` (Streamable HTTP, JSON replies) on the load core; the client
is raw httpx JSON-RPC, one request at a time, on the load core too; each proxy on its own core.

* **CPU per call**: ``tools/call`` of a short ``echo`` through capsem-proxyd (defaults: Debug and the
  secret scan; its hop checks the arguments and the result) and through the plain Hypercorn + httpx relay
  (``bench/floor.py``, which relays ``/mcp/NAME`` like any path: the floor of a hop on this stack that
  checks nothing), taking turns; the proxy's CPU time over its calls, per call.
* **tools/list of 100 tools**: the latency capsem-proxyd adds over asking the upstream directly,
  first-seen (the first listing of each of ``SERVERS`` servers whose descriptions differ, so every
  definition is checked and pinned anew) and cached (the same server listed again: the verdict cache
  and the pins answer).
* **1 MB result under PII**: ``tools/call`` of ``report`` (1 MB of prose with phone numbers and IP
  addresses, different on each call) through capsem-proxyd with PII's pattern entities (``ner = false``,
  the agent section's ``pii.toml``) checking results; latency over direct, and MB/s.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.agent import PII_TOML
from bench.processes import Child, cpu_seconds, free_port, wait_listening
from bench.systems import REPO, Context, _capsem_proxyd_command

Log = Callable[[str], None]
# By preset: (tools/call rounds per system, first-seen servers, cached listings, 1 MB calls).
SIZES = {"full": (1000, 10, 40, 5), "quick": (400, 6, 20, 3), "smoke": (25, 1, 2, 1)}
BLOCK = 25  # calls timed together
RESULT_BYTES = 1_000_000
VERSION = "2025-06-18"
ACCEPT = "application/json, text/event-stream"


class Session:
    """One MCP session at ``url`` (``/mcp/NAME``): initialized, then requests one at a time."""

    def __init__(self, client: httpx.Client, url: str) -> None:
        self.client, self.url, self.ids = client, url, 0
        self.headers = {"accept": ACCEPT, "content-type": "application/json", "mcp-protocol-version": VERSION}
        reply = self._post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
        session = reply.headers.get("mcp-session-id")
        if session:
            self.headers["mcp-session-id"] = session
        self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def _post(self, body: dict[str, Any]) -> httpx.Response:
        reply = self.client.post(self.url, json=body, headers=self.headers)
        if reply.status_code not in (200, 202):
            raise RuntimeError(f"{self.url}: {body.get('method')}: status {reply.status_code}: {reply.text[:300]}")
        return reply

    def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.ids += 1
        answer = self._post({"jsonrpc": "2.0", "id": self.ids, "method": method, "params": params}).json()
        if "result" not in answer:
            raise RuntimeError(f"{self.url}: {method}: {str(answer)[:300]}")
        result: dict[str, Any] = answer["result"]
        return result

    def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = self.ask("tools/call", {"name": tool, "arguments": arguments})
        if result.get("isError"):
            raise RuntimeError(f"{self.url}: {tool} refused: {str(result)[:300]}")
        return result

    def list_tools(self) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = self.ask("tools/list", {})["tools"]
        return tools


def run(context: Context, mode: str, log: Log) -> dict[str, Any]:
    calls, servers, cached, big = SIZES.get(mode, SIZES["quick"])
    core = None if context.proxy_core is None else 1
    logs = context.work / "logs"
    upstream_port = free_port()
    upstream = context.children.start("mcp-upstream", [sys.executable, "-m", "bench.mcp_upstream", "--port",
                                      str(upstream_port), "--result-bytes", str(RESULT_BYTES)],
                                      core=core, log=logs / "mcp-upstream.log", cwd=REPO)
    wait_listening(upstream_port, upstream.process, context.start_timeout, "MCP upstream", logs / "mcp-upstream.log")
    direct = f"http://127.0.0.1:{upstream_port}/mcp"
    names = [f"s{index}" for index in range(servers + 1)]  # s0 for the calls and the cached listing
    proxy, proxy_url = _start_proxy(context, "capsem-proxyd-mcp", direct, names, [], logs)
    relay, relay_url = _start_relay(context, upstream_port, logs)
    out: dict[str, Any] = {"tools": 100, "result_bytes": RESULT_BYTES}
    try:
        with httpx.Client(timeout=120) as client:
            out["calls"] = _cpu_per_call(client, {"capsem-proxyd": (proxy, proxy_url + "/s0"),
                                                  "hypercorn-httpx": (relay, relay_url + "/s0")}, calls)
            log(f"   tools/call: capsem-proxyd {out['calls']['capsem-proxyd']} µs CPU, relay "
                f"{out['calls']['hypercorn-httpx']} µs CPU ({out['calls']['over_relay']}×)")
            out["listing"] = _listing(client, direct, proxy_url, names[1:], cached)
            log(f"   tools/list of 100: +{out['listing']['first_seen_added_ms']} ms first-seen, "
                f"+{out['listing']['cached_added_ms']} ms cached (direct {out['listing']['direct_ms']} ms)")
        context.children.stop(proxy)
        pii, pii_url = _start_proxy(context, "capsem-proxyd-mcp-pii", direct, ["s0"], _pii_options(context), logs)
        try:
            with httpx.Client(timeout=300) as client:
                out["pii_result"] = _big_result(client, direct + "/s0", pii_url + "/s0", pii, big)
        finally:
            context.children.stop(pii)
        log(f"   1 MB result under PII: +{out['pii_result']['added_ms']} ms over direct "
            f"({out['pii_result']['mb_per_s']} MB/s, {out['pii_result']['cpu_ms']} ms CPU)")
    finally:
        for child in (proxy, relay, upstream):
            context.children.stop(child)
    return out


def _start_proxy(context: Context, name: str, direct: str, servers: list[str], options: list[str],
                 logs: Any) -> tuple[Child, str]:
    port = free_port()
    state = context.work / f"{name}-state"
    command = [*_capsem_proxyd_command(), "start", "--port", str(port), "--state-dir", str(state), *options]
    for server in servers:
        command += ["--mcp-server", f"{server}={direct}/{server}"]
    child = context.children.start(name, command, core=context.proxy_core, log=logs / f"{name}.log")
    wait_listening(port, child.process, context.start_timeout, name, logs / f"{name}.log")
    return child, f"http://127.0.0.1:{port}/mcp"


def _start_relay(context: Context, upstream_port: int, logs: Any) -> tuple[Child, str]:
    port = free_port()
    command = [sys.executable, "-m", "bench.floor", "--port", str(port), "--mode", "forward", "--upstream",
               f"http://127.0.0.1:{upstream_port}"]
    child = context.children.start("mcp-relay", command, core=context.proxy_core, log=logs / "mcp-relay.log",
                                   cwd=REPO)
    wait_listening(port, child.process, context.start_timeout, "MCP relay", logs / "mcp-relay.log")
    return child, f"http://127.0.0.1:{port}/mcp"


def _pii_options(context: Context) -> list[str]:
    folder = context.work / "mcp-policies" / "pii"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "debug.toml").write_text("")
    (folder / "pii.toml").write_text("check_responses = true\n" + PII_TOML)
    (folder / "secrets.toml").write_text("enabled = false\n")
    return ["--policy-dir", str(folder)]


def _cpu_per_call(client: httpx.Client, systems: dict[str, tuple[Child, str]], calls: int) -> dict[str, Any]:
    """Taking turns, ``BLOCK`` calls each per turn (a drifting load hits both alike; the kernel counts CPU
    in 10 ms ticks, so a block, not a call, is timed); CPU µs per call."""
    sessions = {key: Session(client, url) for key, (_, url) in systems.items()}
    for session in sessions.values():  # warm: the listing, imports and first checks paid once
        session.list_tools()
        session.call("echo", {"id": "warm"})
    spent = dict.fromkeys(systems, 0.0)
    turns = max(1, calls // BLOCK)
    for turn in range(turns):
        for key, (child, _) in systems.items():
            before = cpu_seconds(child.pid)
            for number in range(BLOCK):
                sessions[key].call("echo", {"id": f"call {turn}-{number}"})
            spent[key] += cpu_seconds(child.pid) - before
    done = turns * BLOCK
    out: dict[str, Any] = {key: round(seconds * 1e6 / done, 1) for key, seconds in spent.items()}
    out["over_relay"] = round(out["capsem-proxyd"] / out["hypercorn-httpx"], 2) if out["hypercorn-httpx"] else None
    out["calls"] = done
    return out


def _timed(action: Callable[[], Any]) -> float:
    begun = time.perf_counter()
    action()
    return (time.perf_counter() - begun) * 1000


def _listing(client: httpx.Client, direct: str, proxy: str, names: list[str], cached: int) -> dict[str, Any]:
    """Latency in ms: the first listing of each of ``names`` through the proxy (first-seen), then ``s0``
    (listed before) ``cached`` times, against the same listing asked directly."""
    first = [_timed(Session(client, f"{proxy}/{name}").list_tools) for name in names]
    again = Session(client, f"{proxy}/s0")
    repeat = [_timed(again.list_tools) for _ in range(cached)]
    straight = Session(client, f"{direct}/s0")
    straight.list_tools()
    plain = [_timed(straight.list_tools) for _ in range(max(cached, len(names)))]
    base = statistics.median(plain)
    return {"direct_ms": round(base, 2), "first_seen_ms": round(statistics.median(first), 2),
            "cached_ms": round(statistics.median(repeat), 2),
            "first_seen_added_ms": round(statistics.median(first) - base, 2),
            "cached_added_ms": round(statistics.median(repeat) - base, 2), "servers": len(names), "cached": cached}


def _big_result(client: httpx.Client, direct: str, proxy: str, child: Child, calls: int) -> dict[str, Any]:
    straight, through = Session(client, direct), Session(client, proxy)
    straight.list_tools()
    through.list_tools()
    plain = [_timed(lambda: straight.call("report", {"id": "r1"})) for _ in range(calls)]
    before = cpu_seconds(child.pid)
    checked = [_timed(lambda: through.call("report", {"id": "r1"})) for _ in range(calls)]
    cpu = (cpu_seconds(child.pid) - before) / calls
    added = statistics.median(checked) - statistics.median(plain)
    return {"calls": calls, "direct_ms": round(statistics.median(plain), 1),
            "proxy_ms": round(statistics.median(checked), 1), "added_ms": round(added, 1),
            "cpu_ms": round(cpu * 1000, 1), "mb_per_s": round(RESULT_BYTES / 1e6 / (cpu or 1e-9), 2)}


def markdown(mcp: dict[str, Any] | None) -> str:
    if not mcp or "calls" not in mcp:
        return f"MCP hop: {mcp['skipped']}" if mcp and "skipped" in mcp else ""
    calls, listing, pii = mcp["calls"], mcp["listing"], mcp.get("pii_result", {})
    return "\n".join([
        "MCP hop (JSON replies, one request at a time, the proxy on its own core)", "",
        "| measure | capsem-proxyd | reference |", "|---|---|---|",
        f"| CPU per tools/call (µs, {calls['calls']} calls) | {calls['capsem-proxyd']} | Hypercorn+httpx relay "
        f"{calls['hypercorn-httpx']} ({calls['over_relay']}×) |",
        f"| tools/list of {mcp['tools']} tools, first-seen (ms added, {listing['servers']} servers) | "
        f"+{listing['first_seen_added_ms']} | direct {listing['direct_ms']} ms |",
        f"| tools/list of {mcp['tools']} tools, cached (ms added) | +{listing['cached_added_ms']} | direct "
        f"{listing['direct_ms']} ms |",
        f"| 1 MB tools/call result under PII patterns (ms added; CPU MB/s) | +{pii.get('added_ms')} "
        f"({pii.get('mb_per_s')} MB/s) | direct {pii.get('direct_ms')} ms |",
    ])
