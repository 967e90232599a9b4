"""The query string is content too: it goes upstream as the client sent it.

Each API declares the parameters it knows with their shape (Gemini's system
parameters ``alt``, ``fields``, ``prettyPrint``, ``$.xgafv`` and their
``$``-names, its key; Anthropic's ``beta``; Azure OpenAI's ``api-version``).
Any other parameter, and a known one whose value is outside its shape, is
checked as prompt text (``name=value``), names and values alike. Real clients
send only ``alt=sse`` (google-genai, Gemini CLI) and ``beta=true`` (Claude
Code): those pass unchecked and reach the provider as they were sent.
"""

from __future__ import annotations

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.http.routes import DIALECTS
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import ANTHROPIC_AUTH, GEMINI_AUTH, OPENAI_AUTH, Proxy

GEMINI_MODEL = "/v1beta/models/gemini-2.5-flash"
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
# Every checked endpoint: (path, its key headers, a body it serves).
ENDPOINTS: dict[str, tuple[str, dict[str, str], dict]] = {
    "chat": ("/v1/chat/completions", dict(OPENAI_AUTH),
             {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    "responses": ("/v1/responses", dict(OPENAI_AUTH), {"model": "m", "input": "hi"}),
    "completions": ("/v1/completions", dict(OPENAI_AUTH), {"model": "m", "prompt": "hi"}),
    "embeddings": ("/v1/embeddings", dict(OPENAI_AUTH), {"model": "m", "input": "hi"}),
    "moderations": ("/v1/moderations", dict(OPENAI_AUTH), {"input": "hi"}),
    "messages": ("/v1/messages", dict(ANTHROPIC_AUTH),
                 {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    "count_tokens": ("/v1/messages/count_tokens", dict(ANTHROPIC_AUTH),
                     {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    "generateContent": (f"{GEMINI_MODEL}:generateContent", dict(GEMINI_AUTH), GEMINI_BODY),
    "streamGenerateContent": (f"{GEMINI_MODEL}:streamGenerateContent", dict(GEMINI_AUTH), GEMINI_BODY),
    "countTokens": (f"{GEMINI_MODEL}:countTokens", dict(GEMINI_AUTH), GEMINI_BODY),
    "embedContent": (f"{GEMINI_MODEL}:embedContent", dict(GEMINI_AUTH), {"content": {"parts": [{"text": "hi"}]}}),
}
CARRYING_THE_MARKER = {
    "a parameter no API knows": "prompt=capsem_block",
    "in its name": "capsem_block=1",
    "percent-encoded": "%70rompt=capsem%5Fblock",
    "after an allowed one": "alt=sse&note=capsem_block",
}


async def post(proxy: Proxy, path: str, query: str, headers: dict[str, str], body: dict) -> httpx.Response:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
        return await client.post(f"{path}?{query}", content=orjson.dumps(body),
                                 headers={**headers, "content-type": "application/json"})


@pytest.mark.parametrize("where", CARRYING_THE_MARKER)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_a_marker_in_the_query_is_blocked_before_upstream(
    endpoint: str, where: str, proxy: Proxy, fake: FakeUpstream
) -> None:
    path, headers, body = ENDPOINTS[endpoint]
    response = await post(proxy, path, CARRYING_THE_MARKER[where], headers, body)
    assert response.status_code == 400, response.text
    assert "CAPSEM policy 'Debug'" in response.text
    assert fake.requests == []


KNOWN_AND_IN_SHAPE = {
    "google-genai's alt=sse": (f"{GEMINI_MODEL}:streamGenerateContent", GEMINI_AUTH, GEMINI_BODY,
                               "alt=sse", {"alt": "sse"}),
    "Google's $-names and a field mask": (f"{GEMINI_MODEL}:generateContent", GEMINI_AUTH, GEMINI_BODY,
                                          "$alt=json;enum-encoding=int&$fields=candidates(content/parts/text),"
                                          "usageMetadata&prettyPrint=false&$.xgafv=2",
                                          {"$alt": "json;enum-encoding=int", "prettyPrint": "false",
                                           "$fields": "candidates(content/parts/text),usageMetadata", "$.xgafv": "2"}),
    "Claude Code's beta=true": ("/v1/messages", ANTHROPIC_AUTH, ENDPOINTS["messages"][2], "beta=true",
                                {"beta": "true"}),
    "Azure OpenAI's api-version": ("/v1/chat/completions", OPENAI_AUTH, ENDPOINTS["chat"][2],
                                   "api-version=2024-10-21", {"api-version": "2024-10-21"}),
    "a parameter no API knows, without the marker": ("/v1/chat/completions", OPENAI_AUTH, ENDPOINTS["chat"][2],
                                                     "note=hello%20there", {"note": "hello there"}),
}


@pytest.mark.parametrize("name", KNOWN_AND_IN_SHAPE)
async def test_what_clients_send_passes_and_reaches_the_provider_as_sent(
    name: str, proxy: Proxy, fake: FakeUpstream
) -> None:
    path, headers, body, query, received_query = KNOWN_AND_IN_SHAPE[name]
    fake.script(Reply(text="fine"))
    response = await post(proxy, path, query, dict(headers), body)
    assert response.status_code == 200, response.text
    (received,) = fake.requests
    assert received.query == received_query


OUT_OF_SHAPE = {
    "a field mask that is a free string": (f"{GEMINI_MODEL}:generateContent", GEMINI_AUTH, GEMINI_BODY,
                                           "$fields=capsem_block"),
    "alt beyond its members": (f"{GEMINI_MODEL}:streamGenerateContent", GEMINI_AUTH, GEMINI_BODY,
                               "alt=sse;capsem_block"),
    "beta beyond true/false": ("/v1/messages", ANTHROPIC_AUTH, ENDPOINTS["messages"][2], "beta=capsem_block"),
    "api-version beyond a version": ("/v1/chat/completions", OPENAI_AUTH, ENDPOINTS["chat"][2],
                                     "api-version=capsem_block"),
    "a known name given on another API": ("/v1/chat/completions", OPENAI_AUTH, ENDPOINTS["chat"][2],
                                          "alt=capsem_block"),
}


@pytest.mark.parametrize("name", OUT_OF_SHAPE)
async def test_a_known_parameter_outside_its_shape_is_content(name: str, proxy: Proxy, fake: FakeUpstream) -> None:
    path, headers, body, query = OUT_OF_SHAPE[name]
    response = await post(proxy, path, query, dict(headers), body)
    assert response.status_code == 400 and "CAPSEM policy 'Debug'" in response.text
    assert fake.requests == []


async def test_the_gemini_key_in_the_query_is_never_content(proxy: Proxy, fake: FakeUpstream) -> None:
    """The key picks the tenant; it never goes to a policy (nor, through one, to an audit record)."""
    fake.script(Reply(text="fine"))
    response = await post(proxy, f"{GEMINI_MODEL}:generateContent", "key=AIza-capsem_block-key", {}, GEMINI_BODY)
    assert response.status_code == 200, response.text
    assert fake.requests[0].query == {"key": "AIza-capsem_block-key"}


# -- the declarations on their own, no I/O ---------------------------------------------------------------------------

NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)


@given(dialect=st.sampled_from(sorted(DIALECTS)), name=NAMES, value=st.text(max_size=20),
       marker_in_name=st.booleans())
def test_any_parameter_an_api_does_not_know_is_content_name_and_value(
    dialect: str, name: str, value: str, marker_in_name: bool
) -> None:
    params = DIALECTS[dialect].query_params
    name, value = (name + "capsem_block", value) if marker_in_name else (name, value + "capsem_block")
    if name in params.shapes or name in params.keys:
        return
    assert params.content([("alt", "sse"), (name, value)])[-1] == f"{name}={value}"


@given(dialect=st.sampled_from(sorted(DIALECTS)), data=st.data())
def test_a_known_parameter_is_content_exactly_when_outside_its_shape(dialect: str, data: st.DataObject) -> None:
    params = DIALECTS[dialect].query_params
    if not params.shapes:
        return
    name = data.draw(st.sampled_from(sorted(params.shapes)))
    shape = params.shapes[name]
    assert shape.pattern is not None and shape.fits is not None  # a query value is a string: some string fits
    value = data.draw(st.one_of(st.from_regex(shape.pattern, fullmatch=True), st.text(max_size=20)))
    content = params.content([(name, value)])
    assert content == ([] if shape.fits(value) else [f"{name}={value}"])
