"""The engine (``enforcement/engine.py``) on plain objects: which policies it asks, how their decisions combine,
what it records in which mode, and when it refuses. No sockets; real small policies and a recording Recorder."""

from __future__ import annotations

from typing import Any

import pytest
from capsem.manager import SecurityManager
from capsem.models import DEFAULT_BLOCK_DECISION, DEFAULT_SAFE_DECISION, Decision, Reason, Verdict
from capsem.policies import Policy

from capsem_proxyd.enforcement.engine import PolicyEngine
from capsem_proxyd.enforcement.loader import PolicySet
from capsem_proxyd.enforcement.shadow import ShadowRunner, open_shadow_tasks
from capsem_proxyd.errors import ProxyError
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.observe.recorders import CacheUse, Recorder
from capsem_proxyd.views import RequestView, ResponseView, ToolCall, ToolResult
from tests.support import exchanges


class Says(Policy):
    """Answers every prompt, tool call and tool result with one verdict (or a shared constant)."""

    def __init__(self, name: str, answer: Verdict | Decision) -> None:
        super().__init__(name=name, description="says one thing", authors="tests", url="https://example.invalid")
        self.answer = answer

    def _decide(self) -> Decision:
        if isinstance(self.answer, Decision):
            return self.answer
        return Decision(verdict=self.answer, reason=Reason.POLICY_VIOLATION, details=f"{self.name} says so")

    async def on_model_call(self, *args: Any) -> Decision:
        return self._decide()

    async def on_tool_call(self, *args: Any) -> Decision:
        return self._decide()

    async def on_tool_response(self, *args: Any) -> Decision:
        return self._decide()


class Decisions(Recorder):
    def __init__(self) -> None:
        self.made: list[tuple[str, str, str, str]] = []

    def decision_made(
        self, exchange: Exchange, hook: str, policy: str, decision: Decision, mode: str, cache: CacheUse | None = None
    ) -> None:
        self.made.append((hook, policy, decision.verdict.value, mode))


def engine(*policies: Policy, monitored: tuple[str, ...] = (), confirm_action: str = "block",
           recorder: Recorder | None = None, shadow: ShadowRunner | None = None) -> PolicyEngine:
    manager = SecurityManager()
    for policy in policies:
        manager.add_policy(policy)
    policy_set = PolicySet(manager=manager, source="test", options={name: {"mode": "monitor"} for name in monitored})
    return PolicyEngine(policy_set, recorder=recorder or Recorder(), confirm_action=confirm_action,
                        policy_timeout=5.0, shadow=shadow)


def exchange() -> Exchange:
    return exchanges.exchange("openai", "chat", request_id="req_1", tenant_id="a" * 16)


PROMPT = RequestView(model="m", prompt="hello")


async def test_the_strictest_verdict_that_let_the_request_through_is_reported() -> None:
    assert await engine(Says("A", Verdict.ALLOW), Says("B", Verdict.LOG)).check_request(exchange(), PROMPT) == "LOG"
    assert await engine(Says("A", Verdict.ALLOW)).check_request(exchange(), PROMPT) == "ALLOW"


async def test_the_first_strictest_refusal_refuses_under_its_policys_name() -> None:
    with pytest.raises(ProxyError) as refused:
        await engine(Says("A", Verdict.CONFIRM), Says("B", Verdict.BLOCK), Says("C", Verdict.BLOCK)).check_request(
            exchange(), PROMPT)
    assert refused.value.status == 400 and refused.value.decision is not None
    assert refused.value.decision.policy == "B" and refused.value.code == "capsem_blocked"
    assert refused.value.message.startswith("Prompt blocked by CAPSEM policy 'B'")


async def test_confirmations_pass_only_when_the_operator_allows_them() -> None:
    asking = Says("A", Verdict.CLARIFY)
    with pytest.raises(ProxyError) as refused:
        await engine(asking).check_request(exchange(), PROMPT)
    assert refused.value.code == "capsem_confirmation_required"
    assert await engine(asking, confirm_action="allow").check_request(exchange(), PROMPT) == "CLARIFY"


async def test_a_monitored_refusal_is_recorded_and_counts_as_log() -> None:
    recorder = Decisions()
    checked = engine(Says("Watch", Verdict.BLOCK), Says("Note", Verdict.ALLOW), monitored=("Watch",), recorder=recorder)
    assert await checked.check_request(exchange(), PROMPT) == "LOG"
    assert recorder.made == [("on_model_call", "Watch", "BLOCK", "monitor"), ("on_model_call", "Note", "ALLOW", "enforce")]


async def test_a_shared_constant_refusal_gets_the_policy_name_and_its_own_id() -> None:
    first, second = engine(Says("Shared", DEFAULT_BLOCK_DECISION)), engine(Says("Shared", DEFAULT_BLOCK_DECISION))
    ids = []
    for checked in (first, second):
        with pytest.raises(ProxyError) as refused:
            await checked.check_request(exchange(), PROMPT)
        assert refused.value.decision is not None
        assert (refused.value.decision.policy, refused.value.decision.callback) == ("Shared", "on_model_call")
        ids.append(refused.value.decision.id)
    assert ids[0] != ids[1] != DEFAULT_BLOCK_DECISION.id


async def test_every_hook_of_a_request_and_a_reply_is_asked_in_order() -> None:
    recorder = Decisions()
    checked = engine(Says("A", Verdict.ALLOW), recorder=recorder)
    view = RequestView(model="m", prompt="p", tool_results=[ToolResult(name="read", content="x")])
    await checked.check_request(exchange(), view)
    await checked.check_response(exchange(), ResponseView(text="answer", tool_calls=[ToolCall(name="run")]))
    assert [hook for hook, *_ in recorder.made] == ["on_tool_response", "on_model_call", "on_tool_call", "on_model_response"]


async def test_evaluate_reports_the_refusal_and_the_passing_verdict_apart() -> None:
    checked = engine(Says("A", Verdict.LOG), Says("B", Verdict.REPLAN))
    refusal, verdict = await checked.evaluate(
        exchange(), "on_model_call", lambda policy: policy.on_model_call())
    assert refusal is not None and refusal.policy == "B" and verdict == "LOG"


async def test_shadow_policies_are_asked_after_the_decision_and_refuse_nothing() -> None:
    recorder = Decisions()
    async with open_shadow_tasks() as tasks:
        shadow = ShadowRunner(engine(Says("Candidate", Verdict.BLOCK), recorder=recorder), tasks)
        checked = engine(Says("Live", DEFAULT_SAFE_DECISION), recorder=recorder, shadow=shadow)
        assert await checked.check_request(exchange(), PROMPT) == "ALLOW"
        await tasks.wait_idle()
    assert recorder.made == [("on_model_call", "Live", "ALLOW", "enforce"), ("on_model_call", "Candidate", "BLOCK", "shadow")]
