"""The data plane: the one ASGI entry every request passes, and the home of every proxied route.

Mounted on the Quart app's ``asgi_app`` (Quart's documented way to add ASGI
middleware), it sees each HTTP request first:

1. the ``Exchange`` is born (request id, start time): every reply, whichever
   plane answers it, carries ``x-capsem-request-id`` and gets one log line;
2. the guard refuses ambiguous framing (400) and oversized headers (431);
   on a proxied route, a header or query that could be read two ways (400);
3. the route table (``routes.py``) resolves the request: a proxied route, a
   refusal in the provider's shape (404, 405, 400), or not ours at all;
4. a proxied route's body is read (413 beyond ``--max-body-size``, 408 beyond
   ``--body-timeout``) and the pipeline answers it, JSON or a stream;
5. ``/mcp/NAME`` (with ``--mcp-server``) goes to the MCP hop (``mcp/hop.py``);
6. anything else goes to the control plane, the Quart app: ``/health``,
   ``/metrics``, CORS preflights, the 404/405 fallback.

Why not Quart routes for the proxied paths: measured under 32-connection load,
a proxied JSON request cost about 1.5 ms of CPU through Quart-Trio and about
0.9 ms here, for the same pipeline. Quart builds a Request (werkzeug headers,
routing, a body object), runs a nursery of two tasks, hooks and signals and a
Response per request; a proxy's handful of routes needs none of it.

A client hanging up stops its request and its stream, not through a task per
request waiting for ``http.disconnect`` (~70 us of every request) but because
the server cancels what still runs for a connection once its client is gone
(``_compat/hypercorn.py``); under another ASGI server a hang-up would be
noticed only at the next write.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import trio

from capsem_proxyd.config import Settings
from capsem_proxyd.dialects.base import Dialect
from capsem_proxyd.dialects.query import QueryMap
from capsem_proxyd.errors import ProxyError, bad_request, body_too_large, body_too_slow, internal_error
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.http.cors import Cors
from capsem_proxyd.http.guard import HeaderLimits, framing_problem, header_problem, reading_problem
from capsem_proxyd.http.routes import Refusal, RouteTable, error_dialect
from capsem_proxyd.mcp.hop import McpHop
from capsem_proxyd.observe.logs import escape_controls
from capsem_proxyd.observe.recorders import Recorder
from capsem_proxyd.outcomes import StreamOutcome
from capsem_proxyd.proxy.pipeline import IncomingRequest, Pipeline, ProxyReply, Route, error_reply
from capsem_proxyd.proxy.request_body import ClientGone, read_request_body

log = logging.getLogger("capsem_proxyd")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_STREAM_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
_CLOSE = [(b"connection", b"close")]
# The statuses of an upstream that failed the request (unreachable, reset, timed out): its log line is a WARNING.
_UPSTREAM_FAILED = frozenset({502, 504})


class HeaderMap(Mapping[str, str]):
    """The request headers by lower-case name, first value winning (as werkzeug's ``get``);
    ``repeated``: the names given more than once (the guard refuses some of them)."""

    __slots__ = ("_values", "repeated")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        values: dict[str, str] = {}
        repeated: set[str] = set()
        for name, value in raw:  # ASGI header names are lower-case already
            key = name.decode("latin-1")
            if key in values:
                repeated.add(key)
            else:
                values[key] = value.decode("latin-1")
        self._values = values
        self.repeated = repeated

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


class DataPlane:
    """ASGI middleware: answers every proxied route, hands the control plane its requests."""

    def __init__(
        self, control_plane: ASGIApp, settings: Settings, pipeline: Pipeline, recorder: Recorder,
        mcp: McpHop | None = None,
    ) -> None:
        self.control_plane = control_plane
        self.mcp = mcp
        self.pipeline = pipeline
        self.recorder = recorder
        self.routes = RouteTable(settings)
        self.cors = Cors(settings.cors_origins) if settings.cors else None
        self.header_limits = HeaderLimits(max_count=settings.max_header_count, max_bytes=settings.max_header_size)
        self.max_body = settings.max_body_size
        self.body_timeout = settings.body_timeout or None
        self.forward_client_ip = settings.forward_client_ip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.control_plane(scope, receive, send)
            return
        exchange = Exchange.begin(scope["path"])
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        headers = HeaderMap(raw_headers)
        self.recorder.request_started(exchange, headers)
        query = QueryMap(scope.get("query_string", b""))
        reply = _Reply(send, exchange, self.cors.reply_headers(headers.get("origin")) if self.cors else [])
        try:
            problem = framing_problem(raw_headers) or header_problem(raw_headers, self.header_limits)
            if problem is not None:
                await self._refuse(receive, reply, error_dialect(scope["path"], headers, query), problem, close=True)
                return
            if self.mcp is not None and self.mcp.serves(scope["path"]) and scope["method"] != "OPTIONS":
                await self.mcp.serve(
                    scope, receive, reply.send, exchange, headers, reply.own,
                    lambda status, outcome: reply.done(self.recorder, status, outcome),
                )
                return
            try:
                route = self.routes.resolve(scope["method"], scope["path"], headers, query)
            except Refusal as refusal:
                await self._refuse(receive, reply, refusal.dialect, refusal.error)
                return
            if route is None:
                exchange.proxied = False
                reply.recorder = self.recorder  # the control plane's reply is recorded as its last byte goes
                await self.control_plane(scope, receive, reply.control_plane_send)
                return
            await self._proxy(scope, receive, reply, route, headers, query)
        finally:
            if not reply.recorded:  # cancelled: the client left, or the server is going away
                reply.done(self.recorder, 499, StreamOutcome.CLIENT_DISCONNECTED)

    async def _proxy(
        self, scope: Scope, receive: Receive, reply: _Reply, route: Route, headers: HeaderMap, query: QueryMap
    ) -> None:
        if (problem := reading_problem(route.dialect.key_carriers, headers, headers.repeated, query)) is not None:
            await self._refuse(receive, reply, route.dialect, problem)
            return
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await reply.error(self.recorder, route.dialect, body_too_large(), close=True)
            return
        if not route.checked and route.dialect.endpoint == "models" and (
            (declared or "0") != "0" or "transfer-encoding" in headers
        ):
            await self._refuse(receive, reply, route.dialect, bad_request(f"GET {scope['path']} takes no request body."))
            return
        try:
            body = await self._read_body(receive)
        except ClientGone:
            return
        except ProxyError as error:  # 413 or 408
            await reply.error(self.recorder, route.dialect, error, close=True)
            return
        client = scope.get("client")
        incoming = IncomingRequest(
            method=scope["method"],
            headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]],
            header_map=headers,
            query=query,
            query_pairs=query.pairs,
            query_string=scope.get("query_string", b""),
            body=body,
            client_addr=(client[0] if client else "<local>") if self.forward_client_ip else None,
        )
        try:
            answer = await self.pipeline.serve(reply.exchange, route, incoming)
        except Exception:  # noqa: BLE001 - fail closed with a provider-shaped 500, logged with its request
            log.exception("unexpected error request_id=%s path=%s", reply.exchange.request_id,
                          escape_controls(scope["path"]))
            await reply.error(self.recorder, route.dialect, internal_error())
            return
        if answer.stream is None:
            if (answered := answer.error) is not None:
                # The log says which error: a refusal reads apart from a malformed request, a reset from a timeout.
                reply.exchange.error = answered.code
                if answered.status in _UPSTREAM_FAILED:
                    reply.exchange.failure = answered.cause or answered.message
            try:
                reply.done(self.recorder, answer.status, str(answer.status))  # logged as the reply goes out
                await reply.whole(answer)
            finally:
                answer.release()  # its share of --reply-memory, once sent (or the client left)
            return
        await reply.stream(answer, self.recorder)

    async def _refuse(
        self, receive: Receive, reply: _Reply, dialect: Dialect, error: ProxyError, *, close: bool = False
    ) -> None:
        """Answer ``error`` after reading (and dropping) the body: answered with its body
        unread and more bytes behind it, Hypercorn may close before the answer is out."""
        with trio.move_on_after(self.body_timeout or float("inf")):
            try:
                await self._read_body(receive, keep=False)
            except (ClientGone, ProxyError):
                pass
        await reply.error(self.recorder, dialect, error, close=close)

    async def _read_body(self, receive: Receive, *, keep: bool = True) -> bytes:
        """The whole request body, at most ``max_body`` bytes (413), within ``body_timeout`` (408)."""
        return await read_request_body(
            receive, limit=self.max_body, timeout=self.body_timeout, keep=keep,
            too_large=body_too_large, too_slow=lambda: body_too_slow(self.body_timeout),
        )


class _Reply:
    """The reply side of one exchange: every reply carries the request id and the CORS headers,
    and ends with exactly one ``request_done``."""

    def __init__(self, send: Send, exchange: Exchange, cors: list[tuple[str, str]]) -> None:
        self.send = send
        self.exchange = exchange
        self.own = [(b"x-capsem-request-id", exchange.request_id.encode())]
        self.own += [(name.encode(), value.encode("latin-1")) for name, value in cors]
        self.status = 500
        self.recorded = False
        self.recorder: Recorder | None = None  # set for the control plane's replies

    def done(self, recorder: Recorder, status: int, outcome: str) -> None:
        self.recorded = True
        recorder.request_done(self.exchange, status, outcome)

    async def control_plane_send(self, message: Message) -> None:
        """The control plane's ``send``, with our headers added to its response start."""
        if message["type"] == "http.response.start":
            self.status = message["status"]
            names = {name for name, _ in self.own}
            kept = [(name, value) for name, value in message.get("headers", []) if name.lower() not in names]
            message = {**message, "headers": kept + self.own}
        elif message["type"] == "http.response.body" and not message.get("more_body") and self.recorder is not None:
            self.done(self.recorder, self.status, str(self.status))
        await self.send(message)

    async def error(self, recorder: Recorder, dialect: Dialect, error: ProxyError, *, close: bool = False) -> None:
        if self.exchange.provider == "-":
            self.exchange.provider = dialect.provider
        answer = error_reply(dialect, error)
        self.done(recorder, answer.status, error.code)
        await self.whole(answer, _CLOSE if close else [])

    async def whole(self, answer: ProxyReply, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        """A whole body, a piece at a time (``ProxyReply.pieces``): a large one is never copied whole."""
        headers = self._headers(answer, extra or [])
        headers.append((b"content-length", b"%d" % answer.length))
        await self.send({"type": "http.response.start", "status": answer.status, "headers": headers})
        pieces = answer.pieces()
        piece = next(pieces, b"")
        for following in pieces:
            await self.send({"type": "http.response.body", "body": piece, "more_body": True})
            piece = following
        await self.send({"type": "http.response.body", "body": piece, "more_body": False})

    async def stream(self, answer: ProxyReply, recorder: Recorder) -> None:
        """Send a StreamPump's output as it is released; count and log the stream when it ends."""
        pump = answer.stream
        assert pump is not None
        headers = self._headers(answer, _STREAM_HEADERS)
        await self.send({"type": "http.response.start", "status": answer.status, "headers": headers})
        recorder.stream_started(self.exchange)
        send = self.send

        def write(chunk: bytes) -> Awaitable[None]:  # the server's send itself: no coroutine of ours per write
            return send({"type": "http.response.body", "body": chunk, "more_body": True})

        try:
            await pump.relay(write)
            self._stream_over(recorder, answer.status, pump.outcome)
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if not self.recorded:  # cancelled: the client left (or the server is going away)
                # A client that hangs up on the final error event (SDKs raise on it and close at once),
                # or on the event that ends the reply (the OpenAI SDKs close at [DONE]), leaves while
                # the upstream is being closed: the stream still ended as the pump decided.
                ended = pump.outcome
                if ended is StreamOutcome.INCOMPLETE:
                    ended = StreamOutcome.CLIENT_DISCONNECTED
                self._stream_over(recorder, answer.status, ended)

    def _stream_over(self, recorder: Recorder, status: int, outcome: StreamOutcome) -> None:
        recorder.stream_finished(self.exchange, outcome)
        self.done(recorder, status, outcome)

    def _headers(self, answer: ProxyReply, extra: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The reply's headers and ours; an upstream header of the same name is replaced by ours."""
        own = self.own + extra
        names = {name for name, _ in own}
        headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers]
        return [(name, value) for name, value in headers if name not in names] + own
