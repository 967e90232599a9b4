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

A record commits with ``synchronous=NORMAL`` (no fsync: it survives the
process crashing, a power cut may lose the last ones, whose follow-ups are
then refused); a withdrawal with ``FULL``, since losing one would leave an id
usable whose stream was blocked (withdrawals are rare: blocks and cuts).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

FILE_NAME = "relayed-responses.sqlite3"
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
        """The connection, opening (and creating) the file on first use; raises OSError or sqlite3.Error."""
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            connection = sqlite3.connect(
                self.path, timeout=_LOCK_WAIT_SECONDS, isolation_level=None, check_same_thread=False
            )
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.executescript(_SCHEMA)
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def count(self) -> int:
        """Rows kept (for tests and operators)."""
        return int(self.open().execute("SELECT COUNT(*) FROM relayed").fetchone()[0])

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(function, *args, limiter=self._limiter)

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
