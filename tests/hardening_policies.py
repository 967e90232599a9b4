"""Test policies that fail the way real ones can: hang, or raise (loaded via a policy folder).

Each fails only on prompts carrying its trigger word, so one proxy can show the
failing and the healthy path side by side. ``name`` in the policy's file names
it, so two instances (one with ``fail_open = true``) can run together.
"""

from __future__ import annotations

import trio
from capsem.models import DEFAULT_SAFE_DECISION, Agent, Decision, Media
from capsem.policies import Policy


class HangingPolicy(Policy):
    """Never answers for a prompt containing ``hang`` (like a policy waiting on a dead service)."""

    trigger = "hang"

    def __init__(self, name: str = "Hanging") -> None:
        super().__init__(name=name, description="hangs on prompts containing its trigger", authors="tests", url="")

    async def on_model_call(
        self, invocation_id: str, agent: Agent, model_name: str, system_instructions: str, prompt: str, media: list[Media]
    ) -> Decision:
        if self.trigger in prompt:
            await trio.sleep_forever()
        return DEFAULT_SAFE_DECISION

    @classmethod
    def from_config(cls, config: dict) -> "HangingPolicy":
        return cls(config.get("name", cls.__name__.removesuffix("Policy")))


class RaisingPolicy(HangingPolicy):
    """Raises for a prompt containing ``explode`` (a policy with a bug)."""

    trigger = "explode"

    async def on_model_call(
        self, invocation_id: str, agent: Agent, model_name: str, system_instructions: str, prompt: str, media: list[Media]
    ) -> Decision:
        if self.trigger in prompt:
            raise RuntimeError("the policy broke")
        return DEFAULT_SAFE_DECISION
