"""Where each API refers to stored content (``Dialect.references``): the forms each API has, what is no
reference (echoed items, tool inputs, public URLs), and a walk that never raises on anything."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.dialects.base import Dialect, sealed_digest
from capsem_proxyd.dialects.gemini import stored_file
from capsem_proxyd.http import routes
from capsem_proxyd.views import StoredItem, StoredReference
from tests.support.fuzzing import REQUEST_SEEDS, json_objects, mutations

DIALECTS: dict[str, Dialect] = routes.DIALECTS


def found(name: str, body: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(ref.field, ref.kind, ref.id) for ref in DIALECTS[name].references(body)]


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


def test_reasoning_and_compactions_by_id_alone_or_sealed_are_references() -> None:
    """The provider puts back stored reasoning or a compaction named by id; a compaction's sealed summary
    is a whole conversation, named by its digest (never logged whole)."""
    body = {"model": "gpt-4.1", "input": [
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "compaction", "id": "cmp_1"},
        {"type": "compaction", "id": "cmp_2", "encrypted_content": "sealed"},
        {"type": "compaction", "encrypted_content": {"not": "a string"}},
    ]}
    assert found("openai-responses", body) == [
        ("input[0].id", "item", "rs_1"), ("input[1].id", "item", "cmp_1"),
        ("input[2].encrypted_content", "sealed", sealed_digest("sealed")),
        ("input[3].encrypted_content", "sealed", sealed_digest({"not": "a string"})),
    ]
    assert sealed_digest("sealed").startswith("sha256:") and len(sealed_digest("sealed")) == 71


def test_a_stored_reply_delivers_its_items_and_sealed_compactions() -> None:
    reply = {"id": "resp_1", "status": "completed", "output": [
        {"type": "reasoning", "id": "rs_1"}, {"type": "compaction", "id": "cmp_1", "encrypted_content": "s"},
        {"type": "message", "id": "msg_1"}, "odd"]}
    assert DIALECTS["openai-responses"].stored_items(reply) == (
        StoredItem("item", "rs_1"), StoredItem("item", "cmp_1"), StoredItem("sealed", sealed_digest("s")))
    assert DIALECTS["openai-chat"].stored_items(reply) == ()


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
def test_what_the_sdks_send_most_holds_no_reference(name: str) -> None:
    dialect = DIALECTS[name]
    assert all(dialect.references(body) == [] for body in REQUEST_SEEDS[dialect.provider])


def test_a_server_tool_result_names_its_files_where_they_are() -> None:
    body = {"model": "c", "messages": [{"role": "assistant", "content": [
        {"type": "text", "text": "ran it"},
        {"type": "code_execution_tool_result", "tool_use_id": "s", "content": {
            "type": "code_execution_result", "stdout": "", "content": [{"type": "code_execution_output", "file_id": "f1"}]}}]}]}
    assert found("anthropic-messages", body) == [("messages[0].content[1].content.content[0].file_id", "file", "f1")]


@given(data=st.data())
@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_references_never_raise(name: str, data: st.DataObject) -> None:
    dialect = DIALECTS[name]
    body = data.draw(st.one_of(json_objects, mutations(REQUEST_SEEDS[dialect.provider])))
    references = dialect.references(body)
    assert all(isinstance(ref, StoredReference) and isinstance(ref.id, str) for ref in references)
