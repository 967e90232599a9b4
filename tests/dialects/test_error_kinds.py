"""Error kinds (``errors.ErrorKind``): every error the proxy builds has one, and every dialect answers every kind
in its provider's own words (a kind added without a dialect's mapping would fall back to a generic type)."""

from __future__ import annotations

import inspect
from pathlib import Path

import orjson
import pytest
from capsem.models import Decision, Reason, Verdict

from capsem_proxyd import errors
from capsem_proxyd.dialects import anthropic, gemini, openai_common, openai_responses
from capsem_proxyd.errors import ErrorCode, ErrorKind, ProxyError
from capsem_proxyd.http.routes import DIALECTS

DECISION = Decision(verdict=Verdict.BLOCK, reason=Reason.POLICY_VIOLATION, details="no", policy="Rules")
EVERY_ERROR = {
    "bad_request": errors.bad_request("m"),
    "missing_key": errors.missing_key(),
    "tenant_not_allowed": errors.tenant_not_allowed(),
    "not_proxied": errors.not_proxied("/x"),
    "method_not_allowed": errors.method_not_allowed("GET", "/x"),
    "unsafe_path": errors.unsafe_path(),
    "body_too_large": errors.body_too_large(),
    "body_too_slow": errors.body_too_slow(1.0),
    "ambiguous_framing": errors.ambiguous_framing("m"),
    "headers_too_large": errors.headers_too_large("m"),
    "too_many": errors.too_many("x", 1),
    "policy_blocked": errors.policy_blocked(DECISION, "Prompt"),
    "unmaskable": errors.unmaskable("Secrets", "on_tool_response", "a finding is in an object key"),
    "stored_content_refused": errors.stored_content_refused("f", "checked"),
    "stored_content_unavailable": errors.stored_content_unavailable(),
    "policy_workers_unavailable": errors.policy_workers_unavailable("PII", "none ready within 1.0s"),
    "audit_log_unavailable": errors.audit_log_unavailable(),
    "upstream_unavailable": errors.upstream_unavailable("m"),
    "upstream_timeout": errors.upstream_timeout("m"),
    "response_too_large": errors.response_too_large(1),
    "reply_memory_full": errors.reply_memory_full(1, larger=False),
    "shutting_down": errors.shutting_down(),
    "internal_error": errors.internal_error(),
}
# Each dialect's map from a kind to its provider's error type (Gemini's goes by status: below).
KIND_MAPS = {
    "anthropic error type": anthropic._ERROR_TYPES,
    "openai error type": openai_common._ERROR_TYPES,
    "openai responses response.failed code": openai_responses._FAILED_CODE,
}


def test_the_list_above_holds_every_builder_of_errors_py() -> None:
    builders = {
        name for name, function in inspect.getmembers(errors, inspect.isfunction)
        if function.__module__ == errors.__name__ and inspect.signature(function).return_annotation == "ProxyError"
    }
    assert builders == set(EVERY_ERROR)


def test_every_kind_is_raised_by_some_builder() -> None:
    """No kind that nothing raises (``permission`` was one)."""
    assert {error.kind for error in EVERY_ERROR.values()} == set(ErrorKind)


@pytest.mark.parametrize("mapping", KIND_MAPS.values(), ids=KIND_MAPS.keys())
def test_every_dialect_maps_every_kind(mapping: dict[ErrorKind, str]) -> None:
    assert set(mapping) == set(ErrorKind)


def test_gemini_names_the_status_of_every_error_but_three() -> None:
    """Gemini's errors carry a google.rpc status name chosen by HTTP status, not by kind. 405, 408 and 431 have
    none there and go out as ``UNKNOWN`` (as they always have); any other status without a name is a gap."""
    unnamed = {name: error.status for name, error in EVERY_ERROR.items() if error.status not in gemini._STATUS_NAMES}
    assert unnamed == {"method_not_allowed": 405, "body_too_slow": 408, "headers_too_large": 431}


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_every_error_renders_in_plain_strings(dialect: str) -> None:
    """The kind is an enum, the wire is unchanged: bodies carry its value, never its name."""
    for error in EVERY_ERROR.values():
        body = orjson.dumps(DIALECTS[dialect].error_body(error))
        assert b"ErrorKind" not in body
        assert type(error.code) is str


def test_an_error_without_a_code_is_coded_by_its_kind() -> None:
    error = ProxyError(409, ErrorKind.INVALID_REQUEST, "conflict")
    assert error.code == "invalid_request" and type(error.code) is str
    wire = orjson.dumps(openai_common.openai_error_body(error))
    assert b'"type":"invalid_request_error","param":null,"code":"invalid_request"' in wire


def test_every_error_code_is_given_somewhere() -> None:
    """Codes are a closed set: each one is used by a builder or a caller of ``bad_request``, none is dead."""
    package = Path(errors.__file__).parent
    source = "\n".join(path.read_text() for path in package.rglob("*.py"))
    unused = [code.name for code in ErrorCode if f"ErrorCode.{code.name}" not in source]
    assert unused == []
