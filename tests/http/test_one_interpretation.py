"""One interpretation beyond the body: the headers and query that pick a tenant or a reading.

A key picks the tenant (its policy profile, its allow-list entry), so it must
be the key the provider authenticates with: two copies of a key header, or two
different keys where the provider reads one (``?key=`` and ``x-goog-api-key``;
``x-api-key`` and ``Authorization``), are refused. So are two Content-Type
headers (the proxy reads the first; a provider may read the other), a charset
it does not recognise as one (``charset*=``, RFC 2231), and a body under a
type that is not JSON (text, a form, multipart), which a provider reads as that
type, never certainly as the JSON checked. Each refusal is a 400 in the
provider's shape that names the problem, before anything goes upstream.

The client suites (tests/clients, tests/frameworks) show what real clients
send: application/json on every call, one key in one place, no client sends
anything refused here.
"""

from __future__ import annotations

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.dialects.anthropic import AnthropicMessagesDialect
from capsem_proxyd.dialects.gemini import GeminiDialect
from capsem_proxyd.dialects.openai_chat import OpenAIChatDialect
from capsem_proxyd.dialects.query import QueryMap
from capsem_proxyd.errors import ProxyError
from capsem_proxyd.proxy.body import parse_request_body
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import ANTHROPIC_KEY, GEMINI_KEY, OPENAI_KEY, Proxy

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
GEMINI = "/v1beta/models/gemini-2.5-flash:generateContent"
OTHER_KEY = "sk-other-tenant-key-000000000000"
JSON = ("content-type", "application/json")
CHAT_BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
MESSAGES_BODY = orjson.dumps({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
GEMINI_BODY = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
VERSION = ("anthropic-version", "2023-06-01")

Headers = list[tuple[str, str]]
# name: (path, headers, body, code, what the message names)
REFUSED: dict[str, tuple[str, Headers, bytes, str, str]] = {
    "two Authorization headers": (CHAT, [("authorization", f"Bearer {OPENAI_KEY}"),
                                         ("authorization", f"Bearer {OTHER_KEY}"), JSON],
                                  CHAT_BODY, "duplicate_header", "authorization header more than once"),
    "the same Authorization header twice": (CHAT, [("authorization", f"Bearer {OPENAI_KEY}")] * 2 + [JSON],
                                            CHAT_BODY, "duplicate_header", "authorization"),
    "two x-api-key headers": (MESSAGES, [("x-api-key", ANTHROPIC_KEY), ("x-api-key", OTHER_KEY), VERSION, JSON],
                              MESSAGES_BODY, "duplicate_header", "x-api-key header"),
    "x-api-key and a Bearer token, different": (MESSAGES, [("x-api-key", ANTHROPIC_KEY),
                                                           ("authorization", f"Bearer {OTHER_KEY}"), VERSION, JSON],
                                                MESSAGES_BODY, "conflicting_api_keys",
                                                "x-api-key header and the authorization header"),
    "two x-goog-api-key headers": (GEMINI, [("x-goog-api-key", GEMINI_KEY), ("x-goog-api-key", OTHER_KEY), JSON],
                                   GEMINI_BODY, "duplicate_header", "x-goog-api-key header"),
    "?key= and x-goog-api-key, different": (f"{GEMINI}?key={OTHER_KEY}", [("x-goog-api-key", GEMINI_KEY), JSON],
                                            GEMINI_BODY, "conflicting_api_keys", "x-goog-api-key header and ?key="),
    "?key= twice": (f"{GEMINI}?key={GEMINI_KEY}&key={OTHER_KEY}", [JSON], GEMINI_BODY, "duplicate_parameter",
                    "'key' more than once"),
    "an OAuth token beside the Gemini key": (GEMINI, [("x-goog-api-key", GEMINI_KEY),
                                                      ("authorization", "Bearer ya29.other-project"), JSON],
                                             GEMINI_BODY, "conflicting_api_keys", "two different keys"),
    "?access_token= beside the Gemini key": (f"{GEMINI}?access_token=ya29.x", [("x-goog-api-key", GEMINI_KEY), JSON],
                                             GEMINI_BODY, "conflicting_api_keys", "?access_token="),
    "a key header the hop-by-hop list would drop": (MESSAGES, [("x-api-key", OTHER_KEY), ("connection", "x-api-key"),
                                                               ("authorization", f"Bearer {ANTHROPIC_KEY}"),
                                                               VERSION, JSON],
                                                    MESSAGES_BODY, "conflicting_api_keys", "two different keys"),
    "two Content-Type headers": (CHAT, [("authorization", f"Bearer {OPENAI_KEY}"), JSON,
                                        ("content-type", "text/plain")],
                                 CHAT_BODY, "duplicate_header", "content-type header more than once"),
    "charset*= (RFC 2231)": (CHAT, [("authorization", f"Bearer {OPENAI_KEY}"),
                                    ("content-type", "application/json; charset*=utf-8''latin-1")],
                             CHAT_BODY, "unsupported_content_type", "'charset*'"),
    "text/plain": (CHAT, [("authorization", f"Bearer {OPENAI_KEY}"), ("content-type", "text/plain")],
                   CHAT_BODY, "unsupported_content_type", "'text/plain'"),
    "a form": (MESSAGES, [("x-api-key", ANTHROPIC_KEY), VERSION,
                          ("content-type", "application/x-www-form-urlencoded")],
               MESSAGES_BODY, "unsupported_content_type", "application/x-www-form-urlencoded"),
    "multipart": (GEMINI, [("x-goog-api-key", GEMINI_KEY), ("content-type", "multipart/form-data; boundary=x")],
                  GEMINI_BODY, "unsupported_content_type", "multipart/form-data"),
    "two types in one header": (CHAT, [("authorization", f"Bearer {OPENAI_KEY}"),
                                       ("content-type", "application/json, text/plain")],
                                CHAT_BODY, "unsupported_content_type", "content type"),
    "a query that is not UTF-8": (f"{CHAT}?note=%E9t%E9", [("authorization", f"Bearer {OPENAI_KEY}"), JSON],
                                  CHAT_BODY, "invalid_encoding", "not UTF-8"),
}


def error_of(path: str, response: httpx.Response) -> tuple[str | None, str]:
    """(code, message) of a refusal, read in the shape of the path's provider (only OpenAI's has a code)."""
    error = response.json()["error"]
    if path.startswith("/v1beta"):
        assert error["status"] == "INVALID_ARGUMENT"
        return None, error["message"]
    if path.startswith(MESSAGES):
        assert response.json()["type"] == "error" and error["type"] == "invalid_request_error"
        return None, error["message"]
    assert error["type"] == "invalid_request_error"
    return error["code"], error["message"]


@pytest.mark.parametrize("name", REFUSED)
async def test_a_request_read_two_ways_outside_its_body_is_refused_by_name(
    name: str, proxy: Proxy, fake: FakeUpstream
) -> None:
    path, headers, body, code, says = REFUSED[name]
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 400, response.text
    got_code, message = error_of(path, response)
    assert says in message
    assert got_code in (code, None)
    assert fake.requests == []
    for key in (OPENAI_KEY, GEMINI_KEY, ANTHROPIC_KEY, OTHER_KEY):
        assert key not in response.text


ACCEPTED: dict[str, tuple[str, Headers, bytes]] = {
    "application/json": (CHAT, [("authorization", f"Bearer {OPENAI_KEY}"), JSON], CHAT_BODY),
    "any case, a UTF-8 charset": (CHAT, [("authorization", f"Bearer {OPENAI_KEY}"),
                                         ("content-type", 'Application/JSON ; Charset="UTF-8"')], CHAT_BODY),
    "no content type": (CHAT, [("authorization", f"Bearer {OPENAI_KEY}")], CHAT_BODY),
    "the same Gemini key in ?key= and the header": (f"{GEMINI}?key={GEMINI_KEY}",
                                                     [("x-goog-api-key", GEMINI_KEY), JSON], GEMINI_BODY),
    "the same Anthropic key in x-api-key and Bearer": (MESSAGES, [("x-api-key", ANTHROPIC_KEY),
                                                                  ("authorization", f"Bearer {ANTHROPIC_KEY}"),
                                                                  VERSION, JSON], MESSAGES_BODY),
    "an empty x-api-key beside the Bearer key": (MESSAGES, [("x-api-key", ""),
                                                            ("authorization", f"Bearer {ANTHROPIC_KEY}"),
                                                            VERSION, JSON], MESSAGES_BODY),
}


@pytest.mark.parametrize("name", ACCEPTED)
async def test_one_key_in_one_or_two_places_and_json_are_served(name: str, proxy: Proxy, fake: FakeUpstream) -> None:
    path, headers, body = ACCEPTED[name]
    fake.script(Reply(text="fine"))
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 200, response.text
    (received,) = fake.requests
    assert received.body == body


async def test_a_model_lookup_with_two_keys_is_refused_too(proxy: Proxy, fake: FakeUpstream) -> None:
    """Relayed routes carry no content but still pick a tenant (the allow-list holds there)."""
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.get(f"/v1beta/models?key={OTHER_KEY}", headers={"x-goog-api-key": GEMINI_KEY})
    assert response.status_code == 400 and "two different keys" in response.json()["error"]["message"]
    assert fake.requests == []


# -- the rules on their own, no I/O ----------------------------------------------------------------------------------

CARRIERS = {
    "openai": (OpenAIChatDialect(), ["authorization"], []),
    "anthropic": (AnthropicMessagesDialect(), ["x-api-key", "authorization"], []),
    "gemini": (GeminiDialect(), ["x-goog-api-key", "authorization"], ["key", "access_token"]),
}
KEYS = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="&=+%#"), min_size=1,
               max_size=12)


