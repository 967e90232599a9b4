"""Which provider a request on a shared or unknown path belongs to.

``/v1/models`` is OpenAI's, Anthropic's and (with ``/v1``) Gemini's; the path
alone cannot tell, the caller's headers can: every SDK sends its own way of
carrying the key and Anthropic's sends ``anthropic-version`` on every call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

_MODEL_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9._:@-]{1,256}$")


def provider_for(path: str, headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    """``openai``, ``anthropic`` or ``gemini`` for a request on ``path``."""
    if path.startswith(("/v1beta/", "/v1alpha/")) or path in ("/v1beta", "/v1alpha"):
        return "gemini"
    if headers.get("anthropic-version") is not None:
        return "anthropic"
    if headers.get("x-goog-api-key") is not None or "key" in query:
        return "gemini"
    return "openai"


def passthrough_pattern(patterns: Iterable[str], path: str) -> str | None:
    """The first operator pattern (an fnmatch glob, ``*`` spans ``/``) that ``path`` matches."""
    return next((pattern for pattern in patterns if fnmatchcase(path, pattern)), None)


def is_model_path(model: str) -> bool:
    """A model id usable in an upstream path: plain segments, never ``.`` or ``..``."""
    segments = model.split("/")
    return all(_MODEL_PATH_SEGMENT.match(segment) and segment not in (".", "..") for segment in segments)
