"""The decision step as a fold: decisions in, the strictest of them (and the spans they report) out.

Wherever several decisions meet — the pieces of a prompt under one policy,
the policies of a hook — they are combined the same way: the strictest
decision wins (``verdicts.py``; the first of equals, so a decision's id and
details are the ones of the earliest piece or policy that reached that
rank), the strictest verdict that still lets the content through is kept
for the ``x-capsem-decision`` header, and the spans every decision reports
are gathered.

A span is where in the checked text a policy found what it wants masked, and
the text found there (``masking.py`` checks it and makes them from a
``MaskingDecision``): the verdict cache stores a piece's ``Combined`` with its
spans, so a piece answered from the cache is masked as when it was decided.
A result with spans that lets the content through has the verdict ``REDACT``.

``fold`` is pure and associative (``fold(fold(a, b), c)`` equals
``fold(a, fold(fold(NOTHING, b), c))``), so a piece's result taken from the
cache folds in exactly as the decision it was made from did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from capsem.models import DEFAULT_SAFE_DECISION, Decision

from capsem_proxyd.verdicts import REFUSING_LEVEL, VerdictRank, level, stricter


@dataclass(frozen=True, slots=True)
class Span:
    """``[start, end)`` of the text a policy was asked about, what it found there (``label``: the kind
    of finding) and the text found (``value``: what is masked, wherever it occurs)."""

    start: int
    end: int
    label: str
    value: str = ""


@dataclass(frozen=True, slots=True)
class Combined:
    """What a fold has gathered so far.

    ``decision``: the strictest decision folded in (None before the first);
    ``verdict``: the strictest verdict of the decisions that let the content
    through (a refusal does not count: it is ``decision``'s business);
    ``spans``: every span reported, in the order folded.
    """

    decision: Decision | None = None
    verdict: str = "ALLOW"
    spans: tuple[Span, ...] = ()
    # ``decision``'s rank as a plain int, computed once: a fold compares it for every piece.
    level: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        if self.decision is not None:
            object.__setattr__(self, "level", level(self.decision.verdict.value))

    @property
    def rank(self) -> VerdictRank:
        """The rank of ``decision``; ``ALLOW`` when there is none."""
        return VerdictRank(self.level)

    @property
    def refusal(self) -> Decision | None:
        """The strictest decision when it refuses (``VerdictRank.refuses``), else None."""
        return self.decision if self.decision is not None and self.level >= REFUSING_LEVEL else None


NOTHING = Combined()


def decided(decision: Decision, spans: tuple[Span, ...] = ()) -> Combined:
    """One decision as a fold's result: what the verdict cache stores for a piece.

    CAPSEM's shared ALLOW constant gets one shared result, so an entry of the
    cache costs no more than the decision it holds."""
    if decision is DEFAULT_SAFE_DECISION and not spans:
        return SAFE
    verdict = decision.verdict.value
    if level(verdict) >= REFUSING_LEVEL:
        return Combined(decision, "ALLOW", spans)
    return Combined(decision, stricter(verdict, "REDACT") if spans else verdict, spans)


def fold(acc: Combined, step: Decision | Combined) -> Combined:
    """``acc`` with one more decision, or with another fold's result (a cached piece's, a policy's)."""
    if not isinstance(step, Combined):
        step = decided(step)
    if step is SAFE and acc.decision is not None:
        return acc  # the common case (a piece allowed, from the cache): nothing changes
    strictest = step.decision if step.decision is not None and replaces(acc, step) else acc.decision
    verdict = acc.verdict if step.verdict == "ALLOW" else stricter(acc.verdict, step.verdict)
    return Combined(strictest, verdict, acc.spans + step.spans if step.spans else acc.spans)


def replaces(acc: Combined, step: Combined) -> bool:
    """Whether folding ``step`` into ``acc`` makes its decision the strictest: the first, or strictly stricter."""
    return acc.decision is None or step.level > acc.level


SAFE = Combined(DEFAULT_SAFE_DECISION)  # CAPSEM's shared ALLOW, as a fold's result (see ``decided``)


def attributed(decision: Decision, policy_name: str, hook: str) -> Decision:
    """The decision named after the policy and hook that made it.

    A policy returning a shared constant (``DEFAULT_BLOCK_DECISION``) would
    otherwise hand every client the same decision id: such a decision gets a
    fresh one.
    """
    if decision.policy == policy_name and decision.callback == hook:
        return decision
    update: dict[str, Any] = {"policy": policy_name, "callback": hook}
    if decision.policy in ("", "unknown"):
        update["id"] = uuid4().hex[:12]
    return decision.model_copy(update=update)
