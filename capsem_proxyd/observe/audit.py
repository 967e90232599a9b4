"""The tamper-evident audit log: one JSON line per policy decision, per stored-content reference and per request.

Each line carries ``prev``, the SHA-256 of the previous line written by the same
writer (one chain per process, so worker processes can share one file opened
with O_APPEND). Every open starts with a ``chain_start`` marker whose ``prev``
links to the file's last line, if any. ``verify`` walks the chains and reports
the first line where one breaks: an edited, inserted or deleted line is caught.
Keys are never written; prompt text only when the operator opts in.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
from capsem.models import Decision

from capsem_proxyd.exchange import Exchange
from capsem_proxyd.observe.recorders import CacheUse, Recorder
from capsem_proxyd.views import StoredReference

# Ids are the provider's (or what a client sent in their place): a bounded prefix is enough to find them.
_ID_CHARS = 256
# Characters JSON allows raw inside strings but many line readers treat as line ends or
# terminal controls (DEL, C1 controls such as NEL, Unicode line and paragraph separators):
# orjson writes them as UTF-8, so they are escaped here, one record staying one line anywhere.
_RAW_BREAKS = re.compile(rb"\x7f|\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9]")


def escape_line_breaks(line: bytes) -> bytes:
    """The same JSON with those characters as ``\\uXXXX`` escapes (they only occur inside strings)."""
    return _RAW_BREAKS.sub(lambda match: b"\\u%04x" % ord(match.group().decode()), line)


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


class AuditLog:
    """Appends chained JSON lines to a file (or stdout); ``reopen`` after logrotate."""

    def __init__(self, path: str | None, *, include_prompts: bool = False) -> None:
        self.path = path
        self.include_prompts = include_prompts
        self.writer = ""
        self._lock = threading.Lock()
        self._handle: IO[bytes] | None = None
        self._prev: str | None = None
        self.reopen()

    def reopen(self) -> None:
        """(Re)open the file and start a new chain segment linked to its last line."""
        with self._lock:
            if self._handle is not None and self._handle is not sys.stdout.buffer:
                self._handle.close()
            if self.path is None:
                self._handle = sys.stdout.buffer
                link = self._prev
            else:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                link = _last_line_hash(Path(self.path))
                self._handle = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open
            self._prev = None
            self.writer = f"{os.getpid()}-{os.urandom(4).hex()}"  # each segment is a chain of its own
            self._write_locked({"type": "chain_start", "writer": self.writer, "link": link})

    def write(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._write_locked(record)

    def _write_locked(self, record: dict[str, Any]) -> None:
        record = {"ts": round(time.time(), 6), **record, "prev": self._prev, "writer": self.writer}
        line = escape_line_breaks(orjson.dumps(record)) + b"\n"
        assert self._handle is not None
        self._handle.write(line)
        if self._handle is sys.stdout.buffer:
            self._handle.flush()
        self._prev = line_hash(line)

    def close(self) -> None:
        with self._lock:
            if self._handle is not None and self._handle is not sys.stdout.buffer:
                self._handle.close()
            self._handle = None


class AuditRecorder(Recorder):
    """Writes each policy decision and each proxied request's outcome to an ``AuditLog``."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def decision_made(
        self, exchange: Exchange, hook: str, policy: str, decision: Decision, mode: str, cache: CacheUse | None = None
    ) -> None:
        record: dict[str, Any] = {
            "type": "decision",
            **exchange.log_fields(),
            "hook": hook,
            "policy": policy,
            "verdict": decision.verdict.value,
            "reason": decision.reason.value,
            "details": decision.details,
            "decision_id": decision.id,
        }
        if mode != "enforce":
            record["enforced"] = False
            record["mode"] = mode
        if cache is not None:  # checked in pieces: this decision was the cache's, and how many pieces were
            record["cached"] = cache.cached
            record["pieces"] = cache.pieces
            record["cached_pieces"] = cache.hits
        if self.audit.include_prompts and hook == "on_model_call":
            record["prompt"] = exchange.prompt
        self.audit.write(record)

    def stored_content(self, exchange: Exchange, reference: StoredReference, decision: str) -> None:
        self.audit.write({
            "type": "stored_content", **exchange.log_fields(), "field": reference.field, "kind": reference.kind,
            "id": reference.id[:_ID_CHARS], "decision": decision,
        })

    def request_done(self, exchange: Exchange, status: int, outcome: str) -> None:
        if exchange.proxied:
            self.audit.write({
                "type": "request", **exchange.log_fields(), "status": status, "outcome": outcome,
                "latency_ms": round(exchange.seconds * 1000, 3),
            })


def _last_line_hash(path: Path) -> str | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        block = min(size, 1 << 20)
        handle.seek(size - block)
        tail = handle.read().rstrip(b"\n")
    return line_hash(tail.rsplit(b"\n", 1)[-1])


@dataclass(slots=True)
class VerifyResult:
    ok: bool
    lines: int
    broken_line: int | None = None
    reason: str = ""


def verify(path: str | Path) -> VerifyResult:
    """Walk every writer's chain; the first inconsistency is reported with its line number.

    A ``chain_start`` must link to a line already seen (workers opening the file
    together may link to the same line), or to nothing while the file holds only
    unlinked starts (a fresh or rotated file). Removing the newest lines leaves no
    trace inside the file itself; ship the log off the host to cover that.
    """
    last_by_writer: dict[str, str] = {}
    seen: set[str] = set()
    only_fresh_starts = True
    number = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                return VerifyResult(False, number, number, "truncated last line")
            try:
                record = orjson.loads(line)
                writer, prev = record["writer"], record["prev"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return VerifyResult(False, number, number, "not an audit record")
            if record.get("type") == "chain_start":
                link = record.get("link")
                if prev is not None or writer in last_by_writer:
                    return VerifyResult(False, number, number, "chain start reuses a writer or continues a chain")
                if link is None and not only_fresh_starts:
                    return VerifyResult(False, number, number, "unlinked chain start in the middle of the file")
                if link is not None and link not in seen:
                    return VerifyResult(False, number, number, "chain start links to no earlier line")
                only_fresh_starts = only_fresh_starts and link is None
            else:
                only_fresh_starts = False
                if prev is None or last_by_writer.get(writer) != prev:
                    return VerifyResult(False, number, number, "hash chain broken (a line was edited, removed or inserted)")
            last_by_writer[writer] = line_hash(line)
            seen.add(last_by_writer[writer])
    return VerifyResult(True, number)
