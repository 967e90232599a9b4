"""Request bodies every provider's tests send, built in one place.

The smallest valid body of each API, with the fields a test cares about on top:
``chat_body(stream=True)`` rather than the same nested dict typed again. The
defaults are the models the fake provider and the SDK tests use; a test that
needs another says so (``chat_body(model="m")``).
"""

from __future__ import annotations

from typing import Any

USER = {"role": "user", "content": "hi"}
CHAT_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-6"
GEMINI_MODEL = "gemini-2.5-flash"


def user(content: Any = "hi") -> dict[str, Any]:
    """One user turn in the OpenAI Chat / Anthropic shape."""
    return {"role": "user", "content": content}


def chat_body(*messages: dict[str, Any], model: str = CHAT_MODEL, **fields: Any) -> dict[str, Any]:
    """An OpenAI Chat Completions body: ``messages`` (one user "hi" when none are given) and ``fields``."""
    return {"model": model, "messages": list(messages) or [USER], **fields}


def responses_body(input: Any = "hi", model: str = CHAT_MODEL, **fields: Any) -> dict[str, Any]:
    """An OpenAI Responses body."""
    return {"model": model, "input": input, **fields}


def messages_body(content: Any = "hi", model: str = ANTHROPIC_MODEL, max_tokens: int = 50, **fields: Any) -> dict[str, Any]:
    """An Anthropic Messages body with one user turn holding ``content``."""
    return {"model": model, "max_tokens": max_tokens, "messages": [user(content)], **fields}


def gemini_body(*parts: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A Gemini generateContent body: one user turn, "hi" then ``parts``."""
    return {"contents": [{"role": "user", "parts": [{"text": "hi"}, *parts]}], **fields}


def minimal_body(provider: str, **fields: Any) -> dict[str, Any]:
    """The smallest generation body of ``provider``'s main API ("openai", "anthropic", "gemini")."""
    if provider == "gemini":
        return gemini_body(**fields)
    if provider == "anthropic":
        return {"model": "m", "max_tokens": 10, "messages": [USER], **fields}
    return chat_body(model="m", **fields)
