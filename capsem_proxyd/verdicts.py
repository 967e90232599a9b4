"""The order of CAPSEM verdicts, written once: the engine combines by it and OpenTelemetry reports by it.

Policies answer with a CAPSEM verdict name; the proxy ranks them so that the
strictest one wins wherever decisions meet (several policies on one hook,
one policy over the pieces of a prompt, every hook of a request)::

    ALLOW < LOG < REDACT < CONFIRM = CLARIFY = REPLAN < BLOCK

* ``LOG`` lets the content through and records it.
* ``REDACT`` is the proxy's own rank, reserved for masking: the content goes
  on with what a policy found replaced. No CAPSEM verdict has it and nothing
  produces it yet; it sits where a masked request belongs, stricter than a
  note, milder than anything that stops the request.
* ``CONFIRM``, ``CLARIFY`` and ``REPLAN`` ask something of the user; the proxy
  refuses them unless ``--confirm-action allow`` (``refuses`` says which
  ranks stop content by default).
* ``BLOCK`` refuses.

A name the proxy does not know ranks as ``BLOCK``: a policy speaking a newer
CAPSEM than ours fails closed, never open.

This module imports nothing of the proxy's: it sits in the lowest layer so
that every layer above may rank verdicts the same way.
"""

from __future__ import annotations

from enum import IntEnum


class VerdictRank(IntEnum):
    """How strict a verdict is; compare ranks, never names. Equal ranks are aliases (``CLARIFY is CONFIRM``)."""

    ALLOW = 0
    LOG = 1
    REDACT = 2
    CONFIRM = 3
    CLARIFY = 3
    REPLAN = 3
    BLOCK = 4

    @property
    def refuses(self) -> bool:
        """Whether content with this verdict is stopped (by default: ``--confirm-action`` may let CONFIRM through)."""
        return self >= VerdictRank.CONFIRM


_RANKS: dict[str, VerdictRank] = dict(VerdictRank.__members__)
# The same as plain ints, for the hot paths (a fold per piece of every request): an enum member's
# attribute lookup costs several times a dict lookup (bench/agent.py's per-turn latency showed it).
LEVELS: dict[str, int] = {name: int(member) for name, member in VerdictRank.__members__.items()}
BLOCK_LEVEL = int(VerdictRank.BLOCK)
REFUSING_LEVEL = int(VerdictRank.CONFIRM)
_BLOCK = VerdictRank.BLOCK


def rank(verdict: str) -> VerdictRank:
    """The rank of a CAPSEM verdict name; an unknown name ranks as ``BLOCK`` (fail closed)."""
    return _RANKS.get(verdict, _BLOCK)


def level(verdict: str) -> int:
    """``rank`` as a plain int, for code that compares many verdicts."""
    return LEVELS.get(verdict, BLOCK_LEVEL)


def stricter(first: str, second: str) -> str:
    """The stricter of two verdict names; ``first`` when they rank the same (``ALLOW`` < ``LOG`` < ... < ``BLOCK``)."""
    if first == second:
        return first
    return first if LEVELS.get(first, BLOCK_LEVEL) >= LEVELS.get(second, BLOCK_LEVEL) else second
