"""One client request as it travels through the pipeline."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from capsem.models import Agent


def tenant_id_for(api_key: str) -> str:
    """The tenant identity: first 16 hex chars of SHA-256 of the key (never the key)."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def new_request_id() -> str:
    return "req_" + secrets.token_hex(8)


@dataclass(slots=True)
class Exchange:
    """Request id, tenant, provider and model: what every log line and decision carries."""

    request_id: str
    tenant_id: str
    provider: str
    endpoint: str
    model: str = ""
    stream: bool = False
    prompt: str = field(default="", repr=False)
    _agent: Agent | None = field(default=None, repr=False)

    @property
    def agent(self) -> Agent:
        """The CAPSEM agent for this tenant (built lazily: most requests never need it twice)."""
        if self._agent is None:
            self._agent = Agent.model_construct(
                name=f"tenant-{self.tenant_id}",
                instructions="",
                tools=[],
                sub_agents=[],
            )
        return self._agent

    def log_fields(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "tenant_id": self.tenant_id,
            "provider": self.provider,
            "endpoint": self.endpoint,
            "model": self.model,
        }
