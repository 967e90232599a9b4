"""The engine and masking policies (issue 23): findings checked, carried as REDACT, never from a dry run.

A masking policy's findings become the request's redactions only when it
enforces: in monitor mode it is a LOG; a finding that is not where the policy
says refuses the request (fail closed); a finding inside a placeholder is no
finding; and a piece answered from the verdict cache is masked as when it was
decided.
"""

from __future__ import annotations

from typing import Any

import pytest
from capsem.manager import SecurityManager
from capsem.models import Agent, Decision, Verdict
from capsem.policies import Policy

from capsem_proxyd.enforcement.loader import PolicySet
from capsem_proxyd.enforcement.verdict_cache import VerdictCache
from capsem_proxyd.errors import ProxyError
from capsem_proxyd.redaction.findings import Finding, MaskingDecision
from capsem_proxyd.views import RequestView, ToolResult
from tests.support.engines import engine
from tests.support.exchanges import exchange

SECRET = "AKIAIOSFODNN7EXAMPLE"


class FindsKeys(Policy):
    """Masks every ``SECRET`` in tool results; ``shift`` moves its findings (a policy that miscounts)."""

    splittable = True
    masking = True  # declarations.masks: asked first
    calls = 0

    def __init__(self, shift: int = 0) -> None:
        super().__init__(name="Keys", description="test", authors="t", url="https://example.com")
        self.shift = shift

    async def on_tool_response(self, invocation_id: str, agent: Agent, tool: Any, response: dict) -> Decision:
        FindsKeys.calls += 1
        text = response["content"]
        findings = []
        start = text.find(SECRET)
        while start >= 0:
            findings.append(Finding(start + self.shift, start + self.shift + len(SECRET), SECRET, "aws-key-id"))
            start = text.find(SECRET, start + 1)
        if not findings:
            return Decision(verdict=Verdict.ALLOW)
        return MaskingDecision(policy="Keys", verdict=Verdict.LOG, details="masked", findings=tuple(findings))


def policies(policy: Policy, mode: str = "enforce") -> PolicySet:
    manager = SecurityManager()
    manager.add_policy(policy)
    return PolicySet(manager=manager, source="test", options={policy.name: {"mode": mode}})


def view(content: str) -> RequestView:
    return RequestView(model="m", tool_results=[ToolResult(name="shell", content=content, call_id="c1")])


async def test_an_enforcing_masking_policy_lets_the_request_through_as_redact_with_its_values() -> None:
    checked = exchange()
    verdict = await engine(policies(FindsKeys())).check_request(checked, view(f"id={SECRET} and {SECRET}"))
    assert verdict == "REDACT"
    assert checked.redactions == [(SECRET, "aws-key-id", "Keys", "on_tool_response")] * 2


async def test_a_masking_policy_in_monitor_mode_masks_nothing() -> None:
    checked = exchange()
    verdict = await engine(policies(FindsKeys(), mode="monitor")).check_request(checked, view(f"id={SECRET}"))
    assert verdict == "LOG"
    assert checked.redactions == []


async def test_a_finding_that_is_not_where_the_policy_says_refuses_the_request() -> None:
    checked = exchange()
    with pytest.raises(ProxyError) as refused:
        await engine(policies(FindsKeys(shift=1))).check_request(checked, view(f"id={SECRET}"))
    assert refused.value.status == 400 and "not where it said" in str(refused.value)
    assert SECRET not in str(refused.value)
    assert checked.redactions == []


async def test_a_finding_inside_a_placeholder_is_no_finding() -> None:
    checked = exchange()
    placeholder = f"CAPSEM-MASKED-X-{SECRET}"  # a tag that happens to look like a key
    verdict = await engine(policies(FindsKeys())).check_request(checked, view(f"id={placeholder}"))
    assert verdict == "LOG" and checked.redactions == []


async def test_a_piece_answered_from_the_verdict_cache_is_masked_as_when_it_was_decided() -> None:
    cached = engine(policies(FindsKeys()), cache=VerdictCache(100))
    FindsKeys.calls = 0
    for _ in range(2):
        checked = exchange()
        assert await cached.check_request(checked, view(f"id={SECRET}")) == "REDACT"
        assert checked.redactions == [(SECRET, "aws-key-id", "Keys", "on_tool_response")]
    assert FindsKeys.calls == 1  # the second time, from the cache


class Notes(Policy):
    """A policy that cannot mask: notes every tool result."""

    def __init__(self) -> None:
        super().__init__(name="Notes", description="test", authors="t", url="https://example.com")

    async def on_tool_response(self, invocation_id: str, agent: Agent, tool: Any, response: dict) -> Decision:
        return Decision(verdict=Verdict.LOG, details="noted")


async def test_policies_that_mask_are_asked_first() -> None:
    manager = SecurityManager()
    manager.add_policy(Notes())
    manager.add_policy(FindsKeys())
    masking_first = engine(PolicySet(manager=manager, source="test"))
    assert masking_first.names == ["Keys", "Notes"]
    checked = exchange()
    assert await masking_first.check_request(checked, view(f"id={SECRET}")) == "REDACT"
