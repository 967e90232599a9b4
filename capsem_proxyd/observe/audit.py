"""The tamper-evident audit log: one JSON line per policy decision, per stored-content reference and per request.

Each line carries ``prev``, the SHA-256 of the previous line written by the
same writer, and ``seq``, its place in that writer's chain (one chain per
process and segment, so worker processes can share one file opened with
O_APPEND). Every segment starts with a ``chain_start`` marker whose ``link``
is the hash of the file's last line, and which names the file (``file``, the
id its first line gave it); the first line of a new file (after logrotate and
a reopen) names the file before it (``previous``) and links to that file's
last line. After each line the writer records the file's head (its last
line's end and hash) under ``--state-dir`` (``audit_head.py``): the chains show
an edited, inserted or removed line, the head an edited or removed last line,
the links a missing file (``audit_verify.py``). Keys are never written; prompt
text only when the operator opts in.

A write that fails (a full disk: ENOSPC, EFBIG, EIO...) puts the log in a
failing state: one ERROR line, ``/health`` and the writable gauge say so, and
under ``--audit-failure block`` (the default) the recorder refuses every
request with a provider-shaped 503 before it reaches the provider
(``AuditRecorder.forwarding``; a decision that could not be written refuses
its request or reply too). Each later record retries: the first that goes
through closes any partial line the failed write left (a newline: the
partial line becomes a line of its own, a *fenced gap*) and starts a new
segment whose ``chain_start`` links to the last complete line, records the
gap's size and hash and how many records were lost, so ``audit verify``
passes again. One line is logged when it recovers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from capsem.models import Decision

from capsem_proxyd.errors import audit_log_unavailable
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.observe.audit_head import ChainHead
from capsem_proxyd.observe.recorders import CacheUse, McpNote, Recorder
from capsem_proxyd.views import StoredReference

log = logging.getLogger("capsem_proxyd")

FORMAT = 2  # 1: no seq, file ids, links across files, head or gaps
# Ids are the provider's (or what a client sent in their place): a bounded prefix is enough to find them.
_ID_CHARS = 256
# How far back from the end a partial line and the line before it are looked for.
_TAIL_BYTES = 1 << 20
# Characters JSON allows raw inside strings but many line readers treat as line ends or
# terminal controls (DEL, C1 controls such as NEL, Unicode line and paragraph separators):
# orjson writes them as UTF-8, so they are escaped here, one record staying one line anywhere.
_RAW_BREAKS = re.compile(rb"\x7f|\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9]")


def escape_line_breaks(line: bytes) -> bytes:
    """The same JSON with those characters as ``\\uXXXX`` escapes (they only occur inside strings)."""
    return _RAW_BREAKS.sub(lambda match: b"\\u%04x" % ord(match.group().decode()), line)


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def file_id_of(first_line: bytes) -> str:
    """A file's id: the one its first line states, else (a file written before format 2) one derived from that line."""
    try:
        record = orjson.loads(first_line)
        if isinstance(record, dict) and isinstance(record.get("file"), str):
            return record["file"]
    except orjson.JSONDecodeError:
        pass
    return "sha256:" + line_hash(first_line)[:16]


