"""An ASGI request body read whole, within a size and a time, for every path that needs one whole.

The data plane (a provider route) and the MCP hop (one JSON-RPC message per
POST) both check a body only once all of it is here, so both read it the same
way: chunk by chunk from ``receive``, refused as soon as it grows past its
limit (a client cannot make the proxy hold more than that), and refused when it
has not arrived within the body timeout (a client that trickles a body cannot
hold a connection and its memory for ever). What a refusal looks like is the
caller's: a provider error for a provider route, a JSON-RPC error on the MCP
hop, so the caller hands in how to make each.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

Receive = Callable[[], Awaitable[dict[str, Any]]]


class ClientGone(Exception):
    """The client left before its request body was complete."""


async def read_request_body(
    receive: Receive,
    *,
    limit: int,
    timeout: float | None,
    too_large: Callable[[], Exception],
    too_slow: Callable[[], Exception],
    keep: bool = True,
) -> bytes:
    """The whole body, at most ``limit`` bytes (else ``too_large()`` is raised), within ``timeout`` seconds
    (None or 0: no limit; else ``too_slow()``); ``ClientGone`` when the client disconnects first.
    ``keep=False`` drains the body and returns ``b""`` (a request answered without it)."""
    chunks: list[bytes] = []
    size = 0
    with trio.move_on_after(timeout or float("inf")) as deadline:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large()
            if keep:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    assert deadline.cancelled_caught
    raise too_slow()
