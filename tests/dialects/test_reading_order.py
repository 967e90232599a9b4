"""Content is collected in reading order: the order of the JSON text, the order a reader joins pieces in.

The walker visited an object's containers last-in-first-out, so Responses
``output_text`` parts ``cap``, ``sem_bl``, ``ock`` were checked as
``ocksem_blcap`` while the SDK's ``output_text`` is ``capsem_block``.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.dialects.content import Node, Sorter

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4),
    max_leaves=30,
)


def _strings_in_text_order(value: Any) -> list[str]:
    """Every key and string of ``value`` in the order they appear in its JSON text, token by token."""
    text = json.dumps(value)
    found: list[str] = []
    index = 0
    while index < len(text):
        if text[index] == '"':
            string, index = json.decoder.scanstring(text, index + 1)  # type: ignore[attr-defined]
            found.append(string)
        else:
            index += 1
    return found


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [f"before{level}", {"key": value, "after": f"after{level}"}]
    return value


@given(JSON)
def test_free_data_is_collected_in_the_order_of_its_json_text(value: Any) -> None:
    sink: list[str] = []
    Sorter(frozenset()).add(sink, value, None)
    assert sink == _strings_in_text_order(value)


@given(JSON)
def test_the_deep_walk_reads_in_the_same_order_as_the_shallow_one(value: Any) -> None:
    sorter = Sorter(frozenset({"a", "b"}))
    shallow: list[str] = []
    deep: list[str] = []
    sorter.add(shallow, value, None)
    if isinstance(value, (dict, list)):
        sorter._walk_deep(deep, value, None)
    else:
        sorter.add(deep, value, None)
    assert deep == shallow


def test_a_body_nested_deeper_than_python_recurses_is_read_whole_and_in_order() -> None:
    depth = 3000
    value = _nested(depth)
    sink: list[str] = []
    Sorter(frozenset()).add(sink, value, Node())
    heads = [text for level in reversed(range(depth)) for text in (f"before{level}", "key")]
    tails = [text for level in range(depth) for text in ("after", f"after{level}")]
    assert sink == heads + ["leaf"] + tails
