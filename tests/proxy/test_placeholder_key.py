"""The placeholder key on its own: made once and shared, never shown, never replaced silently."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from capsem_proxyd.proxy.placeholder_key import (
    ID_FILE,
    KEY_FILE,
    key_id,
    key_problem,
    load_placeholder_key,
    read_placeholder_key,
)


def test_processes_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    """Each makes a whole key and links it to the name; the first link wins and everyone reads it."""
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: load_placeholder_key(tmp_path / "state"), range(16)))
    assert len({key.id for key in keys}) == 1 and len({key.secret for key in keys}) == 1
    assert sorted(path.name for path in (tmp_path / "state").iterdir()) == [KEY_FILE, ID_FILE]
    assert (tmp_path / "state" / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700


def test_the_key_is_never_shown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = load_placeholder_key(tmp_path)
    assert key.secret.hex() not in repr(key) and key.id in repr(key)
    assert key.id == key_id(key.secret) and key.id not in key.secret.hex()
    assert all(key.secret.hex() not in record.getMessage() for record in caplog.records)


def test_a_lost_key_is_an_error_a_first_one_is_not(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = load_placeholder_key(tmp_path)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert load_placeholder_key(tmp_path) == first and read_placeholder_key(tmp_path) == first
    (tmp_path / KEY_FILE).unlink()
    assert key_problem(tmp_path) == f"the placeholder key (id {first.id}) is missing"
    assert read_placeholder_key(tmp_path) is None  # reading never makes one
    second = load_placeholder_key(tmp_path)
    assert second.id != first.id
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and first.id in errors[0] and second.id in errors[0]


def test_a_damaged_key_is_set_aside_and_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = load_placeholder_key(tmp_path)
    (tmp_path / KEY_FILE).write_bytes(first.secret + b"\n")  # an editor's newline: 33 bytes
    assert key_problem(tmp_path) == "the placeholder key is damaged (33 bytes instead of 32)"
    assert read_placeholder_key(tmp_path) is None
    second = load_placeholder_key(tmp_path)
    assert second.id != first.id and key_problem(tmp_path) is None
    assert [path.read_bytes() for path in tmp_path.glob(f"{KEY_FILE}.damaged-*")] == [first.secret + b"\n"]
    assert any(record.levelname == "ERROR" and "is damaged" in record.getMessage() for record in caplog.records)
