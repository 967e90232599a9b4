"""A seam scan resumed from the last turn's finds exactly the seams a scan of the whole would.

An agent resends its conversation with texts added (and its last group grown); the engine resumes the
seam scan where the texts are the last turn's (``pieces.SeamScans``). Any other change (an edit in the
middle, texts dropped, whitespace or invisible padding around a joint, a width change) must come out as
the whole scan's, or a match across a joint could be missed.
"""

from __future__ import annotations

from hashlib import sha256

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capsem_proxyd.enforcement import pieces
from capsem_proxyd.enforcement.pieces import SeamScans, scan_seams, seams

ATOMS = ["lorem", "ipsum", " ", "  ", "\n", "\u200b", "\u200b" * 40, "é", "x" * 70, "launch code 1234", "\t", "-", ""]


def digests(texts: list[str]) -> list[bytes]:
    return [sha256(text.encode("utf-8", "surrogatepass")).digest()[:16] for text in texts]


texts_of = st.lists(st.lists(st.sampled_from(ATOMS), max_size=12).map("".join), min_size=0, max_size=9)


@st.composite
def turns(draw: st.DrawFn) -> list[list[str]]:
    """A conversation over a few turns: each turn the last one's texts, edited as an agent (or anyone) may."""
    current = draw(texts_of)
    out = [current]
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(["append", "grow-last", "edit", "drop", "same"]))
        current = list(current)
        if edit == "append" or not current:
            current += draw(texts_of)
        elif edit == "grow-last":
            current[-1] += draw(st.sampled_from(ATOMS))
            current += draw(texts_of)
        elif edit == "edit":
            at = draw(st.integers(0, len(current) - 1))
            current[at] = draw(st.sampled_from(ATOMS)) + current[at]
        elif edit == "drop":
            current = current[: draw(st.integers(0, len(current)))]
        out.append(current)
    return out


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(turns(), st.sampled_from([1, 3, 8, 20, 65]))
def test_a_resumed_scan_finds_the_seams_of_the_whole(conversation: list[list[str]], width: int) -> None:
    previous = None
    for texts in conversation:
        found, scan = scan_seams(texts, width, digests(texts), previous)
        assert found == seams(texts, width), texts
        previous = scan if scan is not None else previous


def test_a_new_turn_reads_only_its_last_joints(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    texts = [f"message {number}: " + "words and more words " * 4 for number in range(40)]
    scans = SeamScans()
    reads: list[int] = []
    right = pieces._right_reach

    def counted(whole: str, begin: int, width: int, ascii: bool) -> tuple[int, float]:
        reads.append(begin)
        return right(whole, begin, width, ascii)

    monkeypatch.setattr(pieces, "_right_reach", counted)
    assert scans.seams("tenant", texts, 65, digests(texts)) == seams(texts, 65)
    assert len(reads) == 2 * 39  # the first turn: every joint, as the whole scan does
    reads.clear()
    longer = [*texts, "the next message " * 5, "and its tool result " * 5]
    found = scans.seams("tenant", longer, 65, digests(longer))
    resumed = len(reads)
    assert found == seams(longer, 65)
    assert resumed <= 4, resumed  # the next: the joints at the end only
    reads.clear()
    scans.seams("other", longer, 65, digests(longer))  # another tenant sending the same texts: read whole
    assert len(reads) == 41
