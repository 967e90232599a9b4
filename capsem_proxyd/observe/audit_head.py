"""The audit log's chain head: where its last line is vouched for, outside the log itself.

A hash chain shows an edit of any line but the last (no later line records
its hash) and cannot show that the newest lines were cut off. So each writer,
after each line, records the head of the file it writes: the file's id, the
byte offset where its last line ends and that line's hash, in one small file
under ``--state-dir`` (one per audit log path). ``audit verify`` compares the
log against it.

The head file has a fixed size and is rewritten in place with one ``pwrite``
(no rename, no fsync: a few microseconds a line). It is also the lock the
writers of one log take around each append (``flock``), so that workers
sharing the file never interleave a line with another's partial line, and
the head they record is the file's true end.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

SIZE = 512


@dataclass(frozen=True, slots=True)
class Head:
    """The last line written to audit log ``log``: file ``file`` ends at byte ``offset`` with a line hashing to ``hash``."""

    log: str
    file: str
    offset: int
    hash: str


def head_path(state_dir: Path, log_path: str | Path) -> Path:
    """Where the head of the audit log at ``log_path`` is kept (named after its absolute path)."""
    absolute = os.path.abspath(log_path)
    return state_dir / "audit" / f"head-{hashlib.sha256(absolute.encode()).hexdigest()[:16]}.json"


def parse_head(raw: bytes) -> Head | None:
    try:
        fields = orjson.loads(raw.rstrip(b" \n\0"))
        return Head(str(fields["log"]), str(fields["file"]), int(fields["offset"]), str(fields["hash"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def read_head(path: Path) -> Head | None:
    """The head recorded at ``path``; None when there is none (or it is unreadable)."""
    try:
        return parse_head(path.read_bytes()[:SIZE])
    except OSError:
        return None


class ChainHead:
    """The open head file of one audit log: ``locked`` around each append, ``record`` after it."""

    def __init__(self, path: Path, log_path: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.log = os.path.abspath(log_path)
        self._log = orjson.dumps(self.log)  # the one field that needs JSON escaping, escaped once
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    @contextmanager
    def locked(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def read(self) -> Head | None:
        return parse_head(os.pread(self._fd, SIZE, 0))

    def record(self, file_id: str, offset: int, line_hash: str) -> None:
        body = b'{"log":%b,"file":"%b","offset":%d,"hash":"%b"}' % (self._log, file_id.encode(), offset, line_hash.encode())
        os.pwrite(self._fd, body.ljust(SIZE - 1, b" ") + b"\n", 0)

    def close(self) -> None:
        os.close(self._fd)
