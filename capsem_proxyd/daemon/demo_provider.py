"""A stand-in provider for ``capsem-proxyd demo``: canned answers in the three APIs' wire formats.

A newcomer should see the proxy answer, stream and block before they own a
provider key. The demo command starts this server on a loopback port of its
own and points every upstream of the proxy at it; the proxy in front is the
real one (its key handling, its checks, its policies), only the model is fake.

It answers what the quick start sends, and no more:

* OpenAI Chat Completions, ``POST /v1/chat/completions``, JSON or streamed
  (``data:`` events ending with ``data: [DONE]``);
* Anthropic Messages, ``POST /v1/messages``, JSON or streamed (the
  ``message_start`` ... ``message_stop`` events);
* Gemini ``:generateContent`` and ``:streamGenerateContent?alt=sse`` under
  ``/v1`` and ``/v1beta``.

Anything else gets the API's own 404. The answer repeats nothing of the
prompt, so what a policy blocks in the demo is the prompt itself.

The standard library's threading HTTP server is enough here: one process,
a handful of requests, and no event loop shared with the proxy. A streamed
answer is written an event at a time with chunked transfer encoding and a
short pause between events, as a model's tokens arrive.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER = "Hello! This answer comes from capsem-proxyd's demo provider, through the proxy's checks."
# Seconds between two streamed events: slow enough to watch, fast enough for a test.
EVENT_INTERVAL = 0.02


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [word + " " for word in words[:-1]] + [words[-1]]


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def openai_chat(body: dict[str, Any]) -> tuple[dict[str, Any] | None, list[bytes]]:
    """A Chat Completions answer: the JSON body, or the stream's events."""
    model, created, reply_id = str(body.get("model") or "demo"), int(time.time()), _id("chatcmpl-")
    usage = {"prompt_tokens": 8, "completion_tokens": len(_words(ANSWER)), "total_tokens": 8 + len(_words(ANSWER))}
    if not body.get("stream"):
        return {
            "id": reply_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": usage,
        }, []

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse({"id": reply_id, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": word}) for word in _words(ANSWER)]
    events += [chunk({}, "stop"), b"data: [DONE]\n\n"]
    return None, events


def anthropic_messages(body: dict[str, Any]) -> tuple[dict[str, Any] | None, list[bytes]]:
    """A Messages answer: the JSON body, or the stream's events."""
    model, message_id = str(body.get("model") or "demo"), _id("msg_01")
    output_tokens = len(_words(ANSWER))
    usage = {"input_tokens": 8, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
             "output_tokens": output_tokens, "service_tier": "standard"}
    message = {"id": message_id, "type": "message", "role": "assistant", "model": model,
               "content": [{"type": "text", "text": ANSWER}], "stop_reason": "end_turn", "stop_sequence": None,
               "usage": usage}
    if not body.get("stream"):
        return message, []
    start = dict(message, content=[], stop_reason=None, usage=dict(usage, output_tokens=1))
    events = [
        _sse({"type": "message_start", "message": start}, "message_start"),
        _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
             "content_block_start"),
        _sse({"type": "ping"}, "ping"),
    ]
    events += [
        _sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}},
             "content_block_delta")
        for word in _words(ANSWER)
    ]
    events += [
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
              "usage": {"output_tokens": output_tokens}}, "message_delta"),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return None, events


def gemini_generate(model: str, stream: bool) -> tuple[dict[str, Any] | None, list[bytes]]:
    """A generateContent answer, or streamGenerateContent's events (``alt=sse``)."""
    response_id = _id("")

    def response(text: str, final: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        usage: dict[str, Any] = {"promptTokenCount": 8, "totalTokenCount": 8}
        if final:
            candidate["finishReason"] = "STOP"
            usage = {"promptTokenCount": 8, "candidatesTokenCount": len(_words(ANSWER)),
                     "totalTokenCount": 8 + len(_words(ANSWER))}
        return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": response_id}

    if not stream:
        return response(ANSWER, True), []
    words = _words(ANSWER)
    return None, [
        f"data: {json.dumps(response(word, index == len(words) - 1), separators=(',', ':'))}\r\n\r\n".encode()
        for index, word in enumerate(words)
    ]


def not_found(path: str) -> tuple[int, dict[str, Any]]:
    """The 404 of the API the path belongs to."""
    message = f"the demo provider does not answer {path}"
    if path.startswith(("/v1beta/", "/v1/models/")) and ":" in path:
        return 404, {"error": {"code": 404, "message": message, "status": "NOT_FOUND"}}
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return 404, {"type": "error", "error": {"type": "not_found_error", "message": message}}
    return 404, {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}


class DemoHandler(BaseHTTPRequestHandler):
    """One request: route by path, answer JSON or an event stream."""

    protocol_version = "HTTP/1.1"
    server_version = "capsem-proxyd-demo-provider"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: the proxy in front logs every request already."""

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        path, _, query = self.path.partition("?")
        if path == "/v1/chat/completions":
            answer, events = openai_chat(body)
        elif path == "/v1/messages":
            answer, events = anthropic_messages(body)
        elif path.startswith(("/v1/models/", "/v1beta/models/")) and path.endswith(
            (":generateContent", ":streamGenerateContent")
        ):
            model = path.split("/models/", 1)[1].split(":", 1)[0]
            stream = path.endswith(":streamGenerateContent")
            if stream and "alt=sse" not in query:
                self._json(400, {"error": {"code": 400, "message": "the demo provider streams with alt=sse only",
                                           "status": "INVALID_ARGUMENT"}})
                return
            answer, events = gemini_generate(model, stream)
        else:
            self._json(*not_found(path))
            return
        if answer is not None:
            self._json(200, answer)
        else:
            self._stream(events)

    def do_GET(self) -> None:
        self._json(*not_found(self.path.partition("?")[0]))

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: list[bytes]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("cache-control", "no-cache")
        self.end_headers()
        for index, event in enumerate(events):
            if index:
                time.sleep(EVENT_INTERVAL)
            self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class DemoProvider:
    """The server, on a loopback port the kernel picks, answering from a daemon thread."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._server = ThreadingHTTPServer((host, 0), DemoHandler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-provider", daemon=True)

    def start(self) -> DemoProvider:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
