"""The Quart-Trio app: routes → dialect + pipeline, CORS, /health, error handlers."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from capsem_proxyd import __version__
from capsem.models import Decision

from capsem_proxyd.observe.audit import AuditLog
from capsem_proxyd.config import Settings
from capsem_proxyd.dialects.anthropic import AnthropicCountTokensDialect, AnthropicMessagesDialect
from capsem_proxyd.dialects.base import Dialect
from capsem_proxyd.dialects.gemini import GeminiDialect
from capsem_proxyd.dialects.gemini_inputs import GeminiInputDialect
from capsem_proxyd.dialects.openai_chat import OpenAIChatDialect
from capsem_proxyd.dialects.openai_completions import OpenAICompletionsDialect
from capsem_proxyd.dialects.openai_inputs import OpenAIInputDialect
from capsem_proxyd.dialects.openai_responses import OpenAIResponsesDialect
from capsem_proxyd.dialects.relay import RelayDialect
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.http.data_plane import ProxyLane
from capsem_proxyd.errors import ProxyError, bad_request, not_found
from capsem_proxyd.exchange import tenant_id_for
from capsem_proxyd.http.front import body_too_large, body_too_slow, internal_error, log_internal_error, log_request
from capsem_proxyd.http.front import printable as _printable
from capsem_proxyd.http.front import reply_headers, run_route, stream_body
from capsem_proxyd.http.guard import HeaderLimits, framing_problem, header_problem, is_safe_api_path
from capsem_proxyd.proxy.limits import Limits
from capsem_proxyd.observe.metrics import Metrics
from capsem_proxyd.proxy.pipeline import IncomingRequest, Pipeline, Route, error_reply
from capsem_proxyd.policy.engine import PolicyEngine, build_policy_engine
from capsem_proxyd.policy.loader import PolicySet, load_policy_set
from capsem_proxyd.http.routes import is_model_path, passthrough_pattern, provider_for
from capsem_proxyd.proxy.streaming import StreamSettings
from capsem_proxyd.proxy.upstream import Upstream, UpstreamTimeouts

log = logging.getLogger("capsem_proxyd.request")

MODEL_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
GEMINI_ACTIONS = {"generateContent": False, "streamGenerateContent": True}
OPENAI_CHAT = OpenAIChatDialect()
OPENAI_RESPONSES = OpenAIResponsesDialect()
GEMINI = GeminiDialect()
ANTHROPIC_MESSAGES = AnthropicMessagesDialect()
ANTHROPIC_COUNT_TOKENS = AnthropicCountTokensDialect()
OPENAI_COMPLETIONS = OpenAICompletionsDialect()
OPENAI_EMBEDDINGS = OpenAIInputDialect("embeddings")
OPENAI_MODERATIONS = OpenAIInputDialect("moderations")
GEMINI_INPUT_ACTIONS = {action: GeminiInputDialect(action) for action in ("countTokens", "embedContent", "batchEmbedContents")}
# Each provider's key and error shape, for its model lookups and unknown or pass-through paths.
PROVIDER_DIALECTS: dict[str, Dialect] = {"openai": OPENAI_CHAT, "gemini": GEMINI, "anthropic": ANTHROPIC_MESSAGES}
MODEL_RELAYS = {provider: RelayDialect(dialect, "models") for provider, dialect in PROVIDER_DIALECTS.items()}
PASSTHROUGH_RELAYS = {provider: RelayDialect(dialect, "passthrough") for provider, dialect in PROVIDER_DIALECTS.items()}
CORS_ALLOW_METHODS = "GET, POST, OPTIONS"
CORS_EXPOSE_HEADERS = "x-request-id, x-capsem-request-id, x-capsem-decision, x-capsem-policies, retry-after"


@dataclass(slots=True)
class ProxyState:
    """What a running app holds; ``engine`` is replaced whole on reload."""

    settings: Settings
    engine: PolicyEngine
    upstream: Upstream
    pipeline: Pipeline
    openai_base: httpx.URL
    gemini_base: httpx.URL
    anthropic_base: httpx.URL
    metrics: Metrics
    audit: AuditLog | None = None

    def install_engine(self, engine: PolicyEngine) -> None:
        """Make ``engine`` the one new requests use; requests in flight keep theirs."""
        engine.record = self.record_decision
        engine.on_checked = self.metrics.policy_check
        self.engine = engine

    def record_decision(
        self, exchange: Exchange, hook: str, policy: str, decision: Decision, *, shadow: bool = False, monitor: bool = False
    ) -> None:
        """``shadow``/``monitor``: recorded, not enforced (see policy_engine); shadow is kept out of live metrics."""
        if not shadow:
            self.metrics.decision(hook, decision.verdict.value, policy)
        if self.audit is None:
            return
        record = {
            "type": "decision",
            **exchange.log_fields(),
            "hook": hook,
            "policy": policy,
            "verdict": decision.verdict.value,
            "reason": decision.reason.value,
            "details": decision.details,
            "decision_id": decision.id,
        }
        if shadow or monitor:
            record["enforced"] = False
            record["mode"] = "shadow" if shadow else "monitor"
        if self.audit.include_prompts and hook == "on_model_call":
            record["prompt"] = exchange.prompt
        self.audit.write(record)

    def record_request(self, exchange: Exchange | None, dialect: Dialect, status: int, outcome: str, duration_ms: float) -> None:
        if self.audit is None:
            return
        fields = exchange.log_fields() if exchange else {"provider": dialect.provider, "endpoint": dialect.endpoint}
        self.audit.write({"type": "request", **fields, "status": status, "outcome": outcome, "latency_ms": round(duration_ms, 3)})


def build_engine(settings: Settings, policy_set: PolicySet | None = None) -> PolicyEngine:
    """The root engine: policy folder plus shadow folder, tenant profiles and allow-list."""
    return build_policy_engine(settings, policy_set or load_policy_set(settings.policy_dir))


def create_app(settings: Settings, engine: PolicyEngine | None = None, audit: AuditLog | None = None) -> QuartTrio:
    """Build the app; policies are loaded here so a bad folder fails before serving."""
    app = QuartTrio("capsem_proxyd")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_size,
        RESPONSE_TIMEOUT=None,
        BODY_TIMEOUT=settings.body_timeout,
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )
    engine = engine or build_engine(settings)
    upstream = Upstream(
        UpstreamTimeouts(connect=settings.connect_timeout, read=settings.upstream_timeout)
    )
    metrics = Metrics()
    state = ProxyState(
        settings=settings,
        engine=engine,
        upstream=upstream,
        pipeline=Pipeline(
            upstream,
            lambda: state.engine,
            StreamSettings(
                holdback=settings.stream_holdback,
                idle_timeout=settings.upstream_timeout,
                max_bytes=settings.max_response_size,
            ),
            metrics,
            limits=Limits.from_settings(settings),
            request_timeout=settings.request_timeout or None,
        ),
        metrics=metrics,
        openai_base=httpx.URL(settings.openai_upstream.rstrip("/")),
        gemini_base=httpx.URL(settings.gemini_upstream.rstrip("/")),
        anthropic_base=httpx.URL(settings.anthropic_upstream.rstrip("/")),
        audit=audit,
    )
    state.install_engine(engine)
    app.extensions["capsem_proxyd"] = state

    @app.after_serving
    async def close_upstream() -> None:
        await upstream.aclose()

    _install_guard(app, settings)
    _install_cors(app, settings)
    gemini = _GeminiRoutes(state.gemini_base)
    _install_routes(app, state, gemini)
    _install_side_routes(app, state)
    _install_error_handlers(app)
    # The hot routes' plain requests skip Quart's per-request machinery (see asgi_lane).
    app.asgi_app = ProxyLane(app.asgi_app, state, _lane_router(state, gemini), _dialect_for_path)  # type: ignore[method-assign]
    return app


def proxy_state(app: QuartTrio) -> ProxyState:
    return app.extensions["capsem_proxyd"]


def _install_routes(app: QuartTrio, state: ProxyState, gemini: _GeminiRoutes) -> None:
    @app.get("/health")
    async def health() -> Response:
        body = {
            "status": "ok",
            "version": __version__,
            "providers": {
                "openai": state.settings.openai_upstream,
                "gemini": state.settings.gemini_upstream,
                "anthropic": state.settings.anthropic_upstream,
            },
            "policies": state.engine.names,
        }
        return Response(orjson.dumps(body), content_type="application/json")

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = state.metrics.render()
        return Response(body, content_type=content_type)

    for path, (dialect, url) in _fixed_routes(state).items():
        app.add_url_rule(path, f"proxy {path}", _proxy_view(state, dialect, url), methods=["POST"])

    @app.post("/<any(v1, v1beta):version>/models/<model_action>")
    async def gemini_generate(version: str, model_action: str) -> Response:
        model, _, action = model_action.partition(":")
        if action not in GEMINI_ACTIONS and action not in GEMINI_INPUT_ACTIONS:
            return await _unproxied(state)
        if not MODEL_SEGMENT.match(model):
            return _error(GEMINI, bad_request(f"Invalid model name {model!r}."))
        return await _proxy(state, gemini.route(version, model, action))


def _fixed_routes(state: ProxyState) -> dict[str, tuple[Dialect, httpx.URL]]:
    """The fixed POST paths and their upstream URLs, built once (httpx.URL.copy_with costs ~15 us);
    served by the ASGI lane and by Quart alike."""
    return {
        "/v1/chat/completions": (OPENAI_CHAT, _join(state.openai_base, "/chat/completions")),
        "/v1/responses": (OPENAI_RESPONSES, _join(state.openai_base, "/responses")),
        "/v1/completions": (OPENAI_COMPLETIONS, _join(state.openai_base, "/completions")),
        "/v1/embeddings": (OPENAI_EMBEDDINGS, _join(state.openai_base, "/embeddings")),
        "/v1/moderations": (OPENAI_MODERATIONS, _join(state.openai_base, "/moderations")),
        "/v1/messages": (ANTHROPIC_MESSAGES, _join(state.anthropic_base, "/v1/messages")),
        "/v1/messages/count_tokens": (ANTHROPIC_COUNT_TOKENS, _join(state.anthropic_base, "/v1/messages/count_tokens")),
    }


def _proxy_view(state: ProxyState, dialect: Dialect, url: httpx.URL) -> Callable[[], Awaitable[Response]]:
    async def view() -> Response:
        return await _proxy(state, Route(dialect, url))

    return view


class _GeminiRoutes:
    """Where a checked Gemini model action (known action, valid model name) goes.

    URLs are cached per app (building one costs ~15 us); the cache is bounded
    because model names are the client's.
    """

    def __init__(self, base: httpx.URL) -> None:
        self.base = base
        self.urls: dict[tuple[str, str, str], httpx.URL] = {}

    def route(self, version: str, model: str, action: str) -> Route:
        key = (version, model, action)
        url = self.urls.get(key)
        if url is None:
            if len(self.urls) >= 4096:
                self.urls.clear()
            url = self.urls[key] = _join(self.base, f"/{version}/models/{model}:{action}")
        if action in GEMINI_INPUT_ACTIONS:
            return Route(GEMINI_INPUT_ACTIONS[action], url, path_model=model)
        return Route(GEMINI, url, path_model=model, path_stream=GEMINI_ACTIONS[action])


def _lane_router(state: ProxyState, gemini: _GeminiRoutes) -> Callable[[str], Route | None]:
    """The ASGI lane's routes: the fixed paths and valid Gemini model actions (the rest is Quart's)."""
    fixed = _fixed_routes(state)

    def route_for(path: str) -> Route | None:
        target = fixed.get(path)
        if target is not None:
            return Route(*target)
        version, _, model_action = path[1:].partition("/models/")
        if version not in ("v1", "v1beta") or not model_action or "/" in model_action:
            return None
        model, _, action = model_action.partition(":")
        if (action in GEMINI_ACTIONS or action in GEMINI_INPUT_ACTIONS) and MODEL_SEGMENT.match(model):
            return gemini.route(version, model, action)
        return None

    return route_for


def _join(base: httpx.URL, suffix: str) -> httpx.URL:
    return base.copy_with(path=base.path.rstrip("/") + suffix)


def _install_side_routes(app: QuartTrio, state: ProxyState) -> None:
    """Anthropic Messages, the side endpoints an SDK also calls, and the refusal of everything else."""

    @app.get("/<any(v1, v1beta):version>/models")
    async def list_models(version: str) -> Response:
        return await _models(state, None)

    @app.get("/<any(v1, v1beta):version>/models/<path:model>")
    async def get_model(version: str, model: str) -> Response:
        return await _models(state, model)

    @app.route("/<any(v1, v1beta, v1alpha):version>/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def other_provider_path(version: str, rest: str) -> Response:
        return await _unproxied(state)


def _request_provider() -> str:
    return provider_for(request.path, request.headers, request.args)


def _unsafe_path() -> ProxyError:
    """The client path would not stay inside the proxied API once joined to the upstream base."""
    return bad_request("The request path has segments capsem-proxyd never forwards (dot segments, encoded characters).")


def _upstream_for(state: ProxyState, provider: str, path: str) -> httpx.URL:
    """The client's path on the provider's upstream (OpenAI's base already ends in /v1)."""
    if provider == "openai":
        return _join(state.openai_base, path.removeprefix("/v1"))
    return _join(state.gemini_base if provider == "gemini" else state.anthropic_base, path)


async def _models(state: ProxyState, model: str | None) -> Response:
    """Model lists and lookups carry no content: forwarded unchecked, to the caller's provider."""
    provider = _request_provider()
    dialect = MODEL_RELAYS[provider]
    if model is not None and (not is_model_path(model) or (provider == "gemini" and ":" in model)):
        return await _unproxied(state)
    if request.content_length or "transfer-encoding" in request.headers:
        return _error(dialect, bad_request(f"GET {request.path} takes no request body."))
    route = Route(dialect, _upstream_for(state, provider, request.path), path_model=model)
    return await _proxy(state, route, relay=True)


async def _unproxied(state: ProxyState) -> Response:
    """A path no dialect reads: 404 in the provider's shape, unless the operator opted it into
    unchecked pass-through (then logged as such, each time)."""
    provider = _request_provider()
    pattern = passthrough_pattern(state.settings.passthrough, request.path)
    if pattern is None:
        return _error(PROVIDER_DIALECTS[provider], not_found(f"{request.path} is not proxied by capsem-proxyd."))
    if not is_safe_api_path(request.path):
        return _error(PROVIDER_DIALECTS[provider], _unsafe_path())
    dialect = PASSTHROUGH_RELAYS[provider]
    response = await _proxy(state, Route(dialect, _upstream_for(state, provider, request.path)), relay=True)
    api_key = dialect.api_key(request.headers, request.args)
    log.warning(
        "UNCHECKED pass-through request_id=%s tenant_id=%s provider=%s method=%s path=%s pattern=%s status=%s",
        response.headers.get("x-capsem-request-id", "-"),
        tenant_id_for(api_key) if api_key else "-",
        provider,
        request.method,
        _printable(request.path),
        _printable(pattern),
        response.status_code,
    )
    return response


async def _proxy(state: ProxyState, route: Route, *, relay: bool = False) -> Response:
    """Run ``route`` through the pipeline; ``relay`` forwards without content checks."""
    started = time.perf_counter()
    query_string = request.query_string
    incoming = IncomingRequest(
        method=request.method,
        headers=list(request.headers.items()),
        header_map=_LowerHeaders(request.headers),
        query=request.args,
        query_string=query_string,
        body=await request.get_data(cache=False),
        client_addr=request.remote_addr if state.settings.forward_client_ip else None,
    )
    reply = await run_route(state, route, incoming, relay=relay)
    if reply.stream is not None:
        return Response(stream_body(state, reply, route.dialect, started), status=reply.status, headers=reply_headers(reply))
    log_request(state, reply, route.dialect, str(reply.status), started)
    return Response(reply.body or b"", status=reply.status, headers=reply_headers(reply))


class _LowerHeaders:
    """Case-insensitive read access to the request headers for dialects."""

    __slots__ = ("_headers",)

    def __init__(self, headers: Any) -> None:
        self._headers = headers

    def get(self, name: str, default: Any = None) -> Any:
        return self._headers.get(name, default)


def _error(dialect: Dialect, error: ProxyError) -> Response:
    reply = error_reply(dialect, error)
    return Response(reply.body, status=reply.status, headers=reply.headers)


def _dialect_for_path(path: str, headers: Any = None) -> Dialect:
    """The provider shape of an error the edge answers before any route ran (by path and headers)."""
    if path.startswith("/v1/messages") or "anthropic-version" in (request.headers if headers is None else headers):
        return ANTHROPIC_MESSAGES
    if path.startswith("/v1beta/") or ":" in path.rsplit("/", 1)[-1]:
        return GEMINI
    return OPENAI_CHAT


def _install_error_handlers(app: QuartTrio) -> None:
    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 404:
            message = f"{request.path} is not proxied by capsem-proxyd."
        elif status == 413:
            return _error(_dialect_for_path(request.path), body_too_large())
        elif status == 405:
            message = f"Method {request.method} is not allowed on {request.path}."
        elif status == 408:
            return _error(_dialect_for_path(request.path), body_too_slow(request.body_timeout))
        else:
            message = error.description or error.name
        kind = {404: "not_found", 413: "too_large"}.get(status, "invalid_request")
        return _error(_dialect_for_path(request.path), ProxyError(status, kind, message))

    @app.errorhandler(Exception)
    async def unexpected_error(error: Exception) -> Response:
        log_internal_error(request.path)
        return _error(_dialect_for_path(request.path), internal_error())


def _install_guard(app: QuartTrio, settings: Settings) -> None:
    """Refuse ambiguous body framing (400) and oversized headers (431) before anything else runs."""
    limits = HeaderLimits(max_count=settings.max_header_count, max_bytes=settings.max_header_size)

    @app.before_request
    async def request_guard() -> Response | None:
        headers = request.scope.get("headers", [])
        problem = framing_problem(headers) or header_problem(headers, limits)
        if problem is None:
            return None
        log.warning("refused request method=%s path=%s: %s", request.method, _printable(request.path), problem.message)
        # Read the body (and drop it) first: answered with its body unread and more bytes
        # behind it, Hypercorn may close the connection before the answer is out.
        with trio.move_on_after(settings.body_timeout):
            try:
                async for _ in request.body:
                    pass
            except HTTPException:  # over --max-body-size: stop reading, answer anyway
                pass
        response = _error(_dialect_for_path(request.path), problem)
        response.headers["Connection"] = "close"  # the rest of the connection cannot be trusted
        return response


def _install_cors(app: QuartTrio, settings: Settings) -> None:
    if not settings.cors:
        return
    allowed = set(settings.cors_origins)

    def origin_allowed(origin: str) -> bool:
        return not allowed or origin in allowed

    @app.before_request
    async def preflight() -> Response | None:
        origin = request.headers.get("Origin")
        if request.method != "OPTIONS" or not origin:
            return None
        if not origin_allowed(origin):
            return Response(b"", status=403)
        response = Response(b"", status=204)
        response.headers["Access-Control-Allow-Origin"] = origin if allowed else "*"
        response.headers["Access-Control-Allow-Methods"] = (
            request.headers.get("Access-Control-Request-Method") or CORS_ALLOW_METHODS
        )
        requested = request.headers.get("Access-Control-Request-Headers")
        if requested:
            response.headers["Access-Control-Allow-Headers"] = requested
        response.headers["Access-Control-Max-Age"] = "600"
        if allowed:
            response.headers["Vary"] = "Origin"
        return response

    @app.after_request
    async def cors_headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and origin_allowed(origin) and request.method != "OPTIONS":
            response.headers["Access-Control-Allow-Origin"] = origin if allowed else "*"
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
            if allowed:
                response.headers["Vary"] = "Origin"
        return response
