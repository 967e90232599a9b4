"""A test policy whose on_model_call waits far longer than any policy timeout (loaded via a policy folder)."""

from __future__ import annotations

import trio
from capsem.models import DEFAULT_SAFE_DECISION, Agent, Decision, Media
from capsem.policies import Policy


class SlowPolicy(Policy):
    def __init__(self) -> None:
        super().__init__(name="Slow", description="waits an hour on every prompt", authors="tests", url="")

    async def on_model_call(
        self, invocation_id: str, agent: Agent, model_name: str, system_instructions: str, prompt: str, media: list[Media]
    ) -> Decision:
        await trio.sleep(3600)
        return DEFAULT_SAFE_DECISION

    @classmethod
    def from_config(cls, config: dict) -> "SlowPolicy":
        return cls()
