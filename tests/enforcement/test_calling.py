"""Calling one policy under a deadline (``enforcement/calling.py``): a failure is a decision, never an exception."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from capsem.models import DEFAULT_SAFE_DECISION, Decision, Verdict
from capsem.policies import Policy

from capsem_proxyd.enforcement.calling import PolicyCaller
from tests.support import exchanges

EXCHANGE = exchanges.exchange("openai", "chat", request_id="req_9", tenant_id="b" * 16)


class Moody(Policy):
    """Answers ``on_model_call`` as its prompt says: ``ok``, ``raise``, ``hang`` or ``nothing``."""

    def __init__(self) -> None:
        super().__init__(name="Moody", description="does as told", authors="tests", url="https://example.invalid")

    async def on_model_call(self, rid: str, agent: Any, model: str, system: str, prompt: str, media: list) -> Any:
        if prompt == "raise":
            raise ValueError("bug")
        if prompt == "hang":
            await trio.sleep_forever()
        if prompt == "nothing":
            return None
        return DEFAULT_SAFE_DECISION


async def call(prompt: str, *, fail_open: frozenset[str] = frozenset(), shadow: bool = False) -> tuple[Decision, bool]:
    caller = PolicyCaller(2.0, fail_open)

    def invoke(policy: Policy) -> Any:
        return policy.on_model_call("req_9", None, "m", "", prompt, [])

    return await caller.call(EXCHANGE, "on_model_call", Moody(), invoke, shadow=shadow)


async def test_a_decision_is_passed_on_as_made() -> None:
    assert await call("ok") == (DEFAULT_SAFE_DECISION, True)


async def test_a_policy_that_raises_blocks_under_its_name(caplog: pytest.LogCaptureFixture) -> None:
    decision, genuine = await call("raise")
    assert not genuine
    assert (decision.policy, decision.callback, decision.verdict) == ("Moody", "on_model_call", Verdict.BLOCK)
    assert decision.details == "policy raised ValueError; blocked because policies fail closed"
    (record,) = [r for r in caplog.records if r.name == "capsem_proxyd.enforcement"]
    assert "request blocked (fail closed) request_id=req_9 tenant_id=bbbbbbbbbbbbbbbb" in record.getMessage()


async def test_a_policy_that_fails_open_logs_instead(caplog: pytest.LogCaptureFixture) -> None:
    decision, genuine = await call("raise", fail_open=frozenset({"Moody"}))
    assert not genuine and decision.verdict is Verdict.LOG
    assert decision.details.endswith("allowed because the policy fails open")
    assert "request allowed (fail_open = true)" in caplog.records[-1].getMessage()


async def test_a_shadow_policy_logs_on_the_shadow_logger_and_never_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    decision, _ = await call("raise", fail_open=frozenset({"Moody"}), shadow=True)
    assert decision.verdict is Verdict.BLOCK
    (record,) = [r for r in caplog.records if r.name.startswith("capsem_proxyd")]
    assert record.name == "capsem_proxyd.shadow" and "shadow verdict BLOCK" in record.getMessage()


async def test_a_policy_past_its_deadline_blocks(autojump_clock: trio.testing.MockClock) -> None:
    started = trio.current_time()
    decision, genuine = await call("hang")
    assert trio.current_time() - started == pytest.approx(2.0)
    assert not genuine and decision.details == "policy timed out after 2.0s; blocked because policies fail closed"


async def test_no_decision_is_a_block() -> None:
    decision, genuine = await call("nothing")
    assert not genuine and decision.verdict is Verdict.BLOCK and decision.details.startswith("policy returned no decision")


async def test_the_deadline_over_several_calls_never_fires_for_a_hook_that_cannot_suspend() -> None:
    class Instant(Moody):
        async def on_tool_call(self, *args: Any) -> Decision:
            return DEFAULT_SAFE_DECISION

    caller = PolicyCaller(2.0, frozenset())
    assert caller.deadline(Instant(), "on_tool_call").scope.relative_deadline == float("inf")
    assert caller.deadline(Instant(), "on_model_call").scope.relative_deadline == 2.0
    assert PolicyCaller(None, frozenset()).deadline(Instant(), "on_model_call").scope.relative_deadline == float("inf")


class Blocker(Moody):
    """Blocks the thread for 0.3 s without a checkpoint (``time.sleep``: no cancellation reaches it), then allows."""

    async def on_model_call(self, rid: str, agent: Any, model: str, system: str, prompt: str, media: list) -> Any:
        import time

        time.sleep(0.3)
        return DEFAULT_SAFE_DECISION


@pytest.mark.parametrize("fail_open", [frozenset(), frozenset({"Moody"})])
async def test_a_decision_that_comes_after_the_deadline_is_a_timeout(
    caplog: pytest.LogCaptureFixture, fail_open: frozenset[str]
) -> None:
    def invoke(policy: Policy) -> Any:
        return policy.on_model_call("req_9", None, "m", "", "p", [])

    decision, genuine = await PolicyCaller(0.1, fail_open).call(EXCHANGE, "on_model_call", Blocker(), invoke)
    assert not genuine
    assert decision.verdict is (Verdict.LOG if fail_open else Verdict.BLOCK)
    assert decision.details.startswith("policy timed out after 0.1s")
    assert any("its answer came after" in record.getMessage() for record in caplog.records)
