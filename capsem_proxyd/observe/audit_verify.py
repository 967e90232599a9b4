"""``audit verify``: walk one audit log, or a rotated series oldest first, and report the first line that is wrong.

The rules, line by line (``audit.py`` writes what they check):

* Each writer's lines form a chain: a line's ``prev`` is the hash of the line
  before it in its chain, its ``seq`` that line's plus one. Where a line's
  ``prev`` does not match, ``seq`` says which line is wrong: the next
  number means the line before it in the chain was edited (it is reported,
  at its own line number: the edit is to it unless this line's own ``prev``
  was edited, which is the same tampering seen from the other side); a
  larger number means lines of the chain were removed before this one
  (reported here); a smaller or repeated one, a line inserted or moved.
* A ``chain_start`` begins a writer's chain. Its ``link`` must be a line seen
  earlier in the file; the first line of a file may link to the file before
  it, and when that file is given too (``a.1 a``), it must name it
  (``previous``) and link to one of its lines: a deleted file between two
  given ones, or files out of order, are reported.
* A line that is not a record (what a failed write left) is a *recorded gap*
  only when the next record is a ``chain_start`` whose ``gap`` gives the size
  and SHA-256 of the bytes from at or before that line up to itself: the
  writer that recovered measured them. A file left behind by a reopen while
  it was failing (logrotate moved the full log away) may end with such
  bytes when the next file given records them (``previous_gap``, measured
  the same way). Anything else is reported.
* The chain head under ``--state-dir`` (``audit_head.py``) vouches for the
  last line of the newest file: a line must end at the byte it records, with
  the hash it records. Lines after it are allowed (written since it was
  read); an edited last line, or lines cut off the end, are reported.

Logs written before format 2 (no ``seq``, no file links, no head) verify as
before: a broken chain is reported at the line whose ``prev`` no longer
matches, and rotated files one at a time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from capsem_proxyd.observe.audit import file_id_of, line_hash
from capsem_proxyd.observe.audit_head import Head


@dataclass(slots=True)
class VerifyResult:
    ok: bool
    lines: int
    broken_line: int | None = None
    reason: str = ""
    path: str = ""  # the file the broken line is in
    notes: list[str] = field(default_factory=list)


class Broken(Exception):
    def __init__(self, line: int, reason: str, path: Path | None = None) -> None:
        super().__init__(reason)
        self.line, self.reason, self.path = line, reason, path


@dataclass(slots=True)
class _Link:
    hash: str
    seq: int | None
    line: int


@dataclass(slots=True)
class _Walked:
    """What the next file, and the head, need of a walked file."""

    path: Path
    file_id: str | None = None
    seen: set[str] = field(default_factory=set)
    lines: int = 0
    size: int = 0
    ends: dict[int, tuple[int, str]] = field(default_factory=dict)  # the head's offset -> (line, hash), if a line ends there
    within: int | None = None  # the line the head's offset falls inside
    # A file left by a reopen while its last write had failed ends with bytes no chain start fences: the
    # first line of the next file must record them (``previous_gap``). (line, first byte, reason)
    open_end: tuple[int, int, str] | None = None


def verify(paths: str | Path | Sequence[str | Path], head: Head | None = None) -> VerifyResult:
    """Verify ``paths`` (one log, or a rotated series oldest first) and, when given, the newest one's ``head``."""
    files = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(path) for path in paths]
    before: _Walked | None = None
    total = 0
    for index, path in enumerate(files):
        newest = index == len(files) - 1
        offset = head.offset if head is not None and newest else None
        try:
            walked = _walk(path, before, offset)
            if newest and walked.open_end is not None:
                raise Broken(walked.open_end[0], walked.open_end[2])
        except Broken as broken:
            return VerifyResult(False, total + broken.line, broken.line, broken.reason, str(broken.path or path))
        total += walked.lines
        before = walked
    assert before is not None
    if head is None:
        return VerifyResult(True, total)
    try:
        _check_head(before, head)
    except Broken as broken:
        return VerifyResult(False, total, broken.line, broken.reason, str(files[-1]))
    return VerifyResult(True, total)


def _walk(path: Path, before: _Walked | None, head_offset: int | None) -> _Walked:
    walked = _Walked(path)
    chains = _Chains(walked, before, path)
    pending: tuple[int, int] | None = None  # a line that is no record: (its number, its first byte)
    offset = 0
    number = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            start, offset = offset, offset + len(line)
            if number == 1:
                walked.file_id = file_id_of(line.rstrip(b"\n"))
            if head_offset is not None:
                _note_head_offset(walked, head_offset, number, line, start, offset)
            if not line.endswith(b"\n"):
                pending = pending or (number, start)
                walked.open_end = (pending[0], pending[1], "truncated last line (a write failed, and no later write "
                                   "has fenced it yet)")
                break
            record = _record(line)
            if record is None:
                pending = pending or (number, start)
                continue
            if pending is not None:
                if not _fences(record, handle.fileno(), start, pending[1]):
                    raise Broken(pending[0], "not an audit record (and no chain start after it records it as a gap)")
                pending = None
            chains.add(record, line, number)
    if pending is not None and walked.open_end is None:
        walked.open_end = (*pending, "not an audit record (and no chain start after it records it as a gap)")
    walked.lines, walked.size = number, offset
    return walked


