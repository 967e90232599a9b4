"""The stack's own floor: bare Hypercorn (trio worker) apps, no Quart, no policy.

``python -m bench.floor --mode fixed`` answers every POST with the upstream's
own bytes, without an upstream: the ceiling of any app on this server stack
(the issue's "bare Hypercorn + trio" line). ``--mode forward`` relays each
request through one pooled ``httpx.AsyncClient`` the way its documentation
shows (``build_request`` + ``send(stream=True)``): a JSON reply read whole and
sent with its length, a stream relayed as it comes, nothing checked. That is
the stack floor of the performance target (the bare Hypercorn reply plus one
httpx exchange): what a proxy hop on Hypercorn + trio + httpx costs before it
does anything of its own. capsem-proxyd's distance from ``forward`` is the cost of
its parsing, checks, logs, metrics and error handling.
"""

from __future__ import annotations

import argparse
from typing import Any

import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from bench import payloads

_DROPPED = {"host", "content-length", "connection", "transfer-encoding", "accept-encoding"}


def fixed_app() -> Any:
    json_body, stream_body = payloads.chat_completion(), payloads.chat_stream()

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await lifespan(receive, send)
        request = await _read_body(receive)
        streamed = b'"stream":true' in request
        body = stream_body if streamed else json_body
        kind = b"text/event-stream" if streamed else b"application/json"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", kind), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    return app


def forward_app(upstream: str) -> Any:
    client = httpx.AsyncClient(base_url=upstream, timeout=60, limits=httpx.Limits(max_keepalive_connections=200))

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await lifespan(receive, send)
        body = await _read_body(receive)
        headers = [(name, value) for name, value in scope["headers"] if name.decode().lower() not in _DROPPED]
        path = scope["path"].removeprefix("/v1")
        request = client.build_request(scope["method"], path, headers=headers, content=body)
        response = await client.send(request, stream=True)
        try:
            kind = response.headers.get("content-type", "").encode()
            if not kind.startswith(b"text/event-stream"):
                # A JSON reply is read whole and sent in one piece with its length, as capsem-proxyd does
                # (it must see all of it before a policy can pass it): the cheapest a relay can be.
                content = await response.aread()
                await send({"type": "http.response.start", "status": response.status_code,
                            "headers": [(b"content-type", kind), (b"content-length", b"%d" % len(content))]})
                await send({"type": "http.response.body", "body": content})
                return
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(b"content-type", kind)]})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    return app


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def lifespan(receive: Any, send: Any) -> None:
    """ASGI lifespan answered: these apps have nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("fixed", "forward"), required=True)
    parser.add_argument("--upstream", help="provider base URL up to /v1 (forward mode)")
    args = parser.parse_args()
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.backlog = 4096
    config.accesslog = None
    app = fixed_app() if args.mode == "fixed" else forward_app(args.upstream)
    trio.run(serve, app, config)


if __name__ == "__main__":
    main()
