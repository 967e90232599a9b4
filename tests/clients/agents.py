"""The agent CLIs the client suite drives, each pointed at the proxy through its documented setting only.

Every run gets a fresh HOME (and CODEX_HOME, TMPDIR) under the test's temporary
folder, a minimal environment (no variable of the machine's leaks in), the
proxy as its only provider URL, a fake key, and telemetry, update checks and
error reporting switched off through the client's own settings. HTTP(S)_PROXY
point at a local trap, so a client that still tried to reach any other host
would show up in ``Trap.connections`` instead of the internet.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from tests.support.fake_upstream import ToolCall
from tests.support.key_watch import CLIENT_HOMES
from tests.support.proxy import ANTHROPIC_KEY, GEMINI_KEY, OPENAI_KEY

HERE = Path(__file__).parent
BIN = HERE / "node_modules" / ".bin"
RUN_TIMEOUT = 120.0  # seconds one client run may take; a blocked run that retried would still end well before


@dataclass
class Run:
    """One finished client process."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + "\n" + self.stderr


@dataclass
class Agent:
    """One CLI: how to run it with a prompt, in plain or streamed output, and how its read tool is called."""

    name: str
    executable: str
    version: str
    setting: str  # what points it at the proxy, for the README table and failure messages
    instructions_file: str  # the project-instructions file it loads by itself from its working folder
    key: str
    argv: Callable[[str, bool], list[str]]  # (prompt, streamed output) -> arguments
    environment: Callable[[str, Path], dict[str, str]]  # (proxy URL, home) -> client variables
    read_tool: Callable[[Path], ToolCall]  # the model's call of the client's own read/shell tool on a file
    prepare: Callable[[str, Path], None] = lambda proxy_url, home: None  # config files in the temp HOME
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return BIN / self.executable

    def installed(self) -> bool:
        return self.path.exists()


# -- Claude Code: ANTHROPIC_BASE_URL ---------------------------------------------------


def _claude_argv(prompt: str, streamed: bool) -> list[str]:
    argv = ["-p", prompt, "--model", "claude-sonnet-4-6", "--allowedTools", "Read"]
    if streamed:
        argv += ["--output-format", "stream-json", "--verbose", "--include-partial-messages"]
    return argv


def _claude_env(proxy_url: str, home: Path) -> dict[str, str]:
    return {
        "ANTHROPIC_BASE_URL": proxy_url,
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        # Documented switches: no telemetry, error reporting, auto-update or any other non-essential traffic.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
    }


CLAUDE_CODE = Agent(
    name="claude-code",
    executable="claude",
    version="2.1.332",
    setting="ANTHROPIC_BASE_URL=<proxy>",
    instructions_file="CLAUDE.md",
    key=ANTHROPIC_KEY,
    argv=_claude_argv,
    environment=_claude_env,
    read_tool=lambda file: ToolCall(name="Read", arguments={"file_path": str(file)}),
)


# -- Codex: a model provider in $CODEX_HOME/config.toml ---------------------------------


def _codex_argv(prompt: str, streamed: bool) -> list[str]:
    # The shell tool runs unsandboxed in the test's own temporary folder: Codex's bubblewrap sandbox
    # needs user namespaces, which containers often lack.
    argv = ["exec", "--skip-git-repo-check", "--color", "never", "--dangerously-bypass-approvals-and-sandbox"]
    if streamed:
        argv.append("--json")
    return [*argv, prompt]


def _codex_env(proxy_url: str, home: Path) -> dict[str, str]:
    return {"CODEX_HOME": str(home / ".codex"), "OPENAI_API_KEY": OPENAI_KEY}


def _codex_config(proxy_url: str, home: Path) -> None:
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(
        f"""model = "gpt-5-codex"
model_provider = "capsem"
check_for_update_on_startup = false

[model_providers.capsem]
name = "capsem-proxyd"
base_url = "{proxy_url}/v1"
env_key = "OPENAI_API_KEY"
wire_api = "responses"
supports_websockets = false

[features]
# Plugins sync a curated marketplace (git to github.com) and ChatGPT catalogs at startup.
plugins = false

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"
"""
    )


