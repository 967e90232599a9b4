"""Policy engines built the way the daemon builds them, for tests that drive the engine or the pump alone."""

from __future__ import annotations

from capsem.manager import SecurityManager

from capsem_proxyd.enforcement.engine import PolicyEngine
from capsem_proxyd.enforcement.loader import PolicySet
from capsem_proxyd.observe.recorders import Recorder
from capsem_proxyd.policies.debug import DebugPolicy


def debug_alone() -> PolicySet:
    """The Debug policy alone (the default set is Debug and Secrets: ``loader.default_policy_set``)."""
    manager = SecurityManager()
    manager.add_policy(DebugPolicy())
    return PolicySet(manager=manager, source="Debug alone (tests)")


def engine(policy_set: PolicySet | None = None, recorder: Recorder | None = None, **options: object) -> PolicyEngine:
    """An engine over ``policy_set`` (the Debug policy alone), recording into ``recorder`` (nowhere)."""
    settings: dict[str, object] = {"confirm_action": "block", "policy_timeout": 5.0, **options}
    return PolicyEngine(policy_set or debug_alone(), recorder=recorder or Recorder(), **settings)  # type: ignore[arg-type]
