"""The app: the Quart-Trio control plane with the data plane mounted in front of it.

The control plane is ordinary Quart: ``/health``, ``/metrics``, CORS
preflights, and the fallback that answers every other path (404, 405, a body
too large or too slow, an unexpected error) in the shape of the provider the
request looks like. Proxied routes never reach it: the data plane
(``data_plane.py``), mounted on ``asgi_app``, serves them all.

``create_app`` builds only this HTTP face: the instance it serves (the
recorders, upstream, stored-content record, policies and pipeline) is built
and owned by the composition root, ``daemon/instance.py``, which hands the
app the pipeline to mount and two small callables for ``/health`` and
``/metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from capsem_proxyd._compat.quart import ShieldedLastSend
from capsem_proxyd.config import Settings
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
from capsem_proxyd.mcp.hop import McpHop
from capsem_proxyd.observe.logs import escape_controls
from capsem_proxyd.observe.recorders import Recorder
from capsem_proxyd.proxy.pipeline import Pipeline, error_reply

log = logging.getLogger("capsem_proxyd")


class ControlPlane(QuartTrio):
    """Quart-Trio with the keep-alive fix of ``_compat/quart.py`` installed for its requests."""

    asgi_http_class = ShieldedLastSend


Health = Callable[[], dict[str, Any]]
MetricsRenderer = Callable[[], tuple[bytes, str]]  # (body, content type)


def create_app(
    settings: Settings, pipeline: Pipeline, recorder: Recorder, *, health: Health, render_metrics: MetricsRenderer,
    mcp: McpHop | None = None,
) -> ControlPlane:
    """The ASGI app of one instance: the data plane (``pipeline``'s routes) in front of the control plane.

    ``health`` and ``render_metrics`` answer ``/health`` and ``/metrics``;
    they are asked on each request, so what they report follows reloads.
    ``mcp``: the MCP hop serving ``/mcp/NAME`` (None: no ``--mcp-server``).
    """
    app = ControlPlane("capsem_proxyd")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_size,
        RESPONSE_TIMEOUT=None,
        BODY_TIMEOUT=settings.body_timeout,
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )
    _install_control_routes(app, health, render_metrics)
    if settings.cors:
        _install_preflight(app, Cors(settings.cors_origins))
    _install_fallback(app)
    control_plane: ASGIApp = app.asgi_app  # type: ignore[assignment]  # Hypercorn's typed scopes are dicts to us
    app.asgi_app = DataPlane(control_plane, settings, pipeline, recorder, mcp)  # type: ignore[method-assign,assignment]
    return app


def _install_control_routes(app: QuartTrio, describe_health: Health, render_metrics: MetricsRenderer) -> None:
    @app.get("/health")
    async def health() -> Response:
        return Response(orjson.dumps(describe_health()), content_type="application/json")

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = render_metrics()
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
