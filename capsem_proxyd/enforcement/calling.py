"""Calling one policy under a deadline, and what a policy that fails has decided.

Every policy is called on its own so that one that raises or hangs refuses
the content under its own name instead of taking the others down. A policy
that raises, outlives ``--policy-timeout`` or returns something other than a
CAPSEM ``Decision`` has decided BLOCK (policies fail closed), or LOG when its
file says ``fail_open = true``; either way the failure is logged with the
request and tenant ids, and the failure decision is never cached.

The deadline is skipped for a hook that cannot suspend (``deadlines.py``):
it would cost a cancel scope and could never fire.
"""

from __future__ import annotations

import logging

import trio
from capsem.models import Decision, Reason, Verdict
from capsem.policies import Policy

from capsem_proxyd.enforcement.deadlines import hook_can_suspend
from capsem_proxyd.enforcement.hook_calls import Invoke
from capsem_proxyd.exchange import Exchange

log = logging.getLogger("capsem_proxyd.enforcement")
shadow_log = logging.getLogger("capsem_proxyd.shadow")

_BLOCKED = "request blocked (fail closed)"
_ALLOWED = "request allowed (fail_open = true)"


class PolicyCaller:
    """Calls policies with one deadline (``timeout`` seconds, None: none) and one fail-open list."""

    def __init__(self, timeout: float | None, fail_open: frozenset[str]) -> None:
        self.timeout = timeout
        self.fail_open = fail_open

    async def call(
        self, exchange: Exchange, hook: str, policy: Policy, invoke: Invoke, *, shadow: bool = False
    ) -> tuple[Decision, bool]:
        """The policy's decision, and whether it made one (False: it failed, timed out or returned none).

        ``shadow``: a shadow policy, logged on ``capsem_proxyd.shadow``; it never fails open (it refuses nothing)."""
        fails_open = not shadow and policy.name in self.fail_open
        logger = shadow_log if shadow else log
        effect = "shadow verdict BLOCK" if shadow else _ALLOWED if fails_open else _BLOCKED
        try:
            if self.timeout and hook_can_suspend(policy, hook):
                with trio.fail_after(self.timeout):
                    decision = await invoke(policy)
            else:  # runs to its end in one step: no deadline could fire (see deadlines)
                decision = await invoke(policy)
        except trio.TooSlowError:
            logger.error(
                "policy %s timed out in %s after %ss; %s request_id=%s tenant_id=%s",
                policy.name, hook, self.timeout, effect, exchange.request_id, exchange.tenant_id,
            )
            return failure_decision(policy.name, hook, f"policy timed out after {self.timeout}s", fails_open), False
        except Exception as error:  # noqa: BLE001 - fail closed on any policy failure
            return self._raised(exchange, hook, policy, error, logger, effect, fails_open), False
        if not isinstance(decision, Decision):
            return failure_decision(policy.name, hook, "policy returned no decision"), False
        return decision, True

    def deadline(self, policy: Policy, hook: str) -> trio.CancelScope:
        """A scope that gives up on ``policy`` after the timeout, for work made of several calls
        (a view's pieces); a scope that never fires where the hook cannot suspend."""
        if self.timeout and hook_can_suspend(policy, hook):
            return trio.move_on_after(self.timeout)
        return trio.CancelScope()

    def failed(self, exchange: Exchange, hook: str, policy: Policy, error: Exception) -> Decision:
        """The decision of a policy that raised while enforcing: BLOCK (fail closed), or LOG where it fails open."""
        fails_open = policy.name in self.fail_open
        return self._raised(exchange, hook, policy, error, log, _ALLOWED if fails_open else _BLOCKED, fails_open)

    def timed_out(self, exchange: Exchange, hook: str, policy: Policy, pieces: int) -> Decision:
        """The decision of a policy whose deadline ran out over ``pieces`` pieces of a view."""
        fails_open = policy.name in self.fail_open
        log.error(
            "policy %s timed out in %s after %ss over %d pieces; %s request_id=%s tenant_id=%s",
            policy.name, hook, self.timeout, pieces, _ALLOWED if fails_open else _BLOCKED,
            exchange.request_id, exchange.tenant_id,
        )
        return failure_decision(policy.name, hook, f"policy timed out after {self.timeout}s", fails_open)

    @staticmethod
    def _raised(
        exchange: Exchange, hook: str, policy: Policy, error: Exception, logger: logging.Logger, effect: str,
        fails_open: bool,
    ) -> Decision:
        logger.error(
            "policy %s raised in %s; %s request_id=%s tenant_id=%s",
            policy.name, hook, effect, exchange.request_id, exchange.tenant_id, exc_info=error,
        )
        return failure_decision(policy.name, hook, f"policy raised {type(error).__name__}", fails_open)


def failure_decision(policy_name: str, hook: str, details: str, fails_open: bool = False) -> Decision:
    """BLOCK (policies fail closed), or LOG for a policy whose file opted into ``fail_open``."""
    return Decision(
        policy=policy_name,
        callback=hook,
        verdict=Verdict.LOG if fails_open else Verdict.BLOCK,
        reason=Reason.POLICY_VIOLATION,
        details=f"{details}; allowed because the policy fails open" if fails_open
        else f"{details}; blocked because policies fail closed",
    )
