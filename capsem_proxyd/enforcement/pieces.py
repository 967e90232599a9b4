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
unchanged conversation's seams are decided once too.
"""

from __future__ import annotations

import re
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
    cache: VerdictCache, seam_width: int, rid: str, agent: Any, view: RequestView, media: list[Media]
) -> Split:
    """``on_model_call``'s content as pieces: each system and prompt piece, the seams between them
    (``width``: the widest match of the splittable policies), each media item; and the whole-request
    checks (size limits, model globs) that a policy makes on the joined texts."""
    model = view.model
    system = grouped(view.system_pieces) if view.system_pieces is not None else [view.system] if view.system else []
    prompt = grouped(view.prompt_pieces) if view.prompt_pieces is not None else [view.prompt] if view.prompt else []
    pieces: list[Piece] = []
    for text in system:
        pieces.append(Piece(cache.digest(text, b"system\0"), (rid, agent, model, text, "", []), len(text)))
    for text in prompt:
        pieces.append(Piece(cache.digest(text, b"prompt\0"), (rid, agent, model, "", text, []), len(text)))
    for text in seams([*system, *prompt], seam_width):
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
    if len(texts) < 2 or width <= 0:
        return []
    whole = "\n".join(texts)
    ascii = whole.isascii()
    out: list[str] = []
    low = high = -1
    joint = -1
    for text in texts[:-1]:
        joint += len(text) + 1  # the index of the "\n" after this piece
        end = _right(whole, joint + 1, width, ascii)
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
    out.append(whole[low:high])
    return out


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


def _right(whole: str, begin: int, width: int, ascii: bool) -> int:
    """Where the seam after the joint ending at ``begin`` ends (exclusive)."""
    end = min(len(whole), begin + width)
    while end < len(whole) and not reads_at_least_in(whole, begin, end, width, ascii):
        end = min(len(whole), begin + 2 * (end - begin))
    space = _SPACE.search(whole, end, min(len(whole), end + width))
    return space.start() if space is not None else end
