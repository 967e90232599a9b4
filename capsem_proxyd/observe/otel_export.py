"""The OpenTelemetry SDK behind the span recorder: tracer provider, batch processor, OTLP/HTTP exporter.

Imported only when export is on (``observe/tracing.py`` decides); without the
``otel`` extra the import fails with a one-line ImportError naming it, which
``start`` and ``check`` report before serving.

Why the pieces are what they are:

* ``BatchSpanProcessor``: ending a span only appends it to a queue; a thread
  of the SDK's own encodes and POSTs batches, so the event loop never waits
  on the collector. A collector that is down or slow costs dropped spans
  (the queue is bounded), never latency.
* One ``TracerProvider`` per app, never installed as the global one: several
  apps (the tests, one per worker process) each keep their own, and nothing
  else in the process starts exporting through ours. ``shutdown_on_exit`` is
  off: ``aclose`` flushes on the app's shutdown, within a bound.
* The resource says ``service.name=capsem-proxyd`` and the version unless
  ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` say otherwise; the
  sampler (``OTEL_TRACES_SAMPLER``, default parent-based always-on), the
  batch settings (``OTEL_BSP_*``) and the exporter's headers, timeout,
  compression and certificates (``OTEL_EXPORTER_OTLP_*``) come from the
  environment as the SDK reads them. Only the endpoint is ours to give.
"""

from __future__ import annotations

import logging

import trio

from capsem_proxyd import __version__
from capsem_proxyd.observe.tracing import TraceExport, missing_otel

try:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import Tracer
except ImportError as error:  # pragma: no cover - exercised without the extra (tests/observe/test_otel.py)
    raise missing_otel(error) from None

log = logging.getLogger("capsem_proxyd")

SERVICE_NAME = "capsem-proxyd"
# How long a shutdown waits for the last spans to reach the collector before giving up on them.
FLUSH_SECONDS = 5.0


class SpanExport:
    """One app's tracer and the batch exporter behind it."""

    def __init__(self, export: TraceExport) -> None:
        defaults = {"service.name": SERVICE_NAME, "service.version": __version__}
        # Resource.create puts our defaults over the environment's; the environment is merged back on top.
        resource = Resource.create(defaults).merge(OTELResourceDetector().detect())
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=export.url)))
        self.tracer: Tracer = self.provider.get_tracer("capsem_proxyd", __version__)
        self.export = export
        self._closed = False

    async def aclose(self) -> None:
        """Export what is queued and stop the exporter thread; at most ``FLUSH_SECONDS``, idempotent."""
        if self._closed:
            return
        self._closed = True
        with trio.move_on_after(FLUSH_SECONDS) as waited:
            await trio.to_thread.run_sync(self.provider.shutdown, abandon_on_cancel=True)
        if waited.cancelled_caught:
            log.warning("trace export: spans still queued after %ss at shutdown were dropped", FLUSH_SECONDS)
