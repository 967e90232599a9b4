"""The memory one process lends to non-streamed replies (``--reply-memory``).

A non-streamed reply is held whole: read, decoded, parsed, checked, then
sent. A stream is not (back-pressure keeps it flat), but nothing bounded how
many whole replies one process held at once: three 200 MB replies in flight
reached 1.47 GB. ``ReplyMemory`` is that bound, in bytes of reply bodies, shared
by every request of one process (each of ``--workers N`` has its own).

A reply reserves its size before its body is read: its ``Content-Length``
when the provider states it (and sends it unencoded), else nothing at first,
growing as the chunks arrive. What does not fit:

* a reply larger than the whole budget is refused at once (503: it will never fit);
* a reply of known size waits for room, first come first served, as long as
  its request may still take (the deadline of ``--request-timeout``, or the
  read timeout when there is none), then gets a 503. Waiting, not refusing at
  once: the provider has already generated the reply, and a retry pays for it
  again;
* a reply of unknown size never waits while it holds something (two such
  replies waiting for each other's room would wait out their deadlines): a
  chunk that does not fit ends it with a 503 at once.

The memory a held reply costs is about twice its bytes at its peak (its text
and the parsed reply, see ``body.read_reply``): the budget counts bytes, the
process needs up to twice the budget for its replies.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import trio

from capsem_proxyd.errors import reply_memory_full


class _Waiter:
    __slots__ = ("granted", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.granted = trio.Event()


class ReplyHold:
    """One reply's share of the budget: grows as an unsized reply arrives, released once it went out."""

    __slots__ = ("_memory", "size")

    def __init__(self, memory: ReplyMemory, size: int) -> None:
        self._memory: ReplyMemory | None = memory
        self.size = size

    def grow(self, more: int) -> None:
        """``more`` bytes arrived beyond what is held: take them now or refuse the reply (503)."""
        if self._memory is not None:
            self._memory._grow(self, more)

    def release(self) -> None:
        """Give the bytes back (again: nothing happens)."""
        if self._memory is not None:
            memory, self._memory = self._memory, None
            memory._release(self.size)


class ReplyMemory:
    """The budget: ``capacity`` bytes of non-streamed reply bodies held at once in this process.

    ``changed`` is told the bytes held after every change (the metrics' gauge).
    """

    def __init__(self, capacity: int, changed: Callable[[int], None] | None = None) -> None:
        self.capacity = capacity
        self.held = 0
        self._changed = changed
        self._waiting: deque[_Waiter] = deque()

    @property
    def waiting(self) -> int:
        """Replies waiting for room now."""
        return len(self._waiting)

    async def hold(self, size: int, until: float) -> ReplyHold:
        """Reserve ``size`` bytes (0: unknown yet, see ``ReplyHold.grow``), waiting for room until trio
        time ``until``; ``ProxyError`` 503 when the reply can never fit or no room came in time."""
        if size > self.capacity:
            raise reply_memory_full(self.capacity, larger=True)
        if not self._waiting and self.held + size <= self.capacity:
            self._take(size)
            return ReplyHold(self, size)
        waiter = _Waiter(size)
        self._waiting.append(waiter)
        granted = False
        try:
            with trio.move_on_at(until):
                await waiter.granted.wait()
            granted = waiter.granted.is_set()
        finally:
            if not granted:
                if waiter.granted.is_set():  # room came, but the request is leaving (the client left)
                    self._release(size)
                else:
                    self._waiting.remove(waiter)
                    self._wake()  # a smaller reply behind it may fit now
        if not granted:
            raise reply_memory_full(self.capacity, larger=False)
        return ReplyHold(self, size)

    def _grow(self, hold: ReplyHold, more: int) -> None:
        if self.held + more > self.capacity:
            larger = hold.size + more > self.capacity
            hold.release()  # now, not once the refused reply's upstream is closed: others may fit meanwhile
            raise reply_memory_full(self.capacity, larger=larger)
        hold.size += more
        self._take(more)

    def _take(self, size: int) -> None:
        self.held += size
        if self._changed is not None and size:
            self._changed(self.held)

    def _release(self, size: int) -> None:
        self.held -= size
        if self._changed is not None and size:
            self._changed(self.held)
        self._wake()

    def _wake(self) -> None:
        """Grant the waiting replies that fit now, in the order they came."""
        while self._waiting and self.held + self._waiting[0].size <= self.capacity:
            waiter = self._waiting.popleft()
            self._take(waiter.size)
            waiter.granted.set()
