"""Views as CAPSEM hook calls: which hook, with which arguments, about what.

The dialects read a request or a reply into provider-neutral views
(``views.py``); CAPSEM policies are asked through their hooks
(``on_model_call``, ``on_tool_call``, ``on_tool_response``,
``on_model_response``) with CAPSEM's own types. A ``HookCall`` is one such
question, built once and put to every policy: the engine decides which
policies are asked and how their answers combine, this module only what
they are asked.

Tool definitions and tool calls become CAPSEM ``Tool`` objects without
validation (``capsem_tool``): a client may send any JSON Schema, and an odd
one must be checked, not crash the check. A tool of an MCP server carries the
server in its CAPSEM tags (``views.MCP_SERVER_TAG``): named by the MCP hop, or
read from Claude Code's ``mcp__SERVER__tool`` on the model hop, so that a
policy matching a server covers both hops.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from capsem.models import Decision, Media
from capsem.policies import Policy
from capsem.tools import Schema, Tool
from pydantic import ValidationError

from capsem_proxyd.views import MCP_SERVER_TAG, MediaPart, RequestView, ToolCall, ToolDefinition, ToolResult, mcp_server

# A hook call on one policy: the engine decides which policies, the caller what they are asked.
Invoke = Callable[[Policy], Awaitable[Decision]]
_NO_SCHEMA = Schema.model_construct()


@dataclass(frozen=True, slots=True)
class HookCall:
    """One question put to every policy: ``hook`` with ``args``; ``what`` names the content in a
    refusal's message; ``identity`` (when the content is one piece the verdict cache may remember
    whole) computes the text it is known by, only when a cache asks."""

    hook: str
    what: str
    args: tuple[Any, ...]
    identity: Callable[[], str] | None = None

    def invoke(self, policy: Policy) -> Awaitable[Decision]:
        """The call on ``policy`` (an ``Invoke``)."""
        return getattr(policy, self.hook)(*self.args)


def asking(hook: str, args: tuple[Any, ...]) -> Invoke:
    """The call of ``hook`` with ``args`` on whichever policy is asked (one piece of a split view)."""
    return HookCall(hook, "", args).invoke


def capsem_tool(name: str, description: str = "", parameters: Any = None, server: str = "") -> Tool:
    """A CAPSEM ``Tool`` from whatever the client sent, never failing on odd schemas; ``server``: the MCP
    server it belongs to (``views.mcp_server``), as a tag."""
    schema = _NO_SCHEMA
    if isinstance(parameters, dict) and parameters:
        try:
            schema = Schema.model_validate(parameters)
        except ValidationError:
            schema = _NO_SCHEMA
    return Tool.model_construct(
        name=name or "unknown",
        description=description or "No description provided",
        parameters=schema,
        returns=None,
        version=None,
        tags=[MCP_SERVER_TAG + server] if server else None,
    )


def capsem_media(parts: list[MediaPart] | None) -> list[Media]:
    """The view's media as CAPSEM ``Media``."""
    return [Media(content=part.data, mime_type=part.mime_type) for part in parts or ()]


def tool_response(rid: str, agent: Any, result: ToolResult, tools: dict[str, Tool] | None = None) -> HookCall:
    """``on_tool_response`` for a tool result the client sends back; one piece, known by name and content.
    ``tools``: the CAPSEM tools made so far for the request's results, by name (an agent's turn sends back
    dozens of results of a few tools: one ``Tool`` each, not one per result)."""
    response = {"content": result.content}
    server = mcp_server(result.name, result.server)
    known = f"{server}\0{result.name}"
    tool = tools.get(known) if tools is not None else None
    if tool is None:
        tool = capsem_tool(result.name, server=server)
        if tools is not None:
            tools[known] = tool
    # The name says the server, unless the MCP hop named one apart (then it is part of what is known).
    named = f"{result.server}\0{result.name}" if result.server else result.name
    return HookCall(
        "on_tool_response", f"Tool result for '{result.name}'", (rid, agent, tool, response),
        identity=lambda: f"{named}\0{result.content}",
    )


def model_call(rid: str, agent: Any, view: RequestView, media: list[Media]) -> HookCall:
    """``on_model_call`` for the prompt (system instructions, prompt text, media); split by ``pieces.prompt_split``."""
    return HookCall("on_model_call", "Prompt", (rid, agent, view.model, view.system, view.prompt, media))


# Tools made for definitions, by what the definition says (``tool_definition``), and how many are kept.
DefinedTools = dict[str, Tool]
DEFINED_TOOLS = 1024


def tool_definition(rid: str, agent: Any, definition: ToolDefinition, tools: DefinedTools | None = None) -> HookCall:
    """A definition is checked as a call whose arguments are all the definition's other content
    (schema descriptions and property names, a grammar, an MCP server's description...).

    ``tools``: the CAPSEM tools made before, by the definition's whole text: an agent sends the same
    definitions every turn, and validating each one's schema into a ``Tool`` took more than checking it
    (the verdict cache answers for it); emptied when it holds ``DEFINED_TOOLS``."""
    server = mcp_server(definition.name, definition.server)
    whole = [definition.name, definition.description, definition.parameters, definition.content]
    if definition.server:  # named apart by the MCP hop: part of what the definition is known by
        whole.append(definition.server)
    identity = orjson.dumps(whole, default=str, option=orjson.OPT_SORT_KEYS).decode()
    tool = tools.get(identity) if tools is not None else None
    if tool is None:
        tool = capsem_tool(definition.name, definition.description, definition.parameters, server)
        if tools is not None:
            if len(tools) >= DEFINED_TOOLS:
                tools.clear()
            tools[identity] = tool
    arguments = {"definition": definition.content} if definition.content else {}
    return HookCall("on_tool_call", f"Tool definition '{definition.name}'", (rid, agent, tool, arguments),
                    lambda: identity)


def tool_call(rid: str, agent: Any, call: ToolCall) -> HookCall:
    """``on_tool_call`` for a call the model makes."""
    tool = capsem_tool(call.name, server=mcp_server(call.name, call.server))
    return HookCall("on_tool_call", f"Tool call '{call.name}'", (rid, agent, tool, call.arguments))


def model_response(rid: str, agent: Any, text: str, thoughts: str, media: list[MediaPart] | None) -> HookCall:
    """``on_model_response`` for a reply's text, thoughts and media."""
    return HookCall("on_model_response", "Model response", (rid, agent, text, thoughts, capsem_media(media)))
