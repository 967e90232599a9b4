"""Provider-neutral views of what a request, a response or a stream event says.

Dialects translate each provider API into these; the policy engine reads only
these. Keeping the two sides apart is what lets one pipeline serve every
provider.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# How a tool's MCP server reaches CAPSEM policies: a tag of the CAPSEM ``Tool`` they are given
# (``tool.tags``, CAPSEM's one field for what a tool is besides its name and schema), e.g. ``mcp_server:docs``.
MCP_SERVER_TAG = "mcp_server:"
# Claude Code's name for an MCP tool on the model hop, and the MCP hop's name for it: ``mcp__SERVER__tool``.
_MCP_PREFIX = "mcp__"


def mcp_server(name: str, server: str = "") -> str:
    """The MCP server a tool belongs to: ``server`` when the MCP hop named it, else the one Claude Code's name
    ``mcp__SERVER__tool`` carries (the model hop sees MCP tools only by that name), '' for any other tool.
    A server whose name has ``__`` in it is read up to the first ``__``, as no client can tell otherwise."""
    if server or not name.startswith(_MCP_PREFIX):
        return server
    found, sep, _ = name[len(_MCP_PREFIX):].partition("__")
    return found if sep and found else ""


def tagged_server(tags: Iterable[str] | None) -> str:
    """The MCP server a CAPSEM tool's tags name ('' for none): what a policy reads of ``tool.tags``."""
    for tag in tags or ():
        if tag.startswith(MCP_SERVER_TAG):
            return tag[len(MCP_SERVER_TAG):]
    return ""


@dataclass(slots=True)
class ToolDefinition:
    """A tool the client offers the model (a function declaration, a custom or provider tool).

    ``content`` is every other content string and key of the definition
    (schema descriptions and property names, a custom tool's grammar, an MCP
    server's description...): policies see it as the call's arguments.
    ``server``: the MCP server that lists it (the MCP hop), '' where the name says it or it has none.
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    content: str = ""
    server: str = ""


@dataclass(slots=True)
class ToolCall:
    """A call of a tool, with its arguments parsed as far as possible; ``server`` as for a definition."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    call_id: str = ""
    server: str = ""


@dataclass(slots=True)
class ToolResult:
    """What a tool returned, sent back to the model by the client: all its content as text; ``server`` as for
    a definition."""

    name: str
    content: str = ""
    call_id: str = ""
    server: str = ""


@dataclass(slots=True)
class MediaPart:
    """An inline image or file in a prompt (decoded bytes).

    ``charset`` is the one its media type names (``text/plain;charset=...``),
    empty when it names none: what its text is decoded with when its type is
    text (``dialects/media_text.py``).
    """

    data: bytes
    mime_type: str
    charset: str = ""


@dataclass(slots=True)
class Document:
    """A media item whose text only a parser gets at (a PDF): the model reads that text, so it is checked.

    Extracted off the event loop before the request's hooks run
    (``enforcement/documents.py``); ``reader`` says whose text it joins:
    ``"prompt"``, ``"system"``, or the index in ``RequestView.tool_results``
    of the tool result that carries it.
    """

    media: MediaPart
    reader: str | int


@dataclass(slots=True)
class RequestView:
    """The security-relevant content of one request.

    ``prompt`` and ``system`` are whole texts (what a policy's hook is given);
    ``prompt_pieces`` and ``system_pieces``, when the dialect kept them, are
    the texts they were joined from (``"\n".join(pieces) == prompt``): each
    message's strings, in order, so that the engine can check and remember
    them one by one (an agent resends its whole conversation every turn).
    None: not kept, the whole text is one piece. ``media`` is every inline
    media item; the text of those whose type is text is in the texts already,
    and ``documents`` are those whose text must be extracted first (PDFs).
    """

    model: str = ""
    prompt: str = ""
    system: str = ""
    prompt_pieces: list[str] | None = None
    system_pieces: list[str] | None = None
    tools: list[ToolDefinition] = field(default_factory=list)
    tool_results: list[ToolResult] = field(default_factory=list)
    media: list[MediaPart] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)

    def set_prompt(self, texts: Iterable[str]) -> None:
        """The prompt from the texts it is joined from, in order (empty ones add nothing): pieces and whole."""
        self.prompt_pieces = [text for text in texts if text]
        self.prompt = "\n".join(self.prompt_pieces)

    def set_system(self, texts: Iterable[str]) -> None:
        """The system text from the texts it is joined from, as ``set_prompt``."""
        self.system_pieces = [text for text in texts if text]
        self.system = "\n".join(self.system_pieces)

    def add_text(self, reader: str | int, text: str) -> None:
        """``text`` (a document's) joined to the prompt, the system text or a tool result (``Document.reader``)."""
        if not text:
            return
        if isinstance(reader, int) and 0 <= reader < len(self.tool_results):
            result = self.tool_results[reader]
            result.content = f"{result.content}\n{text}" if result.content else text
        elif reader == "system":
            self.set_system([*(self.system_pieces if self.system_pieces is not None else [self.system]), text])
        else:
            self.set_prompt([*(self.prompt_pieces if self.prompt_pieces is not None else [self.prompt]), text])


