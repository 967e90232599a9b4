"""The systems under the same load, each started fresh per workload.

A system turns a workload (``json`` or ``sse``) into a URL for the load
generator and, for proxies, a child process pinned to the proxy core whose
CPU time and memory are measured.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import legacy, nginx
from bench.processes import Child, Children, child_env, free_port, wait_listening

REPO = Path(__file__).resolve().parent.parent
PROXY_CORE = 0
LOAD_CORE = 1
WORKLOADS = ("json", "sse")


@dataclass
class Context:
    """What every system needs: tool paths, where to write, the running upstream."""

    nginx: str
    work: Path  # this run's folder
    shared: Path  # bench/.work: venvs reused across runs
    upstream_port: int
    children: Children
    proxy_core: int | None = PROXY_CORE
    start_timeout: float = 60.0
    profiler: str | None = None  # py-spy binary when profiling
    baseline: str | None = None  # git ref of capsem-proxyd measured beside the work tree (--baseline)
    events_upstream: str | None = None  # the paced fake's base URL, for the ``events`` workload (bench/events.py)

    def upstream_base(self, workload: str) -> str:
        """The provider base URL (up to /v1) a proxy is pointed at for this workload."""
        if workload == "events":
            assert self.events_upstream is not None, "start the paced upstream first"
            return self.events_upstream
        prefix = nginx.STREAM_PREFIX if workload == "sse" else ""
        return f"http://127.0.0.1:{self.upstream_port}{prefix}/v1"


@dataclass
class Running:
    url: str
    child: Child | None


class System:
    key = ""
    label = ""
    enforces_policy = False

    def prepare(self, context: Context) -> None:
        """One-time setup before anything is timed (e.g. building a venv)."""

    def start(self, context: Context, workload: str) -> Running:
        raise NotImplementedError


class Direct(System):
    """The load generator straight at the upstream: the floor every row is compared to."""

    key, label = "direct", "direct"

    def start(self, context: Context, workload: str) -> Running:
        return Running(context.upstream_base(workload) + "/chat/completions", None)


class NginxProxy(System):
    """nginx as a plain keep-alive reverse proxy: the physical cost of one proxy hop."""

    key, label = "nginx", "nginx proxy"

    def start(self, context: Context, workload: str) -> Running:
        port = free_port()
        prefix = (context.work / f"nginx-proxy-{workload}").resolve()
        config = nginx.write_config(prefix, nginx.proxy_config(prefix, port, context.upstream_port))
        child = context.children.start("nginx-proxy", nginx.command(context.nginx, prefix, config),
                                       core=context.proxy_core, log=prefix / "stdout.log")
        wait_listening(port, child.process, context.start_timeout, "nginx proxy", prefix / "error.log")
        path = (nginx.STREAM_PATH if workload == "sse" else nginx.JSON_PATH)
        return Running(f"http://127.0.0.1:{port}{path}", child)


class StackFloor(System):
    """A bare Hypercorn + trio app (``bench/floor.py``): ``fixed`` answers without an upstream,
    ``forward`` relays through one pooled httpx client; neither checks anything."""

    mode = ""

    def start(self, context: Context, workload: str) -> Running:
        port = free_port()
        log = context.work / "logs" / f"{self.key}-{workload}.log"
        command = [sys.executable, "-m", "bench.floor", "--port", str(port), "--mode", self.mode,
                   "--upstream", context.upstream_base(workload)]
        child = context.children.start(self.key, command, core=context.proxy_core, log=log, cwd=REPO)
        wait_listening(port, child.process, context.start_timeout, self.label, log)
        return Running(f"http://127.0.0.1:{port}/v1/chat/completions", child)


class HypercornFixed(StackFloor):
    key, label, mode = "hypercorn-fixed", "Hypercorn fixed reply", "fixed"


class HypercornForward(StackFloor):
    key, label, mode = "hypercorn-httpx", "Hypercorn+httpx relay", "forward"


class LegacyCapsemProxy(System):
    """capsem-proxy 0.1.0 from PyPI, served by uvicorn with its defaults."""

    key, label, enforces_policy = "capsem-proxy-0.1.0", "capsem-proxy 0.1.0", True

    def __init__(self) -> None:
        self.python: Path | None = None

    def prepare(self, context: Context) -> None:
        self.python = legacy.ensure_venv(context.shared / "capsem-proxy-0.1.0")

    def start(self, context: Context, workload: str) -> Running:
        assert self.python is not None, "prepare() first"
        port = free_port()
        log = context.work / "logs" / f"capsem-proxy-0.1.0-{workload}.log"
        env = child_env(**{legacy.UPSTREAM_ENV: context.upstream_base(workload)})
        child = context.children.start("capsem-proxy-0.1.0", legacy.command(self.python, port),
                                       core=context.proxy_core, log=log, env=env)
        wait_listening(port, child.process, context.start_timeout, "capsem-proxy 0.1.0", log)
        return Running(f"http://127.0.0.1:{port}/v1/chat/completions", child)


class CapsemProxyd(System):
    """This project, started as an operator would: ``capsem-proxyd start`` with defaults."""

    key, label, enforces_policy = "capsem-proxyd", "capsem-proxyd", True

    def options(self, context: Context) -> list[str]:
        return []

    def start(self, context: Context, workload: str) -> Running:
        port = free_port()
        log = context.work / "logs" / f"{self.key}-{workload}.log"
        command = [*_capsem_proxyd_command(), "start", "--port", str(port),
                   "--openai-upstream", context.upstream_base(workload), *self.options(context)]
        child = context.children.start(self.key, command, core=context.proxy_core, log=log)
        wait_listening(port, child.process, context.start_timeout, self.label, log)
        return Running(f"http://127.0.0.1:{port}/v1/chat/completions", child)


class CapsemProxydOtel(CapsemProxyd):
    """The same with OpenTelemetry trace export on (the SDK's defaults: 5 s / 512-span batches),
    to the upstream nginx's OTLP sink: what a span per request costs, beside what none costs.
    The exporter thread runs in the proxy process, so its CPU is in the proxy's."""

    key, label = "capsem-proxyd-otel", "capsem-proxyd + OTLP export"

    def options(self, context: Context) -> list[str]:
        return ["--otlp-endpoint", f"http://127.0.0.1:{context.upstream_port}"]


class CapsemProxydBaseline(System):
    """capsem-proxyd as it was at ``--baseline REF`` (a commit, tag or branch), started the same way:
    before and after a change, measured side by side in one run on the same venv."""

    key, label, enforces_policy = "capsem-proxyd-baseline", "capsem-proxyd baseline", True

    def __init__(self) -> None:
        self.tree: Path | None = None

    def prepare(self, context: Context) -> None:
        if not context.baseline:
            raise RuntimeError("no --baseline REF given")
        commit = subprocess.run(["git", "rev-parse", "--short", context.baseline], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout.strip()
        self.label = f"capsem-proxyd @{commit}"
        self.tree = context.shared / f"baseline-{commit}"
        if not (self.tree / "capsem_proxyd").is_dir():
            self.tree.mkdir(parents=True, exist_ok=True)
            archive = subprocess.run(["git", "archive", commit, "capsem_proxyd"], cwd=REPO, check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(self.tree)], input=archive, check=True)

    def start(self, context: Context, workload: str) -> Running:
        assert self.tree is not None, "prepare() first"
        port = free_port()
        log = context.work / "logs" / f"capsem-proxyd-baseline-{workload}.log"
        command = [sys.executable, "-m", "capsem_proxyd", "start", "--port", str(port),
                   "--openai-upstream", context.upstream_base(workload)]
        env = child_env(PYTHONPATH=str(self.tree))
        child = context.children.start(self.key, command, core=context.proxy_core, log=log, env=env, cwd=self.tree)
        wait_listening(port, child.process, context.start_timeout, self.label, log)
        return Running(f"http://127.0.0.1:{port}/v1/chat/completions", child)


def _capsem_proxyd_command() -> list[str]:
    """The project venv's console script, run directly so no ``uv`` wrapper process is measured."""
    script = Path(sys.executable).parent / "capsem-proxyd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "capsem_proxyd"]


ALL: dict[str, type[System]] = {
    system.key: system
    for system in (Direct, NginxProxy, HypercornFixed, HypercornForward, LegacyCapsemProxy, CapsemProxydBaseline,
                   CapsemProxyd, CapsemProxydOtel)
}
# Measured unless asked for by name: the baseline only with --baseline.
DEFAULT_SYSTEMS = [key for key in ALL if key != CapsemProxydBaseline.key]
