"""The route table on its own, no socket: what each provider path resolves to, where it goes upstream,
and what is refused in which provider's shape.

The e2e tests show the SDKs reach the right upstream through a running proxy; these pin the table
itself, where a wrong entry would send a request to the wrong provider or unchecked past the policies.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from capsem_proxyd.config import Settings
from capsem_proxyd.http.routes import Refusal, RouteTable, provider_for

SETTINGS = Settings(
    openai_upstream="https://openai.test/v1",
    gemini_upstream="https://gemini.test/",
    anthropic_upstream="https://anthropic.test",
)
NO_HEADERS: dict[str, str] = {}
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "k"}
GEMINI_HEADERS = {"x-goog-api-key": "k"}


def table(**changes: Any) -> RouteTable:
    return RouteTable(replace(SETTINGS, **changes))


@pytest.mark.parametrize(
    ("path", "provider", "endpoint", "upstream"),
    [
        ("/v1/chat/completions", "openai", "chat.completions", "https://openai.test/v1/chat/completions"),
        ("/v1/responses", "openai", "responses", "https://openai.test/v1/responses"),
        ("/v1/completions", "openai", "completions", "https://openai.test/v1/completions"),
        ("/v1/embeddings", "openai", "embeddings", "https://openai.test/v1/embeddings"),
        ("/v1/moderations", "openai", "moderations", "https://openai.test/v1/moderations"),
        ("/v1/messages", "anthropic", "messages", "https://anthropic.test/v1/messages"),
        ("/v1/messages/count_tokens", "anthropic", "count_tokens", "https://anthropic.test/v1/messages/count_tokens"),
    ],
)
def test_each_fixed_api_is_read_by_its_own_dialect_and_goes_to_its_provider(
    path: str, provider: str, endpoint: str, upstream: str
) -> None:
    route = table().resolve("POST", path, NO_HEADERS, {})
    assert route is not None
    assert route.dialect.provider == provider
    assert endpoint in route.dialect.endpoint
    assert str(route.upstream_url) == upstream
    assert route.checked and route.passthrough is None


@pytest.mark.parametrize(
    ("action", "streams"),
    [("generateContent", False), ("streamGenerateContent", True), ("countTokens", False),
     ("embedContent", False), ("batchEmbedContents", False)],
)
@pytest.mark.parametrize("version", ["v1", "v1beta"])
def test_a_gemini_action_names_its_model_and_whether_it_streams(version: str, action: str, streams: bool) -> None:
    path = f"/{version}/models/gemini-2.5-flash:{action}"
    route = table().resolve("POST", path, GEMINI_HEADERS, {})
    assert route is not None and route.checked
    assert route.dialect.provider == "gemini"
    assert route.path_model == "gemini-2.5-flash" and route.path_stream is streams
    assert str(route.upstream_url) == "https://gemini.test" + path


def test_streaming_and_generating_gemini_are_named_apart() -> None:
    routes = table()
    generate = routes.resolve("POST", "/v1beta/models/m:generateContent", GEMINI_HEADERS, {})
    stream = routes.resolve("POST", "/v1beta/models/m:streamGenerateContent", GEMINI_HEADERS, {})
    assert generate is not None and stream is not None
    assert generate.dialect.endpoint != stream.dialect.endpoint


@pytest.mark.parametrize("model", ["..", "%2e%2e", "a%2Fb", "a\\b"])
def test_a_gemini_model_name_that_could_leave_the_path_is_refused_as_gemini(model: str) -> None:
    with pytest.raises(Refusal) as refused:
        table().resolve("POST", f"/v1beta/models/{model}:generateContent", GEMINI_HEADERS, {})
    assert refused.value.dialect.provider == "gemini"
    assert refused.value.error.status == 400 and "Invalid model name" in refused.value.error.message


@pytest.mark.parametrize(
    ("headers", "query", "provider", "upstream"),
    [
        (NO_HEADERS, {}, "openai", "https://openai.test/v1/models/gpt-4o"),
        (ANTHROPIC_HEADERS, {}, "anthropic", "https://anthropic.test/v1/models/gpt-4o"),
        (GEMINI_HEADERS, {}, "gemini", "https://gemini.test/v1/models/gpt-4o"),
        (NO_HEADERS, {"key": "k"}, "gemini", "https://gemini.test/v1/models/gpt-4o"),
    ],
)
def test_a_model_lookup_goes_unchecked_to_the_provider_the_headers_name(
    headers: dict[str, str], query: dict[str, str], provider: str, upstream: str
) -> None:
    route = table().resolve("GET", "/v1/models/gpt-4o", headers, query)
    assert route is not None
    assert route.dialect.provider == provider and not route.checked  # no content to check
    assert route.path_model == "gpt-4o"
    assert str(route.upstream_url) == upstream


def test_the_model_list_has_no_model() -> None:
    route = table().resolve("GET", "/v1/models", NO_HEADERS, {})
    assert route is not None and route.path_model is None
    assert str(route.upstream_url) == "https://openai.test/v1/models"


@pytest.mark.parametrize("path", ["/health", "/metrics", "/", "/v2/chat/completions", "/anything"])
def test_paths_outside_every_provider_api_belong_to_the_control_plane(path: str) -> None:
    assert table().resolve("POST", path, NO_HEADERS, {}) is None
    assert table().resolve("GET", path, NO_HEADERS, {}) is None


@pytest.mark.parametrize("method", ["OPTIONS", "HEAD"])
def test_preflights_and_heads_on_provider_paths_are_the_control_planes(method: str) -> None:
    assert table().resolve(method, "/v1/chat/completions", NO_HEADERS, {}) is None


@pytest.mark.parametrize(
    ("method", "path", "headers", "provider"),
    [
        ("POST", "/v1/files", NO_HEADERS, "openai"),
        ("GET", "/v1/chat/completions", NO_HEADERS, "openai"),  # a proxied path, with the wrong method
        ("POST", "/v1/messages/batches", ANTHROPIC_HEADERS, "anthropic"),
        ("POST", "/v1beta/cachedContents", GEMINI_HEADERS, "gemini"),
        ("POST", "/v1beta/models/m:unknownAction", NO_HEADERS, "gemini"),
    ],
)
def test_a_provider_path_no_dialect_reads_is_refused_404_in_that_providers_shape(
    method: str, path: str, headers: dict[str, str], provider: str
) -> None:
    with pytest.raises(Refusal) as refused:
        table().resolve(method, path, headers, {})
    assert refused.value.dialect.provider == provider
    assert refused.value.error.status == 404 and path in refused.value.error.message


def test_an_operator_pattern_lets_a_path_through_unchecked_and_names_itself() -> None:
    routes = table(passthrough=("/v1/files*",))
    route = routes.resolve("POST", "/v1/files", NO_HEADERS, {})
    assert route is not None
    assert not route.checked and route.passthrough == "/v1/files*"
    assert route.dialect.provider == "openai"
    assert str(route.upstream_url) == "https://openai.test/v1/files"
    with pytest.raises(Refusal):  # outside the pattern: still refused
        routes.resolve("POST", "/v1/batches", NO_HEADERS, {})


def test_a_pass_through_path_that_would_leave_the_api_is_refused_400() -> None:
    with pytest.raises(Refusal) as refused:
        table(passthrough=("/v1/files*",)).resolve("POST", "/v1/files/../../admin", NO_HEADERS, {})
    assert refused.value.error.status == 400


@pytest.mark.parametrize(
    ("path", "headers", "query", "provider"),
    [
        ("/v1beta/models/m:generateContent", NO_HEADERS, {}, "gemini"),
        ("/v1alpha/anything", NO_HEADERS, {}, "gemini"),
        ("/v1/messages", NO_HEADERS, {}, "anthropic"),
        ("/v1/models", ANTHROPIC_HEADERS, {}, "anthropic"),
        ("/v1/models", GEMINI_HEADERS, {}, "gemini"),
        ("/v1/models", NO_HEADERS, {"key": "k"}, "gemini"),
        ("/v1/models", {"authorization": "Bearer k"}, {}, "openai"),
        # Anthropic's version header wins over a Gemini key: every Anthropic SDK call carries it.
        ("/v1/models", {**GEMINI_HEADERS, **ANTHROPIC_HEADERS}, {}, "anthropic"),
    ],
)
def test_provider_for_reads_the_path_then_the_callers_headers(
    path: str, headers: dict[str, str], query: dict[str, str], provider: str
) -> None:
    assert provider_for(path, headers, query) == provider


def test_upstream_bases_with_or_without_a_trailing_slash_give_the_same_urls() -> None:
    slashed = table(openai_upstream="https://openai.test/v1/", anthropic_upstream="https://anthropic.test/")
    for path in ("/v1/chat/completions", "/v1/messages"):
        a, b = table().resolve("POST", path, NO_HEADERS, {}), slashed.resolve("POST", path, NO_HEADERS, {})
        assert a is not None and b is not None and str(a.upstream_url) == str(b.upstream_url)
