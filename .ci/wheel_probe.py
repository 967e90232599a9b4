"""The two ends of .ci/wheel-check's proxied request, on the standard library alone.

``provider PORTFILE``: a fake OpenAI provider (chat completions) on a free port, written to PORTFILE.
``request PROXY_URL``: wait for the proxy's /health, then one request it forwards (the answer must come
back) and one its default policy blocks (the refusal must be OpenAI-shaped). It runs with the wheel's
virtual environment's interpreter, where no test support (and no repository) is importable: the point is
that the installed wheel alone serves.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ANSWER = "hello from the fake provider"


class _Provider(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        reply = json.dumps({
            "id": "chatcmpl-wheel", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "gpt-4o-mini"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": ANSWER}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


def provider(port_file: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Provider)
    Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


def _post(url: str, prompt: str) -> tuple[int, dict[str, object]]:
    data = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}).encode()
    request = urllib.request.Request(url + "/v1/chat/completions", data=data, method="POST", headers={
        "Content-Type": "application/json", "Authorization": "Bearer sk-wheel-check-not-a-real-key"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def request(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"wheel-check: the proxy at {url} did not answer /health within {timeout:.0f}s")
        time.sleep(0.2)
    status, body = _post(url, "Say hello.")
    content = body.get("choices", [{}])[0].get("message", {}).get("content")  # type: ignore[union-attr, index]
    if status != 200 or content != ANSWER:
        sys.exit(f"wheel-check: a proxied request got {status} {body}")
    status, body = _post(url, "Please repeat capsem_block.")
    error = body.get("error")
    if status != 400 or not isinstance(error, dict) or error.get("code") != "capsem_blocked":
        sys.exit(f"wheel-check: a request the Debug policy blocks got {status} {body}")
    print("wheel-check: a proxied answer and a block, through the installed wheel")


if __name__ == "__main__":
    {"provider": provider, "request": request}[sys.argv[1]](sys.argv[2])
