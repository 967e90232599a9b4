"""Content the provider signed, which masking must never rewrite.

An Anthropic ``thinking`` block carries a ``signature`` over its text, and a
Gemini part a ``thoughtSignature`` over the part: the client sends them back
every turn, and the provider refuses a turn whose signed block was changed (and
so every later turn, which resends it). A value to mask found inside such a
block cannot be masked there: the request is refused instead (``Unmaskable``),
and the README says so. The texts are read from the one parse, so this holds
for values found by any policy and by the tenant's memory alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from capsem_proxyd.redaction.scanner import strings_of

_GEMINI_SIGNATURES = ("thoughtSignature", "thought_signature")


def signed_texts(body: Any) -> Iterator[str]:
    """Every string inside a signed block of ``body`` (a thinking block's text; a signed part's strings,
    keys included), the signatures themselves apart."""
    stack: list[Any] = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if item.get("type") == "thinking" and "signature" in item:
                thinking = item.get("thinking")
                if isinstance(thinking, str):
                    yield thinking
                continue
            if any(key in item for key in _GEMINI_SIGNATURES):
                yield from strings_of({key: value for key, value in item.items() if key not in _GEMINI_SIGNATURES})
                continue
            stack.extend(item.values())
