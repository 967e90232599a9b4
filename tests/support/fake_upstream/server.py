"""The fake LLM provider: a small trio + h11 HTTP/1.1 server.

Why not an ASGI app under hypercorn: the faults tests need (close the socket
before answering, announce a chunk and send half of it, cut a Content-Length
body short) are below what ASGI can express, and a raw server also gives an
exact count of open TCP connections and immediate notice of a client going
away. h11 still does the HTTP framing, so keep-alive and chunked streaming
behave like a real server.

Usage::

    async with run_fake_upstream() as fake:
        fake.script(Reply(text="hi"), Reply(status=429))
        ...  # point a client at fake.url
        assert fake.requests_to("/chat/completions")[0].json["model"] == "gpt-4o"
"""

from __future__ import annotations

import collections
import logging
import re
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import h11
import trio

from . import anthropic_format, gemini_format, openai_format, openai_responses
from .script import Reply, changed_signature, new_id
from .wire import Plan, RecordedRequest, StoredResponse, StreamRecord, Turn

log = logging.getLogger(__name__)

_RECEIVE_SIZE = 65536
_SOCKET_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)


class _ClientGone(Exception):
    """Raised when a send fails because the peer closed or reset the connection."""


# --- Routing ----------------------------------------------------------------


@dataclass(frozen=True)
class _Provider:
    """Provider-level pieces every route of that provider shares."""

    name: str
    error_plan: Callable[[int, str | None, str | None], Plan]
    last_user_text: Callable[[dict[str, Any]], str | None]


_OPENAI = _Provider("openai", openai_format.error_plan, openai_format.last_user_text)
_RESPONSES = _Provider("openai", openai_format.error_plan, openai_responses.last_user_text)
_GEMINI = _Provider("gemini", gemini_format.error_plan, gemini_format.last_user_text)
_ANTHROPIC = _Provider("anthropic", anthropic_format.error_plan, anthropic_format.last_user_text)

_GENERATION_SUFFIXES = (
    "/chat/completions", "/responses", "/completions", "/v1/messages", ":generateContent", ":streamGenerateContent",
)


def is_generation(request: RecordedRequest) -> bool:
    """A request that asks the model for a reply (not a model list, token count or other side request)."""
    return request.method == "POST" and request.path.endswith(_GENERATION_SUFFIXES)


_GEMINI_PATH = re.compile(r"/(?P<version>v1|v1beta|v1alpha)/models(?:/(?P<model>[^/:]+)(?::(?P<method>\w+))?)?/?$")
_OPENAI_MODEL = re.compile(r"/v1/models/(?P<model>.+)$")


@dataclass(frozen=True)
class _Route:
    provider: _Provider
    handler: Callable[[Turn], Plan] | None  # None: unknown path, answer 404
    model: str


def _is_gemini(request: RecordedRequest) -> bool:
    if "/v1beta/" in request.path or "/v1alpha/" in request.path or ":" in request.path.rsplit("/", 1)[-1]:
        return True
    return "x-goog-api-key" in request.headers or "key" in request.query


def _is_anthropic(request: RecordedRequest) -> bool:
    return "anthropic-version" in request.headers or "x-api-key" in request.headers


