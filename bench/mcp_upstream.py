"""A minimal MCP server for the bench: Streamable HTTP, JSON replies, no SDK (its CPU is not measured,
but a light server keeps the load core free for the reader).

``python -m bench.mcp_upstream --port P`` serves ``/mcp/NAME``: ``initialize``, ``tools/list`` (``TOOLS``
tools whose descriptions carry NAME, so each server's listing is new to a proxy), ``tools/call`` of
``echo`` (a short text) and of ``report`` (a result of ``--result-bytes`` of prose with phone numbers and
IP addresses, different on each call so no check is answered from a cache).
"""

from __future__ import annotations

import argparse
import itertools
import json
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from bench.floor import lifespan

TOOLS = 100
VERSION = "2025-06-18"
LINE = ("Ticket {n}: the customer called from +1 415 555 {p:04d} about the outage seen from host 10.0.{a}.{b}; "
        "the agent restarted the service, checked the logs and closed the ticket after the customer confirmed.\n")


def listing(server: str) -> list[dict[str, Any]]:
    """``TOOLS`` tools, the first two the ones the bench calls."""
    return [{"name": ("echo", "report")[index] if index < 2 else f"tool_{index:03d}", "title": f"Tool {index}",
             "description": f"Looks up record kind {index} in the {server} catalogue and returns its fields as "
                            "JSON. Use it when the user asks about that kind of record.",
             "inputSchema": {"type": "object", "properties": {"id": {"type": "string"}, "limit": {"type": "integer"}},
                             "required": ["id"]}}
            for index in range(TOOLS)]


def report(size: int, call: int) -> str:
    lines = []
    total = 0
    for n in itertools.count():
        line = LINE.format(n=f"{call}-{n}", p=(call * 7 + n) % 10_000, a=n % 250, b=call % 250)
        lines.append(line)
        total += len(line)
        if total >= size:
            return "".join(lines)[:size]
    raise AssertionError  # pragma: no cover


def app_for(result_bytes: int) -> Any:
    calls = itertools.count()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await lifespan(receive, send)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        request = json.loads(body) if body else {}
        method = request.get("method")
        server = scope["path"].rsplit("/", 1)[-1]
        if "id" not in request:  # a notification
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if method == "initialize":
            result: dict[str, Any] = {"protocolVersion": VERSION, "capabilities": {"tools": {}},
                                      "serverInfo": {"name": "bench", "version": "1"}}
        elif method == "tools/list":
            result = {"tools": listing(server)}
        elif method == "tools/call":
            name = request["params"]["name"]
            text = report(result_bytes, next(calls)) if name == "report" else f"echo: {request['params']['arguments']}"
            result = {"content": [{"type": "text", "text": text}], "isError": False}
        else:
            result = {}
        reply = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(reply)),
                                (b"mcp-session-id", b"bench-session")]})
        await send({"type": "http.response.body", "body": reply})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mcp_upstream", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--result-bytes", type=int, default=1_000_000)
    args = parser.parse_args()
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.accesslog = None
    trio.run(serve, app_for(args.result_bytes), config)


if __name__ == "__main__":
    main()
