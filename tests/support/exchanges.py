"""An ``Exchange`` for tests that drive the engine, a dialect or the stream pump without a server.

At the ASGI entry an exchange is born from a path (``Exchange.begin``) and
filled in as the request is read; a test that starts past that point needs
one already filled in. The defaults are an OpenAI chat request of one tenant,
so a test names only what it is about (``exchange(tenant_id=...)``,
``exchange_for(dialect)``).
"""

from __future__ import annotations

from typing import Any

from capsem_proxyd.dialects.base import Dialect
from capsem_proxyd.exchange import Exchange

TENANT = "0" * 16
REQUEST_ID = "req_test"


def exchange(provider: str = "openai", endpoint: str = "chat.completions", **fields: Any) -> Exchange:
    """An exchange past routing and key reading: request id, tenant, provider API (and any other field)."""
    fields.setdefault("request_id", REQUEST_ID)
    fields.setdefault("tenant_id", TENANT)
    fields.setdefault("started", 0.0)
    return Exchange(provider=provider, endpoint=endpoint, **fields)


def exchange_for(dialect: Dialect, **fields: Any) -> Exchange:
    """An exchange routed to ``dialect``'s API."""
    return exchange(dialect.provider, dialect.endpoint, **fields)
