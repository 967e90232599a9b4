"""One interpretation of every body: what is checked is exactly what the provider reads.

A request body with two readings is refused (400, provider-shaped, naming the
problem) before any policy runs or anything goes upstream; a reply is decoded
by its own content type, never by what the request asked for.
"""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import GEMINI_AUTH, GEMINI_KEY, OPENAI_KEY, Proxy, split_at_refusal

CHAT = "/v1/chat/completions"
BEARER = {"authorization": f"Bearer {OPENAI_KEY}", "content-type": "application/json"}
GEMINI = "/v1beta/models/gemini-2.5-flash:generateContent"

AMBIGUOUS: dict[str, tuple[str, dict[str, str], bytes, str]] = {
    "duplicate key at the top": (CHAT, BEARER, b'{"model": "m", "messages": [], "messages": [{"role": "user", '
                                                b'"content": "hi"}]}', "'messages' twice"),
    "duplicate key deep inside": (CHAT, BEARER, b'{"model": "m", "messages": [{"role": "user", "content": "capsem_block",'
                                                b' "content": "hello"}]}', "'content' twice"),
    "a charset other than UTF-8": (CHAT, {**BEARER, "content-type": "application/json; charset=latin-1"},
                                   b'{"model": "m", "messages": []}', "charset is 'latin-1'"),
    "bytes that are not UTF-8": (CHAT, BEARER, b'{"model": "m", "messages": [{"role": "user", "content": "\xe9"}]}',
                                 "not UTF-8"),
    "a byte-order mark": (CHAT, BEARER, "\ufeff".encode() + b'{"model": "m", "messages": []}', "byte-order mark"),
    "NaN": (CHAT, BEARER, b'{"model": "m", "temperature": NaN, "messages": []}', "NaN"),
    "an unpaired surrogate": (CHAT, BEARER, b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}',
                              "surrogate"),
    "a Gemini field in both spellings": (GEMINI, {"x-goog-api-key": GEMINI_KEY, "content-type": "application/json"},
                                         orjson.dumps({"contents": [], "systemInstruction": {"parts": [{"text": "a"}]},
                                                       "system_instruction": {"parts": [{"text": "capsem_block"}]}}),
                                         "'systemInstruction' twice"),
    # Deep inside, where only the parse looks (the pipeline reads no walk of its own for it), and on an
    # endpoint of Gemini's other dialect (countTokens).
    "a Gemini field in both spellings deep inside": (
        GEMINI, {"x-goog-api-key": GEMINI_KEY, "content-type": "application/json"},
        orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "hi"}, {"functionResponse": {
            "name": "f", "response": {}, "parts": [{"inlineData": {"mimeType": "text/plain", "data": "aGk="},
                                                     "inline_data": {"mime_type": "text/plain", "data": "aGk="}}]}}]}]}),
        "'inlineData' twice"),
    "a Gemini field in both spellings in a countTokens request": (
        GEMINI.replace(":generateContent", ":countTokens"),
        {"x-goog-api-key": GEMINI_KEY, "content-type": "application/json"},
        orjson.dumps({"generateContentRequest": {"contents": [{"role": "user", "parts": [
            {"text": "hi", "thoughtSignature": "c2ln", "thought_signature": "c2ln"}]}]}}),
        "'thoughtSignature' twice"),
}


@pytest.mark.parametrize("name", AMBIGUOUS)
async def test_a_body_with_two_readings_is_refused_before_upstream(name: str, proxy: Proxy, fake: FakeUpstream) -> None:
    path, headers, body, says = AMBIGUOUS[name]
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert says in response.json()["error"]["message"]
    assert fake.requests == []


async def test_a_stream_request_answered_with_json_is_checked_as_json(proxy: Proxy, fake: FakeUpstream) -> None:
    reply = {"id": "c", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "capsem_block"}, "finish_reason": "stop"}]}
    fake.script(Reply(raw_body=orjson.dumps(reply), content_type="application/json"))
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.post(CHAT, json={"model": "m", "stream": True, "messages": [{"role": "user",
                                                                                          "content": "hi"}]},
                                     headers=BEARER)
    assert response.status_code == 400 and "CAPSEM policy 'Debug'" in response.text


async def test_a_stream_request_answered_with_something_else_is_a_502_not_silence(
    proxy: Proxy, fake: FakeUpstream
) -> None:
    fake.script(Reply(raw_body=b"<html>capsem_block</html>", content_type="text/html"))
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.post(CHAT, json={"model": "m", "stream": True, "messages": [{"role": "user",
                                                                                          "content": "hi"}]},
                                     headers=BEARER)
    assert response.status_code == 502
    assert "text/html" in response.json()["error"]["message"] and "capsem_block" not in response.text


async def test_gemini_decodes_by_the_replys_content_type_not_by_alt(proxy: Proxy, fake: FakeUpstream) -> None:
    """No ``alt=sse`` asked, but the reply is SSE: read as SSE (a JSON-array decoder would see garbage)."""
    events = [{"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": text}]}}]}
              for text in ("capsem_", "block")]
    fake.script(Reply(raw_body=b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events),
                      content_type="text/event-stream"))
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        response = await client.post("/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                                     json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
                                     headers=GEMINI_AUTH)
    relayed, ending = split_at_refusal(response.content)
    assert '"block"' not in relayed  # the marker's second half, which completes it, never went out
    assert "CAPSEM policy 'Debug'" in ending
