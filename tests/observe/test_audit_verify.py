"""``audit verify``'s rules on logs written by the real ``AuditLog``: what a failed write leaves, and tampering with it.

The daemon tests (tests/daemon/test_audit_log.py) cause the failure for real; these write the remains
of one by hand (the bytes a cut write leaves, or another worker's), to pin each rule down.
"""

from __future__ import annotations

from pathlib import Path

from capsem_proxyd.observe.audit import AuditLog
from capsem_proxyd.observe.audit_head import head_path, read_head
from capsem_proxyd.observe.audit_verify import verify


def writers(tmp_path: Path, count: int) -> tuple[Path, Path, list[AuditLog]]:
    """``count`` writers of one log sharing one state directory, as worker processes do."""
    path, state = tmp_path / "audit.jsonl", tmp_path / "state"
    return path, state, [AuditLog(str(path), head=head_path(state, path)) for _ in range(count)]


def test_a_partial_line_is_fenced_by_whichever_writer_writes_next_and_verifies(tmp_path: Path) -> None:
    path, state, (first, second) = writers(tmp_path, 2)
    first.write({"type": "note", "n": 1})
    with path.open("ab") as handle:
        handle.write(b'{"ts":1,"type":"decision","pol')  # a write cut short (the disk filled up)
    assert not verify(path, read_head(head_path(state, path))).ok  # unfenced: the log is failing right now
    second.write({"type": "note", "n": 2})  # the other worker's next line does not join it
    first.write({"type": "note", "n": 3})
    first.close()
    second.close()
    lines = path.read_bytes().splitlines()
    assert lines[-4] == b'{"ts":1,"type":"decision","pol' and b'"gap"' in lines[-3]
    assert verify(path, read_head(head_path(state, path))).ok


def test_an_edited_gap_or_an_unfenced_line_in_the_middle_is_reported(tmp_path: Path) -> None:
    path, state, (log,) = writers(tmp_path, 1)
    log.write({"type": "note"})
    with path.open("ab") as handle:
        handle.write(b'{"ts":1,"type":"decision","pol')
    log.write({"type": "note"})
    log.close()
    text = path.read_bytes()
    head = read_head(head_path(state, path))
    assert verify(path, head).ok
    path.write_bytes(text.replace(b'"pol\n', b'"pal\n'))  # the recorded gap, edited
    result = verify(path, head)
    assert not result.ok and result.broken_line == 3 and "not an audit record" in result.reason
    lines = text.splitlines(keepends=True)
    path.write_bytes(b"".join([*lines[:2], b"garbage\n", *lines[2:]]))  # a non-record line no gap covers
    result = verify(path, None)
    assert not result.ok and result.broken_line == 3


def test_a_line_removed_inside_a_chain_is_reported_where_it_was(tmp_path: Path) -> None:
    path, _, (log,) = writers(tmp_path, 1)
    for number in range(6):
        log.write({"type": "note", "n": number})
    log.close()
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:3] + lines[4:]))
    result = verify(path, None)
    assert not result.ok and result.broken_line == 4 and "1 line(s) of this chain removed" in result.reason


def test_logrotate_copytruncate_starts_a_new_file_linked_to_the_copy(tmp_path: Path) -> None:
    path, state, (log,) = writers(tmp_path, 1)
    for number in range(3):
        log.write({"type": "note", "n": number})
    copy = tmp_path / "audit.jsonl.1"
    copy.write_bytes(path.read_bytes())
    with path.open("r+b") as handle:
        handle.truncate(0)  # copytruncate: no reopen, the file just starts over under the writer
    log.write({"type": "note", "n": 3})
    log.close()
    head = read_head(head_path(state, path))
    assert verify([copy, path], head).ok
    assert b'"previous"' in path.read_bytes().splitlines()[0]
