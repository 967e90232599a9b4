"""``capsem-proxyd mcp-pins``: the MCP pins and their pending changes, read and accepted through the daemon.

The command is a client of the daemon's ``/mcp-pins`` control request
(``mcp/control.py`` says why it goes through the daemon, and how the request
is limited to the loopback and the state directory's token). It renders what
the daemon answers: per server, the tools pinned, the changes pending, and a
unified diff of each pending definition's canonical JSON against its pin.
"""

from __future__ import annotations

import difflib
import getpass
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from capsem_proxyd.mcp.control import ACCEPT_PATH, CONTROL_PATH, TOKEN_HEADER, read_token
from capsem_proxyd.mcp.pins import canonical

KINDS = {"new": "new tool (not served until accepted)",
         "text": "new description/title/annotations (the pinned text is served)",
         "schema": "new schema (the tool is removed until accepted)",
         "instructions": "new server instructions (the pinned text is served)"}


class PinsCommandError(Exception):
    """What the command cannot do, as one line; ``operator`` when it is the operator's argument (exit 2)."""

    def __init__(self, message: str, *, operator: bool = False) -> None:
        super().__init__(message)
        self.operator = operator


class PinsClient:
    """Talks to the daemon at ``base`` with the token from ``state``."""

    def __init__(self, base: str, state: Path) -> None:
        token = read_token(state)
        if token is None:
            raise PinsCommandError(f"no control token in {state}: no proxy with --mcp-server ran with this "
                                   "--state-dir (give the one it runs with)", operator=True)
        self.base = base
        self.headers = {TOKEN_HEADER: token}

    def listing(self) -> dict[str, Any]:
        return self._ask("GET", CONTROL_PATH)

    def accept(self, server: str, tool: str | None) -> dict[str, Any]:
        body = {"server": server, "tool": tool, "user": _user(), "uid": os.getuid()}
        return self._ask("POST", ACCEPT_PATH, body)

    def _ask(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:  # the proxy's certificate names its public host, not the loopback this asks
            response = httpx.request(method, self.base + path, json=body, headers=self.headers, timeout=10,
                                     verify=False)
        except httpx.HTTPError as error:
            raise PinsCommandError(f"{self.base} does not answer ({type(error).__name__}): is the proxy running? "
                                   "(give the --config, --port or --url it runs with)") from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code == 404:
            raise PinsCommandError(f"{self.base}{path}: not found: the proxy serves no MCP server, or the token in "
                                   "the state directory is not its (give the --state-dir it runs with)")
        if not isinstance(answer, dict) or response.status_code != 200:
            said = answer.get("error") if isinstance(answer, dict) else None
            raise PinsCommandError(str(said or f"the proxy answered {response.status_code}"),
                                   operator=response.status_code == 400)
        return answer


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def selected(listing: dict[str, Any], server: str | None, tool: str | None) -> dict[str, Any]:
    """The listing's servers narrowed to ``server`` (and its ``tool``); a name it lacks is an operator error."""
    servers: dict[str, Any] = listing.get("servers", {})
    if server is None:
        return servers
    if server not in servers:
        raise PinsCommandError(f"no MCP server named {server!r} (served: {', '.join(servers) or 'none'})",
                               operator=True)
    entry = servers[server]
    if tool is not None:
        if tool not in entry["pinned"] and tool not in entry["pending"]:
            raise PinsCommandError(f"server {server!r} has no tool {tool!r} pinned or pending", operator=True)
        entry = {"pinned": {k: v for k, v in entry["pinned"].items() if k == tool},
                 "pending": {k: v for k, v in entry["pending"].items() if k == tool}}
    return {server: entry}


def list_lines(servers: dict[str, Any]) -> Iterator[str]:
    for name, entry in servers.items():
        pending = entry["pending"]
        yield f"{name}: {len(entry['pinned'])} pinned, {len(pending)} pending"
        for tool in entry["pinned"]:
            yield f"  pinned   {tool}" + (f"  (pending: {pending[tool]['kind']})" if tool in pending else "")
        for tool, change in pending.items():
            if tool not in entry["pinned"]:
                yield f"  pending  {tool}  ({change['kind']})"


def diff_lines(servers: dict[str, Any]) -> Iterator[str]:
    for name, entry in servers.items():
        for tool, change in entry["pending"].items():
            yield f"# {name} {tool}: {KINDS.get(change['kind'], change['kind'])}"
            pinned = entry["pinned"].get(tool)
            yield from difflib.unified_diff(canonical(pinned), canonical(change["definition"]),
                                            fromfile=f"{name}/{tool} (pinned)" if pinned else "/dev/null",
                                            tofile=f"{name}/{tool} (listed now)", lineterm="")
