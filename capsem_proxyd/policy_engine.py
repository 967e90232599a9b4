"""Turns views into CAPSEM hook calls and verdicts into actions.

Every policy is called on its own so that one that raises or hangs blocks the
request under its own name (fail closed) instead of taking the others down,
and so that each decision can be recorded. Verdicts combine strictest first:
BLOCK, then CONFIRM/CLARIFY/REPLAN (block by default), then LOG (allowed,
recorded), then ALLOW.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from capsem.models import Decision, Media, Reason, Verdict
from capsem.policies import Policy
from capsem.tools import Schema, Tool
from pydantic import ValidationError

from capsem_proxyd.errors import policy_blocked
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.policy_loader import PolicySet
from capsem_proxyd.views import RequestView, ResponseView, ToolCall, ToolDefinition

log = logging.getLogger("capsem_proxyd.policy")

DecisionRecorder = Callable[[Exchange, Decision], None]
_STRICTNESS = {"BLOCK": 4, "CONFIRM": 3, "CLARIFY": 3, "REPLAN": 3, "LOG": 1, "ALLOW": 0}
_NO_SCHEMA = Schema.model_construct()


def capsem_tool(name: str, description: str = "", parameters: Any = None) -> Tool:
    """A CAPSEM ``Tool`` from whatever the client sent, never failing on odd schemas."""
    schema = _NO_SCHEMA
    if isinstance(parameters, dict) and parameters:
        try:
            schema = Schema.model_validate(parameters)
        except ValidationError:
            schema = _NO_SCHEMA
    return Tool.model_construct(
        name=name or "unknown",
        description=description or "No description provided",
        parameters=schema,
        returns=None,
        version=None,
        tags=None,
    )


class PolicyEngine:
    """Runs the active policies for one process; immutable, so a reload swaps the whole engine."""

    def __init__(
        self,
        policy_set: PolicySet,
        *,
        confirm_action: str = "block",
        policy_timeout: float | None = 30.0,
        record: DecisionRecorder | None = None,
    ) -> None:
        self.policy_set = policy_set
        self.policies: list[Policy] = policy_set.manager.policies
        self.confirm_action = confirm_action
        self.policy_timeout = policy_timeout
        self.record = record

    @property
    def names(self) -> list[str]:
        return [policy.name for policy in self.policies]

    async def check_request(self, exchange: Exchange, view: RequestView) -> None:
        """All request-side hooks, in order; raises ProxyError(403) on a block."""
        agent = exchange.agent
        rid = exchange.request_id
        for result in view.tool_results:
            tool = capsem_tool(result.name)
            response = result.content if isinstance(result.content, dict) else {"content": result.content}
            await self._enforce(
                exchange,
                "on_tool_response",
                f"Tool result for '{result.name}'",
                lambda p, tool=tool, response=response: p.on_tool_response(rid, agent, tool, response),
            )
        if view.prompt or view.system or view.media:
            media = [Media(content=part.data, mime_type=part.mime_type) for part in view.media]
            await self._enforce(
                exchange,
                "on_model_call",
                "Prompt",
                lambda p: p.on_model_call(rid, agent, view.model, view.system, view.prompt, media),
            )
        for definition in view.tools:
            await self.check_tool_definition(exchange, definition)

    async def check_tool_definition(self, exchange: Exchange, definition: ToolDefinition) -> None:
        tool = capsem_tool(definition.name, definition.description, definition.parameters)
        rid, agent = exchange.request_id, exchange.agent
        await self._enforce(
            exchange,
            "on_tool_call",
            f"Tool definition '{definition.name}'",
            lambda p: p.on_tool_call(rid, agent, tool, {}),
        )

    async def check_tool_call(self, exchange: Exchange, call: ToolCall) -> None:
        tool = capsem_tool(call.name)
        rid, agent = exchange.request_id, exchange.agent
        await self._enforce(
            exchange,
            "on_tool_call",
            f"Tool call '{call.name}'",
            lambda p: p.on_tool_call(rid, agent, tool, call.arguments),
        )

    async def check_model_response(self, exchange: Exchange, text: str, thoughts: str) -> None:
        if not text and not thoughts:
            return
        rid, agent = exchange.request_id, exchange.agent
        await self._enforce(
            exchange,
            "on_model_response",
            "Model response",
            lambda p: p.on_model_response(rid, agent, text, thoughts, []),
        )

    async def check_response(self, exchange: Exchange, view: ResponseView) -> None:
        """Response-side hooks for a complete reply: tool calls, then text."""
        for call in view.tool_calls:
            await self.check_tool_call(exchange, call)
        await self.check_model_response(exchange, view.text, view.thoughts)

    async def _enforce(
        self,
        exchange: Exchange,
        hook: str,
        what: str,
        invoke: Callable[[Policy], Awaitable[Decision]],
    ) -> None:
        verdict = await self.evaluate(exchange, hook, invoke)
        if verdict is None:
            return
        if verdict.verdict.value == "BLOCK" or self.confirm_action == "block":
            raise policy_blocked(verdict, what)

    async def evaluate(
        self,
        exchange: Exchange,
        hook: str,
        invoke: Callable[[Policy], Awaitable[Decision]],
    ) -> Decision | None:
        """Call every policy; return the strictest refusing decision, or None if allowed."""
        strictest: Decision | None = None
        for policy in self.policies:
            decision = await self._call_policy(exchange, hook, policy, invoke)
            level = _STRICTNESS.get(decision.verdict.value, 4)
            if not level:
                continue
            if decision.policy != policy.name or decision.callback != hook:
                decision = decision.model_copy(update={"policy": policy.name, "callback": hook})
            if self.record is not None:
                self.record(exchange, decision)
            if level >= 3 and (strictest is None or level > _STRICTNESS[strictest.verdict.value]):
                strictest = decision
        return strictest

    async def _call_policy(
        self,
        exchange: Exchange,
        hook: str,
        policy: Policy,
        invoke: Callable[[Policy], Awaitable[Decision]],
    ) -> Decision:
        try:
            with trio.fail_after(self.policy_timeout) if self.policy_timeout else _no_deadline():
                decision = await invoke(policy)
        except trio.TooSlowError:
            log.error(
                "policy %s timed out in %s after %ss; request blocked (fail closed) request_id=%s tenant_id=%s",
                policy.name, hook, self.policy_timeout, exchange.request_id, exchange.tenant_id,
            )
            return _failure_decision(policy.name, hook, f"policy timed out after {self.policy_timeout}s")
        except Exception as error:  # noqa: BLE001 - fail closed on any policy failure
            log.exception(
                "policy %s raised in %s; request blocked (fail closed) request_id=%s tenant_id=%s",
                policy.name, hook, exchange.request_id, exchange.tenant_id,
            )
            return _failure_decision(policy.name, hook, f"policy raised {type(error).__name__}")
        if not isinstance(decision, Decision):
            return _failure_decision(policy.name, hook, "policy returned no decision")
        return decision


class _no_deadline:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _failure_decision(policy_name: str, hook: str, details: str) -> Decision:
    return Decision(
        policy=policy_name,
        callback=hook,
        verdict=Verdict.BLOCK,
        reason=Reason.POLICY_VIOLATION,
        details=f"{details}; blocked because policies fail closed",
    )
