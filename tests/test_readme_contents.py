"""The README's first screen: its contents line names every section, in order, and every link into
the README lands on a heading that exists.

The README is long; a newcomer navigates it by the contents line and the links of the first screen.
A section added without a contents entry, or renamed under a link, leaves a reader at a dead end.
Anchors are computed as GitHub computes them: lower case, punctuation other than ``-`` and ``_``
removed, spaces turned into ``-``, and ``-1``, ``-2`` ... for repeated headings.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"\]\(#([^)]+)\)")


def prose() -> str:
    """The README without its fenced code blocks (a ``#`` comment in a shell block is not a heading)."""
    return FENCE.sub("", README.read_text(encoding="utf-8"))


def anchor(title: str) -> str:
    title = re.sub(r"`|\*\*", "", title).strip().lower()
    return re.sub(r"[^\w\- ]", "", title).replace(" ", "-")


def headings(text: str) -> list[tuple[int, str]]:
    return [(len(hashes), title) for hashes, title in re.findall(r"^(#{1,6}) (.+)$", text, re.M)]


def anchors(text: str) -> set[str]:
    seen: Counter[str] = Counter()
    found = set()
    for _, title in headings(text):
        base = anchor(title)
        found.add(base if not seen[base] else f"{base}-{seen[base]}")
        seen[base] += 1
    return found


def test_the_contents_line_names_every_section_in_order() -> None:
    text = prose()
    contents = text.split("Contents:", 1)[1].split("\n\n", 1)[0]
    sections = [anchor(title) for level, title in headings(text) if level == 2]
    assert LINK.findall(contents) == sections


def test_every_link_into_the_readme_lands_on_a_heading() -> None:
    text = prose()
    missing = sorted(set(LINK.findall(text)) - anchors(text))
    assert not missing, f"links to no heading: {missing}"