CODEX = Agent(
    name="codex",
    executable="codex",
    version="0.171.0",
    setting="[model_providers.capsem] base_url = <proxy>/v1 in $CODEX_HOME/config.toml",
    instructions_file="AGENTS.md",
    key=OPENAI_KEY,
    argv=_codex_argv,
    environment=_codex_env,
    prepare=_codex_config,
    read_tool=lambda file: ToolCall(name="exec_command", arguments={"cmd": f"cat {file.name}"}),
)


# -- Gemini CLI: GOOGLE_GEMINI_BASE_URL -------------------------------------------------


def _gemini_argv(prompt: str, streamed: bool) -> list[str]:
    # A fixed model: with "auto" the CLI first asks a routing classifier model (one more generation call).
    argv = ["--model", "gemini-2.5-flash", "-p", prompt]
    if streamed:
        argv += ["--output-format", "stream-json"]
    return argv


def _gemini_env(proxy_url: str, home: Path) -> dict[str, str]:
    return {
        "GOOGLE_GEMINI_BASE_URL": proxy_url,
        "GEMINI_API_KEY": GEMINI_KEY,
        "GEMINI_CLI_TRUST_WORKSPACE": "true",  # headless runs need a trusted folder
    }


def _gemini_settings(proxy_url: str, home: Path) -> None:
    settings = home / ".gemini" / "settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(
        json.dumps(
            {
                "security": {"auth": {"selectedType": "gemini-api-key"}},
                "privacy": {"usageStatisticsEnabled": False},
                "telemetry": {"enabled": False},
                "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
                "tools": {"useRipgrep": False},  # else it may try to download ripgrep
            }
        )
    )


GEMINI_CLI = Agent(
    name="gemini-cli",
    executable="gemini",
    version="0.61.0",
    setting="GOOGLE_GEMINI_BASE_URL=<proxy>",
    instructions_file="GEMINI.md",
    key=GEMINI_KEY,
    argv=_gemini_argv,
    environment=_gemini_env,
    prepare=_gemini_settings,
    read_tool=lambda file: ToolCall(name="read_file", arguments={"file_path": str(file)}),
)

AGENTS = {agent.name: agent for agent in (CLAUDE_CODE, CODEX, GEMINI_CLI)}


def missing_tools() -> str | None:
    """Why the client suite cannot run here, or None."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not installed"
    absent = [agent.name for agent in AGENTS.values() if not agent.installed()]
    if absent:
        return f"agent CLIs not installed ({', '.join(absent)}): run tests/clients/install.sh"
    return None


async def run_agent(agent: Agent, proxy_url: str, root: Path, prompt: str, *, streamed: bool, trap_url: str) -> Run:
    """Run ``agent`` once in ``root/work`` with a fresh home; returns when the process exits."""
    home, work, tmp = root / CLIENT_HOMES, root / "work", root / CLIENT_HOMES / "tmp"
    for folder in (home, work, tmp):
        folder.mkdir(parents=True, exist_ok=True)
    agent.prepare(proxy_url, home)
    node_dir = str(Path(shutil.which("node") or "/usr/bin/node").parent)
    env = {
        "PATH": os.pathsep.join(dict.fromkeys([node_dir, "/usr/local/bin", "/usr/bin", "/bin"])),
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "CI": "1",
        # Anything a client sends to another host goes to the trap, never out.
        "HTTP_PROXY": trap_url,
        "HTTPS_PROXY": trap_url,
        "ALL_PROXY": trap_url,
        "http_proxy": trap_url,
        "https_proxy": trap_url,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        **agent.environment(proxy_url, home),
    }
    argv = [str(agent.path), *agent.argv(prompt, streamed)]
    with trio.fail_after(RUN_TIMEOUT):
        done = await trio.run_process(
            argv, cwd=str(work), env=env, stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True,
            check=False,
        )
    return Run(argv, done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))


class Trap:
    """A TCP listener standing in for every host but the proxy: records each connection and closes it."""

    def __init__(self) -> None:
        self.url = ""
        self.connections: list[bytes] = []

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        # The connection is recorded the moment it is accepted, whatever it sends and however slowly
        # (a loaded machine): its first bytes, read for a few seconds, only say who it was.
        index = len(self.connections)
        self.connections.append(b"")
        with trio.move_on_after(5):
            try:
                self.connections[index] = await stream.receive_some(200)
            except trio.BrokenResourceError:
                pass
        await stream.aclose()
