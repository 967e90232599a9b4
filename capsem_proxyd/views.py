"""Provider-neutral views of what a request, a response or a stream event says.

Dialects translate each provider API into these; the policy engine reads only
these. Keeping the two sides apart is what lets one pipeline serve every
provider.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class ToolDefinition:
    """A tool the client offers the model (a function declaration)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ToolCall:
    """A call of a tool, with its arguments parsed as far as possible."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    call_id: str = ""


@dataclass(slots=True)
class ToolResult:
    """What a tool returned, sent back to the model by the client."""

    name: str
    content: Any = None
    call_id: str = ""


@dataclass(slots=True)
class MediaPart:
    """An inline image or file in a prompt (decoded bytes)."""

    data: bytes
    mime_type: str


@dataclass(slots=True)
class RequestView:
    """The security-relevant content of one request."""

    model: str = ""
    prompt: str = ""
    system: str = ""
    tools: list[ToolDefinition] = field(default_factory=list)
    tool_results: list[ToolResult] = field(default_factory=list)
    media: list[MediaPart] = field(default_factory=list)


@dataclass(slots=True)
class ResponseView:
    """The security-relevant content of one complete (non-streamed) reply."""

    text: str = ""
    thoughts: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(slots=True)
class ToolFragment:
    """A piece of a streamed tool call; ``key`` identifies the call in the stream."""

    key: Any
    name: str | None = None
    call_id: str | None = None
    arguments: str = ""
    replace: bool = False  # ``arguments`` is the whole text, not a continuation


@dataclass(slots=True)
class StreamView:
    """What one stream event adds to the reply.

    ``tool_fragments`` open or extend calls, ``tool_closes`` says which calls are
    complete, ``finished`` that every open call is complete. ``error`` carries an
    error the upstream itself reported inside the stream.
    """

    text: str = ""
    thoughts: str = ""
    tool_fragments: list[ToolFragment] = field(default_factory=list)
    tool_closes: list[Any] = field(default_factory=list)
    finished: bool = False
    error: str | None = None


EMPTY_STREAM_VIEW = StreamView()


@dataclass(frozen=True, slots=True)
class Usage:
    """What a reply says about itself: token counts and the model that answered (None: not said).

    Read only when a recorder wants it (the OpenTelemetry spans); never content.
    ``input_tokens`` includes cached input tokens, ``output_tokens`` reasoning
    tokens, whatever the provider's own split (the GenAI conventions' meaning).
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    model: str | None = None
