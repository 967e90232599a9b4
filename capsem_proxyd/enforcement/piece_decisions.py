"""A splittable policy's decision on a hook, from its decisions on the pieces (``pieces.py``).

One walk for every policy::

    whole-request checks first (``whole_prompt_decision``: a refusal there ends it)
    find what the cache lacks
    ask the policy for it, in order: in batches when it has ``decide_many``
        (a policy in a worker process), else one by one; stop at the first BLOCK
    fold the pieces in order, up to the first BLOCK (``combining.fold``)

Pieces after a BLOCK (cached or not) are not asked: they could not make the
decision stricter, and the first BLOCK is the one reported. The deadline
covers all the pieces, as it covered the whole view; an answer that comes
after it (a policy that blocked without a checkpoint) is a timeout too. A failure (a raise, a
timeout, no decision) refuses under the policy's name and is never cached;
every genuine decision is. A refusal taken from the cache gets a fresh
decision id, so that each refused request has its own to trace.

``CacheUse`` tells the recorders how many pieces the decision took, how many
of them came from the cache, and whether the decision itself did (for an
ALLOW: whether every piece's did).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from capsem.models import DEFAULT_SAFE_DECISION, Decision
from capsem.policies import Policy

from capsem_proxyd.enforcement.calling import PolicyCaller
from capsem_proxyd.enforcement.combining import NOTHING, SAFE, Combined, decided, fold, replaces
from capsem_proxyd.enforcement.hook_calls import asking
from capsem_proxyd.enforcement.masking import result_of
from capsem_proxyd.enforcement.pieces import Split, batches
from capsem_proxyd.enforcement.verdict_cache import VerdictCache
from capsem_proxyd.enforcement.workers import WorkersUnavailable
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.observe.recorders import CacheUse
from capsem_proxyd.verdicts import BLOCK_LEVEL, VerdictRank, rank

ALLOW_LEVEL = int(VerdictRank.ALLOW)
# What the fold of one piece the cache allowed comes to (``_Walk.add`` then ``_result``), shared.
ONE_CACHED_ALLOW = CacheUse(pieces=1, hits=1, cached=True)

# Asks the policy about some of the pieces (their numbers): its decisions, in order, possibly fewer
# than asked when it stopped at a BLOCK. Raises ``_Failed`` when the policy failed.
_Ask = Callable[[list[int]], Awaitable[list[Decision]]]


class _Failed(Exception):
    """The policy failed on these pieces; ``decision`` is what it has decided (``calling.py``)."""

    def __init__(self, decision: Decision, numbers: list[int]) -> None:
        super().__init__(decision.details)
        self.decision = decision
        self.numbers = numbers


@dataclass(slots=True)
class _Walk:
    """The fold over pieces, with what the recorders are told."""

    combined: Combined = NOTHING
    pieces: int = 0
    hits: int = 0
    from_cache: bool = False  # the strictest decision so far came from the cache

    def add(self, result: Combined, cached: bool) -> None:
        assert result.decision is not None
        if result is SAFE and self.combined is NOTHING:  # the first piece, allowed: the fold is that ALLOW
            self.combined, self.from_cache = SAFE, cached
            self.pieces += 1
            self.hits += cached
            return
        if replaces(self.combined, result):
            self.from_cache = cached
        self.combined = fold(self.combined, result)
        self.pieces += 1
        self.hits += cached


async def decide_pieces(
    caller: PolicyCaller, cache: VerdictCache, scope: bytes, exchange: Exchange, hook: str, policy: Policy,
    split: Split,
) -> tuple[Combined, CacheUse]:
    """``policy``'s result on ``hook`` over ``split``'s pieces; ``scope`` keys its entries in ``cache``
    (the engine's salt, the policy's place, the hook, the tenant)."""
    if split.whole is None and len(split.pieces) == 1:  # a tool result or definition resent: one look-up
        key = cache.key(scope, split.pieces[0].digest)
        if cache.get(key) is SAFE:
            return SAFE, ONE_CACHED_ALLOW
    walk = _Walk()
    if split.whole is not None:
        whole = split.whole(policy)
        if whole is not None:
            if rank(whole.verdict.value).refuses:  # refused as a whole: its pieces are not asked (nor cached)
                return decided(whole), CacheUse(pieces=0, hits=0, cached=False)
            walk.combined = decided(whole)
    keys = cache.keys(scope, [piece.digest for piece in split.pieces])
    found = [cache.get(key) for key in keys]
    fresh: set[int] = set()
    wanted = _worth_asking(found)
    if not wanted:  # every piece from the cache (an agent's resent turns): nothing to ask, no deadline to keep
        _fold(walk, found, fresh)
        return _result(walk)
    ask = _asker(caller, exchange, hook, policy, split)
    with caller.deadline(policy, hook) as deadline:
        try:
            for numbers in _groups(policy, split, wanted):
                decisions = await ask(numbers)
                blocked = False
                for number, decision in zip(numbers, decisions):
                    found[number] = result = result_of(decision, hook, split.pieces[number].args)
                    cache.put(keys[number], result)
                    fresh.add(number)
                    blocked = blocked or result.level >= BLOCK_LEVEL
                if len(decisions) < len(numbers) or blocked:
                    break  # it stopped at a BLOCK: what it did not decide is not needed
        except _Failed as failure:
            _fold(walk, found, fresh, stop=min(failure.numbers))
            use = CacheUse(pieces=walk.pieces + len(failure.numbers), hits=walk.hits, cached=False)
            return decided(failure.decision), use
    _fold(walk, found, fresh)
    if deadline.missed:  # given up, or its last answer came past the deadline: a timeout either way
        return decided(caller.timed_out(exchange, hook, policy, walk.pieces)), CacheUse(walk.pieces, walk.hits, False)
    return _result(walk)


def _worth_asking(found: list[Combined | None]) -> list[int]:
    """The pieces the cache lacks, up to the first cached BLOCK (nothing after it can be stricter)."""
    wanted = []
    for number, result in enumerate(found):
        if result is None:
            wanted.append(number)
        elif result.level >= BLOCK_LEVEL:
            break
    return wanted


def _groups(policy: Policy, split: Split, wanted: list[int]) -> list[list[int]]:
    """How the wanted pieces are asked: in batches of about ``BATCH_CHARS`` for a policy that takes
    them (``decide_many``), else one by one."""
    if not callable(getattr(policy, "decide_many", None)):
        return [[number] for number in wanted]
    return [wanted[start:stop] for start, stop in batches([split.pieces[number].size for number in wanted])]


def _asker(caller: PolicyCaller, exchange: Exchange, hook: str, policy: Policy, split: Split) -> _Ask:
    batch: Any = getattr(policy, "decide_many", None)

    async def in_batches(numbers: list[int]) -> list[Decision]:
        try:
            decisions: list[Decision] = await batch(hook, [split.pieces[number].args for number in numbers])
        except WorkersUnavailable as error:  # no worker to ask: a retryable 503, not the policy's decision
            raise caller.unavailable(policy, error) from None
        except Exception as error:  # noqa: BLE001 - fail closed, as for a single call
            raise _Failed(caller.failed(exchange, hook, policy, error), numbers) from None
        return decisions

    async def one_by_one(numbers: list[int]) -> list[Decision]:
        (number,) = numbers
        decision, genuine = await caller.call(exchange, hook, policy, asking(hook, split.pieces[number].args))
        if not genuine:
            raise _Failed(decision, numbers)
        return [decision]

    return in_batches if callable(batch) else one_by_one


def _fold(walk: _Walk, found: list[Combined | None], fresh: set[int], stop: int | None = None) -> None:
    """Fold the decided pieces in order into ``walk``: up to ``stop``, the first undecided piece or the first BLOCK."""
    for number, result in enumerate(found[:stop]):
        if result is None:
            return
        if result is SAFE and walk.combined.decision is not None:
            walk.pieces += 1  # the common case, a piece allowed: it changes nothing but the counts
            walk.hits += number not in fresh
            continue
        walk.add(result, cached=number not in fresh)
        if result.level >= BLOCK_LEVEL:
            return


def _result(walk: _Walk) -> tuple[Combined, CacheUse]:
    combined = walk.combined
    if combined.decision is None:  # no pieces, no whole-request check
        return decided(DEFAULT_SAFE_DECISION), CacheUse(pieces=0, hits=0, cached=False)
    if combined.level > ALLOW_LEVEL and walk.from_cache:  # one decision id per use
        fresh_id = combined.decision.model_copy(update={"id": uuid4().hex[:12]})
        combined = Combined(fresh_id, combined.verdict, combined.spans)
    cached = walk.from_cache if combined.level > ALLOW_LEVEL else walk.hits == walk.pieces
    return combined, CacheUse(pieces=walk.pieces, hits=walk.hits, cached=cached)