@dataclass(slots=True)
class ResponseView:
    """The content of one complete (non-streamed) reply: its text, thoughts, tool calls and media."""

    text: str = ""
    thoughts: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    media: list[MediaPart] = field(default_factory=list)


@dataclass(slots=True)
class ToolFragment:
    """A piece of a streamed tool call; ``key`` identifies the call in the stream.

    ``arguments`` continues the call's arguments text, or is the whole text
    when ``replace``; ``values`` are argument values streamed by JSON path
    (Gemini ``partialArgs``), each continuing the value at its path.
    """

    key: Any
    name: str | None = None
    call_id: str | None = None
    arguments: str = ""
    replace: bool = False
    values: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class StreamView:
    """What one stream event adds to the reply.

    ``text`` and ``thoughts`` are (channel, delta) pairs: a channel is one text
    a reader reads as a whole (a choice, a candidate; one per message where
    the SDK joins its blocks), with its own buffer and hold-back, so a term
    split between two choices is never seen whole while one inside a choice
    always is. ``content`` is text the event carries that continues nothing
    (an output item given whole, an event type we do not know): checked
    whole before the event goes. ``tool_fragments`` open or extend calls,
    ``tool_closes`` says which calls are complete, ``finished`` which
    channels' calls are all complete (``ALL_CHANNELS``: every open call).
    ``error`` carries an error the upstream itself reported inside the stream.
    ``stored_id`` is the id under which the provider keeps the reply for later
    requests to reference (the event that states it), ``stored_final`` marks
    the event that ends such a reply normally, ``stored_items`` what else it
    delivers that later requests may name (its output items, sealed blobs).
    """

    text: list[tuple[Any, str]] = field(default_factory=list)
    thoughts: list[tuple[Any, str]] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    tool_fragments: list[ToolFragment] = field(default_factory=list)
    tool_closes: list[Any] = field(default_factory=list)
    finished: list[Any] = field(default_factory=list)
    error: str | None = None
    stored_id: str = ""
    stored_final: bool = False
    stored_items: tuple[StoredItem, ...] = ()


# ``StreamView.finished`` entry meaning every open call, whatever its channel.
ALL_CHANNELS = object()
EMPTY_STREAM_VIEW = StreamView()


class TokenView(StreamView):
    """A ``StreamView`` of one text delta in one channel and nothing else: a token's event, as most
    providers stream a reply.

    Why a type of its own: a ``StreamView`` allocates six lists, and the release core tests each field
    before it knows that an event is a token's; a provider sending its events one by one pays both per
    event (``bench/events.py``), with caches cold from the I/O between events. A ``TokenView`` allocates
    one list, and ``StreamRelease.accept`` knows it by its type. Its other fields are shared and empty,
    tuples so that nothing can add to them (a dialect with more to say builds a ``StreamView``); it equals
    a ``StreamView`` that says the same.
    """

    __slots__ = ()
    # Read-only empties in place of the lists (a tuple has no ``append``): see the class docstring.
    thoughts = content = tool_fragments = tool_closes = finished = ()  # type: ignore[assignment]
    error = None
    stored_id = ""
    stored_final = False
    stored_items = ()

    def __init__(self, channel: Any, delta: str) -> None:
        self.text = [(channel, delta)]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StreamView):
            return NotImplemented
        return (self.text == other.text and not (other.thoughts or other.content or other.tool_fragments
                                                 or other.tool_closes or other.finished)
                and other.error is None and not other.stored_id and not other.stored_final and not other.stored_items)

    __hash__ = None  # type: ignore[assignment]  # as a StreamView's: mutable, compared by value


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


class StoredItem(NamedTuple):
    """A part of a delivered reply a later request may name: ``kind`` as in ``StoredReference``
    (``item``: an output item's id; ``sealed``: the digest of a blob the provider sealed)."""

    kind: str
    id: str


@dataclass(frozen=True, slots=True)
class StoredReference:
    """A place in a request that pulls content stored at the provider into the model's context.

    ``field`` is where the request says it (``previous_response_id``,
    ``input[2].content[0].file_id``), ``kind`` what it refers to (``response``,
    ``conversation``, ``item``, ``prompt``, ``file``, ``cached_content``,
    ``vector_store``, ``file_search_store``, ``mcp_server``, ``container``,
    ``skill``, ``audio``, ``sealed``) and ``id`` the provider's id or name for it (ids are
    not content: they are safe to log; a ``sealed`` blob is named by its
    digest). A ``response``, an ``item`` and a ``sealed`` blob can be checked:
    they name what this proxy may have delivered itself.
    """

    field: str
    kind: str
    id: str
