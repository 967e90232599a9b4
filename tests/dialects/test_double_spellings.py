"""``refuse_double_spellings`` finds a field given under both its spellings at any depth, and nothing else.

Its walk is written for speed (every child stacked in C, leaves dropped when
popped); this property holds it to the plain recursive reading of the rule,
the same refusal for the same object, on arbitrary JSON values built from the
Gemini twins' own names. The proxy's parse refuses the same bodies with no walk
(``parse_request_body`` with ``double_spellings``, object by object as it builds
them): a second property holds it to the walk.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.dialects.content import refuse_double_spellings
from capsem_proxyd.dialects.gemini import CAMEL_TWINS
from capsem_proxyd.errors import ErrorCode, ProxyError
from capsem_proxyd.proxy.body import parse_request_body

_NAMES = sorted({*list(CAMEL_TWINS)[:4], *list(CAMEL_TWINS.values())[:4], "text", "parts"})
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(_NAMES), children, max_size=4),
    max_leaves=30,
)


def _first_twin(value: Any) -> str | None:
    """The plain reading, in the walk's order (last child first): the message of the first refusal, or None."""
    if isinstance(value, dict):
        for key in value:
            twin = CAMEL_TWINS.get(key)
            if twin is not None and twin in value:
                return f"'{twin}' twice, also as '{key}'"
        children = list(value.values())
    elif isinstance(value, list):
        children = list(value)
    else:
        return None
    for child in reversed(children):
        found = _first_twin(child)
        if found is not None:
            return found
    return None


@given(_JSON)
def test_the_walk_refuses_exactly_what_the_plain_reading_refuses(value: Any) -> None:
    expected = _first_twin(value)
    try:
        refuse_double_spellings(value, CAMEL_TWINS)
    except ProxyError as error:
        assert expected is not None and expected in str(error)
    else:
        assert expected is None


def _every_twin(value: Any) -> set[str]:
    """Every refusal message the rule allows for ``value``: one per object and field it gives both ways."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.update(f"'{CAMEL_TWINS[key]}' twice, also as '{key}'" for key in item
                         if key in CAMEL_TWINS and CAMEL_TWINS[key] in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


@given(_JSON)
def test_the_parse_refuses_exactly_what_the_walk_refuses(value: Any) -> None:
    """Same refusal, same error code, and a message naming a field the body does give both ways; without
    ``double_spellings`` (every other API) the parse refuses none of them."""
    body = {"contents": value}
    raw = json.dumps(body).encode()  # integers of any size, as a client may send them
    try:
        refuse_double_spellings(body, CAMEL_TWINS)
    except ProxyError as error:
        walked: ProxyError | None = error
    else:
        walked = None
    try:
        parsed = parse_request_body(raw, "application/json", CAMEL_TWINS)
    except ProxyError as error:
        assert walked is not None, error.message
        assert (error.status, error.code) == (walked.status, walked.code) == (400, ErrorCode.DUPLICATE_FIELD)
        assert any(message in error.message for message in _every_twin(body)), error.message
    else:
        assert walked is None, walked.message
        assert parsed == body
    assert parse_request_body(raw, "application/json") == body
