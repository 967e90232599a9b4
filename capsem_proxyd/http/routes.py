"""The route table: which provider API a request speaks, and where it goes.

Every proxied route is resolved here, once per request, into a ``Route``
(dialect + upstream URL) or a refusal in the right provider's shape. A path
outside every provider API (``/health``, ``/metrics``, anything unknown) is
not ours: the control plane (the Quart app) answers it.

Which provider a request belongs to, when its path alone cannot tell
(``/v1/models`` is OpenAI's, Anthropic's and Gemini's), is the caller's
headers: every SDK carries its key its own way, and Anthropic's sends
``anthropic-version`` on every call. ``provider_for`` is that rule, used for
routing and for the shape of every error the edge answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase

import httpx

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
from capsem_proxyd.errors import ProxyError, bad_request, not_proxied, unsafe_path
from capsem_proxyd.http.guard import is_safe_path, is_safe_segment
from capsem_proxyd.proxy.pipeline import Route


class GeminiStreamDialect(GeminiDialect):
    """``streamGenerateContent``: read as ``generateContent`` is, named apart in the request log and metrics."""

    endpoint = "streamGenerateContent"


OPENAI_CHAT = OpenAIChatDialect()
GEMINI = GeminiDialect()
GEMINI_STREAM = GeminiStreamDialect()
ANTHROPIC_MESSAGES = AnthropicMessagesDialect()
# Every dialect a route reads content with, by API (the fuzz tests walk them all).
DIALECTS: dict[str, Dialect] = {
    "openai-chat": OPENAI_CHAT,
    "openai-responses": OpenAIResponsesDialect(),
    "openai-completions": OpenAICompletionsDialect(),
    "openai-embeddings": OpenAIInputDialect("embeddings"),
    "openai-moderations": OpenAIInputDialect("moderations"),
    "gemini": GEMINI,
    **{f"gemini-{action}": GeminiInputDialect(action) for action in ("countTokens", "embedContent", "batchEmbedContents")},
    "anthropic-messages": ANTHROPIC_MESSAGES,
    "anthropic-count-tokens": AnthropicCountTokensDialect(),
}
# Each provider's key and error shape: for errors the edge answers, model lookups, pass-through.
PROVIDER_DIALECTS: dict[str, Dialect] = {"openai": OPENAI_CHAT, "gemini": GEMINI, "anthropic": ANTHROPIC_MESSAGES}
MODEL_RELAYS = {provider: RelayDialect(dialect, "models") for provider, dialect in PROVIDER_DIALECTS.items()}
PASSTHROUGH_RELAYS = {provider: RelayDialect(dialect, "passthrough") for provider, dialect in PROVIDER_DIALECTS.items()}
# The paths every proxied request lives under; anything else is the control plane's.
API_PREFIXES = ("/v1/", "/v1beta/", "/v1alpha/")
_GEMINI_VERSIONS = ("v1", "v1beta")
_GEMINI_ACTIONS: dict[str, Dialect] = {
    "generateContent": GEMINI,
    "streamGenerateContent": GEMINI_STREAM,
    **{action: DIALECTS[f"gemini-{action}"] for action in ("countTokens", "embedContent", "batchEmbedContents")},
}
_GEMINI_URL_CACHE = 4096


def provider_for(path: str, headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    """``openai``, ``anthropic`` or ``gemini``: the provider a request on ``path`` speaks to."""
    if path.startswith(("/v1beta/", "/v1alpha/")) or path in ("/v1beta", "/v1alpha"):
        return "gemini"
    if path.startswith("/v1/messages") or headers.get("anthropic-version") is not None:
        return "anthropic"
    if headers.get("x-goog-api-key") is not None or "key" in query:
        return "gemini"
    return "openai"


def error_dialect(path: str, headers: Mapping[str, str], query: Mapping[str, str]) -> Dialect:
    """The dialect whose shape an error about this request takes."""
    return PROVIDER_DIALECTS[provider_for(path, headers, query)]


class Refusal(Exception):
    """A request on a provider path that is answered without going anywhere (404, 405, 400)."""

    def __init__(self, dialect: Dialect, error: ProxyError) -> None:
        super().__init__(error.message)
        self.dialect = dialect
        self.error = error


class RouteTable:
    """Every proxied route of one instance, with its upstream URLs built once."""

    def __init__(self, settings: Settings) -> None:
        self.openai = httpx.URL(settings.openai_upstream.rstrip("/"))
        self.gemini = httpx.URL(settings.gemini_upstream.rstrip("/"))
        self.anthropic = httpx.URL(settings.anthropic_upstream.rstrip("/"))
        self.passthrough = settings.passthrough
        # httpx.URL.copy_with costs ~15 us: fixed paths are joined once.
        self.fixed: dict[str, tuple[Dialect, httpx.URL]] = {
            "/v1/chat/completions": (OPENAI_CHAT, _join(self.openai, "/chat/completions")),
            "/v1/responses": (DIALECTS["openai-responses"], _join(self.openai, "/responses")),
            "/v1/completions": (DIALECTS["openai-completions"], _join(self.openai, "/completions")),
            "/v1/embeddings": (DIALECTS["openai-embeddings"], _join(self.openai, "/embeddings")),
            "/v1/moderations": (DIALECTS["openai-moderations"], _join(self.openai, "/moderations")),
            "/v1/messages": (ANTHROPIC_MESSAGES, _join(self.anthropic, "/v1/messages")),
            "/v1/messages/count_tokens": (
                DIALECTS["anthropic-count-tokens"], _join(self.anthropic, "/v1/messages/count_tokens")
            ),
        }
        # Gemini URLs carry the client's model name: cached, and the cache bounded.
        self._gemini_urls: dict[tuple[str, str, str], httpx.URL] = {}

    def resolve(self, method: str, path: str, headers: Mapping[str, str], query: Mapping[str, str]) -> Route | None:
        """The route of a request, ``None`` for the control plane; raises ``Refusal``."""
        if not path.startswith(API_PREFIXES) or method in ("OPTIONS", "HEAD"):
            return None
        if method == "POST":
            fixed = self.fixed.get(path)
            if fixed is not None:
                return Route(*fixed)
            route = self._gemini_action(path)
            if route is not None:
                return route
        elif method == "GET":
            route = self._model_lookup(path, headers, query)
            if route is not None:
                return route
        return self._unproxied(method, path, headers, query)

    def _gemini_action(self, path: str) -> Route | None:
        """``POST /{v1,v1beta}/models/{model}:{action}`` for the actions we read."""
        version, _, model_action = path[1:].partition("/models/")
        if version not in _GEMINI_VERSIONS or not model_action or "/" in model_action:
            return None
        model, _, action = model_action.partition(":")
        dialect = _GEMINI_ACTIONS.get(action)
        if dialect is None:
            return None
        if not is_safe_segment(model):
            raise Refusal(GEMINI, bad_request(f"Invalid model name {model!r}."))
        key = (version, model, action)
        url = self._gemini_urls.get(key)
        if url is None:
            if len(self._gemini_urls) >= _GEMINI_URL_CACHE:
                self._gemini_urls.clear()
            url = self._gemini_urls[key] = _join(self.gemini, path)
        return Route(dialect, url, path_model=model, path_stream=action == "streamGenerateContent")

    def _model_lookup(self, path: str, headers: Mapping[str, str], query: Mapping[str, str]) -> Route | None:
        """``GET /{v1,v1beta}/models[/{model}]``: no content, relayed to the caller's provider."""
        version, _, rest = path[1:].partition("/")
        if version not in _GEMINI_VERSIONS or not (rest == "models" or rest.startswith("models/")):
            return None
        model = rest[len("models/"):] or None
        provider = provider_for(path, headers, query)
        if model is not None and (not is_safe_path("/" + model) or (provider == "gemini" and ":" in model)):
            return None
        return Route(MODEL_RELAYS[provider], self._upstream(provider, path), path_model=model, checked=False)

    def _unproxied(self, method: str, path: str, headers: Mapping[str, str], query: Mapping[str, str]) -> Route:
        """A provider path no dialect reads: refused, unless the operator opted it into pass-through."""
        provider = provider_for(path, headers, query)
        pattern = next((glob for glob in self.passthrough if fnmatchcase(path, glob)), None)
        if pattern is None:
            raise Refusal(PROVIDER_DIALECTS[provider], not_proxied(path))
        if not is_safe_path(path):
            raise Refusal(PROVIDER_DIALECTS[provider], unsafe_path())
        return Route(PASSTHROUGH_RELAYS[provider], self._upstream(provider, path), checked=False, passthrough=pattern)

    def _upstream(self, provider: str, path: str) -> httpx.URL:
        """The client's path on the provider's upstream (OpenAI's base already ends in /v1)."""
        if provider == "openai":
            return _join(self.openai, path.removeprefix("/v1"))
        return _join(self.gemini if provider == "gemini" else self.anthropic, path)


def _join(base: httpx.URL, suffix: str) -> httpx.URL:
    return base.copy_with(path=base.path.rstrip("/") + suffix)