def _route(request: RecordedRequest) -> _Route:
    """Pick provider and handler from method + path (+ auth headers for /v1/models)."""
    path, method, body = request.path, request.method, request.body_dict
    model = str(body.get("model") or "")

    gemini = _GEMINI_PATH.search(path)
    if gemini and _is_gemini(request):
        name = gemini.group("model")
        action = gemini.group("method")
        model = name or "gemini-2.5-flash"
        handlers: dict[tuple[str, str | None], Callable[[Turn], Plan]] = {
            ("POST", "generateContent"): gemini_format.generate_content,
            ("POST", "streamGenerateContent"): gemini_format.stream_generate_content,
            ("POST", "countTokens"): gemini_format.count_tokens,
            ("POST", "embedContent"): gemini_format.embed_content,
            ("POST", "batchEmbedContents"): gemini_format.batch_embed_contents,
        }
        if name is None:
            handler = gemini_format.list_models if method == "GET" else None
        elif action is None:
            handler = (lambda turn: gemini_format.get_model(turn, name)) if method == "GET" else None
        else:
            handler = handlers.get((method, action))
        return _Route(_GEMINI, handler, model)

    if path.endswith("/v1/messages") and method == "POST":
        return _Route(_ANTHROPIC, anthropic_format.messages, model or "claude-sonnet-4-6")
    if path.endswith("/v1/messages/count_tokens") and method == "POST":
        return _Route(_ANTHROPIC, anthropic_format.count_tokens, model or "claude-sonnet-4-6")

    is_anthropic = _is_anthropic(request)
    provider = _ANTHROPIC if is_anthropic else _OPENAI
    if method == "GET" and path.endswith("/v1/models"):
        return _Route(provider, anthropic_format.list_models if is_anthropic else openai_format.list_models, model)
    model_match = _OPENAI_MODEL.search(path)
    if method == "GET" and model_match:
        model_id = model_match.group("model")
        getter = anthropic_format.get_model if is_anthropic else openai_format.get_model
        return _Route(provider, lambda turn: getter(turn, model_id), model_id)

    posts: dict[str, tuple[_Provider, Callable[[Turn], Plan], str]] = {
        "/v1/chat/completions": (_OPENAI, openai_format.chat_completions, "gpt-4o-mini"),
        "/v1/responses": (_RESPONSES, openai_responses.responses, "gpt-4o-mini"),
        "/v1/completions": (_OPENAI, openai_format.completions, "gpt-3.5-turbo-instruct"),
        "/v1/embeddings": (_OPENAI, openai_format.embeddings, "text-embedding-3-small"),
        "/v1/moderations": (_OPENAI, openai_format.moderations, "omni-moderation-latest"),
    }
    if method == "POST":
        for suffix, (prov, handler, default_model) in posts.items():
            if path.endswith(suffix):
                return _Route(prov, handler, model or default_model)
    return _Route(provider, None, model)


# --- The fake ---------------------------------------------------------------


