"""Deny-by-default content: every string and every unknown object key is content unless declared not.

A provider API grows fields every month; a proxy that reads only the fields
it knows forwards every new one unchecked. So a dialect does not list what is
content. It declares what is *not* (``Paths``: ids, enums, model names,
settings, opaque provider blobs, each by its JSON path) and the API's own
field names (its vocabulary), and everything else found while sorting a body
is collected as text for a hook:

* a string value is content unless its path is declared non-content;
* an object key is content unless it is a field name of the API, since a key
  the API does not define can only be data (tool arguments, schema property
  names, metadata) and a word of the API's vocabulary carries nothing but
  itself;
* inside free-form data (tool arguments, tool results, JSON schemas,
  metadata) nothing is declared: every string and every key is content.

A dialect sorts a body into the hooks' views with ``Sorter``: it walks the
structure it knows and hands each subtree to a role (the prompt, the system
instructions, a tool definition, a tool result); whatever it does not route
falls to the role the direction implies (``Sorter.rest``), so structure
refines where content goes and never decides whether it is checked. Nothing
here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from capsem_proxyd.errors import ErrorCode, bad_request

# Words of JSON Schema, which tool definitions and structured outputs embed: they are
# field names of every API that takes a schema.
JSON_SCHEMA_WORDS = frozenset({
    "$schema", "$id", "$ref", "$defs", "definitions", "type", "properties", "required", "items", "enum", "const",
    "description", "title", "default", "examples", "format", "pattern", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems", "uniqueItems", "additionalProperties",
    "patternProperties", "anyOf", "allOf", "oneOf", "not", "nullable", "propertyOrdering", "multipleOf",
    "minProperties", "maxProperties", "prefixItems", "contains", "strict",
})


_RECURSION_DEPTH = 100  # levels Sorter walks by recursion before its stack walk takes over


class Paths:
    """JSON paths declared non-content, as dotted patterns (``*``: any one key or index).

    ``Paths("model", "messages.*.role", "tools.*.type")``: the value at each
    path, and everything under it, is not content. Compiled once into a trie
    walked alongside the body, so a lookup is one dict access per level.
    """

    __slots__ = ("root", "patterns")

    def __init__(self, *patterns: str) -> None:
        self.patterns = patterns
        self.root = Node()
        for pattern in patterns:
            node = self.root
            for segment in pattern.split("."):
                node = node.children.setdefault(segment, Node())
            node.terminal = True


class Node:
    """One level of a ``Paths`` trie: declared children by key, ``*`` for any."""

    __slots__ = ("children", "terminal")

    def __init__(self) -> None:
        self.children: dict[str, Node] = {}
        self.terminal = False

    def child(self, key: str | int) -> Node | None:
        """The node for ``key`` (None: nothing is declared below, all content)."""
        children = self.children
        if not children:
            return None
        node = children.get(key) if isinstance(key, str) else None
        return node if node is not None else children.get("*")


class Surface(NamedTuple):
    """Where content is found, and the hook that sees it: the README's table is made of these."""

    side: str  # "request" or "reply" (a reply's stream events included)
    where: str
    hook: str  # on_model_call, on_model_call (system), on_tool_call, on_tool_response, on_model_response...


