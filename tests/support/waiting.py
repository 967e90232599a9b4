"""Waiting for a state the test cannot be told about, by looking at the state itself.

Where the code under test offers an event (a ``trio.Event``, a channel, a
stream's ``closed``), a test awaits it. Where it cannot (a subprocess's log,
a counter in another process, a file another task writes), the test polls the
state itself: a loop that checks it and yields briefly, with a generous cap
stated in the call. The cap is there so a broken build fails instead of
hanging; it is never what the test measures, so it can be ten times what an
idle machine needs.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

T = TypeVar("T")

# How often a poll looks: often enough that a test never waits long after the state arrives, rarely
# enough that polling costs nothing next to the proxy under test.
POLL_INTERVAL = 0.02


async def wait_until(state: Callable[[], T | Awaitable[T]], *, timeout: float, what: str = "") -> T:
    """The first truthy value of ``state()`` (a plain or async callable), polled until ``timeout`` seconds.

    Raises ``AssertionError`` naming ``what`` (or the callable) and the last value seen when the cap
    passes, so a failure says what never happened rather than "Cancelled".
    """
    last: object = None
    with trio.move_on_after(timeout):
        while True:
            value = state()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            last = value
            await trio.sleep(POLL_INTERVAL)
    raise AssertionError(f"not within {timeout} s: {what or getattr(state, '__name__', state)} (last seen: {last!r})")
