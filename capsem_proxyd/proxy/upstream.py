"""The one pooled HTTP transport that talks to the providers.

One httpx transport per process (``ShardedTransport``: several httpcore pools
used as one) keeps connections and TLS sessions alive across requests; header
hygiene and the mapping of transport failures to 502/504 live here so the
pipeline only sees ``send``. Requests go straight to the transport, never
through an ``httpx.AsyncClient``: a client's own layers (auth, redirects, a
cookie jar, event hooks) have nothing to do for a proxy, cost a third of the
upstream exchange, and a shared cookie jar would carry one tenant's cookies to
the next. Nothing is kept between requests but idle connections: no cookies,
no credentials.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from capsem_proxyd.config import DEFAULTS
from capsem_proxyd.errors import response_too_large, transport_cause, upstream_timeout, upstream_unavailable
from capsem_proxyd.proxy.reply_memory import ReplyHold
from capsem_proxyd.proxy.sharded_transport import ShardedTransport

UpstreamResponse = httpx.Response

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
# W3C trace context: forwarded as the client sent them, unless the proxy traces (OpenTelemetry
# on), which replaces them with its own span's (the client's stays its span's parent).
TRACE_CONTEXT_HEADERS = frozenset({"traceparent", "tracestate"})
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


# What an httpx client sends by default. Accept-Encoding names the codings httpx always
# decodes (the client's own is never forwarded), so a compressed reply is checked decoded.
_DEFAULT_HEADERS = [
    ("accept", "*/*"),
    ("accept-encoding", "gzip, deflate"),
    ("connection", "keep-alive"),
    ("user-agent", f"python-httpx/{httpx.__version__}"),
]


@dataclass(slots=True)
class UpstreamTimeouts:
    connect: float = DEFAULTS.connect_timeout
    read: float = DEFAULTS.upstream_timeout
    write: float = 60.0
    pool: float = 10.0


def request_headers(
    headers: Iterable[tuple[str, str]], client_addr: str | None = None, *, dropped: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop ones (and ``dropped``); the key passes through untouched.

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
    dropped = _NOT_FORWARDED_UP | named | dropped
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


def stated_size(response: UpstreamResponse) -> int | None:
    """The body's size as the response states it (``Content-Length`` of an unencoded body), else None:
    a compressed body's length says little of what it decodes to."""
    declared = response.headers.get("content-length", "")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    return int(declared) if declared.isdigit() and encoding in ("", "identity") else None


def response_headers(headers: httpx.Headers) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers.multi_items() if name not in _NOT_FORWARDED_DOWN]


class Upstream:
    """Build the upstream request, send it through the pooled transport, map failures."""

    def __init__(self, timeouts: UpstreamTimeouts | None = None, max_connections: int = 1000) -> None:
        timeouts = timeouts or UpstreamTimeouts()
        self.timeouts = timeouts
        # Eight httpcore pools instead of one: each request scans an eighth of the connections.
        self.transport = ShardedTransport(
            8,
            httpx.Limits(max_connections=max_connections, max_keepalive_connections=200, keepalive_expiry=30),
            trust_env=False,
        )
        self._timeout = httpx.Timeout(
            connect=timeouts.connect, read=timeouts.read, write=timeouts.write, pool=timeouts.pool
        ).as_dict()

    async def send(self, method: str, url: httpx.URL, headers: list[tuple[str, str]], body: bytes) -> httpx.Response:
        """Send and return the response, body unread; raise ProxyError on transport failure."""
        # httpx's own default headers (the ones an httpx client would add), unless the client sent
        # them: a bare Request costs ~20 us where client.build_request costs ~50 us.
        present = {name.lower() for name, _ in headers}
        merged = [(name, value) for name, value in _DEFAULT_HEADERS if name not in present]
        merged.extend(headers)
        request = httpx.Request(method, url, headers=merged, content=body, extensions={"timeout": self._timeout})
        try:
            response = await self.transport.handle_async_request(request)
            response.request = request
            return response
        except httpx.TimeoutException as error:
            raise upstream_timeout(f"The upstream provider did not answer in time ({type(error).__name__}).",
                                   transport_cause(error)) from None
        except httpx.HTTPError as error:
            raise upstream_unavailable(
                f"The upstream provider is unreachable ({type(error).__name__}).", transport_cause(error)
            ) from None
        except OSError as error:
            raise upstream_unavailable(f"The upstream provider is unreachable ({error.strerror}).",
                                       transport_cause(error)) from None

    async def read_body(
        self, response: UpstreamResponse, limit: int | None = None, hold: ReplyHold | None = None,
    ) -> bytearray:
        """Read a streamed response's body completely, mapping failures; at most ``limit`` bytes (502).

        Into one buffer, each chunk copied in as it arrives: chunks kept in a list
        and joined at the end held the reply twice. ``hold`` is the reply's share
        of ``--reply-memory``; what arrives beyond it grows it (503 when it does
        not fit).
        """
        try:
            declared = response.headers.get("content-length", "")
            if limit is not None and declared.isdigit() and int(declared) > limit:
                raise response_too_large(limit)
            body = bytearray()
            try:
                async for chunk in response.aiter_bytes():
                    size = len(body) + len(chunk)
                    if limit is not None and size > limit:
                        raise response_too_large(limit)
                    if hold is not None and size > hold.size:
                        hold.grow(size - hold.size)
                    body += chunk
            except BaseException:
                body = bytearray()  # freed before the upstream is closed (an await): it is no longer held
                raise
            return body
        except httpx.TimeoutException as error:
            raise upstream_timeout("The upstream provider stopped answering mid-response.",
                                   transport_cause(error)) from None
        except httpx.HTTPError as error:
            raise upstream_unavailable(f"The upstream response broke off ({type(error).__name__}).",
                                       transport_cause(error)) from None
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

