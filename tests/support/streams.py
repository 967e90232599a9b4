"""Streams every provider's end-to-end tests script the same way.

A marker split across upstream chunks is the case a per-chunk check would
miss; a blocked stream that keeps coming is the case where a proxy that only
stops *forwarding* would keep paying for the generation. Each dialect's tests
run both through its own SDK; the scripts live here once.
"""

from __future__ import annotations

import pytest
import trio

from tests.support.fake_upstream import FakeUpstream, Reply

LONG_TEXT = "All work and no play makes Jack a dull boy. " * 40

split_marker_chunks = pytest.mark.parametrize(
    "chunks",
    [
        ["Once upon a time caps", "em_bl", "ock appeared"],
        ["c", "a", "p", "s", "e", "m", "_", "b", "l", "o", "c", "k"],
        [LONG_TEXT, "the end: CAPSEM_", "BLOCK", LONG_TEXT],
    ],
    ids=["three-way-split", "char-by-char", "after-long-text"],
)


def endless_blocked_reply() -> Reply:
    """A marker first, then ~10 s of text: the proxy must not wait for it to end."""
    return Reply(chunks=["here comes capsem_block"] + ["and more text "] * 2000, chunk_delay=0.005)


async def assert_upstream_closed_at_once(fake: FakeUpstream) -> None:
    """The blocked stream's upstream connection was closed by the proxy within a second, unfinished."""
    with trio.fail_after(1):
        await fake.streams[0].closed.wait()
    assert fake.streams[0].client_closed and not fake.streams[0].completed
