"""Every kind of reference to stored content, in every API: refused naming the field (refuse, and checked,
which admits only reply ids it delivered), forwarded with a WARNING and an audit record (allow). Opaque blobs
the provider made and verifies (encrypted reasoning, thinking signatures) and public URLs are no references."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google.genai import errors, types

from tests.support.bodies import USER, chat_body, messages_body, responses_body
from tests.support.bodies import gemini_body as gemini
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import (
    ANTHROPIC_AUTH,
    GEMINI_AUTH,
    OPENAI_AUTH,
    Proxy,
    in_thread,
    split_at_refusal,
)

AUTH = {
    "openai": OPENAI_AUTH,
    "gemini": GEMINI_AUTH,
    "anthropic": ANTHROPIC_AUTH,
}
PATHS = {
    "responses": ("openai", "/v1/responses"),
    "chat": ("openai", "/v1/chat/completions"),
    "messages": ("anthropic", "/v1/messages"),
    "count_tokens": ("anthropic", "/v1/messages/count_tokens"),
    "gemini": ("gemini", "/v1beta/models/gemini-2.5-flash:generateContent"),
    "gemini_stream": ("gemini", "/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
    "count_gemini": ("gemini", "/v1beta/models/gemini-2.5-flash:countTokens"),
    "embed": ("gemini", "/v1beta/models/text-embedding-004:embedContent"),
    "batch_embed": ("gemini", "/v1beta/models/text-embedding-004:batchEmbedContents"),
}
PNG_FILE = {"type": "file", "file_id": "file_011CNha8iCJcU1wXNR6q4V8w"}


responses = partial(responses_body, model="gpt-4.1")
messages = partial(messages_body, max_tokens=64)


UPLOADED = "https://generativelanguage.googleapis.com/v1beta/files/abc123"
# (api, body, the field the refusal names)
REFERENCES = [
    ("responses", responses(previous_response_id="resp_0123abc"), "previous_response_id"),
    ("responses", responses(conversation="conv_0123abc"), "conversation"),
    ("responses", responses(conversation={"id": "conv_0123abc"}), "conversation.id"),
    ("responses", responses(input=[{"type": "item_reference", "id": "msg_0123abc"}, USER]), "input[0].id"),
    ("responses", responses(input=[USER, {"id": "rs_0123abc"}]), "input[1].id"),
    # Items named by id alone: the provider puts back reasoning, or a compaction, it stored.
    ("responses", responses(input=[USER, {"type": "reasoning", "id": "rs_0123abc", "summary": []}]), "input[1].id"),
    ("responses", responses(input=[{"type": "compaction", "id": "cmp_0123abc"}, USER]), "input[0].id"),
    # A compaction's sealed summary of a whole conversation this proxy never delivered.
    ("responses", responses(input=[{"type": "compaction", "encrypted_content": "gAAAAABo-sealed-summary"}, USER]),
     "input[0].encrypted_content"),
    ("responses", responses(prompt={"id": "pmpt_0123abc", "version": "2", "variables": {"city": "Lima"}}), "prompt.id"),
    ("responses", responses(input=[{"role": "user", "content": [{"type": "input_text", "text": "read this"},
                                                                 {"type": "input_file", "file_id": "file-abc"}]}]),
     "input[0].content[1].file_id"),
    ("responses", responses(input=[{"role": "user", "content": [{"type": "input_image", "file_id": "file-img"}]}]),
     "input[0].content[0].file_id"),
    ("responses", responses(input=[USER, {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                                   {"type": "function_call_output", "call_id": "c1",
                                    "output": [{"type": "input_file", "file_id": "file-out"}]}]),
     "input[2].output[0].file_id"),
    ("responses", responses(tools=[{"type": "mcp", "server_label": "deepwiki", "server_url": "https://mcp.deepwiki.com/mcp"}]),
     "tools[0].server_url"),
    ("responses", responses(tools=[{"type": "mcp", "server_label": "mail", "connector_id": "connector_gmail"}]),
     "tools[0].connector_id"),
    ("responses", responses(tools=[{"type": "code_interpreter", "container": "cntr_0123abc"}]), "tools[0].container"),
    ("responses", responses(tools=[{"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["file-csv"]}}]),
     "tools[0].container.file_ids[0]"),
    ("responses", responses(tools=[{"type": "file_search", "vector_store_ids": ["vs_0123abc"]}]),
     "tools[0].vector_store_ids[0]"),
    ("responses", responses(tools=[{"type": "shell", "environment": {"type": "container_auto", "skills": [
        {"type": "skill_reference", "skill_id": "skill_0123abc"}]}}]), "tools[0].environment.skills[0]"),
    ("responses", responses(tools=[{"type": "shell", "environment": {"type": "container_reference",
                                                                     "container_id": "cntr_9"}}]),
     "tools[0].environment.container_id"),
    ("chat", chat_body({"role": "user", "content": [{"type": "text", "text": "summarise"},
                                                    {"type": "file", "file": {"file_id": "file-abc"}}]}, USER),
     "messages[0].content[1].file.file_id"),
    ("chat", chat_body({"role": "user", "content": "say hi"}, {"role": "assistant", "audio": {"id": "audio_0123abc"}}, USER),
     "messages[1].audio.id"),
    ("messages", messages([{"type": "document", "source": {"type": "file", "file_id": "file_011CNha8"}},
                           {"type": "text", "text": "summarise"}]), "messages[0].content[0].source.file_id"),
    ("messages", messages([{"type": "image", "source": {"type": "file", "file_id": "file_011CPng"}}]),
     "messages[0].content[0].source.file_id"),
    ("messages", messages([{"type": "container_upload", "file_id": "file_011Ccsv"}]), "messages[0].content[0].file_id"),
    ("messages", messages("hi", mcp_servers=[{"type": "url", "url": "https://mcp.example.com/sse", "name": "example"}]),
     "mcp_servers[0]"),
    ("messages", messages("hi", container="container_011abc"), "container"),
    ("messages", messages("hi", container={"skills": [{"type": "anthropic", "skill_id": "pptx", "version": "latest"}]}),
     "container.skills[0]"),
    ("count_tokens", messages([{"type": "tool_result", "tool_use_id": "t1", "content": [
        {"type": "document", "source": {"type": "file", "file_id": "file_011nested"}}]}]),
     "messages[0].content[0].content[0].source.file_id"),
    ("gemini", gemini(cachedContent="cachedContents/abc123"), "cachedContent"),
    ("gemini", gemini(cached_content="cachedContents/abc123"), "cachedContent"),
    ("gemini", gemini({"fileData": {"mimeType": "application/pdf", "fileUri": UPLOADED}}),
     "contents[0].parts[1].fileData.fileUri"),
    ("gemini_stream", gemini({"file_data": {"mime_type": "video/mp4", "file_uri": "files/abc123"}}),
     "contents[0].parts[1].fileData.fileUri"),
    ("gemini", gemini(systemInstruction={"parts": [{"fileData": {"fileUri": "gs://bucket/rules.txt"}}]}),
     "systemInstruction.parts[0].fileData.fileUri"),
    ("gemini", gemini({"functionResponse": {"name": "read", "response": {}, "parts": [
        {"fileData": {"mimeType": "image/png", "fileUri": UPLOADED}}]}}),
     "contents[0].parts[1].functionResponse.parts[0].fileData.fileUri"),
    ("gemini", gemini(tools=[{"fileSearch": {"fileSearchStoreNames": ["fileSearchStores/abc"]}}]),
     "tools[0].fileSearch.fileSearchStoreNames[0]"),
    ("count_gemini", {"generateContentRequest": {"model": "models/gemini-2.5-flash", **gemini(
        cachedContent="cachedContents/abc")}}, "generateContentRequest.cachedContent"),
    ("embed", {"content": {"parts": [{"fileData": {"fileUri": UPLOADED}}]}}, "content.parts[0].fileData.fileUri"),
    ("batch_embed", {"requests": [{"model": "models/text-embedding-004", "content": {"parts": [
        {"fileData": {"fileUri": UPLOADED}}]}}]}, "requests[0].content.parts[0].fileData.fileUri"),
]
# Not references: blobs the provider made and verifies, public URLs the provider fetches, new containers.
NO_REFERENCES = [
    ("responses", responses(input=[USER, {"type": "reasoning", "id": "rs_1", "summary": [],
                                          "encrypted_content": "gAAAAABo-opaque-blob"}])),
    ("responses", responses(input=[{"role": "user", "content": [
        {"type": "input_file", "file_url": "https://example.com/report.pdf"}]}])),
    ("responses", responses(tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])),
    ("messages", {"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": [
        USER, {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "let me think", "signature": "EqQBCkYIBxgCKkBopaque"},
            {"type": "redacted_thinking", "data": "EmwKAhgBEgy3opaque"}, {"type": "text", "text": "hello"}]},
        {"role": "user", "content": "more"}]}),
    ("messages", messages([{"type": "image", "source": {"type": "url", "url": "https://example.com/chart.png"}}])),
    ("gemini", gemini({"fileData": {"mimeType": "video/mp4", "fileUri": "https://www.youtube.com/watch?v=abc"}})),
    ("gemini", {"contents": [{"role": "model", "parts": [{"text": "ok", "thoughtSignature": "CiQBopaque"}]},
                             {"role": "user", "parts": [{"text": "and?"}]}]}),
]


async def post(proxy: Proxy, api: str, body: dict[str, Any] | bytes) -> httpx.Response:
    provider, path = PATHS[api]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(proxy.url + path, content=content,
                                 headers={**AUTH[provider], "content-type": "application/json"})


def error_message(api: str, response: httpx.Response) -> str:
    """The message, read where each provider's SDK reads it (so the shape is the provider's)."""
    body = response.json()
    if PATHS[api][0] == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        return body["error"]["message"]
    if PATHS[api][0] == "gemini":
        assert body["error"]["code"] == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
        return body["error"]["message"]
    assert body["error"]["code"] == "capsem_stored_content"
    return body["error"]["message"]


@pytest.mark.parametrize("mode", ["refuse", "checked"])
@pytest.mark.parametrize(("api", "body", "field"), REFERENCES, ids=[f"{api}:{field}" for api, _, field in REFERENCES])
async def test_a_reference_is_refused_naming_its_field(
    start_proxy, proxy_settings, fake: FakeUpstream, mode: str, api: str, body: dict[str, Any], field: str
) -> None:
    proxy = await start_proxy(proxy_settings, stored_content=mode)
    response = await post(proxy, api, body)
    assert response.status_code == 400, response.text
    message = error_message(api, response)
    assert message.startswith(f"{field} refers to ") and f"(--stored-content {mode})" in message
    assert response.headers["x-capsem-decision"] == "block"
    assert fake.requests == []


@pytest.mark.parametrize("mode", ["refuse", "checked"])
@pytest.mark.parametrize(("api", "body"), NO_REFERENCES, ids=[f"{api}-{n}" for n, (api, _) in enumerate(NO_REFERENCES)])
async def test_opaque_blobs_and_public_urls_are_no_references(
    start_proxy, proxy_settings, fake: FakeUpstream, mode: str, api: str, body: dict[str, Any]
) -> None:
    proxy = await start_proxy(proxy_settings, stored_content=mode)
    response = await post(proxy, api, body)
    assert response.status_code == 200, response.text
    assert len(fake.requests) == 1


async def test_a_field_name_spelled_with_escapes_is_still_found(start_proxy, proxy_settings, fake: FakeUpstream) -> None:
    proxy = await start_proxy(proxy_settings, stored_content="refuse")
    raw = b'{"model": "gpt-4.1", "input": "hi", "previous\\u005fresponse_id": "resp_0123abc"}'
    response = await post(proxy, "responses", raw)
    assert response.status_code == 400 and fake.requests == []
    assert "previous_response_id refers to" in error_message("responses", response)


async def test_refuse_refuses_even_our_own_reply(start_proxy, proxy_settings, fake: FakeUpstream) -> None:
    checked = await start_proxy(proxy_settings)
    first = (await post(checked, "responses", responses())).json()["id"]
    refusing = await start_proxy(proxy_settings, stored_content="refuse")  # the same state directory
    assert (await post(checked, "responses", responses(previous_response_id=first))).status_code == 200
    response = await post(refusing, "responses", responses(previous_response_id=first))
    assert response.status_code == 400 and response.json()["error"]["param"] == "previous_response_id"


async def test_allow_forwards_each_reference_with_a_warning_and_an_audit_record(
    start_proxy, proxy_settings, fake: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    audit = tmp_path / "audit.jsonl"
    proxy = await start_proxy(proxy_settings, stored_content="allow", audit_log=str(audit))
    body = responses(previous_response_id="resp_0123abc", conversation="conv_0123abc",
                     tools=[{"type": "mcp", "server_label": "x", "server_url": "https://mcp.example.com"}])
    response = await post(proxy, "responses", body)
    assert response.status_code == 400  # the provider's own answer: it knows no such reply
    assert fake.requests[0].json["conversation"] == "conv_0123abc"
    request_id = response.headers["x-capsem-request-id"]
    warnings = [record.getMessage() for record in caplog.records
                if record.name == "capsem_proxyd.stored" and record.levelno == logging.WARNING]
    assert len(warnings) == 3
    for line, field in zip(warnings, ["previous_response_id", "conversation", "tools[0].server_url"]):
        assert f"request_id={request_id}" in line and f" field={field} " in line and "tenant_id=" in line
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    stored = [record for record in records if record["type"] == "stored_content"]
    assert [(r["field"], r["kind"], r["id"], r["decision"], r["request_id"]) for r in stored] == [
        ("previous_response_id", "response", "resp_0123abc", "allowed", request_id),
        ("conversation", "conversation", "conv_0123abc", "allowed", request_id),
        ("tools[0].server_url", "mcp_server", "https://mcp.example.com", "allowed", request_id),
    ]


async def test_refusals_and_admissions_are_audited(start_proxy, proxy_settings, fake: FakeUpstream, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    proxy = await start_proxy(proxy_settings, audit_log=str(audit))
    first = (await post(proxy, "responses", responses())).json()["id"]
    assert (await post(proxy, "responses", responses(previous_response_id=first))).status_code == 200
    assert (await post(proxy, "chat", chat_body({"role": "user", "content": [
        {"type": "file", "file": {"file_id": "file-abc"}}]}, USER))).status_code == 400
    stored = [json.loads(line) for line in audit.read_text().splitlines() if '"stored_content"' in line]
    assert [(r["field"], r["decision"]) for r in stored] == [
        ("previous_response_id", "admitted"), ("messages[0].content[0].file.file_id", "refused")]


# -- each SDK raises its own error for a refusal --------------------------------------------


async def test_the_sdks_raise_their_own_refusal_errors(start_proxy, proxy_settings, fake: FakeUpstream) -> None:
    proxy = await start_proxy(proxy_settings, stored_content="refuse")
    with pytest.raises(openai.BadRequestError, match=r"conversation refers to content stored at the provider"):
        await in_thread(lambda: proxy.openai().responses.create(model="gpt-4.1", input="hi", conversation="conv_1"))
    with pytest.raises(anthropic.BadRequestError, match=r"mcp_servers\[0\] refers to"):
        await in_thread(lambda: proxy.anthropic().messages.create(
            model="claude-sonnet-4-6", max_tokens=64, messages=[USER],
            extra_body={"mcp_servers": [{"type": "url", "url": "https://mcp.example.com/sse", "name": "x"}]}))

    def cached() -> Any:
        client = proxy.gemini()  # kept alive for the call: a collected client closes its connections
        return client.models.generate_content(model="gemini-2.5-flash", contents="hi",
                                              config=types.GenerateContentConfig(cached_content="cachedContents/abc123"))

    with pytest.raises(errors.ClientError) as raised:
        await in_thread(cached)
    assert raised.value.code == 400 and "cachedContent refers to" in str(raised.value)
    assert fake.requests == []


# -- items of a reply this proxy delivered (issue 20, class 11) --------------------------------------------

SEALED = "gAAAAABo-a-sealed-summary-of-the-conversation"


def reply_with_items(response_id: str, store: bool = True) -> dict[str, Any]:
    """A Responses reply whose output has reasoning, a compaction and a message, each with its id."""
    return {
        "id": response_id, "object": "response", "created_at": 1, "status": "completed", "model": "gpt-4.1",
        "store": store, "output": [
            {"type": "reasoning", "id": f"rs_{response_id}", "summary": []},
            {"type": "compaction", "id": f"cmp_{response_id}", "encrypted_content": SEALED + response_id},
            {"type": "message", "id": f"msg_{response_id}", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "Compacted.", "annotations": []}]},
        ],
    }


def follow_ups(response_id: str) -> list[tuple[dict[str, Any], str]]:
    """Requests naming the items of ``response_id``'s reply, and the field each names."""
    return [
        (responses(input=[USER, {"type": "reasoning", "id": f"rs_{response_id}", "summary": []}]), "input[1].id"),
        (responses(input=[{"type": "compaction", "id": f"cmp_{response_id}"}, USER]), "input[0].id"),
        (responses(input=[{"type": "compaction", "encrypted_content": SEALED + response_id}, USER]),
         "input[0].encrypted_content"),
        (responses(input=[{"type": "item_reference", "id": f"rs_{response_id}"}, USER]), "input[0].id"),
    ]


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events)


