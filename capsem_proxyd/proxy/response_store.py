"""The reply ids this proxy delivered to each tenant, on disk: what ``--stored-content checked`` admits.

A follow-up request may name an earlier reply by id (``previous_response_id``);
the provider then puts that reply, and all it was built on, back into the
model's context. ``checked`` admits such an id only when this proxy delivered
that reply, unblocked, to the same tenant. This module is the memory of it:

* SQLite in WAL mode, one file in the state directory: the worker processes
  of an instance, and instances sharing the directory on one host, see each
  other's ids, and a restart forgets nothing. Not on a network file system
  (SQLite's locking does not hold there): instances on several hosts route
  each tenant to one of them instead (README, "Scaling out").
* One row per (tenant, reply id): when it was recorded and whether it is
  usable; a stream blocked or cut after its id went out is withdrawn (a row
  that stays unusable, whatever comes later). A reply's output items have
  rows beside it (``item:<id>``), and a compaction's sealed summary one by
  its digest (``sealed:sha256:<hex>``).
* Bounded: a row older than ``max_age`` is neither admitted nor kept, and
  beyond ``max_entries`` rows the oldest go first (row ids grow with every
  insert, so "the newest ``max_entries``" is a range of row ids: one indexed
  delete per insert keeps the bound exact, across processes).
* Never on the event loop: every access runs in a worker thread, one at a
  time per process (a ``CapacityLimiter`` of 1 around the one connection).
  The file is opened on first use, so a process that never meets a reference
  or a stored reply never opens it, and a forked worker never inherits an
  open connection.

Faults of the file, met in the worker thread, each logged once at ERROR,
and each answered by starting a fresh record instead of staying down:

* Deleted or replaced while running (the state directory removed, the file
  swapped): every access compares the open file's ``(st_dev, st_ino)`` with
  the path's (one ``stat``, microseconds); when they differ, the record is
  reopened at the path, the directory recreated (mode 0700) if it is gone.
  Without this, records went on into the unlinked file, silently lost.
* Damaged (garbage, truncated: SQLite's ``SQLITE_NOTADB`` and
  ``SQLITE_CORRUPT``), at start or at any later access: the file, and its
  ``-wal`` and ``-shm`` beside it, are renamed to ``<name>.damaged-<UTC
  time>`` (kept as evidence, never deleted), a fresh file is created and the
  access is tried once more on it.

Either way the ids recorded before are gone: a follow-up naming one is refused
as any unknown id is (``--stored-content checked`` fails closed); replies
delivered from then on are recorded and their follow-ups admitted. Instances
sharing the directory each notice and reopen the same new file; a damaged
file is only set aside while it is still the one at the path, so a second
process does not set aside the fresh file the first made (a narrow race
remains between that check and the rename: it costs the ids of a second
fresh file, never admits one).

A record commits with ``synchronous=NORMAL`` (no fsync: it survives the
process crashing, a power cut may lose the last ones, whose follow-ups are
then refused); a withdrawal with ``FULL``, since losing one would leave an id
usable whose stream was blocked (withdrawals are rare: blocks and cuts).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import trio

log = logging.getLogger("capsem_proxyd.stored")

FILE_NAME = "relayed-responses.sqlite3"
# SQLite's result codes for a file that is not, or no longer, a database (extended codes carry them in the
# low byte). Every other error (locked, read-only, disk full) is passed on: the file itself is sound.
_DAMAGED_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_COMPANIONS = ("", "-wal", "-shm")  # the database, its write-ahead log and its shared-memory index
_SCHEMA = """
CREATE TABLE IF NOT EXISTS relayed (
    seq INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    response_id TEXT NOT NULL,
    recorded REAL NOT NULL,
    usable INTEGER NOT NULL,
    UNIQUE (tenant, response_id)
);
CREATE INDEX IF NOT EXISTS relayed_recorded ON relayed (recorded);
"""
# A withdrawn id stays withdrawn: recording it again cannot make it usable.
_UPSERT = (
    "INSERT INTO relayed (tenant, response_id, recorded, usable) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (tenant, response_id) DO UPDATE SET usable = MIN(usable, excluded.usable)"
)
_LOCK_WAIT_SECONDS = 10.0  # another process writing; in a worker thread, never the event loop
T = TypeVar("T")


def state_directory(configured: str | None) -> Path:
    """``--state-dir``, else ``$XDG_STATE_HOME/capsem-proxyd``, else ``~/.local/state/capsem-proxyd``."""
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "capsem-proxyd"


class ResponseStore:
    """Reply ids by tenant: ``record``, ``withdraw``, ``usable``; bounded in rows and in age."""

    def __init__(
        self, directory: Path, *, max_entries: int, max_age: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = directory / FILE_NAME
        self.max_entries = max_entries
        self.max_age = max_age  # seconds
        self.clock = clock
        self._connection: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file the connection has open
        self._limiter = trio.CapacityLimiter(1)

    async def record(self, tenant: str, *response_ids: str) -> None:
        """``response_ids`` (a reply's, its items') were delivered whole and unblocked to ``tenant``: later
        requests may name them. One transaction for them all."""
        await self._run(self._write, tenant, response_ids, True)

    async def withdraw(self, tenant: str, *response_ids: str) -> None:
        """``response_ids``' reply was blocked or cut: never usable, even if recorded before."""
        await self._run(self._write, tenant, response_ids, False)

    async def usable(self, tenant: str, response_id: str) -> bool | None:
        """True: delivered to ``tenant`` and not expired; False: withdrawn; None: unknown (or expired)."""
        return await self._run(self._read, tenant, response_id)

    async def aclose(self) -> None:
        await self._run(self.close)

    def open(self) -> sqlite3.Connection:
        """The connection, opening (and creating) the file on first use, and again when the file at the path
        is no longer the one open (deleted or replaced); raises OSError or sqlite3.Error."""
        if self._connection is not None:
            if self._identity == _identity(self.path):
                return self._connection
            log.error("the record of delivered replies %s was deleted or replaced while running; a fresh one is "
                      "started there: the reply ids recorded before are gone, follow-ups naming them are refused "
                      "(--stored-content checked)", self.path)
            self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        connection = sqlite3.connect(
            self.path, timeout=_LOCK_WAIT_SECONDS, isolation_level=None, check_same_thread=False
        )
        self._identity = _identity(self.path)  # connect created the file if it was absent
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return connection

    def prepare(self) -> None:
        """Open the file as the first access would (a damaged one set aside, a fresh one made), then close
        it: what ``start`` does before it serves (a forked worker must not inherit a connection)."""
        try:
            self._recovering(self.open)
        finally:
            self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def count(self) -> int:
        """Rows kept (for tests and operators)."""
        return int(self.open().execute("SELECT COUNT(*) FROM relayed").fetchone()[0])

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(self._recovering, function, *args, limiter=self._limiter)

    def _recovering(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)``; when it meets a damaged file: that file set aside, and once more on a fresh one."""
        try:
            return function(*args)
        except sqlite3.DatabaseError as error:
            if not is_damaged(error):
                raise
            self._set_aside(error)
        return function(*args)

    def _set_aside(self, error: sqlite3.DatabaseError) -> None:
        """Rename the damaged file (and its companions) out of the way, unless another process already did."""
        damaged_identity = self._identity
        self.close()
        self._identity = None
        if damaged_identity is None or _identity(self.path) != damaged_identity:
            log.error("the record of delivered replies %s was damaged (%s); another process has set it aside",
                      self.path, error)
            return
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        for suffix in _COMPANIONS:
            try:
                os.rename(f"{self.path}{suffix}", f"{self.path}{suffix}.damaged-{stamp}")
            except FileNotFoundError:
                pass
        log.error("the record of delivered replies %s is damaged (%s): moved aside to %s.damaged-%s and a fresh "
                  "one started: the reply ids recorded before are gone, follow-ups naming them are refused "
                  "(--stored-content checked)", self.path, error, self.path.name, stamp)

    def _write(self, tenant: str, response_ids: tuple[str, ...], usable: bool) -> None:
        connection = self.open()
        now = self.clock()
        if not usable:
            connection.execute("PRAGMA synchronous=FULL")
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(_UPSERT, [(tenant, key, now, int(usable)) for key in response_ids])
                connection.execute("DELETE FROM relayed WHERE seq <= (SELECT MAX(seq) FROM relayed) - ?",
                                   (self.max_entries,))
                connection.execute("DELETE FROM relayed WHERE recorded < ?", (now - self.max_age,))
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        finally:
            if not usable:
                connection.execute("PRAGMA synchronous=NORMAL")

    def _read(self, tenant: str, response_id: str) -> bool | None:
        row = self.open().execute(
            "SELECT usable FROM relayed WHERE tenant = ? AND response_id = ? AND recorded >= ?",
            (tenant, response_id, self.clock() - self.max_age),
        ).fetchone()
        return None if row is None else bool(row[0])


def is_damaged(error: sqlite3.Error) -> bool:
    """True when ``error`` says the file is not (or no longer) a database, not that it is busy or unwritable."""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _DAMAGED_CODES


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file is at ``path`` (None: none)."""
    try:
        status = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return status.st_dev, status.st_ino
