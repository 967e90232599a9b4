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

Everything works on ``scope["headers"]`` (bytes pairs) so nothing is decoded
or merged before it is judged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from capsem_proxyd.config import DEFAULTS
from capsem_proxyd.errors import ProxyError, bad_request

# A path segment the proxy may append to a configured upstream base: no dot
# segments, no percent signs (a second decoding), no backslashes, no control
# characters, nothing that ends a path (``?``, ``#``).
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_.:@~+=,-]{1,256}$")


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
        return _framing("The request carries both Content-Length and Transfer-Encoding.")
    if lengths > 1:
        return _framing("The request carries more than one Content-Length.")
    if encodings > 1:
        return _framing("The request carries more than one Transfer-Encoding.")
    return None


def header_problem(headers: list[tuple[bytes, bytes]], limits: HeaderLimits) -> ProxyError | None:
    """A 431 when the request has more headers, or more header bytes, than ``limits`` allow."""
    if len(headers) > limits.max_count:
        return _too_large(f"The request has {len(headers)} headers; at most {limits.max_count} are accepted.")
    size = sum(len(name) + len(value) + 4 for name, value in headers)  # "name: value\r\n"
    if size > limits.max_bytes:
        return _too_large(f"The request headers take {size} bytes; at most {limits.max_bytes} are accepted.")
    return None


def is_safe_api_path(path: str) -> bool:
    """True when the decoded client ``path`` can be appended to an upstream base as it is.

    httpx resolves ``..`` segments when it builds a URL, so an unchecked
    ``/v1/files/../../admin`` would leave the proxied API; ``%2F`` arrives
    decoded as ``/`` and is judged as the segments it makes.
    """
    if not path.startswith("/"):
        return False
    segments = path[1:].split("/")
    return all(_SAFE_SEGMENT.match(segment) and segment not in (".", "..") for segment in segments)


def _framing(message: str) -> ProxyError:
    error = bad_request(message + " Refused: a request must be framed one way only.")
    error.code = "ambiguous_request_framing"
    return error


def _too_large(message: str) -> ProxyError:
    return ProxyError(431, "invalid_request", message, code="request_header_fields_too_large")
