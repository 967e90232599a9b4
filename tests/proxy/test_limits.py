"""The per-request limits on their own, no socket: how deep a body nests, how many items it carries,
how many tools it defines, and how deep a reply may go before it is refused.

``tests/hardening/test_limits.py`` shows each refusal reach the SDKs in their provider's shape; these
pin the counting itself (the depth as a property against the obvious recursive definition).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.errors import ProxyError
from capsem_proxyd.proxy.limits import Limits, check_reply_body, check_request_body, check_request_view, nesting_exceeds
from capsem_proxyd.views import RequestView, ToolDefinition

JSON = st.recursive(st.none() | st.integers() | st.text(max_size=3),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3),
                    max_leaves=30)


def depth(value: Any) -> int:
    """Levels of arrays/objects, the outermost counting one (a scalar: 0)."""
    if isinstance(value, dict):
        return 1 + max((depth(child) for child in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(child) for child in value), default=0)
    return 0


@given(JSON, st.integers(min_value=0, max_value=8))
def test_nesting_exceeds_agrees_with_the_recursive_depth(value: Any, limit: int) -> None:
    assert nesting_exceeds(value, limit) == (depth(value) > limit)


def test_nesting_is_measured_without_recursion_far_past_the_stack() -> None:
    value: Any = "bottom"
    for _ in range(50_000):
        value = [value]
    assert nesting_exceeds(value, 64) and not nesting_exceeds(value, 50_000)


def refused(body: dict[str, Any], limits: Limits) -> ProxyError:
    with pytest.raises(ProxyError) as raised:
        check_request_body(body, limits)
    assert raised.value.status == 400
    return raised.value


def test_a_top_level_array_may_hold_max_items() -> None:
    limits = Limits(max_items=3)
    check_request_body({"messages": [{}] * 3, "tools": [{}] * 3}, limits)  # per array, not in all
    assert "'messages' has 4 items" in refused({"messages": [{}] * 4}, limits).message


def test_the_arrays_inside_a_top_level_arrays_items_share_max_items() -> None:
    limits = Limits(max_items=4)
    parts = {"role": "user", "content": [{"type": "text", "text": "x"}] * 2}
    check_request_body({"messages": [parts, parts]}, limits)  # 4 parts in all
    assert "hold 6 parts" in refused({"messages": [parts, parts, parts]}, limits).message


def test_long_strings_cost_no_items() -> None:
    check_request_body({"messages": [{"content": "x" * 1_000_000}]}, Limits(max_items=1))


def test_a_body_deeper_than_max_json_depth_is_refused_naming_the_limit() -> None:
    assert "deeper than 2 levels" in refused({"a": {"b": {"c": 1}}}, Limits(max_json_depth=2)).message
    check_request_body({"a": {"b": 1}}, Limits(max_json_depth=2))


def test_more_tools_than_max_tools_are_refused() -> None:
    view = RequestView(tools=[ToolDefinition(name=f"tool{index}") for index in range(3)])
    check_request_view(view, Limits(max_tools=3))
    with pytest.raises(ProxyError) as raised:
        check_request_view(view, Limits(max_tools=2))
    assert raised.value.status == 400 and "3 tools" in raised.value.message


def test_a_reply_may_nest_deeper_than_a_request_but_not_without_end() -> None:
    value: Any = "x"
    for _ in range(200):
        value = {"a": value}
    check_reply_body(value, Limits(max_json_depth=64))  # a provider's reply: up to 256 levels
    for _ in range(100):
        value = [value]
    with pytest.raises(ProxyError) as raised:
        check_reply_body(value, Limits(max_json_depth=64))
    assert raised.value.status == 502
