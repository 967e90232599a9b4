"""JSON-RPC 2.0 as MCP uses it: what one message is, and the answers the hop makes itself. No I/O.

One HTTP body is one message: a JSON array (a batch, which the 2025-06-18
revision removed) is refused, so each message is checked and logged as
itself. A message is read once (orjson, duplicate keys are the parser's
last-wins, as the server's would be) and what the hop needs is kept beside
the parsed object: its kind, id, method and, for ``tools/call``, the tool.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

# The revisions of the initialize handshake this hop speaks. 2026-07-28 (stateless, server/discover) is not
# served in this version: its probe is answered with an error, so clients fall back to the handshake.
PROTOCOL_VERSIONS = ("2025-06-18", "2025-11-25")
LATEST = PROTOCOL_VERSIONS[-1]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INTERNAL_ERROR = -32603
# A policy refused the message (a server-defined code: clients show the message).
POLICY_REFUSED = -32001


class Kind(Enum):
    REQUEST = "request"
    NOTIFICATION = "notification"
    RESULT = "result"
    ERROR = "error"


class Malformed(ValueError):
    """Not one JSON-RPC message; ``code`` is the JSON-RPC error code to answer with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class Message:
    """One parsed JSON-RPC message and what the hop reads of it."""

    body: dict[str, Any]
    kind: Kind
    id: Any = None
    method: str = ""

    @property
    def params(self) -> dict[str, Any]:
        params = self.body.get("params")
        return params if isinstance(params, dict) else {}

    @property
    def tool(self) -> str:
        """The tool a ``tools/call`` names ('' for any other message)."""
        name = self.params.get("name") if self.method == "tools/call" else None
        return name if isinstance(name, str) else ""


def parse(raw: bytes | str) -> Message:
    """One message; Malformed for anything else (a batch, invalid JSON, no method/result/error)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Malformed(PARSE_ERROR, "Parse error: the body is not JSON.") from None
    if isinstance(body, list):
        raise Malformed(INVALID_REQUEST, "JSON-RPC batches are not accepted: send one message per request.")
    return classify(body)


def classify(body: Any) -> Message:
    """The kind of an already parsed message; Malformed when it is none."""
    if not isinstance(body, dict) or body.get("jsonrpc") != "2.0":
        raise Malformed(INVALID_REQUEST, "Invalid request: not a JSON-RPC 2.0 message.")
    method = body.get("method")
    if isinstance(method, str):
        if "id" in body:
            return Message(body, Kind.REQUEST, body["id"], method)
        return Message(body, Kind.NOTIFICATION, None, method)
    if method is not None:
        raise Malformed(INVALID_REQUEST, "Invalid request: method is not a string.")
    if "error" in body:
        return Message(body, Kind.ERROR, body.get("id"))
    if "result" in body:
        return Message(body, Kind.RESULT, body.get("id"))
    raise Malformed(INVALID_REQUEST, "Invalid request: neither a request, a notification nor a response.")


def error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    """A JSON-RPC error response to ``request_id`` (None where the request's id is unknown)."""
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def tool_error(request_id: Any, message: str) -> dict[str, Any]:
    """A ``tools/call`` result the model reads as the tool's failure (``isError``), not the protocol's:
    MCP clients hand it to the model, which goes on with its turn instead of the agent stopping."""
    return {
        "jsonrpc": "2.0", "id": request_id,
        "result": {"content": [{"type": "text", "text": message}], "isError": True},
    }


def dumps(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)
