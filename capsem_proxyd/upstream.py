"""The one pooled HTTP client that talks to the providers.

A single ``httpx.AsyncClient`` per process keeps connections (and TLS
sessions) alive across requests; header hygiene and the mapping of transport
failures to 502/504 live here so the pipeline only sees ``send``.
"""

from __future__ import annotations

from collections.abc import Iterable
import http.cookiejar
from dataclasses import dataclass

import httpx

from capsem_proxyd.errors import upstream_timeout, upstream_unavailable

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


def request_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop ones; the key passes through untouched."""
    return [
        (name, value)
        for name, value in headers
        if name.lower() not in _NOT_FORWARDED_UP and not name.lower().startswith("proxy-")
    ]


def response_headers(headers: httpx.Headers) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers.multi_items() if name.lower() not in _NOT_FORWARDED_DOWN]


class NoCookieJar(http.cookiejar.CookieJar):
    """A jar that keeps nothing.

    Every tenant shares the one client: a cookie kept from one tenant's reply
    would be sent with the next tenant's request. Cookies pass through neither way.
    """

    def extract_cookies(self, response: object, request: object) -> None:
        return None

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None

    def add_cookie_header(self, request: object) -> None:
        return None


class Upstream:
    """Thin wrapper over one ``httpx.AsyncClient``: build, send, map failures."""

    def __init__(self, timeouts: UpstreamTimeouts | None = None, max_connections: int = 1000) -> None:
        timeouts = timeouts or UpstreamTimeouts()
        self.timeouts = timeouts
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=timeouts.connect, read=timeouts.read, write=timeouts.write, pool=timeouts.pool
            ),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=200, keepalive_expiry=30),
            follow_redirects=False,
            trust_env=False,
            cookies=NoCookieJar(),
        )

    async def send(
        self,
        method: str,
        url: httpx.URL,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        stream: bool,
    ) -> httpx.Response:
        """Send and return the response (body unread when ``stream``); raise ProxyError on transport failure."""
        request = self.client.build_request(method, url, headers=headers, content=body)
        try:
            return await self.client.send(request, stream=stream)
        except httpx.TimeoutException as error:
            raise upstream_timeout(f"The upstream provider did not answer in time ({type(error).__name__}).") from None
        except httpx.HTTPError as error:
            raise upstream_unavailable(
                f"The upstream provider is unreachable ({type(error).__name__})."
            ) from None
        except OSError as error:
            raise upstream_unavailable(f"The upstream provider is unreachable ({error.strerror}).") from None

    async def read_body(self, response: httpx.Response) -> bytes:
        """Read a streamed response's body completely, mapping failures."""
        try:
            return await response.aread()
        except httpx.TimeoutException:
            raise upstream_timeout("The upstream provider stopped answering mid-response.") from None
        except httpx.HTTPError as error:
            raise upstream_unavailable(f"The upstream response broke off ({type(error).__name__}).") from None
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()

