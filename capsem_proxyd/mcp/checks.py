"""Each JSON-RPC message put to the policies, deny-by-default, through the proxy's one engine.

Every string and key a message carries is content, but the JSON-RPC envelope
(``ENVELOPE``: ``jsonrpc`` and ``id`` of the message itself). A key the protocol
names (``type``, ``mimeType``, cursors) is read too wherever it appears: a tool's
arguments or ``structuredContent`` may use the same names for anything. The hooks are
the model hop's, so one profile covers both hops:

* ``tools/list`` result: each tool is a definition (``on_tool_call``, as a
  definition the model hop reads is); a refused tool is removed from the
  list and the others kept; a name listed twice is removed (which of the two
  the client would keep is its own business: neither is served); the same
  for each entry of ``prompts/list``, ``resources/list`` and
  ``resources/templates/list`` (named ``prompts:NAME``... for the policies);
* ``initialize`` result: the server's ``instructions`` are system text
  (``on_model_call``), its ``serverInfo`` a definition; refused: an error;
* ``tools/call`` request: the tool must be in the session's approved set
  (the proxy lists the server itself, through these checks, for a session
  whose listing it has not seen), its arguments must validate against the tool's approved (pinned)
  ``inputSchema`` (``schemas.py``; a schema that cannot be applied refuses every call), then they are
  a tool call (``on_tool_call``); refused: the tool's failure (``isError``) with the message (the
  policy's, or the schema keyword that failed: never an argument's value), never forwarded;
* then the pins (``pins.py``): the first approved definitions of a server's
  tools, and its first approved instructions, are the ones served;
* every other client message (unknown methods, replies to server requests,
  ``initialize`` itself): checked whole, as a call of a tool named after its method;

Policies see every tool as ``mcp__SERVER__tool``, the name Claude Code gives an
MCP tool on the model hop, so one rule covers the tool on both hops.
* every server message but those above (results, errors, notifications,
  server requests): checked whole as a tool's result (``on_tool_response``);
  a refused result becomes an error (``isError`` for ``tools/call``), a
  refused notification or server request is dropped.

A verdict that asks to mask (REDACT) is the message's direction's
(``redact.py`` says why): in a server's message (a result, an error, a
notification, a server request) the values are masked and it goes on, a
``tools/call`` result's ``structuredContent`` checked again against the tool's
approved ``outputSchema``; in a call's arguments it refuses the call (a
placeholder written into a file or sent as an address is silent damage),
except for a tool the operator lists (``--mcp-redact-passthrough SERVER/TOOL``),
whose arguments go on unchanged; anywhere else (a definition, the server's
instructions, another client message) it refuses or removes, as a BLOCK does:
a definition is never rewritten. Nothing is restored here. The engine raises
``ProxyError`` on a refusal; its message (the policy, its reason, what was
refused) is what the client gets.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from capsem_proxyd.enforcement.engine import PolicyEngine
from capsem_proxyd.errors import ProxyError, unmaskable
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.mcp import jsonrpc
from capsem_proxyd.mcp.jsonrpc import Kind, Message
from capsem_proxyd.mcp.pins import Pins
from capsem_proxyd.mcp.redact import Found, mask_message, shaped_result
from capsem_proxyd.mcp.schemas import Unusable, mismatch
from capsem_proxyd.mcp.sessions import ApprovedTools
from capsem_proxyd.redaction.masker import Masker
from capsem_proxyd.redaction.rewrite import Unmaskable
from capsem_proxyd.views import RequestView, ToolCall, ToolDefinition, ToolResult

log = logging.getLogger("capsem_proxyd.mcp")

# The JSON-RPC envelope's keys: not content at the top of a message, and only there.
ENVELOPE = frozenset({"jsonrpc", "id"})
# Listings filtered entry by entry: the method and the result's key (surfaces.py documents them).
LISTINGS = {"tools/list": "tools", "prompts/list": "prompts", "resources/list": "resources",
            "resources/templates/list": "resourceTemplates"}
_NOT_RETRY = " Do not retry this call: the proxy refuses it the same way every time."
_MASKED = ("asked to mask part of it, which the MCP hop does not do here (a call's arguments or a definition are "
           "never forwarded masked)")


@dataclass(slots=True)
class Checked:
    """What becomes of a message: ``forward`` goes on (changed or not; None: dropped), ``answer`` is sent
    back instead of forwarding; ``decision`` is what the log line and the metrics say."""

    decision: str
    forward: dict[str, Any] | None = None
    answer: dict[str, Any] | None = None


def texts(value: Any, *, message: bool = False) -> list[str]:
    """Every string of ``value`` and every key of its objects; ``message``: ``value`` is a whole JSON-RPC
    message, whose envelope (``ENVELOPE``, at its top only) is not content."""
    out: list[str] = []
    stack = [value]
    top = value if message and isinstance(value, dict) else None
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            for key, inner in item.items():
                if item is top and key in ENVELOPE:
                    continue
                out.append(key)
                stack.append(inner)
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return out


class MessageChecks:
    """The checks of one HTTP exchange on the hop: its engine, its exchange, its server, its session."""

    def __init__(
        self, engine: PolicyEngine, exchange: Exchange, server: str, session: str, approved: ApprovedTools,
        relist: Callable[[], Awaitable[None]] | None = None, pins: Pins | None = None,
        masker: Masker | None = None, passthrough: frozenset[str] = frozenset(),
    ) -> None:
        self.pins = pins
        # What masks a server's message (None: a REDACT refuses it, as a BLOCK does); the tools whose
        # arguments go on unchanged under a REDACT (``--mcp-redact-passthrough``, this server's).
        self.masker = masker
        self.passthrough = passthrough
        if masker is not None:  # the policies that cannot mask read the masked view (enforcement/masking.py)
            exchange.masker = masker
        self.relist = relist  # lists the server's tools (through these checks) for a session with no listing
        self.engine = engine
        self.exchange = exchange
        self.server = server
        self.session = session
        self.approved = approved

    def named(self, tool: str) -> str:
        """A tool as policies see it: ``mcp__SERVER__tool``, the name Claude Code gives it on the model hop, so
        that one rule covers the tool on both hops."""
        return f"mcp__{self.server}__{tool}"

    async def refusal(self, check: Awaitable[str]) -> str | None:
        """The refusal's message, or None when the policies let the content through unchanged (a REDACT
        refuses: for the content this is asked about, masking is not an answer)."""
        refused, found = await self.verdict(check)
        return refused if refused is not None else _masking_refused(found) if found else None

    async def verdict(self, check: Awaitable[str]) -> tuple[str | None, Found]:
        """The refusal's message (None: not refused), and what the policies asked to mask."""
        self.exchange.redactions.clear()
        try:
            await check
        except ProxyError as error:
            self.exchange.redactions.clear()
            return error.message, ()
        found = tuple(self.exchange.redactions)
        self.exchange.redactions.clear()
        return None, found

    # -- client to server --------------------------------------------------------------------------------

    async def client_message(self, message: Message) -> Checked:
        if message.method == "tools/call":
            return await self._tool_call(message)
        checked = await self._whole(message)
        if message.method == "initialize" and checked.forward is not None:
            return self._initialize(message)
        return checked

    async def _whole(self, message: Message) -> Checked:
        """A client message checked whole, as a call of the tool named after its method."""
        whole = message.kind not in (Kind.REQUEST, Kind.NOTIFICATION)
        content = texts(message.body if whole else message.params, message=whole)
        if not content:
            return Checked("ALLOW", message.body)
        call = ToolCall(self.named(message.method or "client-reply"), {"content": "\n".join(content)})
        refused = await self.refusal(self.engine.check_tool_call(self.exchange, call))
        if refused is None:
            return Checked("ALLOW", message.body)
        if message.kind is Kind.REQUEST:
            return Checked("BLOCK", answer=jsonrpc.error(message.id, jsonrpc.POLICY_REFUSED, refused))
        return Checked("BLOCK")  # a notification or a reply: dropped

    def _initialize(self, message: Message) -> Checked:
        """The handshake, offered only the versions this hop speaks."""
        params = dict(message.params)
        if params.get("protocolVersion") not in jsonrpc.PROTOCOL_VERSIONS:
            params["protocolVersion"] = jsonrpc.LATEST
        capabilities = params.get("capabilities")
        if isinstance(capabilities, dict):  # sampling and tasks are not relayed in this version
            params["capabilities"] = {k: v for k, v in capabilities.items() if k not in ("sampling", "tasks")}
        return Checked("ALLOW", {**message.body, "params": params})

    async def _tool_call(self, message: Message) -> Checked:
        name = message.tool
        if not self.approved.listed(self.session) and self.relist is not None:
            await self.relist()  # a session this process never saw listed (another worker, a restart)
        if not self.approved.allows(self.session, name):
            why = (f"Tool '{name}' of MCP server '{self.server}' is not among the tools this session was offered "
                   "after the proxy's checks (list the tools again)." + _NOT_RETRY)
            return Checked("BLOCK", answer=jsonrpc.tool_error(message.id, why))
        if "task" in message.params:
            return Checked("BLOCK", answer=jsonrpc.error(
                message.id, jsonrpc.INVALID_REQUEST, "Task-augmented calls (params.task) are not relayed by this proxy."
            ))
        arguments = message.params.get("arguments")
        invalid = self._invalid_arguments(name, arguments)
        if invalid is not None:
            return Checked("BLOCK", answer=jsonrpc.tool_error(message.id, invalid + _NOT_RETRY))
        call = ToolCall(self.named(name), arguments if isinstance(arguments, dict) else {"arguments": arguments})
        refused, found = await self.verdict(self.engine.check_tool_call(self.exchange, call))
        if refused is None and found and name in self.passthrough:
            log.warning("mcp call forwarded unchanged though policy %s asked to mask its arguments "
                        "(--mcp-redact-passthrough) server=%s tool=%s request_id=%s tenant_id=%s",
                        ", ".join(sorted({policy for _, _, policy, _ in found})), self.server, name,
                        self.exchange.request_id, self.exchange.tenant_id)
            return Checked("PASSTHROUGH", message.body)
        if refused is None and found:
            refused = _masking_refused(found)
        if refused is None:
            return Checked("ALLOW", message.body)
        return Checked("BLOCK", answer=jsonrpc.tool_error(message.id, refused + _NOT_RETRY))

    # -- server to client --------------------------------------------------------------------------------

    async def server_message(self, message: Message, asked: Message | None) -> Checked:
        """``asked``: the client's request this message answers, when it is a response to one we saw."""
        method = asked.method if asked is not None and message.kind in (Kind.RESULT, Kind.ERROR) else ""
        if message.kind is Kind.REQUEST and _not_relayed(message):
            return Checked("BLOCK")  # dropped: the client was never offered it (sampling, URL-mode elicitation)
        if message.kind is Kind.RESULT and method in LISTINGS:
            assert asked is not None
            return await self._listing(message, asked, LISTINGS[method])
        if message.kind is Kind.RESULT and method == "initialize":
            return await self._initialized(message)
        what = message.method or method or "response"
        name = self.named(asked.tool if asked is not None and asked.tool else what)
        payload = message.body.get("result", message.body.get("error", message.params))
        content = texts(payload)
        if not content:
            return Checked("ALLOW", message.body)
        result = ToolResult(name, "\n".join(content))
        refused, found = await self.verdict(self.engine.check_request(self.exchange, RequestView(tool_results=[result])))
        if refused is None and found:
            masked = self._masked(message, found, method, asked)
            if isinstance(masked, Checked):
                return masked
            refused = masked
        if refused is None:
            return Checked("ALLOW", message.body)
        if message.kind in (Kind.NOTIFICATION, Kind.REQUEST):
            return Checked("BLOCK")
        if method == "tools/call":
            return Checked("BLOCK", jsonrpc.tool_error(message.id, refused))
        return Checked("BLOCK", jsonrpc.error(message.id, jsonrpc.POLICY_REFUSED, refused))

    def _masked(self, message: Message, found: Found, method: str, asked: Message | None) -> Checked | str:
        """A server's message with the values ``found`` masked (``redact.py``), or the refusal's message when
        it cannot be masked exactly (or this hop has no masker)."""
        if self.masker is None:
            return _masking_refused(found)
        try:
            masked = mask_message(self.masker, self.exchange.tenant_id, message.body, found)
        except Unmaskable as error:
            policy, hook = found[0][2:]
            return unmaskable(policy, hook, str(error), "Response").message
        try:  # recorded as on the model hop; an audit log that must block refuses the message (fail closed)
            for placeholder, places, kind, policy, hook in masked.places:
                self.engine.recorder.redacted(self.exchange, hook, policy, places, kind, placeholder,
                                              self.masker.key_id)
        except ProxyError as error:
            return error.message
        body = masked.body
        if method == "tools/call" and asked is not None and "result" in body:
            failure = shaped_result(message.body.get("result"), body["result"], self._output_schema(asked.tool))
            if failure is not None:
                return Checked("REDACT", {**body, "result": failure})
        return Checked("REDACT", body)

    def _approved(self, tool: str) -> dict[str, Any] | None:
        """``tool``'s approved definition: its pin's, the one the client was served (None: not pinned)."""
        if self.pins is None:
            return None
        pin = self.pins.servers.get(self.server, {}).get(tool)
        definition = pin.get("definition") if isinstance(pin, dict) else None
        return definition if isinstance(definition, dict) else None

    def _output_schema(self, tool: str) -> Any:
        """``tool``'s approved ``outputSchema`` (None: the tool declares none, or no pins are kept)."""
        definition = self._approved(tool)
        return definition.get("outputSchema") if definition is not None else None

    def _invalid_arguments(self, tool: str, arguments: Any) -> str | None:
        """Why a call's ``arguments`` are refused before any policy reads them: they do not validate against
        the tool's approved ``inputSchema`` (``schemas.py``), or it cannot be applied (fail closed); None
        when they validate. The message names the schema's keyword, never an argument's value. Without
        pins (``self.pins`` None) the hop keeps no approved schema, and nothing is checked here."""
        if self.pins is None:
            return None
        definition = self._approved(tool)
        schema = definition.get("inputSchema") if definition is not None else None
        if definition is None or schema is None:
            what = "approved definition" if definition is None else "approved definition's inputSchema"
            log.warning("mcp call refused: no %s to check its arguments against server=%s tool=%s request_id=%s "
                        "tenant_id=%s", what, self.server, tool, self.exchange.request_id, self.exchange.tenant_id)
            return (f"Refused by CAPSEM: tool '{tool}' of MCP server '{self.server}' has no {what} to check "
                    "this call's arguments against (list the tools again).")
        try:
            wrong = mismatch({} if arguments is None else arguments, schema)
        except Unusable as error:
            log.warning("mcp call refused: the approved input schema cannot be applied (%s) server=%s tool=%s "
                        "request_id=%s tenant_id=%s", error, self.server, tool, self.exchange.request_id,
                        self.exchange.tenant_id)
            return (f"Refused by CAPSEM: the approved input schema of tool '{tool}' of MCP server '{self.server}' "
                    f"cannot be applied ({error}), so no call to it is forwarded.")
        if wrong is None:
            return None
        log.warning("mcp call refused: arguments do not validate against the approved input schema (%s) "
                    "server=%s tool=%s request_id=%s tenant_id=%s", wrong, self.server, tool,
                    self.exchange.request_id, self.exchange.tenant_id)
        return (f"Refused by CAPSEM: the arguments of tool '{tool}' do not validate against its approved input "
                f"schema: {wrong}.")

    async def _initialized(self, message: Message) -> Checked:
        result = message.body.get("result")
        if not isinstance(result, dict):
            return Checked("ALLOW", message.body)
        if result.get("protocolVersion") not in jsonrpc.PROTOCOL_VERSIONS:
            why = (f"MCP server '{self.server}' answered with protocol version {result.get('protocolVersion')!r}; "
                   f"this proxy serves {', '.join(jsonrpc.PROTOCOL_VERSIONS)}.")
            return Checked("BLOCK", jsonrpc.error(message.id, jsonrpc.INVALID_REQUEST, why))
        instructions = result.get("instructions")
        decision = "ALLOW"
        if isinstance(instructions, str) and instructions:
            view = RequestView(system=instructions)
            refused = await self.refusal(self.engine.check_request(self.exchange, view))
            if refused is not None:
                return Checked("BLOCK", jsonrpc.error(message.id, jsonrpc.POLICY_REFUSED, refused))
            served = self.pins.instructions(self.server, instructions) if self.pins is not None else instructions
            if served != instructions:  # changed since they were approved: the approved text, never the new one
                result, decision = {**result, "instructions": served}, "FILTERED"
        info = result.get("serverInfo")
        if info is not None:
            definition = ToolDefinition(self.named("serverInfo"), content="\n".join(texts(info)))
            refused = await self.refusal(self.engine.check_tool_definition(self.exchange, definition))
            if refused is not None:
                return Checked("BLOCK", jsonrpc.error(message.id, jsonrpc.POLICY_REFUSED, refused))
        capabilities = result.get("capabilities")
        if isinstance(capabilities, dict) and "tasks" in capabilities:
            result = {**result, "capabilities": {k: v for k, v in capabilities.items() if k != "tasks"}}
        if result is message.body.get("result"):
            return Checked(decision, message.body)
        return Checked(decision, {**message.body, "result": result})

    async def _listing(self, message: Message, asked: Message, key: str) -> Checked:
        """A listing (``key``: tools, prompts, resources, resourceTemplates) with every refused or ambiguous
        entry removed; the tools kept (after the pins) become the session's approved set."""
        result = message.body.get("result")
        entries = result.get(key) if isinstance(result, dict) else None
        if not isinstance(result, dict) or not isinstance(entries, list):
            return Checked("ALLOW", message.body)
        names = [entry.get("name") if isinstance(entry, dict) else None for entry in entries]
        counts = Counter(names)
        kept: list[Any] = []
        removed = 0
        for entry, name in zip(entries, names, strict=True):
            if not isinstance(name, str) or counts[name] > 1:
                removed += 1
                continue
            label = name if key == "tools" else f"{key}:{name}"
            definition = definition_of(entry, self.named(label))
            if await self.refusal(self.engine.check_tool_definition(self.exchange, definition)) is not None:
                removed += 1
                continue
            kept.append(entry)
        cursor = asked.params.get("cursor")
        if key == "tools":
            if self.pins is not None:  # the first approved definitions hold (pins.py)
                following = result.get("nextCursor")
                pinned = self.pins.apply(
                    self.server, kept, session=self.session, cursor=cursor if isinstance(cursor, str) else None,
                    next_cursor=following if isinstance(following, str) else None,
                )
                for name, pin_hash in pinned.automatic:  # --mcp-new-tools serve: audited as an operator's accept is
                    self.engine.recorder.mcp_pin_accepted(
                        self.server, name, {"definition_hash": pin_hash, "previous_definition_hash": None},
                        {"automatic": "--mcp-new-tools serve"})
                self.engine.recorder.mcp_pins(self.server, pinned.pending)
                kept = pinned.tools
                removed += pinned.changed
            # A later page (params.cursor) adds to the set its first page started.
            self.approved.approve(self.session, [tool["name"] for tool in kept], add=cursor is not None)
        if not removed:
            return Checked("ALLOW", message.body)
        return Checked("FILTERED", {**message.body, "result": {**result, key: kept}})


def _masking_refused(found: Found) -> str:
    """The refusal of content a policy asked to mask where this hop does not mask (never quoting a value)."""
    policies = sorted({policy for _, _, policy, _ in found})
    return f"Refused by CAPSEM: policy {', '.join(policies)} {_MASKED}."


def _not_relayed(message: Message) -> bool:
    """Server requests this version does not relay: sampling (the capability is removed from the client's
    ``initialize``) and URL-mode elicitation (a link the user would follow, which no policy can read)."""
    if message.method == "sampling/createMessage":
        return True
    return message.method == "elicitation/create" and message.params.get("mode") == "url"


def definition_of(tool: dict[str, Any], name: str) -> ToolDefinition:
    """A listed tool as the model hop's definitions are read: name, description, input schema, and every
    other string and key (title, output schema, annotations, icons, ``_meta``) as its content."""
    rest = {key: value for key, value in tool.items() if key not in ("name", "description")}
    schema = tool.get("inputSchema")
    description = tool.get("description")
    return ToolDefinition(
        name=name,
        description=description if isinstance(description, str) else "",
        parameters=schema if isinstance(schema, dict) else {},
        content=orjson.dumps(texts(rest)).decode() if rest else "",
    )
