"""One request, one pipeline: key → parse → request checks → upstream → reply checks.

Data flows one way. The pipeline knows nothing of HTTP servers: it takes the
request's ``Exchange``, its ``Route`` and the ``IncomingRequest``, and returns
a ``ProxyReply`` (bytes, or a ``StreamPump`` to iterate); the data plane
(``http/data_plane.py``) drives it. Every refusal is a ``ProxyError`` answered
in the route's provider shape.

The query string goes upstream as the client sent it: the parameters the
dialect does not know (``Dialect.query_params``) are prompt content, a line
``name=value`` each after the body's text.

References to content the provider stores are refused or admitted by
``--stored-content`` (``stored_content.py``) before any policy runs; the ids
of replies the provider stores are recorded as they are delivered.

Two things happen only when an observer asks for them, so that they cost
nothing otherwise: the token usage a reply states is read into the
``Exchange`` (``Recorder.reads_usage``), and the request's trace context goes
upstream (``trace_headers``: the client's ``traceparent``/``tracestate`` are
replaced by the ones it returns, which name the proxy's own span).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import trio

from capsem_proxyd.config import DEFAULTS
from capsem_proxyd.dialects.base import Dialect
from capsem_proxyd.dialects.content import Sorter, joined
from capsem_proxyd.enforcement.engine import PolicyEngine
from capsem_proxyd.enforcement.tenants import TenantPolicies
from capsem_proxyd.errors import (
    ErrorCode,
    ProxyError,
    missing_key,
    unmaskable,
    upstream_timeout,
    upstream_unavailable,
)
from capsem_proxyd.exchange import Exchange, tenant_id_for
from capsem_proxyd.observe.recorders import Recorder
from capsem_proxyd.proxy.body import parse_reply, parse_request_body, reply_text
from capsem_proxyd.proxy.limits import Limits, check_reply_body, check_request_body, check_request_view
from capsem_proxyd.proxy.reply_memory import ReplyHold, ReplyMemory
from capsem_proxyd.proxy.stored_content import StoredContent
from capsem_proxyd.proxy.streaming import OpenStreams, StreamPump, StreamSettings, check_stream_body
from capsem_proxyd.proxy.upstream import (
    TRACE_CONTEXT_HEADERS,
    Upstream,
    UpstreamResponse,
    request_headers,
    response_headers,
    stated_size,
)
from capsem_proxyd.redaction.logprobs import mask_logprobs
from capsem_proxyd.redaction.masker import Masker
from capsem_proxyd.redaction.rewrite import Unmaskable
from capsem_proxyd.redaction.scanner import strings_of
from capsem_proxyd.redaction.signed import drop_signed, signed_texts
from capsem_proxyd.verdicts import stricter
from capsem_proxyd.views import ResponseView

JSON_HEADERS = [("content-type", "application/json")]
_EVERY_STRING = Sorter(frozenset())  # no field names: every key and string is content
_HEADER_UNSAFE = re.compile(r"[^\x20-\x7e]|,")
# Error codes of refusals no policy decided (x-capsem-decision: block all the same): the proxy's own
# refusals of content it could not check, record or hold. Upstream failures are not refusals.
_REFUSED_UNDECIDED = frozenset({
    ErrorCode.CAPSEM_STORED_CONTENT, ErrorCode.STORED_CONTENT_UNAVAILABLE, ErrorCode.POLICY_WORKERS_UNAVAILABLE,
    ErrorCode.AUDIT_LOG_UNAVAILABLE, ErrorCode.REPLY_MEMORY_FULL,
})
# The trace-context headers for one request's upstream call (the OpenTelemetry recorder's).
TraceHeaders = Callable[[Exchange], list[tuple[str, str]]]


@dataclass(slots=True)
class IncomingRequest:
    """The parts of a client request the pipeline needs."""

    method: str
    headers: list[tuple[str, str]]
    header_map: Mapping[str, str]  # case-insensitive ``get``
    query: Mapping[str, str]
    query_string: bytes
    body: bytes
    client_addr: str | None = None  # set only when the operator forwards client addresses
    query_pairs: Sequence[tuple[str, str]] = ()  # every query parameter, decoded, in order


@dataclass(slots=True)
class Route:
    """Where a request goes and how it is read: the dialect, the upstream URL, what the path says.

    ``checked`` is false for requests relayed without content checks: model
    lists and lookups (no content) and paths an operator opted into
    pass-through.
    """

    dialect: Dialect
    upstream_url: httpx.URL
    path_model: str | None = None
    path_stream: bool = False
    checked: bool = True
    passthrough: str | None = None  # the operator's pattern that let an unknown path through unchecked

    @property
    def upstream_host(self) -> str:
        """``host:port`` of the upstream, for the log: never the path or query (a Gemini key may sit there)."""
        url = self.upstream_url
        port = url.port or _DEFAULT_PORTS.get(url.scheme)
        return f"{url.host or '-'}:{port}" if port else url.host or "-"


_DEFAULT_PORTS = {"https": 443, "http": 80}

# A whole reply goes out a piece at a time: never copied whole on its way out, its text encoded a piece at a time.
_PIECE_BYTES = 1 << 20
_PIECE_CHARS = _PIECE_BYTES // 4


@dataclass(slots=True)
class ProxyReply:
    """What the client gets: a whole body (``body``, or ``text``: a checked JSON reply kept as the
    provider's text, whose UTF-8 is the provider's bytes exactly), or a stream. ``hold``: the whole
    reply's share of ``--reply-memory``, released by whoever sends it once it went out."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | bytearray | None = None
    stream: StreamPump | None = None
    text: str | None = None
    text_bytes: int = 0  # the UTF-8 length of ``text``
    hold: ReplyHold | None = None
    error: ProxyError | None = None  # the error this reply answers, for the request's log line

    @property
    def length(self) -> int:
        """The whole body's length in bytes (its Content-Length)."""
        return self.text_bytes if self.text is not None else len(self.body or b"")

    def pieces(self) -> Iterator[bytes]:
        """The whole body, at most about a MiB at a time (one piece when it is that small already)."""
        if self.text is not None:
            for start in range(0, len(self.text), _PIECE_CHARS):
                yield self.text[start:start + _PIECE_CHARS].encode("utf-8")
            return
        body = self.body or b""
        if isinstance(body, bytes) and len(body) <= _PIECE_BYTES:
            yield body
            return
        with memoryview(body) as view:
            for start in range(0, len(body), _PIECE_BYTES):
                yield bytes(view[start:start + _PIECE_BYTES])

    def release(self) -> None:
        """It went out (or never will): its share of ``--reply-memory`` is free again."""
        if self.hold is not None:
            self.hold.release()


