"""The MCP hop: ``/mcp/NAME`` served as Streamable HTTP and forwarded to the operator's server NAME.

One HTTP request carries one JSON-RPC message (POST), opens the server's
event stream (GET) or ends a session (DELETE). Each message is checked
(``checks.py``) before it goes on, in either direction: a client message the
policies refuse is answered here and never forwarded; a server message is
replaced (a refused result), masked (a REDACT: ``redact.py``), filtered (a
listing) or dropped (a refused notification). Every message gets one log line and one count.

What is forwarded is decided here, not by the client:

* request headers: the server's allow-list (``servers.py``); the session id
  unwrapped (``sessions.py``); the tenant proof header never;
* the upstream is reached through the proxy's one pooled transport, which
  follows no redirect: a redirect is refused (502), never relayed, so a
  server cannot send the client's credentials to another origin;
* replies: an event stream is relayed event by event (``sse.py``), each
  event's bytes unchanged unless a check changed its message; a JSON reply
  as one message; an error status (401 and its ``WWW-Authenticate``
  included) as it came, unless its body fails a check.

A browser ``Origin`` is refused unless allow-listed (``--mcp-origin``): a web
page must not reach a local MCP server through the proxy (DNS rebinding).

Refusals the hop makes itself (a batch, a foreign session, an origin) use
400 and 404 as the protocol does; a policy's refusal never changes the HTTP
status (200 with ``isError`` or a JSON-RPC error): clients read 401, 403 and
404 as "authenticate", "step up" and "session lost".

A client hang-up cancels the task serving it (``_compat/hypercorn.py``), and
with it the upstream read: the upstream response is closed in ``finally``.
A server given ``--mcp-timeout`` that does not answer a request in time is
cut off the same way, and the client gets a JSON-RPC error with the
request's id (``_timed_out``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import orjson
import trio

from capsem_proxyd.config import Settings
from capsem_proxyd.enforcement.engine import PolicyEngine
from capsem_proxyd.enforcement.tenants import TenantPolicies
from capsem_proxyd.errors import ProxyError
from capsem_proxyd.exchange import Exchange, tenant_id_for
from capsem_proxyd.mcp import jsonrpc
from capsem_proxyd.mcp.checks import Checked, MessageChecks
from capsem_proxyd.mcp.control import ACCEPT_PATH, CONTROL_PATH, PinsControl, control_token
from capsem_proxyd.mcp.jsonrpc import Kind, Malformed, Message
from capsem_proxyd.mcp.pins import Pins
from capsem_proxyd.mcp.servers import McpServer, load_servers
from capsem_proxyd.mcp.sessions import ApprovedTools, RefusalCounts, SessionIds, hashed, owner_of
from capsem_proxyd.mcp.sse import Event, EventSplitter, EventTooLarge, FramingError
from capsem_proxyd.observe.recorders import McpNote, Recorder
from capsem_proxyd.proxy.request_body import ClientGone, read_request_body
from capsem_proxyd.proxy.response_store import state_directory
from capsem_proxyd.proxy.upstream import Upstream, response_headers
from capsem_proxyd.redaction.masker import Masker

log = logging.getLogger("capsem_proxyd.mcp")

Message_ = dict[str, Any]
Receive = Callable[[], Awaitable[Message_]]
Send = Callable[[Message_], Awaitable[None]]
Done = Callable[[int, str], None]

PREFIX = "/mcp/"
# The header a client's MCP configuration proves its model-hop tenant with: its provider key, never forwarded.
TENANT_PROOF = "x-capsem-provider-key"
SESSION = "mcp-session-id"
# Pages of tools/list the proxy reads when it lists a server itself.
LIST_PAGES = 10
# The methods metrics name; any other is counted as ``other`` (the label set stays bounded).
KNOWN_METHODS = frozenset({
    "initialize", "notifications/initialized", "ping", "tools/list", "tools/call", "resources/list",
    "resources/templates/list", "resources/read", "resources/subscribe", "resources/unsubscribe", "prompts/list",
    "prompts/get", "completion/complete", "logging/setLevel", "notifications/message", "notifications/progress",
    "notifications/cancelled", "notifications/tools/list_changed", "notifications/resources/list_changed",
    "notifications/resources/updated", "notifications/prompts/list_changed", "notifications/roots/list_changed",
    "roots/list", "sampling/createMessage", "elicitation/create", "server/discover", "response",
})
# The longest traceparent/tracestate read from a message's ``params._meta`` (tracestate's own limit is 512).
_TRACE_CHARS = 512
_JSON = [(b"content-type", b"application/json")]
_STREAM = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
# Reply headers the hop sets itself or never relays.
_NOT_RELAYED = frozenset({SESSION, "content-type", "content-length", "location", "cache-control", "x-accel-buffering"})


def _message_too_large() -> _Refused:
    return _Refused(413, jsonrpc.error(None, jsonrpc.INVALID_REQUEST, "The message is larger than the proxy's "
                                       "--mcp-max-message-size."), "body_too_large")


def _body_too_slow() -> _Refused:
    return _Refused(408, jsonrpc.error(None, jsonrpc.INVALID_REQUEST, "The request body was not sent in time."),
                    "body_too_slow")


class _Refused(Exception):
    """The hop answers the request itself: ``status`` and a JSON-RPC ``body``."""

    def __init__(self, status: int, body: dict[str, Any], outcome: str) -> None:
        super().__init__(outcome)
        self.status = status
        self.body = body
        self.outcome = outcome


class McpHop:
    """Serves ``/mcp/NAME`` for every declared server of one instance."""

    def __init__(
        self, settings: Settings, upstream: Upstream, policies: Callable[[], TenantPolicies], recorder: Recorder,
        key: bytes, masker: Masker | None = None,
    ) -> None:
        self.servers: dict[str, McpServer] = load_servers(
            settings.mcp_servers, settings.mcp_headers, settings.mcp_timeouts, settings.mcp_redact_passthrough)
        self.masker = masker  # the model hop's: one placeholder per value and tenant on both hops
        self.origins = frozenset(settings.mcp_origins)
        self.limit = settings.mcp_max_message_size
        self.body_timeout = settings.body_timeout or None
        self.upstream = upstream
        self.policies = policies
        self.recorder = recorder
        self.key = key
        self.sessions = SessionIds(key)
        self.approved = ApprovedTools()
        self.refusals = RefusalCounts()
        state = state_directory(settings.state_dir)
        self.pins = Pins(state, settings.mcp_new_tools)
        self.control = PinsControl(self.pins, list(self.servers), recorder, control_token(state))

    def describe(self) -> dict[str, Any]:
        """``/health``'s ``mcp``: the servers served, and per server the tools pinned and held pending
        (this process's: each worker of ``--workers`` holds its own)."""
        return {
            "servers": {
                name: {"pinned": len(self.pins.servers.get(name, {})),
                       "pending": sum(1 for change in self.pins.pending.get(name, {}).values() if change["kind"] == "new")}
                for name in sorted(self.servers)
            },
        }

    def serves(self, path: str) -> bool:
        return path.startswith(PREFIX) or path in ("/mcp", CONTROL_PATH, ACCEPT_PATH)

    async def serve(
        self, scope: dict[str, Any], receive: Receive, send: Send, exchange: Exchange, headers: Mapping[str, str],
        own: list[tuple[bytes, bytes]], done: Done,
    ) -> None:
        """Answer one request on ``/mcp/...``; ``own``: headers every reply carries; ``done``: records it."""
        exchange.provider, exchange.endpoint = "mcp", scope["method"]
        reply = _Reply(send, own, done)
        try:
            if scope["path"] in (CONTROL_PATH, ACCEPT_PATH):
                await self._control(scope, receive, reply, headers)
            else:
                await self._serve(scope, receive, reply, exchange, headers)
        except ClientGone:
            return  # the data plane records the 499
        except _Refused as refused:
            if not reply.body_read and scope["method"] == "POST":
                await self._drain(receive)  # answered with its body unread, the server may close first
            await reply.json(refused.status, refused.body, refused.outcome)
        except ProxyError as error:  # the upstream failed (502/504)
            exchange.failure = error.cause or error.message
            await reply.json(error.status, jsonrpc.error(None, jsonrpc.INTERNAL_ERROR, error.message), error.code)

    async def _control(
        self, scope: dict[str, Any], receive: Receive, reply: _Reply, headers: Mapping[str, str]
    ) -> None:
        """``capsem-proxyd mcp-pins`` (``control.py``); a 404 as for any unknown path unless allowed."""
        client = scope.get("client")
        body = await self._read_body(receive) if scope["method"] == "POST" else b""
        reply.body_read = True
        if not self.control.allowed(client, headers):
            await reply.json(404, {"error": "not found"}, "control_refused")
            return
        if scope["method"] == "GET" and scope["path"] == CONTROL_PATH:
            # On the event loop, as the listings that pin: a thread would race them over the same dicts.
            await reply.json(200, self.control.listing(), "mcp_pins_listed")
            return
        if scope["method"] != "POST" or scope["path"] != ACCEPT_PATH:
            await reply.json(405, {"error": "GET /mcp-pins or POST /mcp-pins/accept"}, "method_not_allowed")
            return
        try:
            asked = orjson.loads(body)
        except orjson.JSONDecodeError:
            asked = None
        if not isinstance(asked, dict):
            await reply.json(400, {"error": "the body is not a JSON object"}, "control_refused")
            return
        peer = f"{client[0]}:{client[1]}" if client else ""
        status, answer = self.control.accept(asked, peer)
        await reply.json(status, answer, "mcp_pins_accepted" if status == 200 else "control_refused")

    async def _serve(
        self, scope: dict[str, Any], receive: Receive, reply: _Reply, exchange: Exchange, headers: Mapping[str, str]
    ) -> None:
        name = scope["path"][len(PREFIX):] if scope["path"].startswith(PREFIX) else ""
        server = self.servers.get(name)
        if server is None:
            raise _Refused(404, jsonrpc.error(None, jsonrpc.INVALID_REQUEST, f"No MCP server is served at {PREFIX}"
                                              f"{name[:64]!r}."), "unknown_mcp_server")
        origin = headers.get("origin")
        if origin is not None and origin not in self.origins:
            raise _Refused(403, jsonrpc.error(None, jsonrpc.INVALID_REQUEST, "Browser origins may not use this MCP "
                                              "endpoint (allow one with --mcp-origin)."), "origin_refused")
        method = scope["method"]
        if method not in ("POST", "GET", "DELETE"):
            raise _Refused(405, jsonrpc.error(None, jsonrpc.INVALID_REQUEST, f"{method} is not served on the MCP "
                                              "endpoint (POST, GET and DELETE are)."), "method_not_allowed")
        exchange.mcp_server = server.name
        engine, exchange.tenant_id, proven = self._engine(server, headers)
        owner = owner_of(self.key, exchange.tenant_id if proven else None, headers, server.headers)
        presented = headers.get(SESSION)
        session = None
        if presented is not None:
            session = self.sessions.unwrap(server.name, owner, presented)
            if session is None:
                log.warning("mcp session refused: not opened by this client server=%s session=%s request_id=%s "
                            "tenant_id=%s", server.name, hashed(presented), exchange.request_id, exchange.tenant_id)
                raise _Refused(404, jsonrpc.error(None, jsonrpc.INVALID_REQUEST, "Session not found."),
                               "session_refused")
        forward = self._request_headers(server, headers, session)
        approved_key = f"{server.name}\0{owner}\0{session or ''}"
        checks = MessageChecks(engine, exchange, server.name, approved_key, self.approved, pins=self.pins,
                               masker=self.masker, passthrough=server.redact_passthrough)
        context = _Context(server, owner, session, checks, exchange, self.recorder, self.refusals)
        checks.relist = lambda: self._list_tools(context, forward)
        if method == "POST":
            await self._post(receive, reply, context, forward)
        elif method == "GET":
            await self._relay(reply, context, await self._send(context, "GET", forward, b""), None)
        else:
            self.approved.forget(approved_key)
            await self._relay(reply, context, await self._send(context, "DELETE", forward, b""), None)

    def _engine(self, server: McpServer, headers: Mapping[str, str]) -> tuple[PolicyEngine, str, bool]:
        """The engine, the tenant and whether a proof header named it: the model-hop tenant the proof
        header names, else one tenant per server (its profile, if the operator gave it one, else the default
        policies; the tenant allow-list is the model hop's, and does not apply to it)."""
        policies = self.policies()
        proof = headers.get(TENANT_PROOF)
        if proof:
            tenant_id = tenant_id_for(proof)
            try:
                return policies.for_tenant(tenant_id), tenant_id, True
            except ProxyError:
                raise _Refused(400, jsonrpc.error(None, jsonrpc.INVALID_REQUEST, "This tenant is not served by the "
                                                  "proxy."), "tenant_not_allowed") from None
        tenant_id = tenant_id_for(f"mcp-server:{server.name}")
        return policies.profiles.get(tenant_id, policies.default), tenant_id, False

    @staticmethod
    def _request_headers(server: McpServer, headers: Mapping[str, str], session: str | None) -> list[tuple[str, str]]:
        forwarded = [(name, headers[name]) for name in server.headers if name in headers]
        if session is not None:
            forwarded.append((SESSION, session))
        return forwarded

    async def _post(
        self, receive: Receive, reply: _Reply, context: _Context, forward: list[tuple[str, str]]
    ) -> None:
        raw = await self._read_body(receive)
        reply.body_read = True
        try:
            message = jsonrpc.parse(raw)
        except Malformed as malformed:
            raise _Refused(400, jsonrpc.error(None, malformed.code, str(malformed)), "malformed") from None
        # What spans name (the MCP conventions); cut short: a client chooses them.
        context.exchange.mcp_method, context.exchange.tool = message.method[:64], message.tool[:128]
        context.exchange.mcp_trace = trace_context(message)
        if message.method == "server/discover":  # 2026-07-28's probe: the error makes clients use the handshake
            context.note(message, "client", "REFUSED")
            raise _Refused(200, jsonrpc.error(message.id, jsonrpc.METHOD_NOT_FOUND, "Method not found: this proxy "
                                              "serves the initialize handshake."), "discover_refused")
        checked = await context.checks.client_message(message)
        context.note(message, "client", checked.decision)
        if checked.answer is not None:
            raise _Refused(200, checked.answer, "policy_refused")
        if checked.forward is None:  # a refused notification or reply: dropped, acknowledged as the server would
            raise _Refused(202, {}, "policy_refused")
        body = raw if checked.forward is message.body else jsonrpc.dumps(checked.forward)
        asked = message if message.kind is Kind.REQUEST else None
        timeout = context.server.timeout if asked is not None else None
        # --mcp-timeout: the server has that long to answer the request; lifted once it has (``_event``).
        with trio.move_on_after(math.inf if timeout is None else timeout) as context.deadline:
            response = await self._send(context, "POST", forward, body)
            await self._relay(reply, context, response, asked)
        if context.deadline.cancelled_caught and asked is not None and timeout is not None:
            await self._timed_out(reply, context, asked, timeout)

    async def _timed_out(self, reply: _Reply, context: _Context, asked: Message, timeout: float) -> None:
        """The server did not answer ``asked`` within its ``--mcp-timeout``: the upstream request is closed
        already; the client gets a JSON-RPC error with the request's id (as the reply, or as the last event of
        the stream it was reading), so the call fails and the session goes on."""
        log.warning("mcp server timed out server=%s method=%s tool=%s timeout=%gs request_id=%s tenant_id=%s",
                    context.server.name, asked.method, asked.tool or "-", timeout, context.exchange.request_id,
                    context.exchange.tenant_id)
        context.exchange.failure = "mcp_timeout"
        error = jsonrpc.error(asked.id, jsonrpc.INTERNAL_ERROR, f"MCP server '{context.server.name}' did not "
                              f"answer within {timeout:g} seconds (the proxy's --mcp-timeout).")
        context.note(Message(error, Kind.ERROR, asked.id), "server", "TIMEOUT", asked)
        if not reply.started:
            await reply.json(200, error, "upstream_timeout")
            return
        reply.done(200, "upstream_timeout")
        await reply.chunk(b"event: message\ndata: " + jsonrpc.dumps(error) + b"\n\n")
        await reply.end()

    async def _list_tools(self, context: _Context, forward: list[tuple[str, str]]) -> None:
        """List the server's tools for the session, as the client would (every page, up to ``LIST_PAGES``):
        the checked listing becomes the session's approved set; nothing reaches the client."""
        cursor: str | None = None
        for page in range(LIST_PAGES):
            params = {"cursor": cursor} if cursor is not None else {}
            asked = jsonrpc.classify({"jsonrpc": "2.0", "id": f"capsem-proxyd-list-{page}", "method": "tools/list",
                                      "params": params})
            response = await self._send(context, "POST", forward, jsonrpc.dumps(asked.body))
            try:
                if response.status_code != 200:
                    return
                raw = await self._read_reply(response)
            finally:
                with trio.move_on_after(1, shield=True):
                    await response.aclose()
            answer = _find_answer(raw, response.headers.get("content-type", ""), asked, self.limit)
            if answer is None:
                return
            checked = await context.checks.server_message(answer, asked)
            context.note(answer, "server", checked.decision, asked)
            result = answer.body.get("result")
            cursor = result.get("nextCursor") if isinstance(result, dict) else None
            if not isinstance(cursor, str):
                return

    async def _send(self, context: _Context, method: str, headers: list[tuple[str, str]], body: bytes) -> httpx.Response:
        if body:
            headers = [*headers, ("content-type", "application/json")] if not any(
                name == "content-type" for name, _ in headers) else headers
        context.exchange.upstream = f"{context.server.url.host}:{context.server.url.port or ''}"
        self.recorder.forwarding(context.exchange)  # the audit log may refuse (--audit-failure block)
        return await self.upstream.send(method, context.server.url, headers, body)

    async def _relay(
        self, reply: _Reply, context: _Context, response: httpx.Response, asked: Message | None
    ) -> None:
        """The server's reply, checked, to the client; the upstream response closed however this ends."""
        try:
            headers = self._reply_headers(context, response)
            status = response.status_code
            if 300 <= status < 400:
                log.warning("mcp redirect refused server=%s status=%d request_id=%s", context.server.name, status,
                            context.exchange.request_id)
                raise _Refused(502, jsonrpc.error(asked.id if asked else None, jsonrpc.INTERNAL_ERROR,
                                                  "The MCP server answered with a redirect, which is not relayed."),
                               "redirect_refused")
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind == "text/event-stream" and status < 300:
                await self._stream(reply, context, response, asked, headers, status)
                return
            body = await self._read_reply(response)
            if context.deadline is not None:
                context.deadline.deadline = math.inf  # the whole reply is in: --mcp-timeout no longer applies
            if not body.strip():
                await reply.whole(status, headers, b"", str(status))
                return
            replaced = await self._check_whole(context, body, asked, status)
            await reply.whole(status, headers + _JSON if replaced is not None or kind == "application/json"
                              else headers + [(b"content-type", response.headers.get("content-type", "").encode())],
                              replaced if replaced is not None else body, str(status))
        finally:
            with trio.move_on_after(1, shield=True):
                await response.aclose()

    def _reply_headers(self, context: _Context, response: httpx.Response) -> list[tuple[bytes, bytes]]:
        headers = [(name.encode("latin-1"), value.encode("latin-1"))
                   for name, value in response_headers(response.headers) if name.lower() not in _NOT_RELAYED]
        session = response.headers.get(SESSION)
        if session is not None:
            wrapped = self.sessions.wrap(context.server.name, context.owner, session)
            headers.append((SESSION.encode(), wrapped.encode("latin-1")))
        return headers

    async def _check_whole(self, context: _Context, body: bytes, asked: Message | None, status: int) -> bytes | None:
        """A whole reply's message checked: None when it goes as it came, else what replaces it."""
        try:
            message = jsonrpc.parse(body)
        except Malformed:
            if status < 300:
                raise _Refused(502, jsonrpc.error(asked.id if asked else None, jsonrpc.INTERNAL_ERROR,
                               "The MCP server's reply is not a JSON-RPC message."), "upstream_malformed") from None
            # An error page (a 401's body): checked whole as the server's words.
            message = Message({"jsonrpc": "2.0", "error": {"message": body.decode("utf-8", "replace")}}, Kind.ERROR)
            checked = await context.checks.server_message(message, asked)
            context.note(message, "server", checked.decision)
            if checked.forward is message.body:
                return None
            return jsonrpc.dumps(jsonrpc.error(asked.id if asked else None, jsonrpc.POLICY_REFUSED,
                                               _refusal_text(checked)))
        checked = await context.checks.server_message(message, _answered(message, asked))
        context.note(message, "server", checked.decision, _answered(message, asked))
        if checked.forward is message.body:
            return None
        if checked.forward is None:
            return b""
        return jsonrpc.dumps(checked.forward)

    async def _stream(
        self, reply: _Reply, context: _Context, response: httpx.Response, asked: Message | None,
        headers: list[tuple[bytes, bytes]], status: int,
    ) -> None:
        await reply.start(status, headers + _STREAM)
        splitter = EventSplitter(self.limit)
        outcome = "completed"
        try:
            try:
                async for chunk in response.aiter_bytes():
                    for event in splitter.feed(chunk):
                        await reply.chunk(await self._event(context, event, asked))
                    if splitter.overflowed:
                        raise EventTooLarge(self.limit, [])
                for event in splitter.end():
                    await reply.chunk(await self._event(context, event, asked))
            except EventTooLarge:
                outcome = "message_too_large"
                log.warning("mcp event refused: larger than --mcp-max-message-size (%d bytes) server=%s "
                            "request_id=%s", self.limit, context.server.name, context.exchange.request_id)
                error = jsonrpc.error(asked.id if asked else None, jsonrpc.INTERNAL_ERROR,
                                      "An MCP server message was larger than the proxy's limit.")
                await reply.chunk(b"event: message\ndata: " + jsonrpc.dumps(error) + b"\n\n")
            except FramingError:  # an event that is not UTF-8: no JSON-RPC message, and the stream's framing is lost
                outcome = "upstream_malformed"
                log.warning("mcp event stream refused: an event is not UTF-8 server=%s request_id=%s",
                            context.server.name, context.exchange.request_id)
                error = jsonrpc.error(asked.id if asked else None, jsonrpc.INTERNAL_ERROR,
                                      "An MCP server message was not UTF-8 JSON.")
                await reply.chunk(b"event: message\ndata: " + jsonrpc.dumps(error) + b"\n\n")
            except httpx.HTTPError as error:
                outcome = "upstream_error"
                context.exchange.failure = type(error).__name__
        except BaseException:
            # cancelled: the client left, the server is going away, or --mcp-timeout ran out (``_timed_out``)
            timed_out = context.deadline is not None and context.deadline.cancel_called
            outcome = "upstream_timeout" if timed_out else "client_disconnected"
            raise
        finally:
            reply.done(status, outcome)
        await reply.end()

    async def _event(self, context: _Context, event: Event, asked: Message | None) -> bytes:
        """One event's bytes for the client: as they came, rewritten, or only its id (a dropped message)."""
        data = event.data
        if not data.strip():
            return bytes(event.raw)
        try:
            message = jsonrpc.parse(data)
        except Malformed:
            log.warning("mcp event dropped: not a JSON-RPC message server=%s request_id=%s", context.server.name,
                        context.exchange.request_id)
            return bytes(event.rewrite(None)) if event.event_id is not None else b""
        answered = _answered(message, asked)
        if answered is not None and context.deadline is not None:
            context.deadline.deadline = math.inf  # the request is answered: --mcp-timeout no longer applies
        checked = await context.checks.server_message(message, answered)
        context.note(message, "server", checked.decision, answered)
        if checked.forward is message.body:
            return bytes(event.raw)
        if checked.forward is None:  # dropped; its id still moves the client's resumption point
            return bytes(event.rewrite(None)) if event.event_id is not None else b""
        return bytes(event.rewrite(jsonrpc.dumps(checked.forward)))

    async def _drain(self, receive: Receive) -> None:
        """Read and drop a refused request's body (bounded by the body timeout)."""
        with trio.move_on_after(self.body_timeout or float("inf")):
            while True:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return

    async def _read_body(self, receive: Receive) -> bytes:
        return await read_request_body(receive, limit=self.limit, timeout=self.body_timeout,
                                       too_large=_message_too_large, too_slow=_body_too_slow)

    async def _read_reply(self, response: httpx.Response) -> bytes:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self.limit:
                raise _Refused(502, jsonrpc.error(None, jsonrpc.INTERNAL_ERROR, "The MCP server's reply is larger "
                                                  "than the proxy's --mcp-max-message-size."), "response_too_large")
        return bytes(body)


def _find_answer(raw: bytes, content_type: str, asked: Message, limit: int) -> Message | None:
    """The response to ``asked`` in a whole reply, JSON or an event stream; None when there is none."""
    if content_type.split(";")[0].strip().lower() == "text/event-stream":
        splitter = EventSplitter(limit)
        try:
            datas = [event.data for event in [*splitter.feed(raw), *splitter.end()]]
        except FramingError:  # an event too large (EventTooLarge) or not UTF-8
            return None
    else:
        datas = [raw.decode("utf-8", "replace")]
    for data in datas:
        if not data or not data.strip():
            continue
        try:
            message = jsonrpc.parse(data)
        except Malformed:
            continue
        if message.kind in (Kind.RESULT, Kind.ERROR) and message.id == asked.id:
            return message if message.kind is Kind.RESULT else None
    return None


def trace_context(message: Message) -> dict[str, str] | None:
    """The W3C trace context a message carries in ``params._meta`` (the MCP conventions' place for it: an
    agent's span for the call, where one HTTP connection carries many calls), None when it has none.
    Only short strings are kept: the span recorder parses them, and drops what is not a traceparent."""
    meta = message.params.get("_meta")
    if not isinstance(meta, dict):
        return None
    carrier = {key: value for key in ("traceparent", "tracestate")
               if isinstance(value := meta.get(key), str) and len(value) <= _TRACE_CHARS}
    return carrier if "traceparent" in carrier else None


def _answered(message: Message, asked: Message | None) -> Message | None:
    """The client request ``message`` answers, when it is the response to ``asked``."""
    if asked is None or message.kind not in (Kind.RESULT, Kind.ERROR) or message.id != asked.id:
        return None
    return asked


def _refusal_text(checked: Checked) -> str:
    forward = checked.forward or {}
    error = forward.get("error") if isinstance(forward, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return "The MCP server's reply was refused by a CAPSEM policy."


class _Context:
    """One request on the hop: its server, owner, upstream session and checks; logs each message."""

    def __init__(
        self, server: McpServer, owner: str, session: str | None, checks: MessageChecks, exchange: Exchange,
        recorder: Recorder, refusals: RefusalCounts,
    ) -> None:
        self.recorder = recorder
        self.refusals = refusals
        self.server = server
        self.owner = owner
        self.session = session
        self.checks = checks
        self.exchange = exchange
        self.deadline: trio.CancelScope | None = None  # --mcp-timeout's scope for the request being answered

    def note(self, message: Message, direction: str, decision: str, asked: Message | None = None) -> None:
        """One log line, one count and one audit record per JSON-RPC message (no content, the session id
        hashed)."""
        method = message.method or (f"{asked.method} response" if asked is not None else "response")
        tool = message.tool or (asked.tool if asked is not None else "")
        # A refused call counted per session and tool: "refused=3" is an agent retrying what it was told not to.
        refused = self.refusals.add(self.checks.session, tool) if decision == "BLOCK" and tool else 0
        log.info(
            "mcp %s message server=%s method=%s tool=%s decision=%s%s session=%s request_id=%s tenant_id=%s",
            direction, self.server.name, method, tool or "-", decision, f" refused={refused}" if refused else "",
            hashed(self.session or ""), self.exchange.request_id, self.exchange.tenant_id,
            extra={"event": "mcp message", "fields": {
                "direction": direction, "server": self.server.name, "method": method, "tool": tool,
                "decision": decision, "refused": refused, "session": hashed(self.session or ""),
                "request_id": self.exchange.request_id, "tenant_id": self.exchange.tenant_id,
            }},
        )
        label = message.method if message.method in KNOWN_METHODS else "response" if not message.method else "other"
        self.recorder.mcp_message(self.exchange, McpNote(
            direction, self.server.name, method[:128], label, tool[:128], decision, hashed(self.session or "")))


class _Reply:
    """The reply side: our headers on every start, ``done`` called once before the last byte."""

    def __init__(self, send: Send, own: list[tuple[bytes, bytes]], done: Done) -> None:
        self.send = send
        self.own = own
        self._done = done
        self.recorded = False
        self.body_read = False
        self.started = False

    def done(self, status: int, outcome: str) -> None:
        if not self.recorded:
            self.recorded = True
            self._done(status, outcome)

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        names = {name for name, _ in self.own}
        headers = [(name, value) for name, value in headers if name not in names] + self.own
        self.started = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def chunk(self, data: bytes) -> None:
        if data:
            await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self) -> None:
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def whole(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, outcome: str) -> None:
        await self.start(status, [*headers, (b"content-length", b"%d" % len(body))])
        self.done(status, outcome)
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def json(self, status: int, body: dict[str, Any], outcome: str) -> None:
        await self.whole(status, _JSON, jsonrpc.dumps(body) if body else b"", outcome)
