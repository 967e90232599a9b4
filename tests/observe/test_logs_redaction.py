"""The redaction filter's fast path must never let through a line the patterns would scrub."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsem_proxyd.observe import logs

# Pieces that build lines the patterns care about, in odd cases and with Unicode
# characters that case-insensitive matching treats as ASCII letters (ı, K, ſ, İ).
PIECES = [
    "key", "KEY", "Key", "api_key", "access_token", "TOKEN", "bearer", "Bearer ", "BEARER\t",
    "authorization", "Authorization: ", "x-goog-api-key", "X-Api-Key=", "sk-", "AIza", "aiza",
    "?", "&", "=", ":", " ", "'", '"', ",", "abcdefgh", "0123456789", "_-", "AbCdEfGhIjKlMnOpQrStUv",
    "\u0131", "\u212a", "\u017f", "\u0130", "author\u0131zation: ", "\u212aey=", "bearer\u00a0",
    "request_id=req_0123 tenant_id=0123456789abcdef provider=openai model=gpt-4o-mini",
]


def _full_redact(text: str) -> str:
    for pattern, replacement in logs._SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=4), max_size=12).map("".join))
def test_fast_path_agrees_with_the_patterns(line: str) -> None:
    assert logs.redact(line) == _full_redact(line)


# (a line holding a secret, the secret, what of the line must survive around it)
SECRET_LINES = [
    ("GET https://x/v1beta/models/m:generateContent?key=AIzaSyA0123456789abcdefghij",
     "AIzaSyA0123456789abcdefghij", ["GET https://x/v1beta/models/m:generateContent?key="]),
    ("Authorization: Bearer sk-proj-0123456789abcdef", "sk-proj-0123456789abcdef", ["Authorization: "]),
    ("headers={'x-goog-api-key': 'AIzaSyA0123456789abcdefghij'}", "AIzaSyA0123456789abcdefghij",
     ["headers={'x-goog-api-key': '", "'}"]),
    ("sent sk-ant-api03-0123456789abcdef", "sk-ant-api03-0123456789abcdef", ["sent "]),
    # dotless i: the header name is matched case-insensitively by the pattern
    ("author\u0131zation: hunter2hunter2", "hunter2hunter2", ["author\u0131zation: "]),
]


@pytest.mark.parametrize(("line", "secret", "kept"), SECRET_LINES, ids=[kept[0][:24] for _, _, kept in SECRET_LINES])
def test_a_known_secret_is_gone_from_the_line_and_the_rest_kept(line: str, secret: str, kept: list[str]) -> None:
    redacted = logs.redact(line)
    assert secret not in redacted, redacted
    assert secret[:8] not in redacted, f"a prefix of the secret survived: {redacted}"
    assert "[REDACTED]" in redacted, redacted
    for part in kept:
        assert part in redacted, f"{part!r} was lost: {redacted}"


def test_a_plain_request_line_is_untouched() -> None:
    plain = "request_id=req_0123 tenant_id=0123456789abcdef provider=openai endpoint=chat.completions status=200"
    assert logs.redact(plain) == plain