class Sorter:
    """Collects one body's content, subtree by subtree, into the sinks a dialect routes it to."""

    __slots__ = ("vocabulary",)

    def __init__(self, vocabulary: frozenset[str]) -> None:
        self.vocabulary = vocabulary

    def add(self, sink: list[str], value: Any, node: Node | None) -> None:
        """Every content string of ``value`` (at the path ``node`` describes) into ``sink``, in reading order.

        Reading order is the order of the JSON text: an object's keys and values
        and an array's elements as they come, depth first. A reader joins the
        pieces in that order (the SDKs' ``output_text`` joins a message's parts
        first to last), so a term split across them is whole again only then.
        """
        if isinstance(value, str):
            if node is None or not node.terminal:
                sink.append(value)
            return
        if node is not None and node.terminal:
            return
        self._walk(sink, value, node, 0)

    def _walk(self, sink: list[str], item: Any, at: Node | None, depth: int) -> None:
        """Recursion while it is shallow (the fastest walk in CPython: 15% under main's stack walk on an
        agent's 400-message body); past ``_RECURSION_DEPTH`` levels the ordered stack walk takes over,
        since a body may be nested deeper than Python recurses."""
        if depth > _RECURSION_DEPTH:
            self._walk_deep(sink, item, at)
            return
        vocabulary = self.vocabulary
        if isinstance(item, dict):
            for key, child in item.items():
                below = at.child(key) if at is not None else None
                if below is not None and below.terminal:
                    continue
                if at is None or key not in vocabulary:
                    sink.append(key)
                if isinstance(child, str):
                    sink.append(child)
                elif isinstance(child, (dict, list)):
                    self._walk(sink, child, below, depth + 1)
        elif isinstance(item, list):
            for index, child in enumerate(item):
                below = at.child(index) if at is not None else None
                if below is not None and below.terminal:
                    continue
                if isinstance(child, str):
                    sink.append(child)
                elif isinstance(child, (dict, list)):
                    self._walk(sink, child, below, depth + 1)

    def _walk_deep(self, sink: list[str], value: Any, node: Node | None) -> None:
        """The same walk with a stack: what comes after a container waits on the stack behind it."""
        stack: list[tuple[Any, Node | None]] = [(value, node)]
        while stack:
            item, at = stack.pop()
            if isinstance(item, dict):
                later = self._add_entries(sink, item, at)
            elif isinstance(item, list):
                later = _add_elements(sink, item, at)
            else:  # a string (or key) that waited behind a container before it
                sink.append(item)
                continue
            if later:
                later.reverse()
                stack.extend(later)

    def _add_entries(self, sink: list[str], item: dict, at: Node | None) -> list[tuple[Any, Node | None]] | None:
        """One object's content keys and strings into ``sink`` up to its first container; the rest, in
        order, returned to be walked after that container (None: nothing left)."""
        later: list[tuple[Any, Node | None]] | None = None
        for key, child in item.items():
            below = at.child(key) if at is not None else None
            if below is not None and below.terminal:
                continue
            if later is None:
                if at is None or key not in self.vocabulary:
                    sink.append(key)
                if isinstance(child, str):
                    sink.append(child)
                elif isinstance(child, (dict, list)):
                    later = [(child, below)]
            else:
                if at is None or key not in self.vocabulary:
                    later.append((key, None))
                if isinstance(child, (str, dict, list)):
                    later.append((child, below))
        return later

    def text(self, value: Any, node: Node | None) -> str:
        """The content of ``value`` as one text (a string value as it is)."""
        if isinstance(value, str):
            return "" if node is not None and node.terminal else value
        parts: list[str] = []
        self.add(parts, value, node)
        return "\n".join(parts)

    def fields(self, value: Any, node: Node | None, sink: list[str]) -> Iterator[tuple[str, Any, Node | None]]:
        """The content-bearing entries of an object the dialect reads field by field.

        Entries declared non-content are skipped; a key outside the vocabulary
        is itself content and goes to ``sink``. A value that is not an object
        is content as a whole and goes to ``sink`` too: nothing is dropped
        because it had an unexpected shape.
        """
        if not isinstance(value, dict):
            self.add(sink, value, node)
            return
        for key, child in value.items():
            below = node.child(key) if node is not None else None
            if below is not None and below.terminal:
                continue
            if node is None or key not in self.vocabulary:
                sink.append(key)
            yield key, child, below

    def items(self, value: Any, node: Node | None, sink: list[str]) -> Iterator[tuple[int, Any, Node | None]]:
        """The elements of an array the dialect reads element by element (a non-array: all to ``sink``)."""
        if not isinstance(value, list):
            self.add(sink, value, node)
            return
        for index, child in enumerate(value):
            below = node.child(index) if node is not None else None
            if below is not None and below.terminal:
                continue
            yield index, child, below


def _add_elements(sink: list[str], item: list, at: Node | None) -> list[tuple[Any, Node | None]] | None:
    """One array's content strings into ``sink`` up to its first container; the rest returned, in order."""
    later: list[tuple[Any, Node | None]] | None = None
    for index, child in enumerate(item):
        below = at.child(index) if at is not None else None
        if below is not None and below.terminal:
            continue
        if later is None:
            if isinstance(child, str):
                sink.append(child)
            elif isinstance(child, (dict, list)):
                later = [(child, below)]
        elif isinstance(child, (str, dict, list)):
            later.append((child, below))
    return later


def joined(parts: Iterable[str]) -> str:
    return "\n".join(part for part in parts if part)


def refuse_double_spellings(value: Any, camel: dict[str, str]) -> None:
    """A 400 for an object, at any depth, with one field under two spellings the provider both reads.

    ``camel`` maps each snake_case field name of the API to its camelCase
    twin; the body is walked once. Gemini accepts ``system_instruction`` and
    ``systemInstruction`` alike: given both, which one is read is the
    provider's choice, and a check of the other would check something else.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key in item:
                twin = camel.get(key)
                if twin is not None and twin in item:
                    raise bad_request(
                        f"The request gives the field '{twin}' twice, also as '{key}': send one spelling.",
                        ErrorCode.DUPLICATE_FIELD,
                    )
            stack.extend(child for child in item.values() if isinstance(child, (dict, list)))
        elif isinstance(item, list):
            stack.extend(child for child in item if isinstance(child, (dict, list)))
