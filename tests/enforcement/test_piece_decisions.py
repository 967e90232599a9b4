"""A splittable policy's decision over pieces (``enforcement/piece_decisions.py``): a real verdict cache,
small real policies, no sockets. The same walk serves policies asked one piece at a time and policies
asked in batches (``decide_many``, as a policy in a worker process is)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from capsem.models import DEFAULT_SAFE_DECISION, Decision, Reason, Verdict
from capsem.policies import Policy

from capsem_proxyd.enforcement.calling import PolicyCaller
from capsem_proxyd.enforcement.piece_decisions import decide_pieces
from capsem_proxyd.enforcement.pieces import Piece, Split
from capsem_proxyd.enforcement.verdict_cache import VerdictCache
from capsem_proxyd.observe.recorders import CacheUse
from tests.support import exchanges

SCOPE = b"policy 0 on_model_call tenant a"


class Words(Policy):
    """Blocks a prompt piece holding ``block``, logs one holding ``note``, raises on ``raise``, hangs on ``hang``."""

    def __init__(self) -> None:
        super().__init__(name="Words", description="reacts to words", authors="tests", url="https://example.invalid")
        self.asked: list[str] = []

    async def on_model_call(self, rid: str, agent: Any, model: str, system: str, prompt: str, media: list) -> Decision:
        self.asked.append(prompt)
        if "hang" in prompt:
            await trio.sleep_forever()
        if "raise" in prompt:
            raise RuntimeError("policy bug")
        if "block" in prompt:
            return Decision(verdict=Verdict.BLOCK, reason=Reason.POLICY_VIOLATION, details=f"block in {prompt!r}")
        if "note" in prompt:
            return Decision(verdict=Verdict.LOG, reason=Reason.POLICY_VIOLATION, details=f"note in {prompt!r}")
        return DEFAULT_SAFE_DECISION


class BatchedWords(Words):
    """The same, asked in batches; like a worker, it stops after the first BLOCK of a batch."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    async def decide_many(self, hook: str, calls: list[tuple[Any, ...]]) -> list[Decision]:
        self.batches.append([args[4] for args in calls])
        decisions = []
        for args in calls:
            decisions.append(await getattr(self, hook)(*args))
            if decisions[-1].verdict is Verdict.BLOCK:
                break
        return decisions


class WholeLimit(Words):
    """Refuses a prompt longer than 20 characters as a whole, whatever its pieces say."""

    def whole_prompt_decision(self, model: str, system: str, prompt: str) -> Decision | None:
        if len(prompt) > 20:
            return Decision(verdict=Verdict.BLOCK, reason=Reason.POLICY_VIOLATION, details="too long")
        return DEFAULT_SAFE_DECISION


def split_of(cache: VerdictCache, *texts: str) -> Split:
    pieces = [Piece(cache.digest(text), ("req_1", None, "m", "", text, []), len(text)) for text in texts]
    prompt = "\n".join(texts)

    def whole(policy: Any) -> Decision | None:
        check = getattr(policy, "whole_prompt_decision", None)
        return check("m", "", prompt) if callable(check) else None

    return Split(pieces, whole)


EXCHANGE = exchanges.exchange("openai", "chat", request_id="req_1", tenant_id="a" * 16)


async def decide(
    policy: Words, cache: VerdictCache, *texts: str, timeout: float | None = 5.0, fail_open: frozenset[str] = frozenset()
) -> tuple[Decision, CacheUse]:
    caller = PolicyCaller(timeout, fail_open)
    result, use = await decide_pieces(caller, cache, SCOPE, EXCHANGE, "on_model_call", policy, split_of(cache, *texts))
    assert result.decision is not None
    return result.decision, use


both = pytest.mark.parametrize("policy_class", [Words, BatchedWords], ids=["one by one", "in batches"])


