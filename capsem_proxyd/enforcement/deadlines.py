"""Which policy hooks need a deadline at all.

Entering and leaving a trio cancel scope with a deadline costs 7-12 us (the
deadline goes into the run loop's heap and comes out again), paid per policy
per hook call. But trio can interrupt code only where it suspends: a hook
written as an ``async def`` that never awaits anything runs to its end in one
step, and a deadline around it could never fire. Such hooks are recognised
once, from their byte code, and called without the scope; every other hook —
one that awaits, iterates or enters anything asynchronously, or is not a plain
``async def`` at all (a wrapper, a callable object, a method replaced on the
instance) — keeps its ``trio.fail_after``::

    if hook_can_suspend(policy, "on_model_call"):
        with trio.fail_after(timeout):
            decision = await policy.on_model_call(...)
    else:
        decision = await policy.on_model_call(...)

A deadline that cannot interrupt still judges: trio cancels only at a
checkpoint, so a hook that blocks the thread (``time.sleep``, a synchronous
HTTP client, a long regex) whether or not it awaits, runs past its deadline
and comes back with a decision. That decision is late, and a late decision is
a timeout (``HookTimer.late``): one monotonic-clock comparison after the call.
``timed`` also measures the longest stretch a hook kept the event loop (no
request, no ``/health``, no stream moved meanwhile), so that the caller can
name the policy that should run in the worker processes (``cpu_heavy``).
"""

from __future__ import annotations

import dis
import inspect
import time
import types
from collections.abc import Awaitable, Generator
from typing import Any, TypeVar

T = TypeVar("T")

# Every way a coroutine's own frame can give control back to the event loop
# (``await``, ``async for``, ``async with``) compiles to one of these.
_SUSPENDING_OPCODES = frozenset(
    {"YIELD_VALUE", "SEND", "GET_AWAITABLE", "GET_AITER", "GET_ANEXT", "BEFORE_ASYNC_WITH", "SETUP_ASYNC_WITH",
     "END_ASYNC_FOR", "ASYNC_GEN_WRAP"}
)
_cache: dict[tuple[type, str], bool] = {}


def hook_can_suspend(policy: Any, hook: str) -> bool:
    """False only when ``policy.<hook>`` is a plain ``async def`` whose body never suspends."""
    if hook in getattr(policy, "__dict__", ()):
        return True  # replaced on the instance: not what the class says
    key = (type(policy), hook)
    known = _cache.get(key)
    if known is None:
        known = _cache[key] = _function_can_suspend(inspect.getattr_static(type(policy), hook, None))
    return known


def _function_can_suspend(function: Any) -> bool:
    if not isinstance(function, types.FunctionType):
        return True  # staticmethod, functools.partial, a callable object...: assume it waits
    code = function.__code__
    if not code.co_flags & inspect.CO_COROUTINE:
        return True  # a plain function could return any awaitable
    return any(instruction.opname in _SUSPENDING_OPCODES for instruction in dis.get_instructions(code))


class HookTimer:
    """How long a hook call (or a view's pieces) took in all, ``elapsed``, and the longest stretch it
    kept the event loop without giving it back, ``held`` (both in seconds, by the monotonic clock)."""

    __slots__ = ("started", "elapsed", "held")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.elapsed = 0.0
        self.held = 0.0

    def stop(self, held: float | None = None) -> None:
        """The call is over; ``held`` when it was measured step by step (``timed``), else all of it."""
        self.elapsed = time.monotonic() - self.started
        self.held = self.elapsed if held is None else held

    def late(self, timeout: float | None) -> bool:
        """The answer came after ``timeout``: whatever it says, it is a timeout."""
        return timeout is not None and timeout > 0 and self.elapsed > timeout


@types.coroutine
def timed(awaitable: Awaitable[T], timer: HookTimer) -> Generator[Any, Any, T]:
    """Await ``awaitable``, timing each step it runs between two suspensions (``timer.held``: the longest).

    A transparent trampoline: what the awaited code yields goes to trio as it is, and what trio
    sends or throws back (a value, ``Cancelled``) goes to the awaited code. It costs two clock
    reads per step, paid only by hooks that can suspend (the others are one step, timed whole).
    """
    steps = awaitable.__await__()
    held = 0.0
    sent: Any = None
    thrown: BaseException | None = None
    try:
        while True:
            begun = time.monotonic()
            try:
                yielded = steps.send(sent) if thrown is None else steps.throw(thrown)
            except StopIteration as done:
                result: T = done.value
                return result
            finally:
                held = max(held, time.monotonic() - begun)
            sent, thrown = None, None
            try:
                sent = yield yielded
            except GeneratorExit:
                steps.close()
                raise
            except BaseException as error:  # noqa: BLE001 - handed to the awaited code, as trio would
                thrown = error
    finally:
        timer.stop(held)
