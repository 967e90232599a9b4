"""A server's message with what policies asked to mask masked, before the client reads it.

Why results are masked and arguments are not: a value masked in a tool's
result is only ever read (by the agent, then the model), so a placeholder
there keeps the session going where a refusal would lose the whole result;
a placeholder in a call's arguments would be *acted on* (written into a file,
sent as an address), silent damage, so a call is refused instead
(``checks.py``) unless the operator lists the tool (``--mcp-redact-passthrough``),
and then it goes on unchanged. Nothing is restored at this hop: the client
only ever sees the placeholder.

The masking is the model hop's (``redaction/``): by value, over the whole
JSON-RPC message, so a tool result's ``content`` and ``structuredContent``
are masked together (the same value, the same placeholder in both), and a
value that cannot be masked exactly (in an object key, found nowhere) refuses
the message (``Unmaskable``) rather than let it through.

A placeholder may break the shape a tool promised: a ``structuredContent``
field whose schema says ``pattern: ^AKIA...`` no longer matches. The client's
SDK checks a result against the tool's ``outputSchema`` and would fail the
call with a schema error the model cannot read; so a masked
``structuredContent`` is checked here against the approved ``outputSchema``
(the pinned definition: the one the client was served), the way the official
SDK checks it (``schemas.py``: the schema's own draft, no remote ``$ref``), and a result that no
longer conforms becomes the tool's failure (``isError``) carrying the masked
text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from capsem_proxyd.mcp import jsonrpc
from capsem_proxyd.mcp.schemas import conforms
from capsem_proxyd.redaction.masker import Masker

# What the engine adds to ``exchange.redactions``: (value, kind, policy, hook).
Found = Sequence[tuple[str, str, str, str]]
_NO_LONGER_CONFORMS = ("[capsem-proxyd: values in this result were masked, and its structured content no longer "
                       "matches the tool's output schema; it was left out.]")


@dataclass(slots=True)
class Masked:
    """The message with the values masked, and per placeholder what the recorders are told:
    (placeholder, places, kind, policy, hook)."""

    body: dict[str, Any]
    places: list[tuple[str, int, str, str, str]] = field(default_factory=list)


def mask_message(masker: Masker, tenant: str, body: dict[str, Any], found: Found) -> Masked:
    """``body`` with every value of ``found`` masked wherever it occurs; raises ``Unmaskable``."""
    kinds: dict[str, str] = {}
    owners: dict[str, tuple[str, str]] = {}
    for value, kind, policy, hook in found:
        kinds.setdefault(value, kind)  # the first finding names it: masking policies run first
        owners.setdefault(value, (policy, hook))
    raw = jsonrpc.dumps(body).decode("utf-8")
    # recall=False: the tenant's memory is for what the client sends; a server's words are masked where found
    masked, placeholders = masker.mask(tenant, raw, orjson.loads(raw), kinds, recall=False)
    by_placeholder = {made: value for value, made in placeholders.items()}
    places = []
    for made, count in masked.counts.items():
        found_value = by_placeholder.get(made)
        if found_value is not None:
            places.append((made, count, kinds[found_value], *owners[found_value]))
    return Masked(orjson.loads(masked.text), places)


def shaped_result(original: Any, masked: Any, schema: Any) -> dict[str, Any] | None:
    """A masked ``tools/call`` result as the client may get it: None when it can go as masked, else the
    tool's failure (``isError``) with the masked text, when its masked ``structuredContent`` no longer
    conforms to the tool's approved ``outputSchema`` (``schema``; None: the tool declares none)."""
    if not isinstance(masked, dict) or not isinstance(original, dict) or "structuredContent" not in masked:
        return None
    structured = masked["structuredContent"]
    if structured == original.get("structuredContent") or not isinstance(schema, dict):
        return None
    if conforms(structured, schema):
        return None
    content = masked.get("content")
    parts = list(content) if isinstance(content, list) and content else [
        {"type": "text", "text": orjson.dumps(structured).decode("utf-8")}]
    parts.append({"type": "text", "text": _NO_LONGER_CONFORMS})
    return {"content": parts, "isError": True}
