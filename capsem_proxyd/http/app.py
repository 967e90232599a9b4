"""The app: the Quart-Trio control plane with the data plane mounted in front of it.

The control plane is ordinary Quart: ``/health``, ``/metrics``, CORS
preflights, and the fallback that answers every other path (404, 405, a body
too large or too slow, an unexpected error) in the shape of the provider the
request looks like. Proxied routes never reach it: the data plane
(``data_plane.py``), mounted on ``asgi_app``, serves them all.

``create_app`` builds one instance: its recorders (request log, metrics,
audit log, and OpenTelemetry spans when export is on), the tenant policies,
the upstream transport, the ``--stored-content`` guard with its store, and
the pipeline. ``ProxyState`` holds what a running instance may swap on
reload: the policies and the reloadable settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from capsem_proxyd import __version__
from capsem_proxyd._compat.quart import ShieldedLastSend
from capsem_proxyd.config import Settings
from capsem_proxyd.enforcement.shadow import ShadowTasks
from capsem_proxyd.enforcement.tenants import PolicyConfig, TenantPolicies
from capsem_proxyd.errors import (
    ErrorKind,
    ProxyError,
    body_too_large,
    body_too_slow,
    internal_error,
    method_not_allowed,
    not_proxied,
)
from capsem_proxyd.http.cors import Cors
from capsem_proxyd.http.data_plane import ASGIApp, DataPlane
from capsem_proxyd.http.routes import error_dialect
from capsem_proxyd.observe.audit import AuditLog, AuditRecorder
from capsem_proxyd.observe.logs import escape_controls
from capsem_proxyd.observe.metrics import Metrics
from capsem_proxyd.observe.recorders import Recorder, Recorders
from capsem_proxyd.observe.request_log import RequestLog
from capsem_proxyd.observe.tracing import trace_export
from capsem_proxyd.proxy.limits import Limits
from capsem_proxyd.proxy.pipeline import Pipeline, error_reply
from capsem_proxyd.proxy.stored_content import StoredContent, open_store
from capsem_proxyd.proxy.streaming import StreamSettings
from capsem_proxyd.proxy.upstream import Upstream, UpstreamTimeouts

if TYPE_CHECKING:  # only imported when tracing is on
    from capsem_proxyd.observe.otel import SpanRecorder

log = logging.getLogger("capsem_proxyd")


class ControlPlane(QuartTrio):
    """Quart-Trio with the keep-alive fix of ``quart_compat`` installed for its requests."""

    asgi_http_class = ShieldedLastSend


@dataclass(slots=True)
class ProxyState:
    """What a running instance holds; ``policies`` is replaced whole on reload, ``settings`` by the
    settings in effect (the reloadable ones new, the others as started)."""

    settings: Settings
    policies: TenantPolicies
    pipeline: Pipeline
    upstream: Upstream
    metrics: Metrics
    recorder: Recorder
    stored: StoredContent
    audit: AuditLog | None = None
    spans: SpanRecorder | None = None
    shadow_tasks: ShadowTasks | None = None  # where shadow evaluations run (the server opens it)

    async def close_spans(self) -> None:
        """Flush and stop the span export, if any (bounded; safe to call twice)."""
        if self.spans is not None:
            await self.spans.aclose()

    def install(
        self, config: PolicyConfig, settings: Settings | None = None, policies: TenantPolicies | None = None
    ) -> None:
        """Make ``config``'s policies (and ``settings``, the reloadable ones) what new requests use;
        requests in flight keep theirs. ``policies``: built (and started) from them already."""
        if settings is not None:
            self.settings = settings
            self.stored.configure(settings)
        self.policies = policies or TenantPolicies(config, self.settings, self.recorder, shadow_tasks=self.shadow_tasks)


def create_app(
    settings: Settings, config: PolicyConfig, audit: AuditLog | None = None, shadow_tasks: ShadowTasks | None = None
) -> ControlPlane:
    """One proxy instance as an ASGI app: the data plane in front of the control plane.

    ``shadow_tasks``: where shadow policies run (needed when ``config`` has some)."""
    app = ControlPlane("capsem_proxyd")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_size,
        RESPONSE_TIMEOUT=None,
        BODY_TIMEOUT=settings.body_timeout,
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )
    metrics = Metrics()
    spans = _span_recorder(settings)
    recorder = Recorders(
        RequestLog(),
        metrics,
        *([AuditRecorder(audit)] if audit is not None else []),
        *([spans] if spans is not None else []),
    )
    upstream = Upstream(UpstreamTimeouts(connect=settings.connect_timeout, read=settings.upstream_timeout))
    stored = StoredContent(settings, open_store(settings), recorder)
    state: ProxyState
    pipeline = Pipeline(
        upstream,
        lambda: state.policies,
        StreamSettings(
            idle_timeout=settings.upstream_timeout,
            max_bytes=settings.max_response_size,
        ),
        Limits.from_settings(settings),
        recorder,
        stored,
        request_timeout=settings.request_timeout or None,
        trace_headers=spans.upstream_headers if spans is not None else None,
    )
    state = ProxyState(
        settings=settings,
        policies=TenantPolicies(config, settings, recorder, shadow_tasks=shadow_tasks),
        pipeline=pipeline,
        upstream=upstream,
        metrics=metrics,
        recorder=recorder,
        stored=stored,
        audit=audit,
        spans=spans,
        shadow_tasks=shadow_tasks,
    )
    app.extensions["capsem_proxyd"] = state

    @app.after_serving
    async def close_upstream() -> None:
        await upstream.aclose()
        await stored.store.aclose()
        await state.close_spans()

    _install_control_routes(app, state)
    if settings.cors:
        _install_preflight(app, Cors(settings.cors_origins))
    _install_fallback(app)
    control_plane: ASGIApp = app.asgi_app  # type: ignore[assignment]  # Hypercorn's typed scopes are dicts to us
    app.asgi_app = DataPlane(control_plane, settings, pipeline, recorder)  # type: ignore[method-assign,assignment]
    return app


def _span_recorder(settings: Settings) -> SpanRecorder | None:
    """The OpenTelemetry recorder when export is on; otherwise OpenTelemetry is not even imported."""
    export = trace_export(settings)
    if export is None:
        return None
    from capsem_proxyd.observe.otel import SpanRecorder

    return SpanRecorder.start(settings, export)


def proxy_state(app: QuartTrio) -> ProxyState:
    state: ProxyState = app.extensions["capsem_proxyd"]
    return state


def _install_control_routes(app: QuartTrio, state: ProxyState) -> None:
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
            "policies": state.policies.default.names,
        }
        return Response(orjson.dumps(body), content_type="application/json")

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = state.metrics.render()
        return Response(body, content_type=content_type)


def _install_preflight(app: QuartTrio, cors: Cors) -> None:
    @app.before_request
    async def preflight() -> Response | None:
        if request.method != "OPTIONS" or "origin" not in request.headers:
            return None  # not a CORS preflight: routing answers it (405)
        status, headers = cors.preflight(_lower(request.headers))
        return Response(b"", status=status, headers=dict(headers))


def _install_fallback(app: QuartTrio) -> None:
    """Every control-plane error in the caller's provider shape."""

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 404:
            return _error(not_proxied(request.path))
        if status == 413:
            return _error(body_too_large())
        if status == 408:
            return _error(body_too_slow(request.body_timeout))
        if status == 405:
            return _error(method_not_allowed(request.method, request.path))
        return _error(ProxyError(status, ErrorKind.INVALID_REQUEST, error.description or error.name))

    @app.errorhandler(Exception)
    async def unexpected_error(error: Exception) -> Response:
        log.exception("unexpected error on %s", escape_controls(request.path))
        return _error(internal_error())


def _error(error: ProxyError) -> Response:
    reply = error_reply(error_dialect(request.path, _lower(request.headers), request.args), error)
    return Response(reply.body, status=reply.status, headers=dict(reply.headers))


def _lower(headers: Any) -> dict[str, str]:
    """Werkzeug headers as the lower-case map the routing rules read."""
    return {name.lower(): value for name, value in headers.items()}
