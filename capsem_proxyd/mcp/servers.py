"""The MCP servers an operator declares: ``--mcp-server NAME=URL``, ``--mcp-header NAME=Header`` and
``--mcp-timeout NAME=SECONDS``.

Validated before start (``check`` and ``start`` read them alike): a bad name,
URL or header is one line and exit 2, never a 502 on every call.

Which request headers reach a server is an allow-list, not a deny-list: the
protocol's own (``Accept``, ``Content-Type``, ``MCP-Protocol-Version``,
``Last-Event-ID``; ``Mcp-Session-Id`` is rewritten by ``sessions.py``),
``Authorization`` (how MCP clients carry a server's static credential), and
the headers the operator names per server. Cookies and the headers the model
APIs carry their keys in are refused even when named: a client configured for
both hops would hand its provider key to a third party.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# The longest --mcp-timeout: a day (a longer one is a typo, not a wish).
MAX_TIMEOUT = 86_400.0
# A tool's name as the protocol allows it (1 to 128 characters, no spaces or slashes).
TOOL = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
# Forwarded to every server.
PROTOCOL_HEADERS = frozenset({"accept", "content-type", "mcp-protocol-version", "last-event-id", "authorization"})
# Never forwarded, whatever the operator names: credentials of other parties and browser state.
NEVER_FORWARDED = frozenset({
    "cookie", "x-api-key", "x-goog-api-key", "api-key", "proxy-authorization", "host", "content-length",
    "transfer-encoding", "connection", "origin", "mcp-session-id",
})


class McpConfigError(ValueError):
    """A server or header entry that cannot be served: its message is the one line the operator reads."""


@dataclass(frozen=True, slots=True)
class McpServer:
    """One declared server: its name (the path segment), its URL, the headers forwarded to it, the
    seconds it has to answer a request (None: no bound beyond the upstream read timeout), and the tools
    whose arguments pass unchanged under REDACT."""

    name: str
    url: httpx.URL
    headers: frozenset[str] = PROTOCOL_HEADERS
    timeout: float | None = None
    # The tools whose call arguments go on unchanged under a REDACT verdict (``--mcp-redact-passthrough``).
    redact_passthrough: frozenset[str] = frozenset()


def named_url(entry: str) -> tuple[str, str]:
    """``NAME=URL`` as (name, url); McpConfigError naming what is wrong."""
    name, sep, url = entry.partition("=")
    name, url = name.strip(), url.strip()
    if not sep or not NAME.match(name) or "__" in name:
        # No "__": policies read the server out of a tool's name mcp__SERVER__tool (views.mcp_server), one way.
        raise McpConfigError(
            f"{entry!r} is not NAME=URL with NAME made of letters, digits, '-' and '_' (no '__') "
            "(e.g. docs=https://mcp.example.com/mcp)"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as error:
        raise McpConfigError(f"MCP server {name}: {url!r} is not a URL ({error})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise McpConfigError(f"MCP server {name}: {url!r} is not an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise McpConfigError(f"MCP server {name}: its URL carries credentials; send them as a header instead")
    return name, url


def load_servers(
    entries: Iterable[str], header_entries: Iterable[str] = (), timeout_entries: Iterable[str] = (),
    passthrough_entries: Iterable[str] = (),
) -> dict[str, McpServer]:
    """Every declared server by name; McpConfigError on a bad, repeated or unknown entry."""
    urls: dict[str, str] = {}
    for entry in entries:
        name, url = named_url(entry)
        if name in urls:
            raise McpConfigError(f"MCP server {name} is declared twice")
        urls[name] = url
    extra: dict[str, set[str]] = {name: set() for name in urls}
    for entry in header_entries:
        name, header = _server_entry("--mcp-header", entry, "=", "SERVER=Header-Name", urls)
        header = header.strip().lower()
        if not HEADER.match(header):
            raise McpConfigError(f"--mcp-header {entry!r}: {header!r} is not a header name")
        if header in NEVER_FORWARDED or header.startswith("proxy-"):
            raise McpConfigError(f"--mcp-header {entry!r}: {header} is never forwarded to an MCP server")
        extra[name].add(header)
    timeouts = load_timeouts(timeout_entries, urls)
    passthrough = redact_passthrough(passthrough_entries, urls)
    return {
        name: McpServer(name, httpx.URL(url), PROTOCOL_HEADERS | frozenset(extra[name]), timeouts.get(name),
                        frozenset(passthrough.get(name, ())))
        for name, url in urls.items()
    }


def _server_entry(flag: str, entry: str, separator: str, shape: str, declared: Iterable[str]) -> tuple[str, str]:
    """A per-server entry (``SERVER=...``, ``SERVER/...``) as (server, the rest); McpConfigError naming the flag
    when it has no separator or names a server no ``--mcp-server`` declares. One reading for every such flag."""
    name, found, rest = entry.strip().partition(separator)
    name = name.strip()
    if not found:
        raise McpConfigError(f"{flag} {entry!r}: expected {shape} for a declared --mcp-server")
    if name not in declared:
        raise McpConfigError(f"{flag} {entry!r}: {name!r} is not a declared --mcp-server")
    return name, rest


def load_timeouts(entries: Iterable[str], declared: Iterable[str]) -> dict[str, float]:
    """``--mcp-timeout NAME=SECONDS`` entries by server; McpConfigError naming a bad or unknown one."""
    names = set(declared)
    timeouts: dict[str, float] = {}
    for entry in entries:
        name, value = _server_entry("--mcp-timeout", entry, "=", "SERVER=SECONDS", names)
        if name in timeouts:
            raise McpConfigError(f"--mcp-timeout {entry!r}: server {name} has a timeout already")
        try:
            seconds = float(value)
        except ValueError:
            seconds = float("nan")
        if not 0 < seconds <= MAX_TIMEOUT:  # NaN fails too
            raise McpConfigError(f"--mcp-timeout {entry!r}: SECONDS must be a number above 0 and at most {MAX_TIMEOUT:g}")
        timeouts[name] = seconds
    return timeouts


def redact_passthrough(entries: Iterable[str], servers: Iterable[str]) -> dict[str, set[str]]:
    """``--mcp-redact-passthrough SERVER/TOOL`` entries as the tools of each declared server."""
    declared = set(servers)
    tools: dict[str, set[str]] = {}
    for entry in entries:
        name, tool = _server_entry("--mcp-redact-passthrough", entry, "/", "SERVER/TOOL (e.g. docs/write_file)",
                                   declared)
        if not TOOL.match(tool):
            raise McpConfigError(f"--mcp-redact-passthrough {entry!r}: expected SERVER/TOOL (e.g. docs/write_file)")
        tools.setdefault(name, set()).add(tool)
    return tools
