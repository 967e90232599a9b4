"""A call's arguments checked against the tool's approved input schema (``mcp/schemas.py``, ``checks.py``):
a schema that cannot be applied refuses every call (fail closed), and a refusal never quotes an argument."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.exchange import Exchange
from capsem_proxyd.mcp import jsonrpc
from capsem_proxyd.mcp.checks import MessageChecks
from capsem_proxyd.mcp.pins import Pins
from capsem_proxyd.mcp.schemas import Unusable, mismatch
from capsem_proxyd.mcp.sessions import ApprovedTools
from tests.support.engines import engine as debug_engine

SCHEMA = {"type": "object", "properties": {"path": {"type": "string", "maxLength": 8},
                                           "count": {"type": "integer", "minimum": 0}},
          "required": ["path"], "additionalProperties": False}


async def call(tmp_path: Path, schema: Any, arguments: Any) -> Any:
    """A ``tools/call`` of ``t`` after a first listing that pinned ``schema`` as its input schema."""
    pins = Pins(tmp_path)
    pins.apply("x", [{"name": "t", "inputSchema": schema}])
    approved = ApprovedTools()
    approved.approve("s", ["t"])
    checks = MessageChecks(debug_engine(), Exchange.begin("/mcp/x"), "x", "s", approved, pins=pins)
    message = jsonrpc.classify({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                "params": {"name": "t", "arguments": arguments}})
    return await checks.client_message(message)


@pytest.mark.parametrize("schema", [
    {"type": "no-such-type"},
    {"type": "object", "properties": {"a": {"$ref": "https://schemas.example/remote.json"}}},
    "not a schema",
], ids=["invalid keyword", "remote ref", "not an object"])
async def test_a_schema_that_cannot_be_applied_refuses_the_call(tmp_path: Path, schema: Any) -> None:
    checked = await call(tmp_path, schema, {"a": 1})
    assert checked.decision == "BLOCK" and checked.forward is None
    result = checked.answer["result"]
    assert result["isError"] and "cannot be applied" in result["content"][0]["text"]


async def test_valid_arguments_go_on_and_invalid_ones_name_the_keyword(tmp_path: Path) -> None:
    assert (await call(tmp_path, SCHEMA, {"path": "a", "count": 2})).decision == "ALLOW"
    refused = await call(tmp_path, SCHEMA, {"path": "a", "count": -1})
    text = refused.answer["result"]["content"][0]["text"]
    assert "keyword 'minimum' at $.properties.count.minimum" in text and "Do not retry" in text


VALUES = st.recursive(
    st.one_of(st.text(min_size=6, max_size=20).map(lambda text: f"SECRET{text}"), st.integers(10**6, 10**9)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["path", "count", "zz"]),
                                                                         inner, max_size=3)),
    max_leaves=6,
)


@given(arguments=st.dictionaries(st.sampled_from(["path", "count", "SECRETKEY"]), VALUES, max_size=3))
def test_a_mismatch_never_quotes_the_arguments(arguments: dict[str, Any]) -> None:
    wrong = mismatch(arguments, SCHEMA)
    if wrong is None:
        return
    assert "SECRET" not in wrong
    for value in arguments.values():
        if isinstance(value, int):
            assert str(value) not in wrong


def test_mismatch_raises_unusable_for_a_schema_it_cannot_apply() -> None:
    with pytest.raises(Unusable):
        mismatch({}, {"type": 5})


def test_a_schema_is_checked_and_its_validator_built_once_and_an_unusable_one_stays_refused() -> None:
    """Every call of a tool is validated against its one approved schema: the validator is remembered by
    the schema's canonical bytes (key order aside), and an unusable schema refuses every time."""
    from capsem_proxyd.mcp import schemas

    first = schemas._validator({"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}})
    again = schemas._validator({"properties": {"id": {"type": "string"}}, "required": ["id"], "type": "object"})
    assert first is again
    assert schemas.mismatch({}, {"type": "object", "required": ["id"]}) is not None
    for _ in range(2):
        with pytest.raises(schemas.Unusable):
            schemas._validator({"type": "no such type"})
