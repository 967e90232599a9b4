"""What a test scripts: the next replies of the fake provider.

A `Reply` describes one answer in provider-neutral terms (text, tool calls, an
error status, a transport fault...). The provider modules turn it into that
provider's wire format, so one `Reply` works against any endpoint.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TEXT = "Hello from the fake provider."
"""Text of the default reply, used when no scripted reply is queued."""

DEFAULT_CHUNK_SIZE = 8
"""Characters per streamed text piece when `Reply.chunks` is not given."""

FAULTS = frozenset(
    {
        "reset_before_headers",  # read the request, then close the TCP connection without answering
        "reset_mid_body",  # send headers and part of the body (half an event when streaming), then close
        "reset_mid_stream",  # send `fault_after_events` whole events, then close
        "malformed_sse",  # send `fault_after_events` good events, then garbage, then end the body cleanly
        "error_mid_stream",  # send `fault_after_events` good events, then the provider's in-stream error event
        "never_answer",  # never send anything; wait until the client goes away
        "truncated_chunked",  # announce a chunk, send only part of it, then close
    }
)
"""The transport/protocol faults a `Reply` can inject (see `Reply.fault`)."""


def new_id(prefix: str, length: int = 24) -> str:
    """A provider-looking random id, e.g. ``call_3f9a...``."""
    return prefix + secrets.token_hex(length // 2)


# The fake's own signatures over thinking (Anthropic ``signature``, Gemini ``thoughtSignature``): a request
# whose signed block was changed is refused, as the real providers refuse it. Signatures the fake did not
# make (other tests' placeholders) are not checked.
SIGNATURE_PREFIX = "fakesig1"


def sign(signed: str) -> str:
    """The fake's signature over ``signed`` (a thinking block's text, a part's text or call)."""
    return SIGNATURE_PREFIX + hashlib.sha256(signed.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def changed_signature(body: Any) -> str | None:
    """The provider's complaint when a block the fake signed was changed in ``body``, else None."""
    stack = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
            signature = item.get("signature") if item.get("type") == "thinking" else item.get("thoughtSignature")
            if not isinstance(signature, str) or not signature.startswith(SIGNATURE_PREFIX):
                continue
            if item.get("type") == "thinking":
                signed = item.get("thinking")
            else:
                signed = compact_json({key: value for key, value in item.items() if key != "thoughtSignature"})
            if not isinstance(signed, str) or sign(signed) != signature:
                return "Invalid `signature` in `thinking` block" if item.get("type") == "thinking" else (
                    "Thought signature is not valid.")
    return None


def compact_json(value: Any) -> str:
    """JSON the way providers put it inside strings (tool arguments) and SSE lines."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def split_text(text: str, size: int) -> list[str]:
    """Cut `text` into pieces of `size` characters; "" gives no pieces."""
    return [text[i : i + size] for i in range(0, len(text), max(1, size))]


@dataclass
class ToolCall:
    """A function/tool call the fake model makes.

    `id` is used as-is by every provider format (OpenAI `call_id`, Anthropic
    `tool_use.id`); Gemini does not send ids, like the real API.
    """

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: new_id("call_"))

    @property
    def arguments_json(self) -> str:
        """The arguments as the JSON string OpenAI puts on the wire."""
        return compact_json(self.arguments)


@dataclass
class Reply:
    """One scripted answer; every field is optional.

    Text: `text` (or `chunks`, the explicit stream split). When both are None the
    reply echoes what follows "echo:" in the last user message, or answers
    `DEFAULT_TEXT`; a reply with only `tool_calls` has empty text. A stream's
    text pieces concatenate to exactly `expected_text()`, which is
    `text * repeat_events` (`repeat_events` repeats the pieces to make long
    streams; JSON replies carry the same repeated text).

    Errors: `status` >= 400 answers with the provider's error body
    (`error_message`, and `error_type` overriding OpenAI's `type`, Anthropic's
    `error.type` or Gemini's `status`). `raw_body` answers exactly these bytes
    with `status` and `content_type`.

    Timing: `delay` sleeps before the headers, `chunk_delay` between stream events.
    `chunk_clock="schedule"` sends event n at `n * chunk_delay` after the first
    instead: a model's pace, whose error does not add up over a long stream the
    way one sleep after another's does (the bench's paced streams compare each
    character's arrival across runs; drift of the fake's own would read as the
    proxy's delay).

    Faults: `fault` is one of `FAULTS`. The stream faults trigger before event
    number `fault_after_events` (0-based; i.e. after that many whole events).
    With "error_mid_stream" the HTTP status stays 200 and `status` (500 if left
    at 200) picks the kind of the in-stream error. On a non-streamed reply
    "reset_mid_stream" behaves like "reset_mid_body", "malformed_sse" sends half
    the JSON body, and "error_mid_stream" answers a plain error reply.
    """

    text: str | None = None
    chunks: list[str] | None = None
    thoughts: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    status: int = 200
    error_message: str | None = None
    error_type: str | None = None
    raw_body: bytes | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    chunk_delay: float = 0.0
    chunk_clock: str = "gap"
    repeat_events: int = 1
    fault: str | None = None
    fault_after_events: int = 2
    args_chunk_size: int = 7

    def __post_init__(self) -> None:
        if self.chunk_clock not in ("gap", "schedule"):
            raise ValueError(f"chunk_clock must be 'gap' or 'schedule', not {self.chunk_clock!r}")
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; expected one of {sorted(FAULTS)}")
        if self.chunks is not None:
            joined = "".join(self.chunks)
            if self.text is None:
                self.text = joined
            elif self.text != joined:
                raise ValueError("Reply.chunks must concatenate to Reply.text")
        if self.repeat_events < 1:
            raise ValueError("repeat_events must be >= 1")

    def base_text(self, user_text: str | None = None) -> str:
        """The text before repetition: scripted, echoed, or the default."""
        if self.text is not None:
            return self.text
        if self.tool_calls:
            return ""
        if user_text and "echo:" in user_text:
            return user_text.split("echo:", 1)[1].lstrip()
        return DEFAULT_TEXT

    def text_chunks(self, user_text: str | None = None) -> list[str]:
        """The streamed text pieces, repeats included."""
        if self.chunks is not None:
            pieces = [c for c in self.chunks if c]
        else:
            pieces = split_text(self.base_text(user_text), DEFAULT_CHUNK_SIZE)
        return pieces * self.repeat_events

    def expected_text(self, user_text: str | None = None) -> str:
        """What a client must reassemble from this reply (JSON or stream)."""
        return "".join(self.text_chunks(user_text))

    def thought_chunks(self) -> list[str]:
        """The streamed thought pieces (Gemini only)."""
        return split_text(self.thoughts, DEFAULT_CHUNK_SIZE)

    def argument_chunks(self, call: ToolCall) -> list[str]:
        """`call`'s JSON arguments cut at arbitrary points, for streaming."""
        return split_text(call.arguments_json, self.args_chunk_size)
