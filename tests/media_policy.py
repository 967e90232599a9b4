"""A test policy that records the media ``on_model_call`` receives (loaded via a policy folder).

It blocks media whose bytes contain ``capsem_block``, so a test can also show
that a verdict on media is enforced.
"""

from __future__ import annotations

from typing import ClassVar

from capsem.models import DEFAULT_SAFE_DECISION, Agent, Decision, Media, Reason, Verdict
from capsem.policies import Policy

MARKER = b"capsem_block"


class MediaRecorder(Policy):
    seen: ClassVar[list[tuple[str, bytes]]] = []
    prompts: ClassVar[list[str]] = []

    def __init__(self) -> None:
        super().__init__(name="MediaRecorder", description="records media for tests", authors="tests", url="")

    async def on_model_call(
        self, invocation_id: str, agent: Agent, model_name: str, system_instructions: str, prompt: str, media: list[Media]
    ) -> Decision:
        MediaRecorder.prompts.append(prompt)
        MediaRecorder.seen.extend((item.mime_type, item.content) for item in media)
        if any(MARKER in item.content for item in media):
            return Decision(verdict=Verdict.BLOCK, reason=Reason.POLICY_VIOLATION, details="marker in media")
        return DEFAULT_SAFE_DECISION

    @classmethod
    def from_config(cls, config: dict) -> "MediaRecorder":
        return cls()
