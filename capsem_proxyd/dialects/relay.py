"""A provider's key and error shape for requests forwarded without content checks.

Used for reads that carry no content (model lists and lookups) and for paths an
operator opted into unchecked pass-through: the request still needs a key (so
it has a tenant) and refusals still speak the provider's error shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from capsem_proxyd.dialects.base import Dialect
from capsem_proxyd.dialects.framing import StreamEvent
from capsem_proxyd.errors import ProxyError
from capsem_proxyd.views import EMPTY_STREAM_VIEW, RequestView, ResponseView, StreamView


class RelayDialect(Dialect):
    def __init__(self, base: Dialect, endpoint: str) -> None:
        self.base = base
        self.provider = base.provider
        self.endpoint = endpoint
        self.key_carriers = base.key_carriers

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return self.base.api_key(headers, query)

    def error_body(self, error: ProxyError) -> dict[str, Any]:
        return self.base.error_body(error)

    def request_view(self, body: dict[str, Any], model: str) -> RequestView:
        return RequestView(model=model)

    def response_view(self, body: Any) -> ResponseView:
        return ResponseView()

    def stream_view(self, event: StreamEvent) -> StreamView:
        return EMPTY_STREAM_VIEW
