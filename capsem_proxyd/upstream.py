"""The one pooled HTTP client that talks to the providers.

One connection pool per process (``upstream_pool``: h11 over trio streams)
keeps connections (and TLS sessions) alive across requests; header hygiene and
the mapping of transport failures to 502/504 live here so the pipeline only
sees ``send``. Nothing is kept between requests but idle connections: no
cookies, no credentials.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from capsem_proxyd.errors import upstream_timeout, upstream_unavailable
from capsem_proxyd.limits import response_too_large
from capsem_proxyd.upstream_pool import ResponseHeaders, UpstreamPool, UpstreamResponse

# Never forwarded in either direction: hop-by-hop headers (RFC 9110 7.6.1) and
# the ones the proxy recomputes or must not pass on.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_NOT_FORWARDED_UP = HOP_BY_HOP | {"host", "content-length", "cookie", "accept-encoding", "origin", "referer"}
# Where the request came from: a client could forge them, so they go upstream only when the
# operator asks (--forward-client-ip), and then with the client's real address appended.
# Remote-Addr is Quart's: it puts the client's address among the request headers.
_CLIENT_ADDRESS = frozenset({"x-forwarded-for", "forwarded", "x-real-ip", "remote-addr"})
_NOT_FORWARDED_DOWN = HOP_BY_HOP | {
    "content-length",
    "content-encoding",
    "set-cookie",
    "server",
    "date",
    "alt-svc",
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-expose-headers",
}


@dataclass(slots=True)
class UpstreamTimeouts:
    connect: float = 10.0
    read: float = 600.0
    write: float = 60.0
    pool: float = 10.0


def request_headers(headers: Iterable[tuple[str, str]], client_addr: str | None = None) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop ones; the key passes through untouched.

    Hop-by-hop also covers every header the client's ``Connection`` names (RFC 9110
    7.6.1). ``client_addr`` (only with --forward-client-ip) keeps the client's
    X-Forwarded-For/Forwarded chain and appends the address the request came from;
    without it those headers are dropped.
    """
    headers = list(headers)
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    dropped = _NOT_FORWARDED_UP | named
    forwarded = [
        (name, value)
        for name, value in headers
        if (lowered := name.lower()) not in dropped and not lowered.startswith("proxy-") and lowered not in _CLIENT_ADDRESS
    ]
    if client_addr is not None:
        forwarded.extend(_client_address_headers(headers, client_addr))
    return forwarded


def _client_address_headers(headers: list[tuple[str, str]], client_addr: str) -> list[tuple[str, str]]:
    """X-Forwarded-For and Forwarded: the chain the client brought, then its own address."""
    def chain(header: str) -> list[str]:
        return [value for name, value in headers if name.lower() == header and value.strip()]

    node = f'"[{client_addr}]"' if ":" in client_addr else client_addr
    return [
        ("x-forwarded-for", ", ".join([*chain("x-forwarded-for"), client_addr])),
        ("forwarded", ", ".join([*chain("forwarded"), f"for={node}"])),
    ]


def response_headers(headers: ResponseHeaders) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers if name not in _NOT_FORWARDED_DOWN]


class Upstream:
    """Thin wrapper over one ``UpstreamPool``: send, map failures."""

    def __init__(self, timeouts: UpstreamTimeouts | None = None, max_connections: int = 1000) -> None:
        timeouts = timeouts or UpstreamTimeouts()
        self.timeouts = timeouts
        self.pool = UpstreamPool(
            connect=timeouts.connect,
            read=timeouts.read,
            write=timeouts.write,
            pool=timeouts.pool,
            max_connections=max_connections,
            max_idle=200,
            keepalive_expiry=30,
        )

    async def send(
        self,
        method: str,
        url: httpx.URL,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        stream: bool = True,
    ) -> UpstreamResponse:
        """Send and return the response, body unread; raise ProxyError on transport failure.

        Header values travel as latin-1, byte for byte as the client sent them.
        """
        raw_headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        try:
            return await self.pool.request(method.encode("ascii"), url, raw_headers, body)
        except httpx.TimeoutException as error:
            raise upstream_timeout(f"The upstream provider did not answer in time ({type(error).__name__}).") from None
        except httpx.HTTPError as error:
            raise upstream_unavailable(
                f"The upstream provider is unreachable ({type(error).__name__})."
            ) from None
        except OSError as error:
            raise upstream_unavailable(f"The upstream provider is unreachable ({error.strerror}).") from None

    async def read_body(self, response: UpstreamResponse, limit: int | None = None) -> bytes:
        """Read a streamed response's body completely, mapping failures; at most ``limit`` bytes (502)."""
        try:
            if limit is None:
                return await response.aread()
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise response_too_large(limit)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise response_too_large(limit)
                chunks.append(chunk)
            return b"".join(chunks)
        except httpx.TimeoutException:
            raise upstream_timeout("The upstream provider stopped answering mid-response.") from None
        except httpx.HTTPError as error:
            raise upstream_unavailable(f"The upstream response broke off ({type(error).__name__}).") from None
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self.pool.aclose()

