"""Policy engines built the way the daemon builds them, for tests that drive the engine or the pump alone."""

from __future__ import annotations

from capsem_proxyd.enforcement.engine import PolicyEngine
from capsem_proxyd.enforcement.loader import PolicySet, default_policy_set
from capsem_proxyd.observe.recorders import Recorder


def engine(policy_set: PolicySet | None = None, recorder: Recorder | None = None, **options: object) -> PolicyEngine:
    """An engine over ``policy_set`` (the default Debug policy), recording into ``recorder`` (nowhere)."""
    settings: dict[str, object] = {"confirm_action": "block", "policy_timeout": 5.0, **options}
    return PolicyEngine(policy_set or default_policy_set(), recorder=recorder or Recorder(), **settings)  # type: ignore[arg-type]
