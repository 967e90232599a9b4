"""The seams between the pieces a prompt is checked as.

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

from capsem_proxyd.policies.normalize import fold, visible

# A merged seam stops growing here (a joint's own window is never cut).
SEAM_CAP = 4096
_SPACE = re.compile(r"\s")
_LAST_SPACE = re.compile(r"\s\S*\Z")


def seams(texts: list[str], width: int) -> list[str]:
    """The seams of ``texts`` (as ``"\\n".join(texts)`` joins them), each a substring of that join."""
    if len(texts) < 2 or width <= 0:
        return []
    whole = "\n".join(texts)
    out: list[str] = []
    low = high = -1
    joint = -1
    for text in texts[:-1]:
        joint += len(text) + 1  # the index of the "\n" after this piece
        start, end = _left(whole, joint, width), _right(whole, joint + 1, width)
        if low >= 0 and start < high and max(high, end) - low <= SEAM_CAP:
            high = max(high, end)
            continue
        if low >= 0:
            out.append(whole[low:high])
        low, high = start, end
    out.append(whole[low:high])
    return out


def _wide_enough(text: str, width: int) -> bool:
    return text.isascii() or (len(fold(text)) >= width and len(visible(text)) >= width)


def _left(whole: str, joint: int, width: int) -> int:
    """Where the seam before ``joint`` starts: ``width`` seen characters back, then back to whitespace."""
    start = max(0, joint - width)
    while start > 0 and not _wide_enough(whole[start:joint], width):
        start = max(0, joint - 2 * (joint - start))
    if start > 0:
        space = _LAST_SPACE.search(whole, max(0, start - width), start)
        if space is not None:
            return space.start() + 1
    return start


def _right(whole: str, begin: int, width: int) -> int:
    """Where the seam after the joint ending at ``begin`` ends (exclusive)."""
    end = min(len(whole), begin + width)
    while end < len(whole) and not _wide_enough(whole[begin:end], width):
        end = min(len(whole), begin + 2 * (end - begin))
    space = _SPACE.search(whole, end, min(len(whole), end + width))
    return space.start() if space is not None else end