class FakeUpstream:
    """Handle on a running fake provider: script replies, inspect traffic.

    Attributes tests use: `url`, `requests`, `streams`, `open_connections`,
    `default_reply` (used when the script queue is empty) and `errors`
    (exceptions raised inside the fake itself; any makes the context exit fail).
    """

    def __init__(self) -> None:
        self.url: str = ""
        self.requests: list[RecordedRequest] = []
        self.streams: list[StreamRecord] = []
        self.open_connections: int = 0
        self.total_connections: int = 0
        self.default_reply: Reply = Reply()
        self.errors: list[BaseException] = []
        # Responses replies kept for later previous_response_id references, by id (see StoredResponse).
        self.stored_responses: dict[str, StoredResponse] = {}
        self._queue: collections.deque[Reply] = collections.deque()
        self._generation_queue: collections.deque[Reply] = collections.deque()
        self._changed = trio.Event()

    # -- scripting and inspection --

    def script(self, *replies: Reply) -> None:
        """Queue replies (FIFO); each is used by exactly one next request, whatever its path."""
        self._queue.extend(replies)

    def script_generations(self, *replies: Reply) -> None:
        """Queue replies for generation requests only (FIFO, before `script`'s queue).

        Side requests an agent makes on its own (model lists, token counts)
        get their default answer and leave these for the model turns.
        """
        self._generation_queue.extend(replies)

    @property
    def pending_replies(self) -> int:
        """Scripted replies not used yet."""
        return len(self._queue) + len(self._generation_queue)

    @property
    def generation_requests(self) -> list[RecordedRequest]:
        """The requests that asked the model for a reply, in order."""
        return [r for r in self.requests if is_generation(r)]

    def requests_to(self, path_substring: str) -> list[RecordedRequest]:
        """Recorded requests whose path contains `path_substring`."""
        return [r for r in self.requests if path_substring in r.path]

    def reset(self) -> None:
        """Forget recorded traffic and queued replies (connections stay open)."""
        self.requests.clear()
        self.streams.clear()
        self._queue.clear()
        self._generation_queue.clear()

    async def wait_for_requests(self, count: int = 1) -> None:
        """Wait until at least `count` requests were received (bound it with trio.fail_after)."""
        while len(self.requests) < count:
            await self._changed.wait()

    async def wait_for_streams(self, count: int = 1) -> None:
        """Wait until at least `count` streamed replies have started."""
        while len(self.streams) < count:
            await self._changed.wait()

    async def wait_for_open_connections(self, count: int) -> None:
        """Wait until exactly `count` TCP connections are open (e.g. 0 after a test)."""
        while self.open_connections != count:
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- HTTP/1.1 connection handling --

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        """One TCP connection: a keep-alive loop of request/answer exchanges."""
        self.open_connections += 1
        self.total_connections += 1
        self._notify()
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                received = await self._read_request(conn, stream)
                if received is None:
                    return
                keep_alive = await self._exchange(conn, stream, *received)
                if not keep_alive or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except _ClientGone:
            pass
        except Exception as exc:  # a bug in the fake: keep serving other connections, fail at exit
            log.error("fake upstream crashed on a connection:\n%s", traceback.format_exc())
            self.errors.append(exc)
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            self.open_connections -= 1
            self._notify()

    async def _read_request(self, conn: h11.Connection, stream: trio.SocketStream) -> tuple[h11.Request, bytes] | None:
        """Read one whole request; None when the client closed or spoke garbage."""
        request: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                await self._send_bad_request(conn, stream)
                return None
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:
                    await _send(stream, conn.send(h11.InformationalResponse(status_code=100, headers=[])))
                try:
                    data = await stream.receive_some(_RECEIVE_SIZE)
                except _SOCKET_ERRORS:
                    return None
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, bytes(body)
            else:  # ConnectionClosed or PAUSED
                return None

    async def _send_bad_request(self, conn: h11.Connection, stream: trio.SocketStream) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = b'{"error": {"message": "malformed HTTP request", "type": "invalid_request_error"}}'
        try:
            await _send(stream, conn.send(_response(400, [("content-type", "application/json")], len(body))))
            await _send(stream, conn.send(h11.Data(data=body)))
            await _send(stream, conn.send(h11.EndOfMessage()))
        except (_ClientGone, h11.LocalProtocolError):
            pass

    async def _exchange(self, conn: h11.Connection, stream: trio.SocketStream, event: h11.Request, body: bytes) -> bool:
        """Answer one request while watching for the client going away; returns keep-alive."""
        request = _record(event, body)
        self.requests.append(request)
        if self._generation_queue and is_generation(request):
            reply = self._generation_queue.popleft()
        else:
            reply = self._queue.popleft() if self._queue else replace(self.default_reply)
        self._notify()

        exchange = _Exchange(self, conn, stream, request, reply)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(exchange.watch_for_disconnect)
                with exchange.scope:
                    try:
                        await exchange.answer()
                    except _ClientGone:
                        exchange.client_gone()
                nursery.cancel_scope.cancel()
        finally:
            exchange.finish()
            self._notify()
        return exchange.keep_alive


