"""Whether and where trace spans are exported: ``--otlp-endpoint`` and the OTEL_* variables.

Resolved here without importing OpenTelemetry, so that a proxy that does not
trace never loads it (``observe/otel.py`` is imported only when this says
yes). The rule, first match wins:

1. ``OTEL_SDK_DISABLED=true``: no export (OpenTelemetry's own off switch).
2. ``--otlp-endpoint`` (or ``CAPSEM_PROXYD_OTLP_ENDPOINT``, or the config
   file's ``otlp-endpoint``): the collector's base URL, spans go to
   ``<url>/v1/traces``; a URL already ending in ``/v1/traces`` is used as it
   is. Explicit capsem-proxyd configuration wins over the generic variables.
3. ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``: the full traces URL, used as it is.
4. ``OTEL_EXPORTER_OTLP_ENDPOINT``: a base URL, ``/v1/traces`` appended.

None of them: no export. 3 and 4 are OpenTelemetry's own rule; they turn
export on by themselves because that is what a platform that injects them
(an operator, a sidecar) expects of an instrumented service. The other
variables (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``,
timeouts, certificates, compression) are read by the SDK and apply whichever
way export was turned on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from capsem_proxyd.config import Settings

TRACES_PATH = "/v1/traces"
INSTALL_HINT = "install the 'otel' extra: uv sync --extra otel (or pip install 'capsem-proxyd[otel]')"


def missing_otel(error: ImportError) -> ImportError:
    """The one-line error of a proxy asked to export spans without the ``otel`` extra installed."""
    return ImportError(f"trace export needs OpenTelemetry, which is not installed ({error}); {INSTALL_HINT}")


class TracingConfigError(ValueError):
    """The configured OTLP endpoint is not an http(s) URL."""


@dataclass(frozen=True, slots=True)
class TraceExport:
    """Where spans go (``url``, the full traces URL) and which setting said so (``source``)."""

    url: str
    source: str

    def describe(self) -> str:
        """The URL without credentials or query, for the startup line."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path} ({self.source})"


def trace_export(settings: Settings, environ: Mapping[str, str] | None = None) -> TraceExport | None:
    """Where this instance exports spans, or None when it does not (see the module's rule)."""
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if settings.otlp_endpoint:
        base = _checked(settings.otlp_endpoint, "--otlp-endpoint").rstrip("/")
        return TraceExport(base if base.endswith(TRACES_PATH) else base + TRACES_PATH, "--otlp-endpoint")
    traces = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if traces:
        return TraceExport(_checked(traces, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if base:
        return TraceExport(_checked(base, "OTEL_EXPORTER_OTLP_ENDPOINT").rstrip("/") + TRACES_PATH,
                           "OTEL_EXPORTER_OTLP_ENDPOINT")
    return None


def _checked(url: str, source: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TracingConfigError(f"{source} must be an http:// or https:// URL, not {url!r}")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise TracingConfigError(f"{source} has an invalid port: {url!r}") from None
    return url