@given(provider=st.sampled_from(sorted(CARRIERS)), data=st.data())
def test_two_different_keys_in_any_two_carriers_are_one_problem_and_one_key_never_is(
    provider: str, data: st.DataObject
) -> None:
    dialect, header_names, param_names = CARRIERS[provider]
    places = [("header", name) for name in header_names] + [("param", name) for name in param_names]
    chosen = data.draw(st.lists(st.sampled_from(places), min_size=1, max_size=len(places), unique=True))
    keys = data.draw(st.lists(KEYS, min_size=len(chosen), max_size=len(chosen)))
    headers: dict[str, str] = {}
    query = []
    for (kind, name), key in zip(chosen, keys, strict=True):
        if kind == "header":
            headers[name] = f"Bearer {key}" if name == "authorization" else key
        else:
            query.append(f"{name}={key}")
    problem = dialect.key_carriers.key_problem(headers, QueryMap("&".join(query).encode()))
    if len(set(keys)) > 1:
        assert problem is not None and problem.code == "conflicting_api_keys"
    else:
        assert problem is None


MEDIA_TYPES = st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                               "application/jsonl", "application/vnd.api+json", "text/json", "application/*",
                               "application/json-seq", "json", "application/json/x", "application"])
PARAMETERS = st.sampled_from(["charset=latin-1", "charset*=utf-8''utf-8", "boundary=x", "charset=utf-8; charset=utf-8",
                              "charset=\"utf-16\"", "q=1", "charset", "charset=utf-8 x"])


@given(media_type=MEDIA_TYPES, parameter=st.one_of(st.none(), PARAMETERS))
def test_only_json_in_utf8_is_read_as_json(media_type: str, parameter: str | None) -> None:
    for content_type in ([f"{media_type}"] if parameter is None else [f"{media_type}; {parameter}",
                                                                      f"application/json; {parameter}"]):
        with pytest.raises(ProxyError) as refused:
            parse_request_body(b'{"a": 1}', content_type)
        assert refused.value.status == 400
        assert refused.value.code in ("unsupported_content_type", "unsupported_charset")