class AuditLog:
    """Appends chained JSON lines to a file (or stdout); ``reopen`` after logrotate.

    ``head``: the head file under ``--state-dir`` (files only). ``block``:
    whether a failing log refuses requests (``--audit-failure``). Writes never
    raise: a failed one is counted in ``lost`` and the log is failing
    (``failing_since``) until a later write goes through.
    """

    def __init__(self, path: str | None, *, include_prompts: bool = False, head: Path | None = None,
                 block: bool = True) -> None:
        self.path = path
        self.include_prompts = include_prompts
        self.block = block
        self.writer = ""
        self.file_id = ""
        self.failing_since: float | None = None
        self.lost = 0  # records not written since the log began failing
        self._listeners: list[Callable[[bool], None]] = []
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._prev: str | None = None
        self._seq = 0
        self._end = -1  # where the file ended after this writer's last line: unchanged means nothing to fence
        self._left_behind = b""  # what a failed write left at the end of the file a reopen moved away from
        self._head = ChainHead(head, path) if head is not None and path is not None else None
        with self._lock:
            self._open_locked()  # at start a failure is the operator's to see: it raises

    @property
    def writable(self) -> bool:
        return self.failing_since is None

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(writable)`` now and whenever the log starts or stops failing."""
        self._listeners.append(listener)
        listener(self.writable)

    def reopen(self) -> None:
        """(Re)open the file and start a new chain segment linked to its last line (or the previous file's)."""
        with self._lock:
            self._left_behind = self._unfenced_tail()
            self._close_locked()
            if self.failing_since is not None:
                self._recover_locked()  # a new file may have the space the old one lacked
                return
            try:
                self._open_locked()
            except OSError as error:
                self._fail(error)

    def retry(self) -> bool:
        """Whether the log is writable, trying to recover first if it is failing."""
        with self._lock:
            return self.failing_since is None or self._recover_locked()

    def write(self, record: dict[str, Any]) -> bool:
        """Append ``record``; False when it could not be written (the log is failing)."""
        with self._lock:
            if self.failing_since is not None and not self._recover_locked():
                self.lost += 1
                return False
            try:
                with self._locked():
                    if self._partial_tail():
                        self._start_segment()  # another writer's failed write left a partial line: fence it
                    self._emit(record)
            except OSError as error:
                self._fail(error)
                self.lost += 1
                return False
            return True

    def close(self) -> None:
        with self._lock:
            self._close_locked()
            if self._head is not None:
                self._head.close()
                self._head = None

    # -- under self._lock -----------------------------------------------------------

    def _open_locked(self, **extra: Any) -> None:
        if self.path is not None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        with self._locked():
            self._start_segment(**extra)

    def _unfenced_tail(self) -> bytes:
        """The bytes after the last recorded line of the file open now (a failed write's remains), read before a
        reopen leaves it: the disk that failed may never take the newline that would fence them there."""
        if self._fd is None or self.path is None:
            return b""
        try:
            with self._locked():
                size = os.fstat(self._fd).st_size
                head = self._head.read() if self._head is not None else None
                if head is not None and head.file == self.file_id and 0 <= size - head.offset <= _TAIL_BYTES:
                    return os.pread(self._fd, size - head.offset, head.offset)
                return _tail(self._fd, size)[1]
        except OSError:
            return b""

    def _close_locked(self) -> None:
        self._end = -1
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass

    def _recover_locked(self) -> bool:
        """Try to write again: a new segment that fences what a failed write left and says what was lost."""
        since, lost = self.failing_since, self.lost
        outage = {"since": since, "lost": lost}
        try:
            if self.path is not None and self._fd is None:
                self._open_locked(after_failure=outage)  # a reopen failed: the segment it starts is the recovery
            else:
                with self._locked():
                    self._start_segment(after_failure=outage)
        except OSError:
            return False
        self.failing_since, self.lost = None, 0
        log.warning("audit log %s is writable again after %.1fs; %d records were not written meanwhile",
                    self.path or "<stdout>", time.time() - (since or time.time()), lost)
        self._notify()
        return True

    def _fail(self, error: OSError) -> None:
        if self.failing_since is not None:
            return
        self.failing_since = time.time()
        what = ("every proxied request is refused with 503 until it can (--audit-failure block)" if self.block
                else "requests are served unrecorded until it can (--audit-failure allow)")
        log.error("audit log %s cannot be written (%s): %s; retried on each request",
                  self.path or "<stdout>", error.strerror or error, what)
        self._notify()

    def _notify(self) -> None:
        for listener in self._listeners:
            listener(self.writable)

    def _locked(self) -> Any:
        """The lock all writers of this file share (the head file's), or none for stdout."""
        if self._head is None:
            return _NO_LOCK
        return self._head.locked()

    # -- under both locks ----------------------------------------------------------------

    def _partial_tail(self) -> bool:
        """Whether the file holds bytes after its last recorded line (a failed write's remains).

        One ``fstat`` when the file still ends where this writer's last line did (the usual case: one
        writer, or the last line was this one's); the head is read only when another writer wrote since.
        """
        if self._fd is None or self.path is None:
            return False
        size = os.fstat(self._fd).st_size
        if size == self._end:
            return False
        head = self._head.read() if self._head is not None else None
        if head is not None and head.file == self.file_id:
            return size != head.offset
        return size > 0 and os.pread(self._fd, 1, size - 1) != b"\n"

    def _start_segment(self, **extra: Any) -> None:
        """A new writer's ``chain_start``, linked to the file's last recorded line, fencing what follows it.

        What a failed write left after the last line the head recorded (a
        partial line; a line whose head update failed) is the gap: closed
        with a newline if it ends inside a line, its size and hash recorded.
        """
        link, gap, previous = None, b"", None
        if self._fd is None or self.path is None:
            link = self._prev
        else:
            size = os.fstat(self._fd).st_size
            head = self._head.read() if self._head is not None else None
            if size == 0:  # a new file: its first line names it, and the file before it (and what that one's end
                self.file_id = os.urandom(8).hex()  # holds after its last recorded line, if anything)
                if head is not None:
                    previous, link = head.file, head.hash
                    if self._left_behind:
                        extra["previous_gap"] = _gap(self._left_behind)
            else:
                self.file_id = file_id_of(os.pread(self._fd, min(size, 64 * 1024), 0).split(b"\n", 1)[0])
                if head is not None and head.file == self.file_id and 0 <= size - head.offset <= _TAIL_BYTES:
                    link, gap = head.hash, os.pread(self._fd, size - head.offset, head.offset)
                else:
                    link, gap = _tail(self._fd, size)
            if gap and not gap.endswith(b"\n"):
                self._append(b"\n")  # the partial line is closed: a gap, recorded below
                gap += b"\n"
        self._prev, self._seq = None, 0
        self.writer = f"{os.getpid()}-{os.urandom(4).hex()}"  # each segment is a chain of its own
        record: dict[str, Any] = {"type": "chain_start", "format": FORMAT, "writer": self.writer, "link": link}
        if self.file_id:
            record["file"] = self.file_id
        if previous is not None:
            record["previous"] = previous
        if gap:
            record["gap"] = _gap(gap)
        self._emit({**record, **extra})
        self._left_behind = b""

    def _emit(self, record: dict[str, Any]) -> None:
        record = {"ts": round(time.time(), 6), **record, "prev": self._prev, "writer": self.writer, "seq": self._seq}
        line = escape_line_breaks(orjson.dumps(record)) + b"\n"
        end = self._append(line)
        self._prev, self._seq = line_hash(line), self._seq + 1
        if end is not None:
            self._end = end
            if self._head is not None:
                self._head.record(self.file_id, end, self._prev)

    def _append(self, data: bytes) -> int | None:
        """Write all of ``data`` (a short write is continued; its failure raises); the file's end after it."""
        if self._fd is None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return None
        written = os.write(self._fd, data)
        if written < len(data):  # a short write (the disk filling up): the rest raises, or goes too
            view = memoryview(data)[written:]
            while view:
                view = view[os.write(self._fd, view):]
        return os.lseek(self._fd, 0, os.SEEK_CUR)


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()


def _gap(data: bytes) -> dict[str, Any]:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _tail(fd: int, size: int) -> tuple[str | None, bytes]:
    """(The hash of the file's last complete line, the partial line after it), for a file with no usable head."""
    chunk = os.pread(fd, min(size, _TAIL_BYTES), max(0, size - _TAIL_BYTES))
    cut = chunk.rfind(b"\n")
    complete = chunk[:cut] if cut >= 0 else b""
    return (line_hash(complete.rsplit(b"\n", 1)[-1]) if complete else None), chunk[cut + 1:]


class AuditRecorder(Recorder):
    """Writes each policy decision and each proxied request's outcome to an ``AuditLog``.

    While the log fails under ``--audit-failure block``, a decision or reference it could not write raises
    the provider-shaped 503, and so does ``forwarding``: a request whose checks wrote nothing (a relayed
    one) is refused before it is sent all the same.
    """

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
            record["prompt"] = _masked(exchange.prompt, exchange.redactions)
        if not self.audit.write(record) and self.audit.block and mode != "shadow":
            raise audit_log_unavailable()  # a decision not recorded lets nothing through (a shadow's decides nothing)

    def redacted(
        self, exchange: Exchange, hook: str, policy: str, count: int, kind: str = "", placeholder: str = "",
        key_id: str = "",
    ) -> None:
        """One record per value masked: who asked, where, how often, and its placeholder (never the value)."""
        written = self.audit.write({
            "type": "redaction", **exchange.log_fields(), "hook": hook, "policy": policy, "kind": kind,
            "count": count, "placeholder": placeholder, "key_id": key_id,
        })
        if not written and self.audit.block:
            raise audit_log_unavailable()

    def stored_content(self, exchange: Exchange, reference: StoredReference, decision: str) -> None:
        written = self.audit.write({
            "type": "stored_content", **exchange.log_fields(), "field": reference.field, "kind": reference.kind,
            "id": reference.id[:_ID_CHARS], "decision": decision,
        })
        if not written and self.audit.block:
            raise audit_log_unavailable()

    def mcp_pin_accepted(self, server: str, tool: str, change: Mapping[str, Any], accepted_by: Mapping[str, Any]) -> None:
        """Who accepted which definition of an MCP tool: the daemon writes it, so the chain keeps one writer."""
        written = self.audit.write({"type": "mcp_pin_accepted", "server": server, "tool": tool, **change,
                                    "accepted_by": dict(accepted_by)})
        if not written and self.audit.block:
            raise audit_log_unavailable()

    def mcp_message(self, exchange: Exchange, note: McpNote) -> None:
        """One record per JSON-RPC message on the MCP hop, in the model hop's chain: what crossed, to or from
        which server, and what the hop did with it (the policies' own decisions have their records). Never
        raises: under ``--audit-failure block`` the request was refused before it was sent (``forwarding``)
        and each decision that let content through was written, or refused it."""
        self.audit.write({
            "type": "mcp_message", **exchange.log_fields(), "direction": note.direction, "server": note.server,
            "method": note.method, "tool": note.tool, "decision": note.decision, "session": note.session,
        })

    def forwarding(self, exchange: Exchange) -> None:
        """Under ``--audit-failure block``, nothing reaches the provider while the log cannot be written."""
        if self.audit.block and not self.audit.retry():
            raise audit_log_unavailable()

    def request_done(self, exchange: Exchange, status: int, outcome: str) -> None:
        if exchange.proxied:
            self.audit.write({
                "type": "request", **exchange.log_fields(), "status": status, "outcome": outcome,
                "latency_ms": round(exchange.seconds * 1000, 3),
            })




def _masked(prompt: str, redactions: list[tuple[str, str, str, str]]) -> str:
    """``prompt`` without the values policies asked to mask so far (issue 23): the audit log never holds them."""
    for value, kind, _, _ in redactions:
        prompt = prompt.replace(value, f"[masked {kind}]")
    return prompt