@both
async def test_each_piece_is_asked_once_and_then_answered_from_the_cache(policy_class: type[Words]) -> None:
    policy, cache = policy_class(), VerdictCache(100)
    decision, use = await decide(policy, cache, "hello", "world")
    assert decision is DEFAULT_SAFE_DECISION and use == CacheUse(pieces=2, hits=0, cached=False)
    decision, use = await decide(policy, cache, "hello", "world", "again")
    assert policy.asked == ["hello", "world", "again"]
    assert use == CacheUse(pieces=3, hits=2, cached=False)
    _, use = await decide(policy, cache, "hello", "world", "again")
    assert use == CacheUse(pieces=3, hits=3, cached=True) and len(policy.asked) == 3


@both
async def test_the_strictest_piece_decides_and_the_first_block_ends_the_walk(policy_class: type[Words]) -> None:
    policy, cache = policy_class(), VerdictCache(100)
    decision, use = await decide(policy, cache, "a note", "block one", "block two", "after")
    assert decision.details == "block in 'block one'"
    assert policy.asked == ["a note", "block one"]  # nothing after the first BLOCK is asked
    assert use == CacheUse(pieces=2, hits=0, cached=False)
    decision, _ = await decide(policy, cache, "a note", "fine")
    assert decision.verdict is Verdict.LOG and decision.details == "note in 'a note'"


@both
async def test_a_cached_block_is_not_asked_past_and_refuses_with_a_fresh_decision_id(policy_class: type[Words]) -> None:
    policy, cache = policy_class(), VerdictCache(100)
    first, _ = await decide(policy, cache, "block here")
    again, use = await decide(policy, cache, "new", "block here", "never asked")
    assert policy.asked == ["block here", "new"]
    assert again.details == first.details and again.id != first.id
    assert use == CacheUse(pieces=2, hits=1, cached=True)


@both
async def test_a_failing_policy_refuses_and_its_failure_is_never_cached(policy_class: type[Words]) -> None:
    policy, cache = policy_class(), VerdictCache(100)
    decision, use = await decide(policy, cache, "fine", "raise now")
    assert decision.verdict is Verdict.BLOCK and "policy raised RuntimeError" in decision.details
    assert use.cached is False and use.hits == 0
    decision, _ = await decide(policy, cache, "fine", "raise now", fail_open=frozenset({"Words"}))
    assert decision.verdict is Verdict.LOG  # asked again: the failure was not remembered
    assert policy.asked.count("raise now") == 2


@both
async def test_one_deadline_covers_all_the_pieces(policy_class: type[Words], autojump_clock: trio.testing.MockClock) -> None:
    policy, cache = policy_class(), VerdictCache(100)
    started = trio.current_time()
    decision, use = await decide(policy, cache, "one", "two", "hang here", "four", timeout=5.0)
    assert trio.current_time() - started == pytest.approx(5.0)
    assert decision.verdict is Verdict.BLOCK and "timed out after 5.0s" in decision.details
    assert use.cached is False
    await decide(policy, cache, "one", "two")
    # What was decided before the deadline is remembered; a batch cut short decided nothing.
    assert policy.asked.count("one") == (1 if policy_class is Words else 2)


async def test_a_batch_policy_is_asked_what_the_cache_lacks_in_one_batch() -> None:
    policy, cache = BatchedWords(), VerdictCache(100)
    await decide(policy, cache, "alpha", "beta")
    await decide(policy, cache, "alpha", "gamma", "beta", "delta")
    assert policy.batches == [["alpha", "beta"], ["gamma", "delta"]]


@both
async def test_whole_prompt_checks_come_first_and_a_whole_refusal_asks_no_piece(policy_class: type[Words]) -> None:
    class Limited(WholeLimit, policy_class):  # type: ignore[valid-type,misc]
        pass

    policy, cache = Limited(), VerdictCache(100)
    decision, use = await decide(policy, cache, "short", "pieces", "that add up long")
    assert decision.details == "too long" and policy.asked == []
    assert use == CacheUse(pieces=0, hits=0, cached=False)
    decision, _ = await decide(policy, cache, "short", "ok")
    assert decision is DEFAULT_SAFE_DECISION and policy.asked == ["short", "ok"]


async def test_no_pieces_and_no_whole_check_is_an_allow() -> None:
    decision, use = await decide(Words(), VerdictCache(100))
    assert decision is DEFAULT_SAFE_DECISION and use == CacheUse(pieces=0, hits=0, cached=False)