class Pipeline:
    """Runs every proxied request; the tenant policies are read per request so reloads swap cleanly."""

    def __init__(
        self,
        upstream: Upstream,
        current_policies: Callable[[], TenantPolicies],
        stream_settings: StreamSettings,
        limits: Limits,
        recorder: Recorder,
        stored: StoredContent,
        *,
        request_timeout: float | None = None,
        trace_headers: TraceHeaders | None = None,
        reply_memory: ReplyMemory | None = None,
        masker: Masker | None = None,
    ) -> None:
        self.upstream = upstream
        # --reply-memory: the bytes of non-streamed replies this process holds at once
        self.reply_memory = reply_memory or ReplyMemory(DEFAULTS.reply_memory)
        self.stored = stored  # --stored-content: references to what the provider stores, and its replies' ids
        self.current_policies = current_policies
        self.stream_settings = stream_settings
        self.limits = limits
        self.recorder = recorder
        self.read_usage = recorder.reads_usage
        self.trace_headers = trace_headers
        # The deadline of a call's upstream I/O until the reply is in hand: its response headers (every
        # call), and the whole body of a reply read whole (a JSON reply, to a stream request too). An
        # event stream's events are bounded by the idle timeout instead, each on its own.
        self.request_timeout = request_timeout
        # When a shutdown's grace period is over, the open streams end with an error event.
        self.open_streams = OpenStreams()
        # Placeholders and the tenants' memory of masked values: this process's, kept across reloads.
        self.masker = masker

    def _masker(self) -> Masker:
        masker = self.masker
        if masker is None:  # an app built without one (tests): a key of its own, for this process only
            masker = self.masker = Masker(os.urandom(32), "ephemeral")
        return masker

    def _mask(
        self, exchange: Exchange, incoming: IncomingRequest, body: Any, outcome: str, recalled: frozenset[str] | None,
    ) -> str:
        """What policies asked to mask (and what the tenant's memory knows: ``recalled``, the remembered values
        the body may hold, ``Masker.recalled_in``) masked in the body sent upstream, every other byte as the
        client sent it; ``outcome`` at least REDACT when anything was. A body that cannot be masked exactly is
        refused (``errors.unmaskable``)."""
        recall = recalled is None or bool(recalled)
        masker = self._masker()
        kinds: dict[str, str] = {}
        owners: dict[str, tuple[str, str]] = {}
        for value, kind, policy, hook in exchange.redactions:
            kinds.setdefault(value, kind)  # the first finding names it: masking policies run first
            owners.setdefault(value, (policy, hook))
        raw = incoming.body.decode("utf-8")
        try:
            dropped = drop_signed(raw, body, lambda text: any(value in text for value in kinds)
                                  or (recall and masker.recalls(exchange.tenant_id, text)))
            if dropped is not None:
                raw, body, texts = dropped
                incoming.body = raw.encode("utf-8")
                outcome = stricter(outcome, "REDACT")
                # a value found only in a dropped block is gone with it: nothing is left to mask
                left = "\0".join(strings_of(body))
                kinds = {value: kind for value, kind in kinds.items()
                         if value in left or not any(value in text for text in texts)}
            masked, placeholders = masker.mask(exchange.tenant_id, raw, body, kinds, recall=recall, present=recalled)
        except Unmaskable as error:
            policy, hook = exchange.redactions[0][2:] if exchange.redactions else ("memory", "on_model_call")
            raise unmaskable(policy, hook, str(error)) from None
        if not masked.counts:
            return outcome
        incoming.body = masked.text.encode("utf-8")
        by_placeholder = {placeholder: value for value, placeholder in placeholders.items()}
        for placeholder, count in masked.counts.items():
            found = by_placeholder.get(placeholder)
            # a value the tenant's memory knew, with no finding in this request: the memory masked it
            policy, hook = owners[found] if found is not None else ("memory", "on_model_call")
            kind = kinds[found] if found is not None else placeholder.rsplit("-", 2)[-2]
            self.recorder.redacted(exchange, hook, policy, count, kind, placeholder, masker.key_id)
        return stricter(outcome, "REDACT")

    async def serve(self, exchange: Exchange, route: Route, incoming: IncomingRequest) -> ProxyReply:
        """The reply to ``incoming`` on ``route``: checked, or relayed when the route is not checked."""
        exchange.provider, exchange.endpoint = route.dialect.provider, route.dialect.endpoint
        exchange.operation = route.dialect.operation
        exchange.passthrough = route.passthrough
        try:
            return await (self._handle if route.checked else self._relay)(exchange, route, incoming)
        except ProxyError as error:
            return error_reply(route.dialect, error)

    async def _handle(self, exchange: Exchange, route: Route, incoming: IncomingRequest) -> ProxyReply:
        dialect = route.dialect
        engine = self._engine_for(exchange, dialect, incoming)
        outcome = "ALLOW"
        try:
            body = parse_request_body(incoming.body, incoming.header_map.get("content-type"), dialect.double_spellings)
            check_request_body(body, self.limits)
            exchange.model = dialect.model(body, route.path_model)
            exchange.stream = dialect.wants_stream(body, incoming.query, route.path_stream)
            view = dialect.request_view_of_parsed(body, exchange.model)
            if incoming.query_pairs and (in_query := dialect.query_params.content(incoming.query_pairs)):
                view.set_prompt([*(view.prompt_pieces if view.prompt_pieces is not None else [view.prompt]), *in_query])
            check_request_view(view, self.limits)
            exchange.prompt = view.prompt  # a reference, for an audit log that opted in to prompts
            if references := dialect.references(body):
                await self.stored.admit(exchange, references)
            exchange.masker = masker = self._masker()  # the policies that cannot mask read the masked view
            outcome = await engine.check_request(exchange, view)
            # The body's strings are walked for the tenant's remembered values only when its raw bytes may
            # hold one (``Masker.recalled_in``): most turns of a tenant with a memory hold none.
            recalled = masker.recalled_in(exchange.tenant_id, incoming.body)
            if exchange.redactions or recalled is None or recalled:
                outcome = self._mask(exchange, incoming, body, outcome, recalled)
            keep = self.stored.keeps(dialect, body)
            route.dialect = dialect.for_request(body)  # its reply is read knowing what it echoes
            return await self._forward(route, incoming, exchange, engine, outcome, keep)
        except ProxyError as error:
            reply = error_reply(dialect, error)
            # A refusal of the proxy's own (stored content, content no policy worker was there to check)
            # is a block too, though no policy decided it.
            verdict = error.decision.verdict.value if error.decision is not None else (
                "BLOCK" if error.code in _REFUSED_UNDECIDED else outcome)
            reply.headers.extend(decision_headers(engine, verdict))
            return reply

    async def _relay(self, exchange: Exchange, route: Route, incoming: IncomingRequest) -> ProxyReply:
        """Forward without content checks and answer what the upstream answered.

        The key is still required, so every request has a tenant, and the
        tenant allow-list holds here too.
        """
        self._engine_for(exchange, route.dialect, incoming)
        exchange.model = route.path_model or ""
        until = self._until()
        with self._deadline(until):
            response = await self._send(exchange, route, incoming)
        hold = await self._hold(response, until)
        try:
            with self._deadline(until):
                content = await self.upstream.read_body(response, self.limits.max_response_size, hold)
        except BaseException:
            hold.release()
            raise
        return ProxyReply(response.status_code, response_headers(response.headers), body=content, hold=hold)

    def _engine_for(self, exchange: Exchange, dialect: Dialect, incoming: IncomingRequest) -> PolicyEngine:
        """Read the key: the exchange learns its tenant, the request the engine it runs under."""
        api_key = dialect.api_key(incoming.header_map, incoming.query)
        if not api_key:
            raise missing_key()
        exchange.tenant_id = tenant_id_for(api_key)
        return self.current_policies().for_tenant(exchange.tenant_id)

    async def _send(self, exchange: Exchange, route: Route, incoming: IncomingRequest) -> UpstreamResponse:
        """Send upstream (body unread), timing the wait for the response headers; a recorder may refuse first."""
        self.recorder.forwarding(exchange)
        started = time.perf_counter()
        url = route.upstream_url.copy_with(query=incoming.query_string) if incoming.query_string else route.upstream_url
        exchange.upstream = route.upstream_host
        if self.trace_headers is None:
            headers = request_headers(incoming.headers, incoming.client_addr)
        else:
            headers = request_headers(incoming.headers, incoming.client_addr, dropped=TRACE_CONTEXT_HEADERS)
            headers.extend(self.trace_headers(exchange))
        response = await self.upstream.send(incoming.method, url, headers, incoming.body)
        self.recorder.upstream_answered(exchange, time.perf_counter() - started)
        return response

    async def _forward(
        self, route: Route, incoming: IncomingRequest, exchange: Exchange, engine: PolicyEngine, outcome: str,
        keep: bool,
    ) -> ProxyReply:
        """Send, then check the reply; ``keep``: record the id of a reply the provider stores once it is delivered."""
        until = self._until()
        with self._deadline(until):
            response = await self._send(exchange, route, incoming)
            headers = response_headers(response.headers)
            content_type = (response.headers.get("content-type") or "").lower()
            if response.status_code == 200 and (exchange.stream or content_type.startswith("text/event-stream")):
                # The reply's own content type picks the decoder. An event stream the request did not
                # ask for in the dialect's terms (say "stream": 1) is still a stream, never parsed as
                # JSON; a stream request answered with JSON is checked as the JSON reply it is.
                decoder = route.dialect.stream_decoder(content_type)
                if decoder is not None:
                    exchange.stream = True
                    # Sent at stream start: they cover the request checks (the stream is checked as it goes).
                    headers.extend(decision_headers(engine, outcome))
                    pump = StreamPump(exchange, route.dialect, engine, response, decoder,
                                      self.stream_settings, self.open_streams, read_usage=self.read_usage,
                                      stored=self.stored.stream(exchange) if keep else None,
                                      masker=self._masker())
                    return ProxyReply(200, headers, stream=pump)
                if not content_type.startswith("application/json"):
                    await response.aclose()
                    raise upstream_unavailable(
                        f"The upstream answered a stream request with '{content_type or 'no content type'}', "
                        "which capsem-proxyd cannot check."
                    )
        hold = await self._hold(response, until)
        try:
            with self._deadline(until):
                content = await self.upstream.read_body(response, self.limits.max_response_size, hold)
            if response.status_code >= 300:
                # Provider errors pass through untouched (the SDK shows the provider's own message), once checked.
                asked = len(exchange.redactions)
                outcome = stricter(outcome, await self._check_error_body(exchange, route.dialect, engine,
                                                                         bytes(content), content_type))
                if len(exchange.redactions) > asked:  # an error body is relayed as it is, never rewritten
                    policy, hook = exchange.redactions[asked][2:]
                    raise unmaskable(policy, hook, "an upstream error body is never rewritten", "Response")
                return ProxyReply(response.status_code, headers + decision_headers(engine, outcome), body=content,
                                  hold=hold)
            size = len(content)
            text = reply_text(content)
            del content  # the text is what is kept and sent: the reply is never held as bytes and text at once
            verdict, masked = await self._check_reply(exchange, route.dialect, engine, text, keep)
            outcome = stricter(outcome, verdict)
            if masked is not None:
                text, size = masked, len(masked.encode("utf-8"))
            return ProxyReply(response.status_code, headers + decision_headers(engine, outcome), text=text,
                              text_bytes=size, hold=hold)
        except BaseException:
            hold.release()
            raise

    async def _check_reply(self, exchange: Exchange, dialect: Dialect, engine: PolicyEngine, text: str,
                           keep: bool) -> tuple[str, str | None]:
        """Check a JSON reply: its verdict, and its text with what policies asked to mask masked (None:
        nothing was). Its parsed form lives only as long as this call (see ``body.parse_reply``)."""
        reply_body = parse_reply(text)
        check_reply_body(reply_body, self.limits)
        if self.read_usage and (usage := dialect.usage(reply_body)) is not None:
            exchange.record_usage(usage.input_tokens, usage.output_tokens, usage.model)
        asked = len(exchange.redactions)
        outcome = await engine.check_response(exchange, dialect.response_view(reply_body))
        masked = None
        if len(exchange.redactions) > asked:
            masked = self._mask_reply(exchange, text, reply_body, exchange.redactions[asked:])
            outcome = stricter(outcome, "REDACT")
        if keep and (response_id := dialect.stored_reply(reply_body)) is not None:
            # before the client can name it (or its items)
            await self.stored.delivered(exchange, response_id, dialect.stored_items(reply_body))
        return outcome, masked

    def _mask_reply(
        self, exchange: Exchange, text: str, body: Any, found: Sequence[tuple[str, str, str, str]],
    ) -> str:
        """A JSON reply with the values policies found in it masked by value, byte for byte elsewhere, as a
        request's are (``redaction/rewrite.py``; the tenant's memory is not searched: the model was only
        ever given placeholders). One that cannot be masked exactly is refused, never released."""
        masker = self._masker()
        kinds: dict[str, str] = {}
        owners: dict[str, tuple[str, str]] = {}
        for value, kind, policy, hook in found:
            kinds.setdefault(value, kind)
            owners.setdefault(value, (policy, hook))
        try:
            if any(value in signed for signed in signed_texts(body) for value in kinds):
                raise Unmaskable("a value to mask is inside a block the provider signed (thinking), which the "
                                 "client sends back and the provider would refuse changed")
            masked, placeholders = masker.mask(exchange.tenant_id, text, body, kinds, recall=False)
        except Unmaskable as error:
            policy, hook = found[0][2:]
            raise unmaskable(policy, hook, str(error), "Response") from None
        if masked.counts:
            masked.text = mask_logprobs(masked.text, orjson.loads(masked.text), placeholders)
        if masked.counts and _spells_a_value(orjson.loads(masked.text), kinds):
            policy, hook = found[0][2:]
            raise unmaskable(policy, hook, "its logprobs spell a masked value token by token", "Response")
        by_placeholder = {placeholder: value for value, placeholder in placeholders.items()}
        for placeholder, count in masked.counts.items():
            value = by_placeholder[placeholder]
            policy, hook = owners[value]
            self.recorder.redacted(exchange, hook, policy, count, kinds[value], placeholder, masker.key_id)
        return masked.text

    async def _hold(self, response: UpstreamResponse, until: float) -> ReplyHold:
        """The reply's share of ``--reply-memory``, by its stated size (unknown: it grows as it arrives).

        Waiting for room happens outside the deadline's scope but until its time: what ends the
        wait is the budget's 503, never a 504 that would blame the provider."""
        try:
            return await self.reply_memory.hold(stated_size(response) or 0, until)
        except BaseException:
            with trio.CancelScope(shield=True):
                await response.aclose()
            raise

    async def _check_error_body(
        self, exchange: Exchange, dialect: Dialect, engine: PolicyEngine, content: bytes, content_type: str,
    ) -> str:
        """Every string of an upstream error reply, checked as reply content before it goes.

        An error body is the provider's words, usually: nothing is found and
        it goes unchanged. But a client shows it (the SDKs put it in the
        exception), and an upstream may answer a 400 whose body carries
        ``choices`` or ``candidates``: so it is read as a reply (its text
        joined as the client joins it, its tool calls as calls), every key and
        string of it is checked besides, and an event-stream body is checked
        event by event as a stream. Text that is no JSON is checked as it is.
        A refusal raises the proxy's own provider-shaped block.
        """
        if not content:
            return "ALLOW"
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            body = None
            decoder = dialect.stream_decoder(content_type) if content_type.startswith("text/event-stream") else None
        else:  # a streamed JSON array (Gemini's) is read as the stream it is as well
            decoder = dialect.stream_decoder(content_type) if isinstance(body, list) else None
        if decoder is not None:
            await check_stream_body(exchange, dialect, engine, decoder, content, self.stream_settings.schedule())
        if body is None:
            return await engine.check_model_response(exchange, content.decode("utf-8", "replace"), "")
        check_reply_body(body, self.limits)
        return await engine.check_response(exchange, error_body_view(dialect, body))

    def _until(self) -> float:
        """The trio time a call's reply must be in hand by: ``--request-timeout`` from now, or with no
        deadline the upstream read timeout (which bounds only the wait for room in ``--reply-memory``)."""
        return trio.current_time() + (self.request_timeout or self.upstream.timeouts.read)

    @contextmanager
    def _deadline(self, until: float) -> Iterator[None]:
        """``--request-timeout`` around a call's upstream I/O (504 when it passes).

        It covers the wait for the response headers of every call, streamed or
        not, and the reading of every reply read whole: a JSON reply, including
        one a provider gives to a stream request (a provider dripping it a byte
        within every read timeout would otherwise hold the client, with no
        response headers, for as long as it liked). An event stream leaves the
        block as soon as its headers are in: the idle timeout bounds each
        event instead, and a stream may last as long as the model writes.
        """
        if not self.request_timeout:
            yield
            return
        try:
            with trio.fail_at(until):
                yield
        except trio.TooSlowError:
            raise upstream_timeout(
                f"The upstream provider did not complete its reply within {self.request_timeout:g}s."
            ) from None


