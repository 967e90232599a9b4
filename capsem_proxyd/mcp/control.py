"""Pending pin changes listed and accepted through the running daemon (``capsem-proxyd mcp-pins``).

Why through the daemon and not by editing ``mcp-pins.json``: the audit log's
hash chain must keep one writer (the daemon; a second process appending
would fork the chain), the acceptance must be recorded with who asked, and a
running proxy must serve the accepted definition on the next listing without
a reload that re-reads every policy.

How the command reaches it: the commands that control a running proxy
(``status``, ``reload``) find it by its pidfile and its ``/health`` address;
there is no admin listener. So this is a small control request on the
proxy's own port, ``/mcp-pins`` (``GET``: the pins and pending changes;
``POST /mcp-pins/accept``: accept), answered only when

* the peer is on the loopback (a remote client never reaches it directly), and
* it carries the token the daemon wrote into ``--state-dir/control-token``
  (mode 0600): loopback alone is not enough behind a reverse proxy on the same
  host, whose connections also come from the loopback. Reading the token needs
  the state directory's owner, the same right editing the pins file needs.

The request names the OS user and uid the command runs as; the daemon
records them with its own view of the peer (the token holder is trusted to
say who they are: the claim is what the audit record keeps).

Anything else answers 404 as an unknown path does, so the endpoint is not
announced to clients that cannot use it.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from capsem_proxyd.mcp.pins import Pins
from capsem_proxyd.observe.recorders import Recorder

log = logging.getLogger("capsem_proxyd.mcp")

CONTROL_PATH = "/mcp-pins"
ACCEPT_PATH = "/mcp-pins/accept"
TOKEN_FILE = "control-token"
TOKEN_HEADER = "x-capsem-control-token"


def control_token(directory: Path) -> str:
    """The state directory's control token, made (0600, atomically: every worker reads the same one) when
    it has none."""
    path = directory / TOKEN_FILE
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".{TOKEN_FILE}.{os.getpid()}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(32) + "\n")
        try:
            os.link(temporary, path)  # fails when another worker made it first: its token wins
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    return read_token(directory) or ""


def read_token(directory: Path) -> str | None:
    """The token the daemon made, for the command; None when there is none (no daemon with MCP ran here)."""
    try:
        return (directory / TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


class PinsControl:
    """Answers ``/mcp-pins`` for the hop: the pins and pending changes, and accepting them."""

    def __init__(self, pins: Pins, servers: list[str], recorder: Recorder, token: str) -> None:
        self.pins = pins
        self.servers = sorted(servers)
        self.recorder = recorder
        self.token = token

    def allowed(self, client: tuple[str, int] | None, headers: Mapping[str, str]) -> bool:
        """A loopback peer presenting the token."""
        try:
            loopback = client is not None and ipaddress.ip_address(client[0]).is_loopback
        except ValueError:
            loopback = False
        presented = headers.get(TOKEN_HEADER, "")
        return loopback and bool(self.token) and hmac.compare_digest(presented.encode(), self.token.encode())

    def listing(self) -> dict[str, Any]:
        """Per served server: its pinned definitions and its pending changes."""
        changes = self.pins.changes()
        return {"servers": {
            name: {"pinned": {tool: pin["definition"] for tool, pin in sorted(self.pins.pinned(name).items())},
                   "pending": changes.get(name, {})}
            for name in self.servers
        }}

    def accept(self, body: Mapping[str, Any], peer: str) -> tuple[int, dict[str, Any]]:
        """Accept the pending change(s) ``body`` names; (status, reply). Each accepted change is audited."""
        server, tool = body.get("server"), body.get("tool")
        if not isinstance(server, str) or (tool is not None and not isinstance(tool, str)):
            return 400, {"error": "accept needs a server name (and optionally a tool name)"}
        if server not in self.servers:
            return 400, {"error": f"no MCP server named {server[:64]!r} (served: {', '.join(self.servers) or 'none'})"}
        try:
            accepted = self.pins.accept(server, tool)
        except KeyError:
            what = f"tool {tool[:64]!r} of {server!r}" if tool is not None else f"server {server!r}"
            return 400, {"error": f"no pending change for {what} (see capsem-proxyd mcp-pins list)"}
        who = {"user": str(body.get("user", ""))[:64], "uid": body.get("uid") if isinstance(body.get("uid"), int)
               else None, "peer": peer}
        for name, previous, pin in accepted:
            change = {"definition_hash": pin["hash"], "previous_definition_hash": previous["hash"] if previous else None}
            log.warning("mcp pin accepted server=%s tool=%s hash=%s user=%s uid=%s", server, name, pin["hash"][:16],
                        who["user"], who["uid"])
            self.recorder.mcp_pin_accepted(server, name, change, who)
        self.recorder.mcp_pins(server, sum(1 for change in self.pins.changes().get(server, {}).values()
                                           if change["kind"] == "new"))
        return 200, {"accepted": [{"server": server, "tool": name, "hash": pin["hash"]} for name, _, pin in accepted]}
