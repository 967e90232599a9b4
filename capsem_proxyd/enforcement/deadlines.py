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
"""

from __future__ import annotations

import dis
import inspect
import types
from typing import Any

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
