"""Content the provider signed, which masking must never rewrite.

An Anthropic ``thinking`` block carries a ``signature`` over its text, and a
Gemini part a ``thoughtSignature`` over the part: the client sends them back
every turn, and the provider refuses a turn whose signed block was changed (and
so every later turn, which resends it). A value to mask found inside such a
block cannot be masked there. Where the API allows it the block is dropped
(``drop_signed``): Anthropic accepts a conversation without the thinking
blocks of earlier assistant turns, so such a block is cut from the raw body
(the object and one comma, every other byte kept). Otherwise (the last
assistant turn's thinking, which a tool-use loop must send back; a Gemini
part, whose signature binds the call it carries) the request is refused
(``Unmaskable``), and the README says so. The texts are read from the one
parse, so this holds for values found by any policy and by the tenant's memory
alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from capsem_proxyd.redaction.rewrite import Unmaskable
from capsem_proxyd.redaction.scanner import first_strings, scan, strings_of

_SIGNED = ("a value to mask is inside content the provider signed (an Anthropic thinking block or a Gemini part "
           "with a thought signature), which is never rewritten")

_GEMINI_SIGNATURES = ("thoughtSignature", "thought_signature")


def drop_signed(raw: str, body: Any, touched: Callable[[str], bool]) -> tuple[str, Any, list[str]] | None:
    """``raw`` and ``body`` without the signed blocks holding a value to mask (``touched`` says which
    texts do), and the texts dropped; None when no block holds one. Raises ``Unmaskable`` when such a
    block cannot be dropped."""
    droppable = _droppable(body)
    cuts: list[dict[str, Any]] = []
    for block in _signed_blocks(body):
        if not any(touched(text) for text in _texts_of(block)):
            continue
        if id(block) not in droppable:
            raise Unmaskable(_SIGNED)
        cuts.append(block)
    if not cuts:
        return None
    starts = first_strings(body)
    tokens = list(scan(raw))
    spans = sorted(_object_span(raw, tokens, starts[id(block)], len(block)) for block in cuts)
    out: list[str] = []
    last = 0
    for start, end in spans:
        out.append(raw[last:start])
        last = end
    out.append(raw[last:])
    text = "".join(out)
    try:
        return text, json.loads(text), [text_ for block in cuts for text_ in _texts_of(block)]
    except ValueError:
        raise Unmaskable(_SIGNED) from None


def signed_texts(body: Any) -> Iterator[str]:
    """Every string inside a signed block of ``body`` (a thinking block's text; a signed part's strings),
    the signatures themselves apart: in a reply, a value there cannot be masked (the client sends the
    block back, signature and all, and the provider would refuse it changed)."""
    for block in _signed_blocks(body):
        yield from _texts_of(block)


def _signed_blocks(body: Any) -> Iterator[dict[str, Any]]:
    stack: list[Any] = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if (item.get("type") == "thinking" and "signature" in item) or any(key in item for key in _GEMINI_SIGNATURES):
                yield item
                continue
            stack.extend(item.values())


def _texts_of(block: dict[str, Any]) -> Iterator[str]:
    if block.get("type") == "thinking" and "signature" in block:
        thinking = block.get("thinking")
        if isinstance(thinking, str):
            yield thinking
        return
    yield from strings_of({key: value for key, value in block.items() if key not in _GEMINI_SIGNATURES})


def _droppable(body: Any) -> set[int]:
    """The Anthropic thinking blocks the API lets a client leave out: those of assistant turns before the
    last one, in a turn that keeps other content, every member of the block a string."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return set()
    assistant = [index for index, message in enumerate(messages)
                 if isinstance(message, dict) and message.get("role") == "assistant"]
    ids: set[int] = set()
    for index in assistant[:-1]:
        content = messages[index].get("content")
        if not isinstance(content, list):
            continue
        blocks = [block for block in content if isinstance(block, dict) and block.get("type") == "thinking"
                  and "signature" in block and all(isinstance(value, str) for value in block.values())]
        if len(blocks) < len(content):  # the turn keeps some content once they are gone
            ids.update(id(block) for block in blocks)
    return ids


def _object_span(raw: str, tokens: list[Any], first: int, members: int) -> tuple[int, int]:
    """Where an object of ``members`` string members, whose first key is string ``first``, sits in ``raw``
    with one comma beside it (the one after it, else the one before)."""
    head, tail = tokens[first], tokens[first + 2 * members - 1]
    brace = raw.rfind("{", 0, head.raw_start - 1)
    close = tail.raw_end + 1
    while close < len(raw) and raw[close].isspace():
        close += 1
    if brace < 0 or raw[brace + 1:head.raw_start - 1].strip() or close >= len(raw) or raw[close] != "}":
        raise Unmaskable(_SIGNED)
    after = close + 1
    while after < len(raw) and raw[after].isspace():
        after += 1
    if after < len(raw) and raw[after] == ",":
        return brace, after + 1
    before = brace - 1
    while before >= 0 and raw[before].isspace():
        before -= 1
    if before >= 0 and raw[before] == ",":
        return before, close + 1
    raise Unmaskable(_SIGNED)
