"""``wait_until``, the suite's one way to wait for a state nobody announces, on trio's mock clock:
it returns the first truthy value, and when the cap passes it fails naming what never happened."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.support.waiting import wait_until


async def test_returns_the_first_truthy_value_of_a_plain_or_async_state(autojump_clock: trio.testing.MockClock) -> None:
    seen = iter([0, None, "", "ready", "later"])
    assert await wait_until(lambda: next(seen), timeout=10) == "ready"

    async def counted() -> int:
        return 3

    assert await wait_until(counted, timeout=10) == 3


async def test_fails_at_the_cap_naming_the_state_and_the_last_value(autojump_clock: trio.testing.MockClock) -> None:
    queue = [1, 2, 3]
    start = trio.current_time()
    with pytest.raises(AssertionError, match=r"not within 30 s: the queue empty \(last seen: False\)"):
        await wait_until(lambda: not queue, timeout=30, what="the queue empty")
    assert trio.current_time() - start == pytest.approx(30, abs=0.1)  # mock time: the whole cap, no less
