"""A real OTLP/HTTP trace receiver for the tests: trio + h11, POST /v1/traces, every export kept.

It answers as a collector does (200 with an empty protobuf
``ExportTraceServiceResponse``), records each export's path, headers and raw
bytes (so tests can look for what must never be exported), and decodes the
payload with opentelemetry-proto's ``ExportTraceServiceRequest``.

Usage::

    async with run_otlp_receiver() as receiver:
        ...  # point the proxy at receiver.url
        span = await receiver.wait_for_span(lambda span: span.name == "chat gpt-4o-mini")
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import h11
import trio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

_RECEIVE_SIZE = 65536


@dataclass
class Export:
    """One POST the receiver got: path, headers (lower-case names) and the body as sent."""

    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> bytes:
        encoding = self.headers.get("content-encoding", "")
        if encoding == "gzip":
            return gzip.decompress(self.raw)
        if encoding == "deflate":
            return zlib.decompress(self.raw)
        return self.raw

    def request(self) -> ExportTraceServiceRequest:
        message = ExportTraceServiceRequest()
        message.ParseFromString(self.body)
        return message


@dataclass
class ReceivedSpan:
    """A span with the resource attributes it was exported under."""

    span: Span
    resource: dict[str, Any]

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes_of(self.span.attributes)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [attributes_of(event.attributes) for event in self.span.events if event.name == name]


def attributes_of(key_values: Any) -> dict[str, Any]:
    """OTLP ``KeyValue``s as a plain dict (strings, ints, bools, doubles)."""
    values: dict[str, Any] = {}
    for item in key_values:
        kind = item.value.WhichOneof("value")
        values[item.key] = getattr(item.value, kind) if kind else None
    return values


class OTLPReceiver:
    def __init__(self) -> None:
        self.url = ""  # the base URL (as --otlp-endpoint takes it)
        self.exports: list[Export] = []
        self._changed = trio.Event()

    @property
    def raw(self) -> bytes:
        """Every byte every export carried, decompressed, for what must not be there."""
        return b"".join(export.body for export in self.exports)

    def spans(self) -> list[ReceivedSpan]:
        found = []
        for export in self.exports:
            for resource_spans in export.request().resource_spans:
                resource = attributes_of(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    found.extend(ReceivedSpan(span, resource) for span in scope_spans.spans)
        return found

    async def wait_for_span(self, matches: Callable[[ReceivedSpan], bool]) -> ReceivedSpan:
        """The first span that ``matches``, once it has been exported (bound it with trio.fail_after)."""
        while True:
            for span in self.spans():
                if matches(span):
                    return span
            await self._changed.wait()

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await self._read(conn, stream)
                if request is None:
                    return
                headers = {name.decode().lower(): value.decode() for name, value in request.headers}
                path = request.target.decode()
                if request.method == b"POST":
                    self.exports.append(Export(path, headers, body))
                    self._changed.set()
                    self._changed = trio.Event()
                status = 200 if request.method == b"POST" else 405
                await stream.send_all(conn.send(h11.Response(
                    status_code=status, headers=[("content-type", "application/x-protobuf"), ("content-length", "0")]
                )))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            pass
        finally:
            await stream.aclose()

    async def _read(self, conn: h11.Connection, stream: trio.SocketStream) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(_RECEIVE_SIZE)
                conn.receive_data(data)
                if not data and request is None:
                    return None, b""
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                return None, b""


@asynccontextmanager
async def run_otlp_receiver() -> AsyncIterator[OTLPReceiver]:
    receiver = OTLPReceiver()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, receiver._serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        receiver.url = f"http://127.0.0.1:{port}"
        yield receiver
        nursery.cancel_scope.cancel()