def _spells_a_value(body: Any, values: Mapping[str, str]) -> bool:
    """Whether a list of logprobs entries in ``body`` (dicts with a ``token``, or plain token strings
    under ``tokens``) still spells one of ``values`` across its tokens once the strings were masked:
    token by token the value is in no one string, so masking by value leaves it (the reply is refused)."""
    stack: list[Any] = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if (key == "tokens" and isinstance(child, list) and all(isinstance(token, str) for token in child)
                        and any(value in "".join(child) for value in values)):
                    return True
                stack.append(child)
        elif isinstance(item, list):
            tokens = [entry["token"] for entry in item if isinstance(entry, dict) and isinstance(entry.get("token"), str)]
            if tokens and any(value in "".join(tokens) for value in values):
                return True
            stack.extend(item)
    return False


def error_body_view(dialect: Dialect, body: Any) -> ResponseView:
    """An upstream error body as reply content: read as a reply (its text joined as the client joins
    it, its tool calls as calls), and every key and string of it besides, in the body's order."""
    try:
        view = dialect.response_view(body)
    except ProxyError:
        view = ResponseView()  # a shape no reply has (bad base64...): its strings are checked all the same
    strings: list[str] = []
    _EVERY_STRING.add(strings, body, None)
    view.text = joined([view.text, *strings])
    return view


def decision_headers(engine: PolicyEngine, verdict: str) -> list[tuple[str, str]]:
    """What was checked, for SDK users: ``x-capsem-decision`` (allow, log, confirm, block)
    and ``x-capsem-policies`` (the policies the request ran under)."""
    names = ", ".join(_HEADER_UNSAFE.sub("_", name) for name in engine.names)
    return [("x-capsem-decision", verdict.lower()), ("x-capsem-policies", names or "none")]


def error_reply(dialect: Dialect, error: ProxyError) -> ProxyReply:
    return ProxyReply(error.status, list(JSON_HEADERS), body=orjson.dumps(dialect.error_body(error)), error=error)
