"""How a policy says what to mask: a CAPSEM ``Decision`` that carries its findings.

CAPSEM's ``Verdict`` has no REDACT and its ``Decision`` no place for
positions, and ``details`` is free text a client sees. So a policy that masks
answers with a ``MaskingDecision``: a ``Decision`` subclass (a pydantic model,
so it pickles to and from the PII worker processes) whose verdict is ``LOG``
when masking is all it asks (any verdict otherwise: a CONFIRM that
``--confirm-action allow`` lets through is masked too), and whose ``findings``
are ``Finding(start, end, matched_text, kind)``: ``[start, end)`` in the text
``hook_text`` gives for the hook's arguments, ``matched_text`` what the policy
read there. The engine checks that the text there is ``matched_text`` and
refuses the request if not (fail closed), so a policy that computed its
offsets on another text (folded, NFKC) cannot mask the wrong characters.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from capsem.models import Decision


class Finding(NamedTuple):
    """What to mask: ``hook_text(...)[start:end] == matched_text``; ``kind`` labels the placeholder."""

    start: int
    end: int
    matched_text: str
    kind: str


class MaskingDecision(Decision):
    """A decision with the findings to mask; ``details`` names rules and counts, never the values."""

    findings: tuple[Finding, ...] = ()


def hook_text(hook: str, args: tuple[Any, ...]) -> str:
    """The text of a hook call that findings are positions in (the same for every masking policy):

    * ``on_model_call``: the system text, a newline, the prompt;
    * ``on_tool_response``: the tool result's content (the proxy sends ``{"content": text}``);
    * ``on_tool_call``: the tool's name, description and arguments (JSON) on three lines;
    * ``on_model_response``: the reply's text, a newline, its thoughts.
    """
    if hook == "on_model_call":
        return f"{args[3]}\n{args[4]}"
    if hook == "on_tool_response":
        response = args[3]
        if isinstance(response, dict) and set(response) == {"content"} and isinstance(response["content"], str):
            return response["content"]
        return _as_text(response)
    if hook == "on_tool_call":
        tool, arguments = args[2], args[3]
        parts = [tool.name, tool.description or ""]
        if arguments:
            parts.append(_as_text(arguments))
        return "\n".join(parts)
    if hook == "on_model_response":
        return f"{args[2]}\n{args[3]}"
    return ""


def _as_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)
