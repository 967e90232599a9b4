"""Pinned tool definitions per server: what a server may not change after its tools were approved.

A server can change a tool's description after the agent's operator
approved it (a "rug pull"): the model would then read new instructions under
a trusted name. So the first definition of each tool that passed the checks
is pinned, per server, by a hash of the fields the model sees (name, title,
description, input and output schemas, annotations; canonical JSON: sorted
keys, no spaces, UTF-8), and kept in ``--state-dir`` (``mcp-pins.json``).
On each later listing:

* the same hash: the tool is served as it is;
* a new description, title or annotations over the same schemas: the pinned
  definition is served instead (the new text never reaches the model), the
  change logged;
* a changed input or output schema: the tool is removed (a call shaped for the
  old schema could mean something else now);
* a tool the server did not list the first time: held pending, not served,
  until an operator accepts it (by deleting its server's entry from the
  file in this version, which pins the next listing whole).

The file is read when the hop starts and written (atomically) when a
server's first listing pins its tools. Each worker of ``--workers N`` keeps
its own copy in memory; the first to pin a server writes the file, the
others pin what they see first (the same tools, as long as the server does
not change between their first listings).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("capsem_proxyd.mcp")

FILE_NAME = "mcp-pins.json"
# The fields of a listed tool the model reads, and those of them that say what a call means.
SEEN = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
SCHEMAS = ("inputSchema", "outputSchema")


def digest(tool: dict[str, Any], fields: tuple[str, ...] = SEEN) -> str:
    """The hash a tool is pinned by: SHA-256 of the canonical JSON of ``fields``."""
    seen = {name: tool[name] for name in fields if name in tool}
    return hashlib.sha256(orjson.dumps(seen, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(slots=True)
class Pinned:
    """What a listing becomes: the tools served, and how many were replaced, removed and held."""

    tools: list[dict[str, Any]]
    replaced: int = 0
    removed: int = 0
    pending: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.replaced or self.removed or self.pending)


class Pins:
    """Every server's pinned definitions, loaded from and saved to ``directory``."""

    def __init__(self, directory: Path | None) -> None:
        self.path = directory / FILE_NAME if directory is not None else None
        self.servers: dict[str, dict[str, dict[str, Any]]] = self._load()
        self.pending: dict[str, set[str]] = {}

    def _load(self) -> dict[str, dict[str, dict[str, Any]]]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as error:
            # Fail closed: with the pins unreadable, every tool would be "first seen" and pinned anew.
            raise PinsUnreadable(f"MCP pins file {self.path} cannot be read: {error}") from None
        if not isinstance(data, dict):
            raise PinsUnreadable(f"MCP pins file {self.path} is not a JSON object")
        return data

    def apply(self, server: str, tools: list[dict[str, Any]]) -> Pinned:
        """The listing ``tools`` (already checked) as it may be served; pins a server's first listing."""
        pinned = self.servers.get(server)
        if pinned is None:
            self.servers[server] = {
                tool["name"]: {"hash": digest(tool), "schemas": digest(tool, SCHEMAS),
                               "definition": {name: tool[name] for name in SEEN if name in tool}}
                for tool in tools
            }
            self._save()
            return Pinned(tools)
        served: list[dict[str, Any]] = []
        result = Pinned(served)
        for tool in tools:
            name = tool["name"]
            pin = pinned.get(name)
            if pin is None:
                self.pending.setdefault(server, set()).add(name)
                log.warning("mcp tool held pending: not in the first listing server=%s tool=%s", server, name)
                result.pending += 1
            elif pin["hash"] == digest(tool):
                served.append(tool)
            elif pin["schemas"] == digest(tool, SCHEMAS):
                log.warning("mcp tool definition changed; the pinned one is served server=%s tool=%s", server, name)
                served.append({**{k: v for k, v in tool.items() if k not in SEEN}, **pin["definition"]})
                result.replaced += 1
            else:
                log.warning("mcp tool schema changed; the tool is removed server=%s tool=%s", server, name)
                result.removed += 1
        return result

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(f".{FILE_NAME}.{os.getpid()}")
            temporary.write_bytes(orjson.dumps(self.servers, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
            os.replace(temporary, self.path)
        except OSError as error:  # the pins still hold in this process; a restart would pin anew
            log.error("MCP pins could not be saved to %s: %s", self.path, error)


class PinsUnreadable(Exception):
    """The pins file exists but cannot be read: the proxy does not start on it (one line)."""
