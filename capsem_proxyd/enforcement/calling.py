"""Calling one policy under a deadline, and what a policy that fails has decided.

Every policy is called on its own so that one that raises or hangs refuses
the content under its own name instead of taking the others down. A policy
that raises, outlives ``--policy-timeout`` or returns something other than a
CAPSEM ``Decision`` has decided BLOCK (policies fail closed), or LOG when its
file says ``fail_open = true``; either way the failure is logged with the
request and tenant ids, and the failure decision is never cached.

The deadline is skipped for a hook that cannot suspend (``deadlines.py``):
it would cost a cancel scope and could never fire. But it still judges: a
decision that comes back after ``--policy-timeout`` (a hook that blocked the
thread, awaiting or not, so no cancellation could reach it) is a timeout all
the same, BLOCK or LOG as above. A policy that is not ``cpu_heavy`` and keeps
the event loop longer than ``LOOP_HOLD_WARNING`` in one stretch is named in a
WARNING, once per policy and hook in a process, so that the operator moves it
to the worker processes.

A CPU-heavy policy whose worker processes are restarting is not a policy
decision: ``WorkersUnavailable`` from the pool becomes the provider-shaped,
retryable 503 ``policy_workers_unavailable`` (raised, not decided; a shadow
policy's is logged and counts as its BLOCK, as any failure of a shadow).
"""

from __future__ import annotations

import logging

import trio
from capsem.models import Decision, Reason, Verdict
from capsem.policies import Policy

from capsem_proxyd.enforcement.deadlines import HookTimer, hook_can_suspend, timed
from capsem_proxyd.enforcement.hook_calls import Invoke
from capsem_proxyd.enforcement.workers import WorkersUnavailable
from capsem_proxyd.errors import ProxyError, policy_workers_unavailable
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.policies.declarations import cpu_heavy

log = logging.getLogger("capsem_proxyd.enforcement")
shadow_log = logging.getLogger("capsem_proxyd.shadow")

_BLOCKED = "request blocked (fail closed)"
_ALLOWED = "request allowed (fail_open = true)"

# Seconds a policy in the proxy's process may keep the event loop in one stretch before it is named
# in a WARNING. Every request, stream and /health answer of the process waits that long, so it is
# latency every client sees; a hook meant to run in the loop (matching patterns over a turn's text)
# stays far below it, while a blocking call (a synchronous HTTP client, a sleep) or a model's
# analysis is far above it.
LOOP_HOLD_WARNING = 0.1
_warned: set[tuple[str, str]] = set()  # (policy, hook) named once per process: not one line per request


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
        timer = HookTimer()
        try:
            if not hook_can_suspend(policy, hook):  # runs to its end in one step: no deadline could fire
                try:
                    decision = await invoke(policy)
                finally:
                    timer.stop()
            elif self.timeout:
                with trio.fail_after(self.timeout):
                    decision = await timed(invoke(policy), timer)
            else:
                decision = await timed(invoke(policy), timer)
        except trio.TooSlowError:
            self._note_hold(policy, hook, timer)
            return self._too_late(exchange, hook, policy, logger, effect, fails_open), False
        except WorkersUnavailable as error:
            if not shadow:
                raise self.unavailable(policy, error) from None
            return self._raised(exchange, hook, policy, error, logger, effect, fails_open), False
        except Exception as error:  # noqa: BLE001 - fail closed on any policy failure
            self._note_hold(policy, hook, timer)
            return self._raised(exchange, hook, policy, error, logger, effect, fails_open), False
        self._note_hold(policy, hook, timer)
        if timer.late(self.timeout):  # it blocked past its deadline: no cancellation could reach it
            return self._too_late(exchange, hook, policy, logger, effect, fails_open, timer.elapsed), False
        if not isinstance(decision, Decision):
            return failure_decision(policy.name, hook, "policy returned no decision"), False
        return decision, True

    def _too_late(
        self, exchange: Exchange, hook: str, policy: Policy, logger: logging.Logger, effect: str, fails_open: bool,
        elapsed: float | None = None,
    ) -> Decision:
        """The decision of a policy that outlived its deadline (``elapsed``: it answered, that late)."""
        answered = "" if elapsed is None else f" (its answer came after {elapsed:.2f}s and was discarded)"
        logger.error(
            "policy %s timed out in %s after %ss%s; %s request_id=%s tenant_id=%s",
            policy.name, hook, self.timeout, answered, effect, exchange.request_id, exchange.tenant_id,
        )
        return failure_decision(policy.name, hook, f"policy timed out after {self.timeout}s", fails_open)

    @staticmethod
    def _note_hold(policy: Policy, hook: str, timer: HookTimer) -> None:
        """Name a policy of the proxy's process that kept the event loop too long (once per policy and hook)."""
        if timer.held <= LOOP_HOLD_WARNING or cpu_heavy(policy) or (policy.name, hook) in _warned:
            return
        _warned.add((policy.name, hook))
        log.warning(
            "policy %s kept the event loop for %.2fs in %s (more than %ss without giving it back): every "
            "request of this process waited meanwhile; a policy that computes or blocks this long belongs "
            "in the worker processes (declare cpu_heavy = True in its class)",
            policy.name, timer.held, hook, LOOP_HOLD_WARNING,
        )

    def deadline(self, policy: Policy, hook: str) -> PiecesDeadline:
        """The deadline of work made of several calls (a view's pieces): it gives up on ``policy``
        after the timeout where the hook can suspend, and ``missed`` says whether it passed (given
        up, or the last answer came late)."""
        return PiecesDeadline(self.timeout if self.timeout and hook_can_suspend(policy, hook) else None, self.timeout)

    def unavailable(self, policy: Policy, error: WorkersUnavailable) -> ProxyError:
        """What a call that found no worker ready raises: the provider-shaped 503 (``errors.py``)."""
        return policy_workers_unavailable(policy.name, str(error))

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


class PiecesDeadline:
    """``with deadline: ...`` around a view's pieces; then ``missed``: the timeout passed, whether the
    scope gave up (at a checkpoint) or the work ran past it without one (a late answer)."""

    def __init__(self, interrupt_after: float | None, timeout: float | None) -> None:
        self.scope = trio.move_on_after(interrupt_after) if interrupt_after else trio.CancelScope()
        self.timeout = timeout
        self.timer = HookTimer()

    def __enter__(self) -> PiecesDeadline:
        self.timer = HookTimer()
        self.scope.__enter__()
        return self

    def __exit__(self, *exc: object) -> bool:
        self.timer.stop()
        return bool(self.scope.__exit__(*exc))  # type: ignore[arg-type]

    @property
    def missed(self) -> bool:
        return self.scope.cancelled_caught or self.timer.late(self.timeout)


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
