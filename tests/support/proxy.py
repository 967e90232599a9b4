"""The proxy under test as the tests see it: its URL and settings, SDK clients for it, the test keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import trio

from capsem_proxyd.config import Settings
from capsem_proxyd.daemon import server
from capsem_proxyd.daemon.instance import Instance

OPENAI_KEY = "sk-test-openai-4f1c2a9b8e7d6c5b"
GEMINI_KEY = "AIzaTestGeminiKey0123456789abcdefXYZ"
ANTHROPIC_KEY = "sk-ant-test-0a1b2c3d4e5f6a7b8c9d"
ALL_TEST_KEYS = (OPENAI_KEY, GEMINI_KEY, ANTHROPIC_KEY)
# Each provider's key as its SDK sends it, for raw HTTP requests (read-only: copy to add a header,
# ``{**OPENAI_AUTH, "x-other": "1"}``).
OPENAI_AUTH: Mapping[str, str] = MappingProxyType({"authorization": f"Bearer {OPENAI_KEY}"})
ANTHROPIC_AUTH: Mapping[str, str] = MappingProxyType({"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"})
GEMINI_AUTH: Mapping[str, str] = MappingProxyType({"x-goog-api-key": GEMINI_KEY})


@dataclass
class Proxy:
    """A running proxy: its base URL and the settings it runs with."""

    url: str
    settings: Settings

    def openai(self, **kwargs: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=kwargs.pop("api_key", OPENAI_KEY), max_retries=0, **kwargs)

    def anthropic(self, **kwargs: Any) -> Any:
        import anthropic

        return anthropic.Anthropic(base_url=self.url, api_key=kwargs.pop("api_key", ANTHROPIC_KEY), max_retries=0, **kwargs)

    def gemini(self, api_version: str = "v1beta", **kwargs: Any) -> Any:
        from google import genai
        from google.genai import types

        return genai.Client(
            api_key=kwargs.pop("api_key", GEMINI_KEY),
            http_options=types.HttpOptions(base_url=self.url, api_version=api_version),
            **kwargs,
        )


async def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking SDK call in a worker thread (bounded, never hangs a test)."""
    with trio.fail_after(30):
        return await trio.to_thread.run_sync(function, *args)


def split_at_refusal(raw: bytes) -> tuple[str, str]:
    """A relayed stream cut where the proxy's final error begins: (what the upstream's events said
    before it, the proxy's ending). The ending is found by the policy it names; it starts at the
    line (SSE event, JSON-array element, or Gemini's bare error line) that holds it."""
    text = raw.decode("utf-8", "replace")
    found = text.find("CAPSEM policy")
    if found < 0:
        return text, ""
    start = text.rfind("\n", 0, found) + 1
    if text[start:].startswith("data:"):
        event = text.rfind("\n\n", 0, start)
        start = event + 2 if event >= 0 else 0
    return text[:start], text[start:]


def capture_instances(monkeypatch: Any) -> list[Instance]:
    """The instances the proxies a test starts from now on open, in order (``server.open_instance``
    wrapped), so a test can reach one's parts: its shadow tasks, its upstream pool."""
    instances: list[Instance] = []
    open_instance = server.open_instance

    @asynccontextmanager
    async def keep(*args: Any, **kwargs: Any) -> AsyncIterator[Instance]:
        async with open_instance(*args, **kwargs) as instance:
            instances.append(instance)
            yield instance

    monkeypatch.setattr(server, "open_instance", keep)
    return instances
