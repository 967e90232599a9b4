"""The record of delivered reply ids on its own: per tenant, withdrawals final, expiry, the size bound,
two connections (as two worker processes have) on one file, and nothing on disk until first use."""

from __future__ import annotations

from pathlib import Path

import pytest

from capsem_proxyd.proxy.response_store import FILE_NAME, ResponseStore, state_directory

A, B = "a" * 16, "b" * 16


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def store(path: Path, clock: Clock | None = None, *, max_entries: int = 100, max_age: float = 3600.0) -> ResponseStore:
    return ResponseStore(path, max_entries=max_entries, max_age=max_age, clock=clock or Clock())


async def test_ids_are_per_tenant_and_a_withdrawal_is_final(tmp_path: Path) -> None:
    ids = store(tmp_path)
    assert await ids.usable(A, "resp_1") is None
    await ids.record(A, "resp_1")
    assert await ids.usable(A, "resp_1") is True
    assert await ids.usable(B, "resp_1") is None
    await ids.withdraw(A, "resp_1")
    await ids.record(A, "resp_1")  # a late record cannot bring it back
    assert await ids.usable(A, "resp_1") is False
    await ids.withdraw(B, "resp_2")  # withdrawn before it was ever recorded
    await ids.record(B, "resp_2")
    assert await ids.usable(B, "resp_2") is False
    await ids.aclose()


async def test_expired_ids_are_not_usable_and_are_dropped(tmp_path: Path) -> None:
    clock = Clock()
    ids = store(tmp_path, clock, max_age=60)
    await ids.record(A, "old")
    clock.now += 30
    await ids.record(A, "newer")
    clock.now += 31  # "old" is 61 s old, "newer" 31 s
    assert await ids.usable(A, "old") is None and await ids.usable(A, "newer") is True
    await ids.record(A, "newest")  # every write drops what expired
    assert ids.count() == 2
    await ids.aclose()


async def test_the_size_bound_drops_the_oldest_first(tmp_path: Path) -> None:
    ids = store(tmp_path, max_entries=3)
    for number in range(5):
        await ids.record(A if number % 2 else B, f"resp_{number}")
    assert ids.count() == 3
    assert [await ids.usable(A if n % 2 else B, f"resp_{n}") for n in range(5)] == [None, None, True, True, True]
    ids.max_entries = 1  # a reload lowers the bound: the next write applies it
    await ids.withdraw(A, "resp_3")
    assert ids.count() == 1
    await ids.aclose()


async def test_two_connections_on_one_file_see_each_others_ids(tmp_path: Path) -> None:
    first, second = store(tmp_path), store(tmp_path)
    await first.record(A, "resp_first")
    await second.record(A, "resp_second")
    assert await second.usable(A, "resp_first") is True and await first.usable(A, "resp_second") is True
    await second.withdraw(A, "resp_first")
    assert await first.usable(A, "resp_first") is False
    await first.aclose()
    await second.aclose()


async def test_nothing_is_created_before_first_use_and_the_folder_is_private(tmp_path: Path) -> None:
    folder = tmp_path / "state" / "deeper"
    ids = store(folder)
    assert not folder.exists()
    await ids.record(A, "resp_1")
    assert (folder / FILE_NAME).is_file() and folder.stat().st_mode & 0o077 == 0
    await ids.aclose()


def test_the_default_state_directory_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert state_directory(None) == tmp_path / "capsem-proxyd"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert state_directory(None) == tmp_path / ".local" / "state" / "capsem-proxyd"
    assert state_directory("/var/lib/capsem-proxyd") == Path("/var/lib/capsem-proxyd")


async def test_a_file_damaged_before_a_process_opens_it_is_set_aside_and_its_ids_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What a worker process meets when the file was damaged after start's preflight: its first access sets
    the file aside (kept), answers from a fresh one (the old ids unknown: refused) and logs it once."""
    first = store(tmp_path)
    await first.record(A, "resp_1")
    await first.aclose()
    (tmp_path / FILE_NAME).write_bytes(b"\0garbage" * 600)
    later = store(tmp_path)
    assert await later.usable(A, "resp_1") is None
    await later.record(A, "resp_2")
    assert await later.usable(A, "resp_2") is True
    await later.aclose()
    assert [path.read_bytes()[:8] for path in tmp_path.glob(f"{FILE_NAME}.damaged-*")] == [b"\0garbage"]
    assert [record.levelname for record in caplog.records if "damaged" in record.getMessage()] == ["ERROR"]


async def test_a_deleted_directory_is_recreated_and_every_process_moves_to_the_new_file(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    one, two = store(folder), store(folder)  # two worker processes' connections
    await one.record(A, "before")
    assert await two.usable(A, "before") is True
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    await one.record(A, "after")  # one notices and makes the new file...
    assert await two.usable(A, "after") is True  # ...which two finds: it reopens instead of reading the old one
    assert await two.usable(A, "before") is None and await one.usable(A, "before") is None
    assert folder.stat().st_mode & 0o777 == 0o700
    await one.aclose()
    await two.aclose()


def test_only_a_damaged_file_counts_as_damaged(tmp_path: Path) -> None:
    import sqlite3

    from capsem_proxyd.proxy.response_store import is_damaged

    connection = sqlite3.connect(tmp_path / "sound.sqlite3")
    with pytest.raises(sqlite3.OperationalError) as missing:
        connection.execute("SELECT * FROM nowhere")
    connection.close()
    assert not is_damaged(missing.value)
    assert not is_damaged(sqlite3.OperationalError("database is locked"))  # no code: not damage
    (tmp_path / "bad.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError) as damaged:
        sqlite3.connect(tmp_path / "bad.sqlite3").execute("PRAGMA journal_mode=WAL")
    assert is_damaged(damaged.value)
