"""A hook's content as the pieces a splittable policy is asked about, and the seams between them.

A tool result or a tool definition is one piece (``single_split``). A
prompt is its system and prompt texts as the dialect kept them (each
message's strings; short ones joined to the text after them, ``grouped``),
the seams between them and each media item (``prompt_split``). Each piece carries the keyed digest the verdict cache
files decisions under, and the hook's arguments for it, so that a policy in
a worker process can be sent a batch of them (``batches``).

A policy is given the prompt whole: the pieces joined by ``"\\n"``. Checked
piece by piece, a match that runs from one piece into the next (a regex
spanning the line break, a phone number's context words in the message
before) would never be seen whole. So each place where two pieces meet is
checked too, as the text around it: on each side at least ``width``
characters (the widest match the policies declare), counted in characters a
reader sees, both ways our matchers count them (``normalize.fold`` and
``normalize.visible``), so that invisible padding inside a match cannot push
it out of the seam. A match across a joint is at most ``width`` of those on
either side, so it lies inside that joint's seam.

The cut is moved out to the nearest whitespace within another ``width``
characters, so that a seam does not start or end in the middle of a word:
``\\b`` and look-arounds at its edges read as they do in the whole text, and
a seam does not find a number or a term that is really part of a longer one.

Seams that overlap are merged (many short pieces, such as the keys and values
of a tool call, make one seam, not one per joint), up to ``SEAM_CAP``
characters; every joint's own window lies whole inside one seam. A seam is
content like a piece: the engine caches decisions on it by its text, so an
unchanged conversation's seams are decided once too. And they are found once:
a conversation's next turn resumes its last seam scan where the texts are the
last turn's (``SeamScans``, ``scan_seams``), exactly as a whole scan would go.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from capsem.models import Decision, Media

from capsem_proxyd.enforcement.verdict_cache import VerdictCache
from capsem_proxyd.policies.normalize import reads_at_least_in
from capsem_proxyd.views import RequestView

# A merged seam stops growing here (a joint's own window is never cut).
SEAM_CAP = 4096
# Texts shorter than this are one piece with the texts after them, up to the first that is not, or up to
# GROUP_CHARS characters in all (``grouped``).
SHORT_TEXT = 64
GROUP_CHARS = 1024
_SPACE = re.compile(r"\s")
_LAST_SPACE = re.compile(r"\s\S*\Z")
# A remote policy (``workers.py``) is asked about this many characters of pieces per call at most: one
# round trip per piece would keep the event loop busy with a big request's replies, and one per request
# would hold a worker for all of it while small requests wait.
BATCH_CHARS = 32_768
# Conversations whose last seam scan an engine keeps for their next turn (``SeamScans``).
SEAM_SCANS = 128
# A splittable policy's verdict on the whole texts of a prompt (``whole_prompt_decision``), or None.
WholeCheck = Callable[[Any], "Decision | None"]


@dataclass(slots=True)
class Piece:
    """One piece of a hook's content: its keyed digest (the cache's), the hook's arguments for it
    (picklable: a remote policy is sent a batch of them), and its size in characters."""

    digest: bytes
    args: tuple[Any, ...]
    size: int


@dataclass(slots=True)
class Split:
    """A hook's content as pieces, for the splittable policies; ``whole`` asks for whole-request verdicts."""

    pieces: list[Piece]
    whole: WholeCheck | None = None


def single_split(cache: VerdictCache, identity: str, args: tuple[Any, ...]) -> Split:
    """Content that is one piece already (a tool result, a definition), known by ``identity``."""
    return Split([Piece(cache.digest(identity), args, len(identity))])


def prompt_split(
    cache: VerdictCache, seam_width: int, rid: str, agent: Any, view: RequestView, media: list[Media],
    scans: SeamScans | None = None, tenant: str = "",
) -> Split:
    """``on_model_call``'s content as pieces: each system and prompt piece, the seams between them
    (``width``: the widest match of the splittable policies), each media item; and the whole-request
    checks (size limits, model globs) that a policy makes on the joined texts. ``scans``: the seam scans
    of the tenant's conversations so far, resumed where this one's texts are theirs (``SeamScans``)."""
    model = view.model
    system = grouped(view.system_pieces) if view.system_pieces is not None else [view.system] if view.system else []
    prompt = grouped(view.prompt_pieces) if view.prompt_pieces is not None else [view.prompt] if view.prompt else []
    pieces: list[Piece] = []
    for text in system:
        pieces.append(Piece(cache.digest(text, b"system\0"), (rid, agent, model, text, "", []), len(text)))
    for text in prompt:
        pieces.append(Piece(cache.digest(text, b"prompt\0"), (rid, agent, model, "", text, []), len(text)))
    texts = [*system, *prompt]
    if scans is None:
        found = seams(texts, seam_width)
    else:
        found = scans.seams(tenant, texts, seam_width, [piece.digest for piece in pieces])
    for text in found:
        pieces.append(Piece(cache.digest(text, b"seam\0"), (rid, agent, model, "", text, []), len(text)))
    for item in media:
        kind = f"media\0{item.mime_type}\0".encode()
        pieces.append(Piece(cache.digest(item.content, kind), (rid, agent, model, "", "", [item]), len(item.content)))

    def whole(policy: Any) -> Decision | None:
        check = getattr(policy, "whole_prompt_decision", None)
        return check(model, view.system, view.prompt) if callable(check) else None

    return Split(pieces, whole)