class _Exchange:
    """One request/answer on a connection, with its fault injection."""

    def __init__(
        self,
        fake: FakeUpstream,
        conn: h11.Connection,
        stream: trio.SocketStream,
        request: RecordedRequest,
        reply: Reply,
    ) -> None:
        self.fake, self.conn, self.stream = fake, conn, stream
        self.request, self.reply = request, reply
        self.scope = trio.CancelScope()
        self.record: StreamRecord | None = None
        self.answered = False  # the last write of the answer has started: a hang-up now is normal
        self.keep_alive = False

    # -- client liveness --

    async def watch_for_disconnect(self) -> None:
        """Read while answering: EOF/reset means the client left. Pipelined bytes go to h11."""
        while True:
            try:
                data = await self.stream.receive_some(_RECEIVE_SIZE)
            except _SOCKET_ERRORS:
                data = b""
            if not data:
                if not self.answered:
                    self.client_gone()
                return
            self.conn.receive_data(data)

    def client_gone(self) -> None:
        """The client hung up (EOF, reset, or a failed send) before the answer was out."""
        if not self.answered:
            self.request.client_closed = True
            if self.record is not None and not self.record.completed:
                self.record.client_closed = True
        self.keep_alive = False
        self.scope.cancel()

    def finish(self) -> None:
        if self.record is not None:
            self.record.closed.set()
        self.request.done.set()

    # -- answering --

    async def answer(self) -> None:
        reply = self.reply
        if reply.fault == "never_answer":
            self._start_record()
            await trio.sleep_forever()  # ends when the watcher sees the client leave
        if reply.delay:
            await trio.sleep(reply.delay)
        if reply.fault == "reset_before_headers":
            return  # closing the connection is the whole answer

        plan = self._plan()
        self.request.status = plan.status
        headers = [*plan.headers, *reply.headers.items(), *_common_headers()]
        if plan.is_stream:
            self._start_record()
            await self._send_stream(plan, headers)
        else:
            await self._send_body(plan, headers)

    def _start_record(self) -> None:
        self.record = StreamRecord(path=self.request.path, request=self.request, fault=self.reply.fault)
        self.fake.streams.append(self.record)
        self.fake._notify()

    def _plan(self) -> Plan:
        """Choose the answer: raw bytes, a provider error, a 404, or the handler's reply."""
        reply, request = self.reply, self.request
        route = _route(request)
        if reply.raw_body is not None:
            return Plan(status=reply.status, headers=[("content-type", reply.content_type)], body=reply.raw_body)
        in_stream_error = reply.fault == "error_mid_stream" and _wants_stream(request)
        if reply.fault == "error_mid_stream" and not in_stream_error:
            status = reply.status if reply.status >= 400 else 500
            return route.provider.error_plan(status, reply.error_message, reply.error_type)
        if reply.status >= 400 and not in_stream_error:
            return route.provider.error_plan(reply.status, reply.error_message, reply.error_type)
        if route.handler is None:
            return route.provider.error_plan(404, f"Unknown endpoint: {request.method} {request.path}", None)
        if (complaint := changed_signature(request.body_dict)) is not None:
            return route.provider.error_plan(400, complaint, None)
        user_text = route.provider.last_user_text(request.body_dict)
        return route.handler(Turn(request=request, reply=reply, user_text=user_text, model=route.model,
                                  stored=self.fake.stored_responses))

    async def _send_body(self, plan: Plan, headers: list[tuple[str, str]]) -> None:
        body = plan.body or b""
        fault = self.reply.fault
        if fault == "truncated_chunked":
            await _send(self.stream, self.conn.send(_response(plan.status, headers, None)))
            await _send(self.stream, _partial_chunk(body))
            return
        if fault in ("reset_mid_body", "reset_mid_stream"):
            await _send(self.stream, self.conn.send(_response(plan.status, headers, len(body))))
            await _send(self.stream, body[: len(body) // 2])
            return
        if fault == "malformed_sse":
            body = body[: len(body) // 2]
        head = self.conn.send(_response(plan.status, headers, len(body))) or b""
        await self._end_message(head + (self.conn.send(h11.Data(data=body)) or b""))

    async def _send_stream(self, plan: Plan, headers: list[tuple[str, str]]) -> None:
        """Send each event as one chunk, looking one event ahead to know which is last."""
        assert plan.events is not None and self.record is not None
        reply, record = self.reply, self.record
        fault = reply.fault if reply.fault in _STREAM_FAULTS else None
        await _send(self.stream, self.conn.send(_response(plan.status, headers, None)))
        events = iter(plan.events)
        pending = next(events, None)
        first_sent = trio.current_time()
        while pending is not None:
            if fault and record.events_sent >= reply.fault_after_events:
                await self._stream_fault(plan, pending)
                return
            upcoming = next(events, None)
            if reply.chunk_delay and record.events_sent:
                if reply.chunk_clock == "schedule":
                    await trio.sleep_until(first_sent + record.events_sent * reply.chunk_delay)
                else:
                    await trio.sleep(reply.chunk_delay)
            if upcoming is None and not fault:
                # SDKs stop at [DONE]/message_stop and may hang up before the final
                # empty chunk: from this write on, that is a normal end, not an abort.
                self.answered = True
            await _send(self.stream, self.conn.send(h11.Data(data=pending)))
            record.events_sent += 1
            pending = upcoming
        if fault:
            await self._stream_fault(plan, None)
            return
        record.completed = True
        await self._end_message()

    async def _stream_fault(self, plan: Plan, event: bytes | None) -> None:
        """Inject `reply.fault` in place of `event` (None: after the last event)."""
        fault = self.reply.fault
        sent = self.record.events_sent if self.record else 0
        event = event or b"data: {}\n\n"
        if fault == "reset_mid_stream":
            return  # just close
        if fault == "reset_mid_body":  # half an event as a whole chunk, then close
            await _send(self.stream, self.conn.send(h11.Data(data=event[: max(1, len(event) // 2)])))
            return
        if fault == "truncated_chunked":
            await _send(self.stream, _partial_chunk(event))
            return
        if fault == "malformed_sse":
            extra = plan.garbage
        else:  # error_mid_stream
            extra = plan.error_event(sent) if plan.error_event else b""
        if extra:
            await _send(self.stream, self.conn.send(h11.Data(data=extra)))
        await self._end_message()

    async def _end_message(self, prefix: bytes = b"") -> None:
        """Finish the HTTP message (sending `prefix` first, in the same write)."""
        data = prefix + (self.conn.send(h11.EndOfMessage()) or b"")
        self.keep_alive = self.conn.our_state is h11.DONE
        self.answered = True
        await _send(self.stream, data)


_STREAM_FAULTS = frozenset(
    {"reset_mid_body", "reset_mid_stream", "malformed_sse", "error_mid_stream", "truncated_chunked"}
)


def _wants_stream(request: RecordedRequest) -> bool:
    return bool(request.body_dict.get("stream")) or ":streamGenerateContent" in request.path


def _partial_chunk(payload: bytes) -> bytes:
    """A chunk header announcing `payload` in full, followed by only half of it."""
    payload = payload or b"{}"
    return f"{len(payload):x}\r\n".encode() + payload[: max(1, len(payload) // 2)]


def _response(status: int, headers: list[tuple[str, str]], content_length: int | None) -> h11.Response:
    """Response head; without a length h11 picks chunked encoding (HTTP/1.1 clients)."""
    if content_length is not None:
        headers = [*headers, ("content-length", str(content_length))]
    return h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, b""))


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
    529: b"Site Overloaded",
}


def _common_headers() -> list[tuple[str, str]]:
    return [
        ("date", formatdate(usegmt=True)),
        ("server", "capsem-fake-upstream"),
        ("x-request-id", new_id("req_")),
    ]


async def _send(stream: trio.SocketStream, data: bytes | None) -> None:
    if not data:
        return
    try:
        await stream.send_all(data)
    except _SOCKET_ERRORS as exc:
        raise _ClientGone() from exc


def _record(event: h11.Request, body: bytes) -> RecordedRequest:
    target = event.target.decode("latin-1")
    parts = urlsplit(target)
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return RecordedRequest(
        method=event.method.decode("ascii"),
        path=unquote(parts.path),
        query=dict(parse_qsl(parts.query, keep_blank_values=True)),
        headers=headers,
        body=body,
        target=target,
    )


@asynccontextmanager
async def run_fake_upstream(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[FakeUpstream]:
    """Serve a `FakeUpstream` on an ephemeral port for the duration of the block.

    Raises at exit if the fake itself crashed while handling a request, so
    a bug in the fake cannot pass silently as a proxy error.
    """
    fake = FakeUpstream()
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(port, host=host)
        port = listeners[0].socket.getsockname()[1]
        fake.url = f"http://{host}:{port}"
        await nursery.start(trio.serve_listeners, fake._serve_connection, listeners)
        try:
            yield fake
        except BaseException as exc:  # re-raised below, outside the nursery, so not wrapped in an ExceptionGroup
            body_error = exc
        nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
    if fake.errors:
        first = fake.errors[0]
        raise RuntimeError(f"the fake upstream crashed {len(fake.errors)} time(s); first: {first!r}") from first
