"""How much a client (or a provider) may send before the proxy refuses it.

Every limit here guards something the proxy must do with what it receives:
walk it (nesting depth: our readers and the policies recurse, and Python's
stack ends near 1,000 frames while orjson accepts 1,024 levels), check it item
by item (messages, parts, tool definitions: the policies run per item), or hold
it (the upstream reply). A request over a limit is refused with a 400 in the
caller's provider shape before any policy runs or anything goes upstream.

The checks walk the parsed body, never its bytes: strings (a 30 MB base64
image) cost nothing, and the cost grows with the number of JSON arrays and
objects, like the parse itself. Measured on a loaded 2-core machine: 0.002 ms
for a 32 MiB image body, 5 ms for 10,000 messages (orjson: 7 ms to parse it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from capsem_proxyd.config import DEFAULTS, Settings
from capsem_proxyd.errors import bad_request, too_many, upstream_unavailable
from capsem_proxyd.views import RequestView


@dataclass(frozen=True, slots=True)
class Limits:
    """The per-request limits (``--max-*`` options)."""

    max_json_depth: int = DEFAULTS.max_json_depth
    max_items: int = DEFAULTS.max_items
    max_tools: int = DEFAULTS.max_tools
    max_response_size: int = DEFAULTS.max_response_size

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_json_depth=settings.max_json_depth,
            max_items=settings.max_items,
            max_tools=settings.max_tools,
            max_response_size=settings.max_response_size,
        )


def nesting_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` nests arrays/objects more than ``limit`` deep (the body itself is level 1).

    Level by level and without recursion, so it is safe on anything orjson parsed.
    """
    level = [value] if isinstance(value, (dict, list)) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        deeper = []
        for container in level:
            for child in container.values() if isinstance(container, dict) else container:
                if isinstance(child, (dict, list)):
                    deeper.append(child)
        level = deeper
    return False


def check_request_body(body: dict[str, Any], limits: Limits) -> None:
    """Refuse a body nested too deeply or carrying too many items (ProxyError 400).

    Items are counted without knowing the dialect: every top-level array
    (``messages``, ``contents``, ``input``, ``tools``...) may hold ``max_items``
    elements, and the arrays inside those elements (content parts, Gemini
    ``parts`` and ``functionDeclarations``) ``max_items`` elements in all.
    """
    if nesting_exceeds(body, limits.max_json_depth):
        raise bad_request(f"The request body nests JSON deeper than {limits.max_json_depth} levels.")
    for name, value in body.items():
        if not isinstance(value, list):
            continue
        if len(value) > limits.max_items:
            raise too_many(f"'{name[:64]}' has {len(value)} items", limits.max_items)
        inner = sum(
            len(child) for item in value if isinstance(item, dict) for child in item.values() if isinstance(child, list)
        )
        if inner > limits.max_items:
            raise too_many(f"the items of '{name[:64]}' hold {inner} parts", limits.max_items)


def check_request_view(view: RequestView, limits: Limits) -> None:
    """Refuse a request defining more tools than ``max_tools`` (each is checked by every policy)."""
    if len(view.tools) > limits.max_tools:
        raise too_many(f"the request defines {len(view.tools)} tools", limits.max_tools)


def check_reply_body(body: Any, limits: Limits) -> None:
    """A provider reply nested beyond orjson's reach of our readers is refused (502), not crashed on."""
    if nesting_exceeds(body, max(limits.max_json_depth, _REPLY_DEPTH)):
        raise upstream_unavailable("The upstream reply nests JSON too deeply to be checked.")


# Replies are the provider's; allow them deeper nesting than requests, still far below the stack's end.
_REPLY_DEPTH = 256