def grouped(texts: list[str]) -> list[str]:
    """``texts`` with each run of short ones joined (``"\\n"``) to the text that ends it: a group ends with a
    text of ``SHORT_TEXT`` characters or more (a message), or once it holds ``GROUP_CHARS``.

    An agent's turn adds a message and a tool call whose id, name, argument keys and values are each a
    string of a few characters: as pieces of their own, they were most of a conversation's pieces (250 of
    300 in the bench's 50-turn sessions), each with its digest, its cache look-up per policy and its seam.
    Joined they read as the whole reads them (the pieces of a prompt are joined by ``"\\n"``). Where a
    group ends depends on its own texts only, so an edit (or a new turn) changes the groups around it
    and none after."""
    out: list[str] = []
    run: list[str] = []
    size = 0
    for text in texts:
        run.append(text)
        size += len(text) + 1
        if len(text) >= SHORT_TEXT or size >= GROUP_CHARS:
            out.append(run[0] if len(run) == 1 else "\n".join(run))
            run, size = [], 0
    if run:
        out.append(run[0] if len(run) == 1 else "\n".join(run))
    return out


def batches(sizes: list[int]) -> list[tuple[int, int]]:
    """Consecutive (start, stop) ranges of ``sizes`` of about ``BATCH_CHARS`` characters each."""
    ranges: list[tuple[int, int]] = []
    start = total = 0
    for number, size in enumerate(sizes):
        if number > start and total + size > BATCH_CHARS:
            ranges.append((start, number))
            start, total = number, 0
        total += size
    if start < len(sizes):
        ranges.append((start, len(sizes)))
    return ranges


def seams(texts: list[str], width: int) -> list[str]:
    """The seams of ``texts`` (as ``"\\n".join(texts)`` joins them), each a substring of that join."""
    return scan_seams(texts, width)[0]


@dataclass(slots=True)
class SeamScan:
    """What a scan of a prompt's seams leaves for the next turn's (``scan_seams``): its texts' digests, and
    before each joint (and after the last) the scan's state, the seams emitted so far and how far into the
    join it had read.

    An agent resends its conversation with a few texts more each turn, and the seams of the texts it had
    sent come out the same: a scan resumes from the last joint before which it had read nothing that
    changed (nothing past the texts both turns share), instead of reading every joint again (two window
    searches each, most of a turn's splitting)."""

    width: int
    digests: list[bytes]
    lows: list[int]
    highs: list[int]
    emitted: list[int]
    reach: list[float]
    found: list[str]


_UNBOUNDED = float("inf")  # how far a read reached when it depended on where the join ends


def scan_seams(
    texts: list[str], width: int, digests: list[bytes] | None = None, previous: SeamScan | None = None
) -> tuple[list[str], SeamScan | None]:
    """``seams(texts, width)``, and the scan to resume from next time (with ``digests``, the texts' keyed
    digests; None without). ``previous``: an earlier scan, resumed where it is exactly this one's so far.

    Exact: a joint's window is read from the join's characters only, and the scan's state before a joint
    from the windows before it. Resumed before joint ``j`` only when every read before it stayed inside
    the texts both scans share (identical digests, so identical texts, at the same places), none of them
    clamped at the join's end: the scan would have come to the same state, and the same seams, there."""
    if len(texts) < 2 or width <= 0:
        return [], None
    whole = "\n".join(texts)
    ascii = whole.isascii()
    joints = len(texts) - 1
    lows: list[int] = []
    highs: list[int] = []
    emitted: list[int] = []
    reach: list[float] = []
    out: list[str] = []
    low = high = -1
    joint = -1
    furthest = 0.0
    first = 0
    if previous is not None and digests is not None and previous.width == width and len(digests) == len(texts):
        first, joint = _resume_at(previous, digests, texts, joints)
        if first:
            low, high, furthest = previous.lows[first], previous.highs[first], previous.reach[first]
            out = previous.found[:previous.emitted[first]]
            lows, highs = previous.lows[:first], previous.highs[:first]
            emitted, reach = previous.emitted[:first], previous.reach[:first]
    for number in range(first, joints):
        lows.append(low)
        highs.append(high)
        emitted.append(len(out))
        reach.append(furthest)
        joint += len(texts[number]) + 1  # the index of the "\n" after this piece
        end, reached = _right_reach(whole, joint + 1, width, ascii)
        furthest = max(furthest, reached)
        # A seam starts at or before its joint: a joint inside the seam so far joins it (within the cap)
        # without working out where its own stretch would start (most joints of many short pieces).
        if low >= 0 and joint < high and max(high, end) - low <= SEAM_CAP:
            high = max(high, end)
            continue
        start = _left(whole, joint, width, ascii)
        if low >= 0 and start < high and max(high, end) - low <= SEAM_CAP:
            high = max(high, end)
            continue
        if low >= 0:
            out.append(whole[low:high])
        low, high = start, end
    lows.append(low)
    highs.append(high)
    emitted.append(len(out))
    reach.append(furthest)
    found = [*out, whole[low:high]]
    scan = None if digests is None else SeamScan(width, list(digests), lows, highs, emitted, reach, found)
    return found, scan


