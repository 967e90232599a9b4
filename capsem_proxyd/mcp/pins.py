"""Pinned tool definitions per server: what a server may not change after its tools were approved.

A server can change a tool's description after the agent's operator
approved it (a "rug pull"): the model would then read new instructions under
a trusted name. So the first definition of each tool that passed the checks
is pinned, per server, by a hash of the fields the model sees (name, title,
description, input and output schemas, annotations; canonical JSON: RFC 8785,
the JSON Canonicalization Scheme, so that another implementation reviewing an
exported file computes the same hash), and kept in ``--state-dir``
(``mcp-pins.json``). A pins file written before RFC 8785 (sorted-key JSON as
orjson writes it) is read as it is: a pin whose hash is the old form of its own
stored definition gets the RFC 8785 hash in memory (and in the file at its next
save); one whose hash matches neither is kept, and then differs from every
listing (a pending change: fail closed).
On each later listing:

* the same hash: the tool is served as it is;
* a new description, title or annotations over the same schemas: the pinned
  definition is served instead (the new text never reaches the model), the
  change logged;
* a changed input or output schema: the tool is removed (a call shaped for the
  old schema could mean something else now);
* a tool the server did not list the first time: held pending, not served,
  until an operator accepts it; or, under ``--mcp-new-tools serve``, pinned
  as it is first listed and served at once (``Pinned.automatic``: logged and
  audited as an automatic pin). It passed the policies either way; ``hold``
  (the default) also keeps a tool no operator has seen from the model.

The server's ``instructions`` (its ``initialize`` result) are pinned the same
way, per server, the first approved text (``instructions``): a later text that
differs is held pending (kind ``instructions``) and the pinned one is served
in its place, so new instructions never reach the model unaccepted. They are
kept in the same file under the key ``@instructions`` (not a server's name:
``servers.NAME`` has no ``@``), and listed, diffed and accepted as the
pseudo-tool ``@instructions`` of their server.

Every difference (a new tool, a new text, a new schema) is kept as a pending
change, with the definition the server now lists, in
``mcp-pins-pending.json`` beside the pins, so that any worker can show it.
``capsem-proxyd mcp-pins list|diff|accept`` reads and accepts them through the
running daemon (``mcp/control.py``): ``accept`` pins the pending definition,
and the daemon, the audit chain's one writer, records who accepted.

The file is read when the hop starts, on reload and whenever it changed on
disk since (its mtime: an accept through another worker), and written
(atomically) when a server's first listing pins its tools or a change is
accepted. Each worker of ``--workers N`` keeps a copy in memory; before
pinning a server it reads the file again, so the first worker to pin a server
decides for all, and a save adds its server to the file as it is then (the
others' entries kept).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import rfc8785

log = logging.getLogger("capsem_proxyd.mcp")

FILE_NAME = "mcp-pins.json"
PENDING_FILE_NAME = "mcp-pins-pending.json"
# The fields of a listed tool the model reads, and those of them that say what a call means.
SEEN = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
SCHEMAS = ("inputSchema", "outputSchema")
# The key a server's pinned instructions are kept under (in the file, beside the servers), and the name
# their pending change is listed and accepted by.
INSTRUCTIONS = "@instructions"


def digest(tool: dict[str, Any], fields: tuple[str, ...] = SEEN) -> str:
    """The hash a tool is pinned by: SHA-256 of the RFC 8785 canonical JSON of ``fields``. A definition RFC 8785
    cannot write (an integer beyond I-JSON's 2**53, which a schema's ``maximum`` may be) is hashed in the
    sorted-key form, marked so that it never equals an RFC 8785 hash."""
    seen = {name: tool[name] for name in fields if name in tool}
    try:
        return hashlib.sha256(rfc8785.dumps(seen)).hexdigest()
    except rfc8785.CanonicalizationError:
        return hashlib.sha256(b"sorted-keys\0" + orjson.dumps(seen, option=orjson.OPT_SORT_KEYS)).hexdigest()


def legacy_digest(tool: dict[str, Any], fields: tuple[str, ...] = SEEN) -> str:
    """The hash pins files had before RFC 8785: SHA-256 of orjson's sorted-key JSON of ``fields``."""
    seen = {name: tool[name] for name in fields if name in tool}
    return hashlib.sha256(orjson.dumps(seen, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _migrated(data: dict[str, Any]) -> dict[str, Any]:
    """A pins file's content with every pin whose hash is the pre-RFC 8785 form of its own stored definition
    given its RFC 8785 hashes (``data`` changed in place and returned)."""
    for server, pins in data.items():
        if not isinstance(pins, dict):
            continue
        fields = ("instructions",) if server == INSTRUCTIONS else SEEN
        for pin in pins.values():
            definition = pin.get("definition") if isinstance(pin, dict) else None
            if not isinstance(definition, dict) or not isinstance(pin.get("hash"), str):
                continue
            if pin["hash"] != digest(definition, fields) and pin["hash"] == legacy_digest(definition, fields):
                pin["hash"] = digest(definition, fields)
                if fields is SEEN:
                    pin["schemas"] = digest(definition, SCHEMAS)
    return data


@dataclass(slots=True)
class Pinned:
    """What a listing becomes: the tools served, and how many were replaced, removed and held."""

    tools: list[dict[str, Any]]
    replaced: int = 0
    removed: int = 0
    pending: int = 0
    # Tools first listed after the server's first listing and pinned at once (``--mcp-new-tools serve``):
    # (name, the hash pinned), for the audit record.
    automatic: list[tuple[str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.replaced or self.removed or self.pending)


class Pins:
    """Every server's pinned definitions, loaded from and saved to ``directory``."""

    def __init__(self, directory: Path | None, new_tools: str = "hold") -> None:
        self.serve_new = new_tools == "serve"  # --mcp-new-tools: a tool first listed later, served at once
        self.path = directory / FILE_NAME if directory is not None else None
        self.pending_path = directory / PENDING_FILE_NAME if directory is not None else None
        self._read_at = self._mtime()
        self.servers: dict[str, dict[str, dict[str, Any]]] = self._load()
        # Per server, per tool: the pending change (kind "new", "text" or "schema", the listed definition).
        self.pending: dict[str, dict[str, dict[str, Any]]] = {}
        # A server whose first listing is being pinned page by page: (session, the cursor of its next page).
        self._open: dict[str, tuple[str, str]] = {}

    def reload(self) -> None:
        """The file read again (``capsem-proxyd reload``): how an operator's accepted change (a server's
        entry edited or removed) reaches a running proxy. An unreadable file keeps the pins in memory."""
        if self._read():
            self.pending.clear()

    def _mtime(self) -> int | None:
        try:
            return self.path.stat().st_mtime_ns if self.path is not None else None
        except OSError:
            return None

    def _refresh(self) -> None:
        """The file read again when it changed on disk since this process read it (an accept answered by
        another worker, or another instance's export copied in)."""
        if self._mtime() != self._read_at:
            self._read()

    def _read(self) -> bool:
        """The pins read from the file; False (the pins in memory kept, the error logged) when it is unreadable."""
        read_at = self._mtime()
        try:
            self.servers = self._load()
        except PinsUnreadable as error:
            log.error("%s; the pins in memory are kept", error)
            return False
        self._read_at = read_at
        return True

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
        return _migrated(data)

    def apply(
        self, server: str, tools: list[dict[str, Any]], *, session: str = "", cursor: str | None = None,
        next_cursor: str | None = None,
    ) -> Pinned:
        """The listing page ``tools`` (already checked) as it may be served; pins a server's first listing.

        A first listing may come in pages: the page that pins a server opens it to the pages that follow
        in the same session (``cursor`` the ``next_cursor`` of the page before), whose tools are pinned too.
        """
        self._refresh()
        opened = self._open.pop(server, None)
        if opened is not None and cursor is not None and opened == (session, cursor):
            self._extend(server, tools)
            if next_cursor is not None:
                self._open[server] = (session, next_cursor)
            return Pinned(tools)
        pinned = self.servers.get(server)
        if pinned is None:  # another worker (or instance) may have pinned it since this one read the file
            pinned = self._pinned_elsewhere(server)
        if pinned is None:
            self.servers[server] = {}
            self._extend(server, tools)
            if next_cursor is not None:
                self._open[server] = (session, next_cursor)
            return Pinned(tools)
        served: list[dict[str, Any]] = []
        result = Pinned(served)
        held = self.pending.setdefault(server, {})
        before = dict(held)
        for tool in tools:
            name = tool["name"]
            pin = pinned.get(name)
            if pin is None and self.serve_new:
                pinned[name] = _pin(tool)
                held.pop(name, None)
                log.warning("mcp tool pinned automatically (--mcp-new-tools serve): not in the first listing "
                            "server=%s tool=%s hash=%s", server, name, pinned[name]["hash"][:16])
                result.automatic.append((name, pinned[name]["hash"]))
                served.append(tool)
            elif pin is None:
                if name not in held:
                    log.warning("mcp tool held pending: not in the first listing server=%s tool=%s", server, name)
                held[name] = _change("new", tool)
                result.pending += 1
            elif pin["hash"] == digest(tool):
                held.pop(name, None)
                served.append(tool)
            elif pin["schemas"] == digest(tool, SCHEMAS):
                log.warning("mcp tool definition changed; the pinned one is served server=%s tool=%s", server, name)
                held[name] = _change("text", tool)
                served.append({**{k: v for k, v in tool.items() if k not in SEEN}, **pin["definition"]})
                result.replaced += 1
            else:
                log.warning("mcp tool schema changed; the tool is removed server=%s tool=%s", server, name)
                held[name] = _change("schema", tool)
                result.removed += 1
        if result.automatic:
            self._save(server)
        if held != before:
            self._save_pending(server)
        return result

    def instructions(self, server: str, text: str) -> str:
        """The instructions ``server`` may serve for ``text`` (already checked): ``text`` itself when it is
        the pinned text, or the first this server showed (then pinned); else the pinned text, the new one
        held pending."""
        self._refresh()
        pinned = self.servers.get(INSTRUCTIONS, {}).get(server)
        if pinned is None:  # another worker (or instance) may have pinned them since this one read the file
            pinned = self._instructions_elsewhere(server)
        change = _instructions_change(text)
        if pinned is None:
            self.servers.setdefault(INSTRUCTIONS, {})[server] = {key: change[key] for key in ("hash", "schemas",
                                                                                             "definition")}
            self._save(server)
            return text
        held = self.pending.setdefault(server, {})
        if pinned["hash"] == change["hash"]:
            if held.pop(INSTRUCTIONS, None) is not None:
                self._save_pending(server, drop=[INSTRUCTIONS])
            return text
        if held.get(INSTRUCTIONS) != change:
            log.warning("mcp server instructions changed; the pinned ones are served server=%s", server)
            held[INSTRUCTIONS] = change
            self._save_pending(server)
        return str(pinned["definition"]["instructions"])

    def pinned(self, server: str) -> dict[str, dict[str, Any]]:
        """``server``'s pins by tool, its instructions' as ``@instructions``."""
        pins = dict(self.servers.get(server, {}))
        instructions = self.servers.get(INSTRUCTIONS, {}).get(server)
        if instructions is not None:
            pins[INSTRUCTIONS] = instructions
        return pins

    def changes(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Every server's pending changes: this process's and those other workers saved, still differing
        from the pins as the file has them now."""
        self._refresh()
        found = self._load_pending()
        for server, held in self.pending.items():
            found.setdefault(server, {}).update(held)
        current: dict[str, dict[str, dict[str, Any]]] = {}
        for server, held in found.items():
            pinned = self.pinned(server)
            still = {name: change for name, change in held.items()
                     if name not in pinned or pinned[name]["hash"] != change["hash"]}
            if still:
                current[server] = dict(sorted(still.items()))
        return current

    def accept(self, server: str, tool: str | None = None) -> list[tuple[str, dict[str, Any] | None, dict[str, Any]]]:
        """``server``'s pending change of ``tool`` (or every one of them) pinned, saved and no longer pending:
        (tool, the pin replaced or None, the new pin) for each. ``KeyError`` when there is none to accept."""
        held = self.changes().get(server, {})
        names = list(held) if tool is None else [tool]
        if not names or any(name not in held for name in names):
            raise KeyError(tool or server)
        accepted = []
        for name in names:
            definition = held[name]["definition"]
            # hashed here from the definition, not taken from the change (a change saved before RFC 8785)
            pin = ({"hash": digest(definition, ("instructions",)), "schemas": "", "definition": definition}
                   if name == INSTRUCTIONS else
                   {"hash": digest(definition), "schemas": digest(definition, SCHEMAS), "definition": definition})
            # a server's instructions are kept beside its tools (an empty server entry would say "listed")
            pinned = self.servers.setdefault(INSTRUCTIONS, {}) if name == INSTRUCTIONS else self.servers.setdefault(
                server, {})
            key = server if name == INSTRUCTIONS else name
            accepted.append((name, pinned.get(key), pin))
            pinned[key] = pin
            self.pending.get(server, {}).pop(name, None)
        self._save(server)
        self._save_pending(server, drop=names)
        self._read_at = self._mtime()
        return accepted

    def _extend(self, server: str, tools: list[dict[str, Any]]) -> None:
        """``tools`` pinned for ``server`` as they are, and saved."""
        self.servers[server].update({tool["name"]: _pin(tool) for tool in tools})
        self._save(server)

    def _load_pending(self) -> dict[str, dict[str, dict[str, Any]]]:
        if self.pending_path is None or not self.pending_path.exists():
            return {}
        try:
            data = orjson.loads(self.pending_path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as error:  # only a view: the pins themselves still hold
            log.error("MCP pending pins file %s cannot be read: %s", self.pending_path, error)
            return {}
        return data if isinstance(data, dict) else {}

    def _save_pending(self, server: str, drop: Sequence[str] = ()) -> None:
        """``server``'s pending changes merged into the pending file (other workers' kept, ``drop`` removed)."""
        if self.pending_path is None:
            return
        current = self._load_pending()
        merged = {**current.get(server, {}), **self.pending.get(server, {})}
        for name in drop:
            merged.pop(name, None)
        current[server] = merged
        _write(self.pending_path, {name: held for name, held in current.items() if held})

    def _pinned_elsewhere(self, server: str) -> dict[str, dict[str, Any]] | None:
        """``server``'s pins as the file has them now, adopted; None when it has none."""
        try:
            found = self._load().get(server)
        except PinsUnreadable:
            return None
        if isinstance(found, dict):
            self.servers[server] = found
            return found
        return None

    def _instructions_elsewhere(self, server: str) -> dict[str, Any] | None:
        """``server``'s pinned instructions as the file has them now, adopted; None when it has none."""
        try:
            found = self._load().get(INSTRUCTIONS, {}).get(server)
        except (PinsUnreadable, AttributeError):
            return None
        if isinstance(found, dict):
            self.servers.setdefault(INSTRUCTIONS, {})[server] = found
            return found
        return None

    def _save(self, server: str) -> None:
        """``server``'s pins (its tools', its instructions') written into the file as it is now: the other
        servers' entries, which another worker may have written since this process read it, are kept."""
        if self.path is None:
            return
        try:
            current = self._load()
        except PinsUnreadable:
            current = {}
        if server in self.servers:
            current[server] = self.servers[server]
        instructions = self.servers.get(INSTRUCTIONS, {}).get(server)
        if instructions is not None:
            current[INSTRUCTIONS] = {**current.get(INSTRUCTIONS, {}), server: instructions}
        _write(self.path, current)
        self._read_at = self._mtime()


def _pin(tool: dict[str, Any]) -> dict[str, Any]:
    """A listed tool as a pin: its hashes and the definition the model sees."""
    return {"hash": digest(tool), "schemas": digest(tool, SCHEMAS),
            "definition": {name: tool[name] for name in SEEN if name in tool}}


def _change(kind: str, tool: dict[str, Any]) -> dict[str, Any]:
    """A pending change: what differs (``new``, ``text``, ``schema``) and the definition as now listed."""
    return {"kind": kind, "hash": digest(tool), "schemas": digest(tool, SCHEMAS),
            "definition": {name: tool[name] for name in SEEN if name in tool}}


def _instructions_change(text: str) -> dict[str, Any]:
    """A server's instructions as a pin or a pending change (kind ``instructions``)."""
    definition = {"instructions": text}
    return {"kind": "instructions", "hash": digest(definition, ("instructions",)), "schemas": "",
            "definition": definition}


def canonical(definition: dict[str, Any] | None) -> list[str]:
    """A definition as the lines of its canonical JSON (sorted keys), for a unified diff."""
    if definition is None:
        return []
    return orjson.dumps(definition, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2).decode().splitlines()


def _write(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_bytes(orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
        os.replace(temporary, path)
    except OSError as error:  # the pins still hold in this process; a restart would pin anew
        log.error("MCP pins could not be saved to %s: %s", path, error)


class PinsUnreadable(Exception):
    """The pins file exists but cannot be read: the proxy does not start on it (one line)."""
