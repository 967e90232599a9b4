"""Where each API refers to stored content (``Dialect.references``), and the byte search that spares the
requests without any reference the walk (``Dialect.may_reference``)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.dialects.base import Dialect
from capsem_proxyd.dialects.gemini import stored_file
from capsem_proxyd.http import routes
from capsem_proxyd.views import StoredReference
from tests.support.fuzzing import REQUEST_SEEDS, json_objects, mutations

DIALECTS: dict[str, Dialect] = routes.DIALECTS


def found(name: str, body: dict[str, Any]) -> list[tuple[str, str, str]]:
    dialect = DIALECTS[name]
    raw = orjson.dumps(body)
    assert dialect.may_reference(raw), "the byte search must never miss a reference"
    return [(ref.field, ref.kind, ref.id) for ref in dialect.references(body)]


def test_responses_references_in_body_order() -> None:
    body = {
        "model": "gpt-4.1", "previous_response_id": "resp_1", "conversation": {"id": "conv_1"},
        "prompt": {"id": "pmpt_1", "variables": {"x": "y"}},
        "input": [{"type": "item_reference", "id": "msg_1"}, {"role": "user", "content": [
            {"type": "input_image", "file_id": "file-1"}]}],
        "tools": [{"type": "mcp", "server_label": "s", "tunnel_id": "tun_1"},
                  {"type": "shell", "environment": {"type": "local", "skills": [{"name": "mine", "path": "/x"}]}}],
    }
    assert found("openai-responses", body) == [
        ("previous_response_id", "response", "resp_1"), ("conversation.id", "conversation", "conv_1"),
        ("prompt.id", "prompt", "pmpt_1"), ("input[0].id", "item", "msg_1"),
        ("input[1].content[0].file_id", "file", "file-1"), ("tools[0].tunnel_id", "mcp_server", "tun_1"),
    ]  # a local shell's skills run at the client: no reference


def test_echoed_output_items_are_no_references() -> None:
    body = {"model": "gpt-4.1", "input": [
        {"role": "user", "content": "hi"},
        {"type": "message", "id": "msg_1", "role": "assistant", "content": [{"type": "output_text", "text": "yo"}]},
        {"type": "function_call", "id": "fc_1", "call_id": "c", "name": "f", "arguments": "{\"file_id\": \"x\"}"},
        {"type": "reasoning", "id": "rs_1", "encrypted_content": "opaque", "summary": []},
    ]}
    assert DIALECTS["openai-responses"].references(body) == []


def test_anthropic_tool_inputs_are_no_references_but_nested_files_are() -> None:
    body = {"model": "c", "messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "read", "input": {"file_id": "mine"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "search_result", "source": "s", "title": "t", "content": [{"type": "text", "text": "x"}]},
            {"type": "document", "source": {"type": "content", "content": [
                {"type": "image", "source": {"type": "file", "file_id": "file_deep"}}]}}]}]},
    ]}
    assert found("anthropic-messages", body) == [
        ("messages[1].content[0].content[1].source.content[0].source.file_id", "file", "file_deep")]


def test_gemini_spellings_and_public_urls() -> None:
    assert found("gemini", {"cached_content": "cachedContents/1", "contents": [{"parts": [
        {"file_data": {"file_uri": "https://youtu.be/x"}}, {"fileData": {"fileUri": "files/a"}}]}]}) == [
        ("cachedContent", "cached_content", "cachedContents/1"), ("contents[0].parts[1].fileData.fileUri", "file", "files/a")]
    assert stored_file("https://generativelanguage.googleapis.com/v1beta/files/a")
    assert stored_file("HTTPS://user@Storage.GoogleAPIs.com:443/bucket/o")
    assert stored_file("gs://bucket/object") and stored_file(None) and stored_file("files/abc")
    assert not stored_file("https://www.youtube.com/watch?v=1") and not stored_file("https://googleapis.com.evil.org/x")


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_sdk_shaped_requests_without_references_skip_the_walk(name: str) -> None:
    """The byte search says no for the requests each SDK sends most (nothing stored referenced)."""
    dialect = DIALECTS[name]
    for body in REQUEST_SEEDS[dialect.provider]:
        if not dialect.references(body) and '"id"' not in json.dumps(body):
            assert not dialect.may_reference(json.dumps(body, ensure_ascii=False).encode()), body


def test_an_escaped_field_name_makes_the_body_walked() -> None:
    raw = b'{"model": "m", "input": "hi", "previous\\u005fresponse_id": "resp_1"}'
    dialect = DIALECTS["openai-responses"]
    assert dialect.may_reference(raw)
    assert dialect.references(json.loads(raw)) == [StoredReference("previous_response_id", "response", "resp_1")]


@given(data=st.data())
@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_references_never_raise_and_never_escape_the_byte_search(name: str, data: st.DataObject) -> None:
    dialect = DIALECTS[name]
    body = data.draw(st.one_of(json_objects, mutations(REQUEST_SEEDS[dialect.provider])))
    references = dialect.references(body)
    assert all(isinstance(ref, StoredReference) and isinstance(ref.id, str) for ref in references)
    if references:
        assert dialect.may_reference(orjson.dumps(body))