class SeamScans:
    """The last seam scan of each conversation, for the next turn's to resume (``scan_seams``); an engine's.

    A conversation is known by the tenant and the digests of its first two texts (the system prompt and the
    first message, which an agent resends every turn); a scan whose texts are not the earlier one's is
    simply read whole. At most ``SEAM_SCANS`` conversations, the least recent dropped (each holds its
    seams' text and a few numbers per joint: some kB). Per tenant, as the verdict cache: nobody's scan
    is resumed from what another tenant sent."""

    def __init__(self, size: int = SEAM_SCANS) -> None:
        self.size = size
        self._scans: OrderedDict[tuple[str, bytes, bytes], SeamScan] = OrderedDict()

    def __len__(self) -> int:
        return len(self._scans)

    def seams(self, tenant: str, texts: list[str], width: int, digests: list[bytes]) -> list[str]:
        """``seams(texts, width)``, from this conversation's last scan where it can be resumed."""
        if len(digests) < 2 or len(digests) != len(texts):
            return seams(texts, width)
        key = (tenant, digests[0], digests[1])
        found, scan = scan_seams(texts, width, digests, self._scans.get(key))
        if scan is not None:
            self._scans[key] = scan
            self._scans.move_to_end(key)
            while len(self._scans) > self.size:
                self._scans.popitem(last=False)
        return found


def _resume_at(previous: SeamScan, digests: list[bytes], texts: list[str], joints: int) -> tuple[int, int]:
    """The joint an earlier scan is resumed before (0: none), and where the joint before it is in the join."""
    shared = 0
    for old, new in zip(previous.digests, digests):
        if old != new:
            break
        shared += 1
    if shared == 0:
        return 0, -1
    # Characters both joins hold alike: the shared texts, without the "\n" after the last of them (the
    # next text may be missing in one of them).
    same = sum(len(text) + 1 for text in texts[:shared]) - 1
    last = min(shared, joints, len(previous.lows) - 1)  # before a joint both scans have, between shared texts
    number = last
    while number > 0 and previous.reach[number] > same:
        number -= 1
    if number == 0:
        return 0, -1
    return number, sum(len(text) + 1 for text in texts[:number]) - 1


def _left(whole: str, joint: int, width: int, ascii: bool) -> int:
    """Where the seam before ``joint`` starts: ``width`` seen characters back, then back to whitespace.
    (A gap in a term counts once, however long: the stretch is counted so, ``reads_at_least_in``.)"""
    start = max(0, joint - width)
    while start > 0 and not reads_at_least_in(whole, start, joint, width, ascii):
        start = max(0, joint - 2 * (joint - start))
    if start > 0:
        space = _LAST_SPACE.search(whole, max(0, start - width), start)
        if space is not None:
            return space.start() + 1
    return start


def _right_reach(whole: str, begin: int, width: int, ascii: bool) -> tuple[int, float]:
    """Where the seam after the joint ending at ``begin`` ends (exclusive), and how far the search read
    (unbounded where it stopped at the join's end: another join, longer, might have read on)."""
    size = len(whole)
    reached: float = begin + width
    end = min(size, begin + width)
    while end < size and not reads_at_least_in(whole, begin, end, width, ascii):
        reached = begin + 2 * (end - begin)
        end = min(size, begin + 2 * (end - begin))
    if reached >= size or end + width >= size:
        reached = _UNBOUNDED
    else:
        reached = end + width
    space = _SPACE.search(whole, end, min(size, end + width))
    return (space.start() if space is not None else end), reached
