"""Policies shipped with capsem-proxyd (CAPSEM ``Policy`` subclasses)."""

from capsem_proxyd.policies.debug import DebugPolicy

__all__ = ["DebugPolicy"]
