"""The Debug policy with the CAPSEM project's full coverage.

``capsem`` 0.3.2 ships a DebugPolicy that looks only at prompts and tool names;
the CAPSEM project's current one blocks the marker wherever it appears. This is
that behaviour: ``capsem_block`` (any case) in a prompt, system instructions, a
tool definition or call (name, description, arguments), a tool result, the
model's text or its thoughts is blocked. It exists to prove the plumbing end to
end, so every hook must react to it.

The marker is looked for in the text as a reader sees it (``normalize.readings``):
fullwidth, enclosed or stroked letters, zero-width characters or soft hyphens
inside it, combining marks on it, Cyrillic or Greek lookalikes of its letters,
underscore lookalikes and a right-to-left override that displays it do not hide it.
"""

from __future__ import annotations

import json
from typing import Any

from capsem.models import (
    DEFAULT_SAFE_DECISION,
    Agent,
    Decision,
    Media,
    Reason,
    Verdict,
)
from capsem.policies import Policy
from capsem.tools import Tool

from capsem_proxyd.policies.holdback import LiteralTerms
from capsem_proxyd.policies.normalize import fold, readings

MARKER = "capsem_block"
_FOLDED_MARKER = fold(MARKER)  # the same string; folded all the same, so the matching rule holds as written


# ASCII text longer than this is lowered a window at a time: a whole 20 MiB reply lowered at once was a
# third copy of it in memory (its bytes, its text, the lowered text).
_WINDOW = 1 << 18


def _contains_marker(text: str) -> bool:
    if text.isascii():
        if len(text) <= _WINDOW:
            return _FOLDED_MARKER in text.lower()
        overlap = len(_FOLDED_MARKER) - 1  # windows overlap: a marker across a window's edge is in the next
        return any(
            _FOLDED_MARKER in text[start:start + _WINDOW + overlap].lower() for start in range(0, len(text), _WINDOW)
        )
    return any(_FOLDED_MARKER in reading for reading in readings(text))


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _block(where: str) -> Decision:
    return Decision(
        verdict=Verdict.BLOCK,
        reason=Reason.POLICY_VIOLATION,
        details=f"Detected '{MARKER}' in {where}",
    )


class DebugPolicy(Policy):
    """Blocks the ``capsem_block`` marker at every interception point."""

    # A stream holds back only an end of text that could still become the marker (usually nothing).
    stream_holdback = LiteralTerms([MARKER])
    # Its replies are refused for the marker and nothing else: a stream finds it in each new piece of
    # text (policies/term_screen.py) and asks this policy only where it is (declarations.py).
    reply_terms = stream_holdback
    # The marker is in a whole exactly when it is in a piece or a seam (policies/declarations.py).
    splittable = True

    def __init__(self) -> None:
        super().__init__(
            name="Debug",
            description="Blocks the 'capsem_block' marker in prompts, tools, tool results and responses",
            authors="capsem-proxyd (after the CAPSEM project's DebugPolicy)",
            url="https://github.com/google/capsem",
        )

    async def on_model_call(
        self,
        invocation_id: str,
        agent: Agent,
        model_name: str,
        system_instructions: str,
        prompt: str,
        media: list[Media],
    ) -> Decision:
        if _contains_marker(prompt):
            return _block("prompt")
        if _contains_marker(system_instructions):
            return _block("system instructions")
        return DEFAULT_SAFE_DECISION

    async def on_tool_call(
        self, invocation_id: str, agent: Agent, tool: Tool, args: dict
    ) -> Decision:
        if _contains_marker(tool.name):
            return _block(f"tool name '{tool.name}'")
        if tool.description and _contains_marker(tool.description):
            return _block(f"description of tool '{tool.name}'")
        if args and _contains_marker(_as_text(args)):
            return _block(f"arguments of tool '{tool.name}'")
        return DEFAULT_SAFE_DECISION

    async def on_tool_response(
        self, invocation_id: str, agent: Agent, tool: Tool, response: dict
    ) -> Decision:
        if _contains_marker(_as_text(response)):
            return _block(f"response of tool '{tool.name}'")
        return DEFAULT_SAFE_DECISION

    async def on_model_response(
        self,
        invocation_id: str,
        agent: Agent,
        response: str,
        thoughts: str,
        media: list[Media],
    ) -> Decision:
        if _contains_marker(response):
            return _block("model response")
        if thoughts and _contains_marker(thoughts):
            return _block("model thoughts")
        return DEFAULT_SAFE_DECISION

    @classmethod
    def from_config(cls, config: dict) -> DebugPolicy | None:
        """``enabled = false`` switches it off, as in CAPSEM's loader."""
        if not config.get("enabled", True):
            return None
        return cls()
