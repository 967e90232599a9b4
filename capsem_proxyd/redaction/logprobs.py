"""A masked reply's logprobs, masked too: the tokens of the masked stretch, their bytes, their alternatives.

A reply's ``logprobs`` spell its text token by token (OpenAI: ``{"token",
"bytes", "logprob", "top_logprobs"}`` entries), so a value masked in the text
is still there, cut into tokens no one string holds whole. Each list of
entries that spells a masked value is rewritten where the value is: the entry
where it begins carries the placeholder (with what the token had before the
value, and after it if the value ends there), the entries inside it become
empty, the one where it ends keeps what follows it; each changed entry's
``bytes`` are its new token's UTF-8 and its ``top_logprobs`` (the
alternatives, which would spell the value again) are emptied. Only those
JSON values are written over in the raw text: every other byte is the
provider's. An entry with anything else (Gemini's ``tokenId``, which spells the
token again) is not rewritten. When the text does not have the shape this expects, nothing is
changed here, and the caller's final check (the value still spelled) refuses
the reply.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from capsem_proxyd.redaction.scanner import JsonString, first_strings, scan, strings_of

_KNOWN = frozenset({"token", "bytes", "logprob", "top_logprobs"})  # what an entry may hold to be rewritten
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def mask_logprobs(raw: str, body: Any, values: Mapping[str, str]) -> str:
    """``raw`` (which parsed as ``body``) with the logprobs entries that spell one of ``values``
    (value -> placeholder) masked; ``raw`` itself when there are none or their shape is unexpected."""
    lists = [entries for entries in _entry_lists(body) if any(value in _spelled(entries) for value in values)]
    if not lists:
        return raw
    starts, tokens = first_strings(body), list(scan(raw))
    edits: list[tuple[int, int, str]] = []
    for entries in lists:
        for entry, token in _new_tokens(entries, values):
            if not set(entry) <= _KNOWN:  # a token id (Gemini's tokenId) would spell it again: refused
                return raw
            located = _locate(raw, tokens, starts, entry)
            if located is None:
                return raw
            for (start, end), text in zip(located, (orjson.dumps(token).decode()[1:-1],
                                                   orjson.dumps(list(token.encode())).decode(), "[]")):
                if start >= 0:
                    edits.append((start, end, text))
    out: list[str] = []
    last = 0
    for start, end, text in sorted(edits, key=lambda edit: (edit[0], -edit[1])):
        if start < last:
            if end <= last:
                continue  # inside alternatives emptied whole (a list of alternatives is itself entries)
            return raw
        out.append(raw[last:start])
        out.append(text)
        last = end
    out.append(raw[last:])
    return "".join(out)


def _entry_lists(body: Any) -> list[list[dict[str, Any]]]:
    found: list[list[dict[str, Any]]] = []
    stack: list[Any] = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            if item and all(isinstance(entry, dict) and isinstance(entry.get("token"), str) for entry in item):
                found.append(item)
            stack.extend(item)
    return found


def _spelled(entries: list[dict[str, Any]]) -> str:
    return "".join(entry["token"] for entry in entries)


def _new_tokens(entries: list[dict[str, Any]], values: Mapping[str, str]) -> list[tuple[dict[str, Any], str]]:
    """The entries whose token changes, with their new token."""
    text = _spelled(entries)
    stretches: list[tuple[int, int, str]] = []
    for value in sorted(values, key=len, reverse=True):
        at = text.find(value)
        while at != -1:
            if not any(start < at + len(value) and at < end for start, end, _ in stretches):
                stretches.append((at, at + len(value), values[value]))
            at = text.find(value, at + len(value))
    changed: list[tuple[dict[str, Any], str]] = []
    position = 0
    for entry in entries:
        token = entry["token"]
        start, end = position, position + len(token)
        position = end
        new: list[str] = []
        at = start
        for stretch_start, stretch_end, placeholder in sorted(stretches):
            if stretch_end <= start or stretch_start >= end:
                continue
            new.append(token[at - start:max(stretch_start, start) - start])
            if stretch_start >= start:
                new.append(placeholder)
            at = min(stretch_end, end)
        new.append(token[at - start:])
        if "".join(new) != token:
            changed.append((entry, "".join(new)))
    return changed


def _locate(
    raw: str, tokens: list[JsonString], starts: dict[int, int], entry: dict[str, Any],
) -> list[tuple[int, int]] | None:
    """Raw spans of the entry's token string (quotes excluded), its ``bytes`` array and its
    ``top_logprobs`` array ((-1, -1) where it has none); None when the text is not as expected."""
    index = starts.get(id(entry))
    if index is None:
        return None
    spans = {"token": (-1, -1), "bytes": (-1, -1), "top_logprobs": (-1, -1)}
    for key, member in entry.items():
        if index >= len(tokens):
            return None
        key_token = tokens[index]
        if key_token.text != key or not key_token.key:
            return None
        index += 1
        if key == "token":
            if index >= len(tokens) or tokens[index].text != member:
                return None
            spans["token"] = (tokens[index].raw_start, tokens[index].raw_end)
        elif key in ("bytes", "top_logprobs") and isinstance(member, list):
            span = _array_after(raw, key_token.raw_end + 1)
            if span is None:
                return None
            spans[key] = span
        index += sum(1 for _ in strings_of(member))
    return [spans["token"], spans["bytes"], spans["top_logprobs"]]


def _array_after(raw: str, at: int) -> tuple[int, int] | None:
    """The raw span of the JSON array whose ``[`` follows ``:`` at ``at``."""
    colon = raw.find(":", at)
    start = raw.find("[", colon)
    if colon < 0 or start < 0 or raw[at:colon].strip() or raw[colon + 1:start].strip():
        return None
    depth, position = 0, start
    while position < len(raw):
        char = raw[position]
        if char == '"':
            match = _STRING.match(raw, position)
            if match is None:
                return None
            position = match.end()
            continue
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                return start, position + 1
        position += 1
    return None
