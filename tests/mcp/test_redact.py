"""A server's message masked by value (``mcp/redact.py``): the value gone from every string it was in, every
other string and every key as the server sent them; the output-schema check as the SDK's client does it."""

from __future__ import annotations

import os
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.mcp.redact import conforms, mask_message, shaped_result
from capsem_proxyd.redaction.masker import Masker
from capsem_proxyd.redaction.placeholder import PLACEHOLDER
from tests.support.mcp_secrets_server import AWS_KEY_ID

MASKER = Masker(os.urandom(32), "test")
FOUND = [(AWS_KEY_ID, "aws-access-key", "Secrets", "on_tool_response")]
WORDS = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="AK"), max_size=12)
# A string that holds the value, or not.
STRINGS = st.one_of(WORDS, st.tuples(WORDS, WORDS).map(lambda parts: f"{parts[0]} {AWS_KEY_ID} {parts[1]}"))
KEYS = st.sampled_from(["text", "result", "type", "rows", "id", "note"])
JSON = st.recursive(
    st.one_of(STRINGS, st.integers(-5, 5), st.booleans(), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=12,
)


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [*value.keys(), *(text for inner in value.values() for text in strings(inner))]
    if isinstance(value, list):
        return [text for inner in value for text in strings(inner)]
    return []


@given(content=STRINGS, structured=JSON)
def test_the_value_is_masked_in_content_and_structured_content_and_nothing_else_changes(
    content: str, structured: Any
) -> None:
    body = {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": f"{content} {AWS_KEY_ID}"}],
                                                  "structuredContent": {"data": structured}}}
    masked = mask_message(MASKER, "tenant", body, FOUND).body
    assert AWS_KEY_ID not in orjson.dumps(masked).decode()
    before, after = strings(body), strings(masked)
    assert len(before) == len(after)
    placeholders = set()
    for old, new in zip(before, after, strict=True):
        if AWS_KEY_ID in old:
            assert new == old.replace(AWS_KEY_ID, PLACEHOLDER.search(new).group())
            placeholders.add(PLACEHOLDER.search(new).group())
        else:
            assert new == old
    assert len(placeholders) == 1  # one value, one placeholder, in content and structuredContent alike


def test_a_masked_structured_result_that_breaks_its_schema_is_the_tools_failure() -> None:
    schema = {"type": "object", "properties": {"key_id": {"type": "string", "pattern": "^AKIA[0-9A-Z]{16}$"}},
              "required": ["key_id"]}
    original = {"content": [{"type": "text", "text": AWS_KEY_ID}], "structuredContent": {"key_id": AWS_KEY_ID}}
    masked = mask_message(MASKER, "tenant", {"jsonrpc": "2.0", "id": 1, "result": original}, FOUND).body["result"]
    failure = shaped_result(original, masked, schema)
    assert failure is not None and failure["isError"] is True and "structuredContent" not in failure
    assert PLACEHOLDER.search(failure["content"][0]["text"])
    assert shaped_result(original, masked, None) is None  # no schema: nothing to break
    loose = {"type": "object", "properties": {"key_id": {"type": "string"}}}
    assert shaped_result(original, masked, loose) is None


def test_a_schema_that_cannot_be_applied_does_not_conform() -> None:
    assert not conforms({"a": 1}, {"$ref": "https://example.com/remote.json"})
    assert not conforms({"a": 1}, {"type": "no-such-type"})
    assert conforms({"a": 1}, {"type": "object"})