def _note_head_offset(walked: _Walked, head_offset: int, number: int, line: bytes, start: int, end: int) -> None:
    if end == head_offset:
        walked.ends[end] = (number, line_hash(line))
    elif start < head_offset < end:
        walked.within = number


class _Chains:
    """The writers' chains of one file, line by line."""

    def __init__(self, walked: _Walked, before: _Walked | None, path: Path) -> None:
        self.walked, self.before, self.path = walked, before, path
        self.last: dict[str, _Link] = {}
        self.only_fresh_starts = True

    def add(self, record: dict[str, Any], line: bytes, number: int) -> None:
        writer, prev = record["writer"], record["prev"]
        if record.get("type") == "chain_start":
            self._start(record, writer, prev, number)
        else:
            self.only_fresh_starts = False
            last = self.last.get(writer)
            if prev is None or last is None or last.hash != prev:
                raise Broken(*_which_line(record, last, number))
        seq = record.get("seq")
        self.last[writer] = _Link(line_hash(line), seq if isinstance(seq, int) else None, number)
        self.walked.seen.add(self.last[writer].hash)

    def _start(self, record: dict[str, Any], writer: str, prev: Any, number: int) -> None:
        link = record.get("link")
        if prev is not None or writer in self.last:
            raise Broken(number, "chain start reuses a writer or continues a chain")
        if number == 1 and self.before is not None:
            _check_follows(record, self.before, self.path)
        elif number > 1:
            if link is None and not self.only_fresh_starts:
                raise Broken(number, "unlinked chain start in the middle of the file")
            if link is not None and link not in self.walked.seen:
                raise Broken(number, "chain start links to no earlier line")
        self.only_fresh_starts = self.only_fresh_starts and link is None


def _record(line: bytes) -> dict[str, Any] | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("writer"), str) or "prev" not in record:
        return None
    return record


def _fences(record: dict[str, Any], fd: int, start: int, gap_from: int) -> bool:
    """Whether ``record`` (at byte ``start``) is a chain start recording the bytes from ``gap_from`` as a gap."""
    gap = record.get("gap") if record.get("type") == "chain_start" else None
    if not isinstance(gap, dict) or not isinstance(gap.get("bytes"), int):
        return False
    size = gap["bytes"]
    if not 0 < size <= start or start - size > gap_from:
        return False
    return hashlib.sha256(os.pread(fd, size, start - size)).hexdigest() == gap.get("sha256")


def _check_follows(record: dict[str, Any], before: _Walked, path: Path) -> None:
    """The first line of a file given after another names that file and links to one of its lines."""
    if record.get("previous") != before.file_id:
        raise Broken(1, f"{path.name} does not follow the file given before it (it names file "
                        f"{record.get('previous')}, that one is {before.file_id}): a file between them is missing, "
                        "or they are out of order")
    if record.get("link") not in before.seen:
        raise Broken(1, "links to no line of the file before it")
    if before.open_end is not None:
        line, gap_from, reason = before.open_end
        gap = record.get("previous_gap")
        if not isinstance(gap, dict) or not isinstance(gap.get("bytes"), int) or not (
            0 < gap["bytes"] <= before.size and before.size - gap["bytes"] <= gap_from
        ):
            raise Broken(line, reason, before.path)
        with open(before.path, "rb") as handle:
            if hashlib.sha256(os.pread(handle.fileno(), gap["bytes"], before.size - gap["bytes"])).hexdigest() != gap.get("sha256"):
                raise Broken(line, reason, before.path)


def _which_line(record: dict[str, Any], last: _Link | None, number: int) -> tuple[int, str]:
    """Where a chain breaks at line ``number``, as ``seq`` tells it (see the module's rules)."""
    if last is None:
        return number, "a line of a chain that never started here (inserted, or its chain start was removed)"
    seq = record.get("seq")
    if isinstance(seq, int) and last.seq is not None:
        if seq == last.seq + 1:
            return last.line, f"line edited: it no longer hashes to what line {number}, next in its chain, recorded"
        if seq > last.seq + 1:
            return number, f"{seq - last.seq - 1} line(s) of this chain removed before this line"
        return number, "line inserted or moved (its place in the chain is taken)"
    return number, "hash chain broken (a line was edited, removed or inserted)"


def _check_head(walked: _Walked, head: Head) -> None:
    if head.file != walked.file_id:
        raise Broken(walked.lines, f"the chain head is for file {head.file}, and this file is {walked.file_id} "
                                   "(not the newest file of this log, or its first line was edited)")
    if head.offset in walked.ends:
        line, found = walked.ends[head.offset]
        if found != head.hash:
            raise Broken(line, "line edited: it no longer hashes to what the chain head recorded for the last line")
        return
    if walked.within is not None:
        raise Broken(walked.within, f"line edited: the chain head says a line ended at byte {head.offset}, inside it")
    raise Broken(walked.lines, f"the file ends at byte {walked.size}, before byte {head.offset} where its chain head "
                               "says its last line ends: this line was edited or the lines after it removed")
