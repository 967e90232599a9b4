"""The content-surface tables of docs/content-surfaces.md, made from the dialects' own declarations.

``python -m capsem_proxyd.dialects.surfaces`` prints them; the test suite
fails when the copy in docs/ differs, so the documentation of what is checked
where, and of each leaf declared not content with its shape, cannot drift
from the code that does it.
"""

from __future__ import annotations

from capsem_proxyd.dialects.anthropic import AnthropicMessagesDialect
from capsem_proxyd.dialects.base import Dialect
from capsem_proxyd.dialects.content import Paths
from capsem_proxyd.dialects.gemini import GeminiDialect
from capsem_proxyd.dialects.openai_chat import OpenAIChatDialect
from capsem_proxyd.dialects.openai_responses import OpenAIResponsesDialect

APIS: dict[str, Dialect] = {
    "Chat Completions": OpenAIChatDialect(),
    "Responses": OpenAIResponsesDialect(),
    "Anthropic Messages": AnthropicMessagesDialect(),
    "Gemini generateContent": GeminiDialect(),
}


def not_content(side: str, paths: Paths) -> list[str]:
    """The leaves ``paths`` declares, grouped by shape: numbers first, then booleans, then the rest by name."""
    by_shape: dict[str, list[str]] = {}
    for pattern, shape in paths.declarations.items():
        by_shape.setdefault(str(shape), []).append(pattern)
    order = sorted(by_shape, key=lambda shown: (shown != "number", shown != "boolean", shown))
    lines = [f"Not content ({side}), each while its value has the shape named:", ""]
    lines += [f"- {shown}: " + ", ".join(f"`{pattern}`" for pattern in sorted(by_shape[shown])) for shown in order]
    if paths.tokens:
        lines.append("- content, also read as the one text their tokens spell (logprobs): "
                     + ", ".join(f"`{pattern}`" for pattern in sorted(paths.tokens)))
    return [*lines, ""]


def markdown() -> str:
    lines: list[str] = []
    for name, dialect in APIS.items():
        lines += [f"**{name}**", "", "| | where | hook |", "|---|---|---|"]
        lines += [f"| {surface.side} | {surface.where} | `{surface.hook}` |" for surface in dialect.surfaces]
        lines.append("")
        for side, paths in (("request", dialect.request_not_content), ("reply", dialect.reply_not_content),
                            ("stream event", dialect.event_not_content)):
            if side == "stream event" and paths is dialect.reply_not_content:
                continue
            if paths.declarations:
                lines += not_content(side, paths)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
