"""A stream that begins with a UTF-8 byte-order mark, read through the proxy by a WHATWG-conformant reader.

Node's ``fetch`` and ``TextDecoder`` (which drops one leading BOM, as browsers
and eventsource-parser do) with the HTML standard's event-stream parsing, in a
few lines of JavaScript: the reader a browser app has. Upstream sends
``\\ufeffdata: {... "capsem_block" ...}``; the proxy must read that first event
as the reader does and cut the stream before it.
"""

from __future__ import annotations

import json
import shutil

import orjson
import pytest
import trio

from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import GEMINI_KEY, OPENAI_KEY, Proxy

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed: no WHATWG reader to run")

BOM = "\ufeff".encode()
# fetch + TextDecoder (stream mode: one leading BOM dropped) + the event-stream interpretation of the HTML standard.
WHATWG_READER = r"""
const [url, headers, body, mode] = process.argv.slice(1);
const response = await fetch(url, {method: "POST", headers: JSON.parse(headers), body});
const decoder = new TextDecoder("utf-8");
const events = [];
let buffer = "", data = [], pendingCR = false;
function line(text) {
  if (text === "") { if (data.length) events.push(data.join("\n")); data = []; return; }
  if (text.startsWith(":")) return;
  const colon = text.indexOf(":");
  const name = colon < 0 ? text : text.slice(0, colon);
  let value = colon < 0 ? "" : text.slice(colon + 1);
  if (value.startsWith(" ")) value = value.slice(1);
  if (name === "data") data.push(value);
}
function feed(text) {
  buffer += text;
  let match;
  while ((match = /\r\n|\r|\n/.exec(buffer)) !== null) {
    if (match[0] === "\r" && match.index === buffer.length - 1) break;  // a CR that may start a CRLF
    line(buffer.slice(0, match.index));
    buffer = buffer.slice(match.index + match[0].length);
  }
}
if (mode === "json") {  // Gemini's streamed JSON array, read whole: text() decodes as TextDecoder does
  process.stdout.write(JSON.stringify({status: response.status, events: JSON.parse(await response.text())}));
  process.exit(0);
}
const reader = response.body.getReader();
for (;;) {
  const {done, value} = await reader.read();
  if (done) break;
  feed(decoder.decode(value, {stream: true}));
}
feed(decoder.decode());
process.stdout.write(JSON.stringify({status: response.status, events}));
"""


async def read_with_node(url: str, headers: dict[str, str], body: dict, mode: str = "sse") -> tuple[int, list]:
    """Status and the data of every event a WHATWG reader dispatches for this request
    (``mode="json"``: the elements of a streamed JSON array)."""
    with trio.fail_after(60):
        done = await trio.run_process(
            ["node", "--input-type=module", "-e", WHATWG_READER, url, json.dumps(headers), json.dumps(body), mode],
            capture_stdout=True, capture_stderr=True,
        )
    result = json.loads(done.stdout)
    return result["status"], result["events"]


def chat_chunk(text: str) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m",
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def gemini_chunk(text: str) -> bytes:
    chunk = {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": text}]}}]}
    return b"data: " + orjson.dumps(chunk) + b"\r\n\r\n"


def read_text(events: list[str]) -> str:
    """The text a client shows, from the chunks it parsed (Chat deltas or Gemini parts)."""
    shown = []
    for data in events:
        if not data.startswith("{"):
            continue
        chunk = json.loads(data)
        shown += [choice["delta"].get("content") or "" for choice in chunk.get("choices", [])]
        shown += [part.get("text", "") for candidate in chunk.get("candidates", [])
                  for part in candidate["content"]["parts"]]
    return "".join(shown)


async def test_the_first_event_after_a_mark_is_checked_as_a_browser_reads_it(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(raw_body=BOM + chat_chunk("capsem_block") + chat_chunk(" more") + b"data: [DONE]\n\n",
                      content_type="text/event-stream"))
    status, events = await read_with_node(
        proxy.url + "/v1/chat/completions",
        {"authorization": f"Bearer {OPENAI_KEY}", "content-type": "application/json"},
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert status == 200
    assert "capsem_block" not in read_text(events)
    assert any("CAPSEM policy 'Debug'" in data for data in events)  # the reader saw the stream end in the block


async def test_a_mark_before_a_gemini_stream_and_a_marker_across_events(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(raw_body=BOM + gemini_chunk("capsem_") + gemini_chunk("block"), content_type="text/event-stream"))
    status, events = await read_with_node(
        proxy.url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        {"x-goog-api-key": GEMINI_KEY, "content-type": "application/json"},
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    )
    assert status == 200
    assert "capsem_block" not in read_text(events)


async def test_a_clean_stream_after_a_mark_reaches_the_reader_whole(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(raw_body=BOM + chat_chunk("Hello") + chat_chunk(", world") + b"data: [DONE]\n\n",
                      content_type="text/event-stream"))
    status, events = await read_with_node(
        proxy.url + "/v1/chat/completions",
        {"authorization": f"Bearer {OPENAI_KEY}", "content-type": "application/json"},
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert (status, read_text(events), events[-1]) == (200, "Hello, world", "[DONE]")


async def test_a_mark_before_a_gemini_json_array_stream(proxy: Proxy, fake: FakeUpstream) -> None:
    """The streamed JSON array (no ``alt=sse``): a reader's UTF-8 decode drops the mark and parses the array."""
    elements = [{"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": text}]}}]}
                for text in ("A first sentence that is long enough to go out. capsem_", "block")]
    fake.script(Reply(raw_body=BOM + b"[" + b",\r\n".join(map(orjson.dumps, elements)) + b"]",
                      content_type="application/json"))
    status, array = await read_with_node(
        proxy.url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        {"x-goog-api-key": GEMINI_KEY, "content-type": "application/json"},
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, mode="json",
    )
    assert status == 200
    assert "capsem_block" not in read_text([json.dumps(element) for element in array if "candidates" in element])
    assert "CAPSEM policy 'Debug'" in json.dumps(array[-1])
