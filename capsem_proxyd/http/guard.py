"""Request hygiene checked before any route runs: message framing, header limits, paths.

Hypercorn's HTTP/1.1 parser (h11) already refuses what it cannot frame —
conflicting ``Content-Length`` values (400), a ``Transfer-Encoding`` other than
``chunked`` or given twice (501), control characters in the request line, a
head longer than its buffer (431) — and merges identical repeated lengths,
which are unambiguous. It does accept a request carrying both
``Content-Length`` and ``Transfer-Encoding`` (chunked wins, RFC 9112 6.3): a
front proxy that trusted the length instead would see a different request
boundary, the classic smuggling split. Such a request is refused here, on the
raw ASGI header list (which keeps every repetition), with the connection closed.

On a proxied route, what is read outside the body must have one reading
too (``reading_problem``): a header that decides it (the body's type, a key)
given twice, a query string that is not UTF-8, or two different keys where
the provider reads one, each a 400 naming it.

Everything else works on ``scope["headers"]`` (bytes pairs) so nothing is decoded
or merged before it is judged. The same module holds the one rule for what a
client-chosen path segment may be (``is_safe_segment``): model names in
paths and pass-through paths are judged by it alike.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from capsem_proxyd.config import DEFAULTS
from capsem_proxyd.dialects.query import KeyCarriers, QueryMap
from capsem_proxyd.errors import ErrorCode, ProxyError, ambiguous_framing, bad_request, headers_too_large

# A path segment the proxy may append to a configured upstream base: it starts with
# a letter or digit (so never a dot segment), and has no percent signs (a second
# decoding), no backslashes, no control characters, nothing that ends a path (?, #).
_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@~+=,-]{0,255}")


@dataclass(frozen=True, slots=True)
class HeaderLimits:
    max_count: int = DEFAULTS.max_header_count
    max_bytes: int = DEFAULTS.max_header_size


def framing_problem(headers: Iterable[tuple[bytes, bytes]]) -> ProxyError | None:
    """A 400 for a request whose body framing two parsers could read differently."""
    lengths = 0
    encodings = 0
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            lengths += 1 + value.count(b",")
        elif lowered == b"transfer-encoding":
            encodings += 1 + value.count(b",")
    if lengths and encodings:
        return ambiguous_framing("The request carries both Content-Length and Transfer-Encoding.")
    if lengths > 1:
        return ambiguous_framing("The request carries more than one Content-Length.")
    if encodings > 1:
        return ambiguous_framing("The request carries more than one Transfer-Encoding.")
    return None


# Headers that decide how a proxied request is read: the body's type and every header a provider
# reads a key from. Given twice, the proxy reads the first and a provider may read the other.
_SINGLE_VALUED = ("content-type", "authorization", "x-api-key", "x-goog-api-key")


def reading_problem(
    carriers: KeyCarriers, headers: Mapping[str, str], repeated: Collection[str], query: QueryMap
) -> ProxyError | None:
    """A 400 for a proxied request that could be read two ways outside its body: a header that
    decides its reading given twice, a query that is not UTF-8, or keys that could name two tenants."""
    if repeated:
        for name in _SINGLE_VALUED:
            if name in repeated:
                return bad_request(
                    f"The request carries the {name} header more than once; send it once.", ErrorCode.DUPLICATE_HEADER
                )
    if query.undecodable:
        return bad_request("The request's query string is not UTF-8.", ErrorCode.INVALID_ENCODING)
    return carriers.key_problem(headers, query)


def header_problem(headers: Sequence[tuple[bytes, bytes]], limits: HeaderLimits) -> ProxyError | None:
    """A 431 when the request has more headers, or more header bytes, than ``limits`` allow."""
    if len(headers) > limits.max_count:
        return headers_too_large(f"The request has {len(headers)} headers; at most {limits.max_count} are accepted.")
    size = sum(len(name) + len(value) + 4 for name, value in headers)  # "name: value\r\n"
    if size > limits.max_bytes:
        return headers_too_large(f"The request headers take {size} bytes; at most {limits.max_bytes} are accepted.")
    return None


def is_safe_segment(segment: str) -> bool:
    """True when one client-chosen path segment (a model name) may go into an upstream URL."""
    return _SAFE_SEGMENT.fullmatch(segment) is not None


def is_safe_path(path: str) -> bool:
    """True when the decoded client ``path`` can be appended to an upstream base as it is.

    httpx resolves ``..`` segments when it builds a URL, so an unchecked
    ``/v1/files/../../admin`` would leave the proxied API; ``%2F`` arrives
    decoded as ``/`` and is judged as the segments it makes.
    """
    return path.startswith("/") and all(is_safe_segment(segment) for segment in path[1:].split("/"))
