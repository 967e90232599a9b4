"""The edge's hygiene rules on their own, no socket: which framings are refused, which header sets are
too large, and which client-chosen paths may be joined to an upstream base.

The path rule matters most: a model name or a pass-through path it lets through is appended to the
operator's upstream URL, so the property checked here is the one that counts, that a path it accepts
stays under that base once httpx has built the URL.
"""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.http.guard import HeaderLimits, framing_problem, header_problem, is_safe_path, is_safe_segment

BASE = httpx.URL("https://upstream.test/v1")
# Segments built from what attacks use (dots, slashes, escapes, separators) and ordinary names.
PIECES = [".", "..", "/", "\\", "%2e", "%2F", "%", "?", "#", ";", "@", ":", "~", " ", "\t", "\x00", "a", "Z", "9",
          "gpt-4o", "models", "admin", "_", "-", "é"]
PATHS = st.lists(st.sampled_from(PIECES) | st.text(max_size=3), max_size=10).map(lambda parts: "/" + "".join(parts))


@given(PATHS)
def test_a_path_judged_safe_stays_under_the_upstream_base(path: str) -> None:
    if not is_safe_path(path):
        return
    url = BASE.copy_with(path=BASE.path + path)
    assert url.host == "upstream.test" and url.path.startswith("/v1/")
    assert url.path == "/v1" + path  # nothing resolved, re-encoded or cut
    assert not url.query and not url.fragment


@pytest.mark.parametrize("segment", ["gemini-2.5-flash", "gpt-4o", "models:generateContent", "a.b", "ft:gpt-4o:org:x:1",
                                     "tunedModels~1", "A" * 256])
def test_model_names_people_use_are_safe_segments(segment: str) -> None:
    assert is_safe_segment(segment)


@pytest.mark.parametrize("segment", ["", ".", "..", ".hidden", "-x", "a/b", "a\\b", "a%2Fb", "a?b", "a#b", "a b",
                                     "a\x00", "é", "A" * 257])
def test_what_could_change_the_url_is_not_a_safe_segment(segment: str) -> None:
    assert not is_safe_segment(segment)


@pytest.mark.parametrize("path", ["v1/files", "/v1/files/../admin", "/v1//files", "/v1/files/", "/"])
def test_paths_with_empty_or_dot_segments_or_no_leading_slash_are_unsafe(path: str) -> None:
    assert not is_safe_path(path)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", b"5"), (b"content-length", b"5")],
        [(b"Content-Length", b"5, 5")],
        [(b"transfer-encoding", b"chunked"), (b"content-length", b"5")],
        [(b"Transfer-Encoding", b"gzip, chunked")],
        [(b"transfer-encoding", b"chunked"), (b"TRANSFER-ENCODING", b"chunked")],
    ],
    ids=["two-lengths", "a-list-of-lengths", "length-and-encoding", "two-encodings-in-one", "two-encodings"],
)
def test_a_framing_two_parsers_could_read_differently_is_refused_400(headers: list[tuple[bytes, bytes]]) -> None:
    problem = framing_problem(headers)
    assert problem is not None and problem.status == 400


@pytest.mark.parametrize(
    "headers",
    [[], [(b"content-length", b"5")], [(b"transfer-encoding", b"chunked")], [(b"x-content-length", b"1"), (b"content-length", b"1")]],
)
def test_one_framing_passes(headers: list[tuple[bytes, bytes]]) -> None:
    assert framing_problem(headers) is None


def test_header_limits_count_headers_and_their_bytes_as_sent() -> None:
    limits = HeaderLimits(max_count=3, max_bytes=100)
    assert header_problem([(b"a", b"1")] * 3, limits) is None
    too_many = header_problem([(b"a", b"1")] * 4, limits)
    assert too_many is not None and too_many.status == 431 and "4 headers" in too_many.message
    # Each header counts as sent, "name: value\r\n": 2 + 94 + 4 = 100 bytes fits the limit, 101 does not.
    assert header_problem([(b"ab", b"v" * 94)], limits) is None
    too_big = header_problem([(b"ab", b"v" * 95)], limits)
    assert too_big is not None and too_big.status == 431 and "101 bytes" in too_big.message
