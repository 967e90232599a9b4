"""Shared plumbing between the HTTP server and the provider formats.

The server records a `RecordedRequest`, resolves a `Turn` (request + scripted
reply + the text to send), asks a provider handler for a `Plan` (status,
headers, and either a whole body or a sequence of stream events), then sends
that plan, injecting delays and faults. Provider modules only build plans.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import trio

from .script import Reply, compact_json


@dataclass
class RecordedRequest:
    """A request as the fake received it; tests assert on these.

    `client_closed` becomes True if the client went away before the whole
    answer was sent; `done` is set once the exchange is over for any reason.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    target: str = ""
    status: int | None = None
    client_closed: bool = False
    done: trio.Event = field(default_factory=trio.Event, repr=False, compare=False)

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or None when it is empty or not JSON."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def body_dict(self) -> dict[str, Any]:
        """The JSON body when it is an object, else {} (handlers tolerate junk)."""
        value = self.json
        return value if isinstance(value, dict) else {}


@dataclass
class StreamRecord:
    """Lifecycle of one streamed reply, for checking cancellation propagation.

    `closed` is set when the stream ends for any reason: all events sent
    (`completed`), the client went away (`client_closed`), or a fault.
    """

    path: str
    request: RecordedRequest = field(repr=False)
    fault: str | None = None
    events_sent: int = 0
    completed: bool = False
    client_closed: bool = False
    closed: trio.Event = field(default_factory=trio.Event, repr=False, compare=False)


@dataclass
class StoredResponse:
    """A Responses reply the fake keeps (``store`` not false), as OpenAI does: by id, for its key only.

    Kept when the reply is created, before its stream ends, so a stream blocked
    mid-way is still there to be referenced, as at the real provider.
    """

    owner: str  # the Authorization header it was created with
    response: dict[str, Any]


@dataclass
class Turn:
    """One exchange, resolved: everything a provider handler needs."""

    request: RecordedRequest
    reply: Reply
    user_text: str | None
    model: str
    created: int = field(default_factory=lambda: int(time.time()))
    stored: dict[str, StoredResponse] = field(default_factory=dict)  # the fake's stored replies (Responses API)

    @property
    def body(self) -> dict[str, Any]:
        return self.request.body_dict

    @cached_property
    def text_chunks(self) -> list[str]:
        """The streamed text pieces (computed once: long streams repeat them a lot)."""
        return self.reply.text_chunks(self.user_text)

    @cached_property
    def text(self) -> str:
        return "".join(self.text_chunks)

    @property
    def prompt_tokens(self) -> int:
        """A plausible, deterministic input token count (~4 bytes per token)."""
        return max(1, len(self.request.body) // 4)

    @property
    def completion_tokens(self) -> int:
        """A plausible, deterministic output token count."""
        args = sum(len(c.arguments_json) for c in self.reply.tool_calls)
        return max(1, (len(self.text) + len(self.reply.thoughts) + args) // 4)


@dataclass
class Plan:
    """What to send back: a whole `body`, or `events` sent one HTTP chunk each.

    For stream faults, `garbage` is what "malformed_sse" sends and
    `error_event(events_sent)` builds the provider's in-stream error.
    """

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    events: Iterable[bytes] | None = None
    garbage: bytes = b"data: {not json\n\n"
    error_event: Callable[[int], bytes] | None = None

    @property
    def is_stream(self) -> bool:
        return self.events is not None


JSON_HEADERS = [("content-type", "application/json")]
SSE_HEADERS = [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")]


def json_plan(obj: Any, status: int = 200, *, pretty: bool = True, content_type: str = "application/json") -> Plan:
    """A whole-body JSON answer (OpenAI and Gemini pretty-print, Anthropic does not)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False) if pretty else compact_json(obj)
    return Plan(status=status, headers=[("content-type", content_type)], body=text.encode())


def sse(data: Any, event: str | None = None, *, sep: str = "\n\n") -> bytes:
    """One server-sent event; `data` is JSON-encoded unless already a str."""
    payload = data if isinstance(data, str) else compact_json(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}{sep}".encode()


def sse_plan(events: Iterable[bytes], **kwargs: Any) -> Plan:
    """A streamed answer with the usual SSE headers."""
    return Plan(headers=list(SSE_HEADERS), events=events, **kwargs)