async def test_items_of_a_delivered_reply_are_admitted_to_its_tenant_only(
    start_proxy, proxy_settings, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(proxy_settings)
    fake.script(Reply(raw_body=json.dumps(reply_with_items("resp_json1")).encode()))
    assert (await post(proxy, "responses", responses())).status_code == 200
    for body, _ in follow_ups("resp_json1"):
        response = await post(proxy, "responses", body)
        assert response.status_code == 200, response.text
    other = await start_proxy(proxy_settings, stored_content="checked")
    for body, field in follow_ups("resp_json1"):  # the same items, from another tenant
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(other.url + "/v1/responses", json=body,
                                         headers={"authorization": "Bearer sk-test-other-tenant-7a6b5c4d3e2f"})
        assert response.status_code == 400, response.text
        assert error_message("responses", response).startswith(f"{field} refers to ")


async def test_items_of_a_delivered_stream_are_admitted_those_of_a_cut_one_never(
    start_proxy, proxy_settings, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(proxy_settings)
    whole = reply_with_items("resp_sse1")
    created = {**whole, "status": "in_progress", "output": []}
    fake.script(Reply(content_type="text/event-stream", raw_body=sse(
        {"type": "response.created", "sequence_number": 0, "response": created},
        {"type": "response.completed", "sequence_number": 1, "response": whole})))
    async with httpx.AsyncClient(timeout=10) as client:
        streamed = await client.post(proxy.url + "/v1/responses", json=responses(stream=True), headers=OPENAI_AUTH)
    assert streamed.status_code == 200 and "response.completed" in streamed.text
    for body, _ in follow_ups("resp_sse1"):
        assert (await post(proxy, "responses", body)).status_code == 200
    # A stream cut by a policy: its items, stated in the very event that was refused, are never admitted.
    blocked = reply_with_items("resp_sse2")
    blocked["output"][2]["content"][0]["text"] = "capsem_block"
    fake.script(Reply(content_type="text/event-stream", raw_body=sse(
        {"type": "response.created", "sequence_number": 0, "response": {**blocked, "status": "in_progress",
                                                                        "output": []}},
        {"type": "response.completed", "sequence_number": 1, "response": blocked})))
    async with httpx.AsyncClient(timeout=10) as client:
        cut = await client.post(proxy.url + "/v1/responses", json=responses(stream=True), headers=OPENAI_AUTH)
    relayed, ending = split_at_refusal(cut.content)
    assert "capsem_block" not in relayed and "CAPSEM policy 'Debug'" in ending
    for body, field in follow_ups("resp_sse2"):
        response = await post(proxy, "responses", body)
        assert response.status_code == 400 and error_message("responses", response).startswith(f"{field} refers to ")


async def test_items_of_a_reply_the_provider_does_not_store_are_never_admitted_by_id(
    start_proxy, proxy_settings, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(proxy_settings)
    fake.script(Reply(raw_body=json.dumps(reply_with_items("resp_nostore", store=False)).encode()))
    assert (await post(proxy, "responses", responses(store=False))).status_code == 200
    for body, field in follow_ups("resp_nostore"):
        response = await post(proxy, "responses", body)
        assert response.status_code == 400 and error_message("responses", response).startswith(f"{field} refers to ")


async def test_the_sdk_sends_a_compaction_back_and_the_proxy_admits_it(
    start_proxy, proxy_settings, fake: FakeUpstream
) -> None:
    """The openai SDK's own round trip: the output items of one reply given back as the next input."""
    proxy = await start_proxy(proxy_settings)
    fake.script(Reply(raw_body=json.dumps(reply_with_items("resp_sdk1")).encode()))
    first = await in_thread(lambda: proxy.openai().responses.create(model="gpt-4.1", input="compact this"))
    items = [item.model_dump(exclude_none=True) for item in first.output]
    second = await in_thread(lambda: proxy.openai().responses.create(model="gpt-4.1", input=[*items, USER]))
    assert second.status == "completed"
    forged = [{"type": "compaction", "encrypted_content": SEALED + "forged"}, USER]
    with pytest.raises(openai.BadRequestError, match=r"input\[0\]\.encrypted_content refers to"):
        await in_thread(lambda: proxy.openai().responses.create(model="gpt-4.1", input=forged))
