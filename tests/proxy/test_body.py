"""The request body's one reading, no socket: what is read, and what is refused for having two readings.

``tests/proxy/test_one_interpretation.py`` shows a refused body never reaches the provider through a
running proxy; these pin the reading itself, case by case and as a property over any JSON object.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.errors import ProxyError
from capsem_proxyd.proxy.body import parse_request_body

# JSON with one reading: no duplicate keys (dicts cannot hold them), finite numbers, valid text.
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                      max_leaves=20)
OBJECTS = st.dictionaries(st.text(), VALUES, max_size=6)


def refusal(raw: bytes, content_type: str | None = "application/json") -> ProxyError:
    with pytest.raises(ProxyError) as refused:
        parse_request_body(raw, content_type)
    assert refused.value.status == 400
    return refused.value


@given(OBJECTS, st.booleans())
def test_any_json_object_with_one_reading_is_read_as_itself(body: dict[str, Any], ascii_only: bool) -> None:
    raw = json.dumps(body, ensure_ascii=ascii_only).encode()
    assert parse_request_body(raw, "application/json") == body


@pytest.mark.parametrize("content_type", [None, "", "application/json", "application/json; charset=utf-8",
                                          'application/json; charset="UTF-8"', "application/json;charset=utf8"])
def test_utf8_or_no_charset_is_read(content_type: str | None) -> None:
    assert parse_request_body(b'{"a": "\xc3\xa9"}', content_type) == {"a": "é"}


@pytest.mark.parametrize("charset", ["latin-1", "utf-16", "iso-8859-1", '"windows-1252"'])
def test_another_charset_is_refused_naming_it(charset: str) -> None:
    error = refusal(b'{"a": 1}', f"application/json; charset={charset}")
    assert error.code == "unsupported_charset" and charset.strip('"') in error.message


@pytest.mark.parametrize(
    ("raw", "code", "says"),
    [
        (b'{"a": "\xe9"}', "invalid_encoding", "not UTF-8 (byte 7)"),
        ('\ufeff{"a": 1}'.encode(), "invalid_encoding", "byte-order mark"),
        (b'{"a": "\\ud800"}', "invalid_encoding", "unpaired UTF-16 surrogate"),
        (b'{"a": ["x", {"\\udfff": 1}]}', "invalid_encoding", "unpaired UTF-16 surrogate"),  # in a key, deep down
        (b'{"model": "a", "model": "b"}', "duplicate_key", "'model' twice"),
        (b'{"messages": [{"role": "user", "content": "hi", "content": "evil"}]}', "duplicate_key", "'content' twice"),
    ],
)
def test_a_body_with_two_readings_is_refused_naming_why(raw: bytes, code: str, says: str) -> None:
    error = refusal(raw)
    assert error.code == code and says in error.message, error.message


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_numbers_are_refused(constant: str) -> None:
    assert constant in refusal(f'{{"temperature": {constant}}}'.encode()).message


def test_a_paired_surrogate_escape_is_one_character_and_read() -> None:
    assert parse_request_body(b'{"a": "\\ud83d\\ude00"}', None) == {"a": "\U0001f600"}


@pytest.mark.parametrize("raw", [b"", b"[]", b'"text"', b"1", b"null", b"{", b'{"a": }', b"{} {}"])
def test_anything_but_one_json_object_is_refused(raw: bytes) -> None:
    refusal(raw)


def test_nesting_deeper_than_the_parser_goes_is_a_400_not_a_crash() -> None:
    assert "too deeply" in refusal(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}").message


def test_a_duplicate_key_name_is_cut_in_the_message() -> None:
    key = "k" * 1000
    message = refusal(json.dumps({key: 1}).encode()[:-1] + f', "{key}": 2}}'.encode()).message
    assert len(message) < 200
