"""The MCP hop end to end: the official ``mcp`` SDK as client and as server, through the real daemon.

The server is the SDK's ``MCPServer`` on a socket (``tests/support/mcp_server.py``), answering with SSE
streams or with JSON; the client is the SDK's ``Client`` in its default ``auto`` mode, which probes the
2026-07-28 ``server/discover`` first and falls back to the handshake when the hop answers it with an
error. The Debug policy (on by default) refuses its marker wherever it appears.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.support.daemon import REPO, free_port
from tests.support.mcp_server import MARKER
from tests.support.waiting import wait_until

CREDENTIAL = {"Authorization": "Bearer server-token-1"}
# Sent by the client, never to reach the MCP server.
STRAY = {"Cookie": "session=abc", "x-api-key": "sk-ant-provider-key", "x-goog-api-key": "AIza-provider"}
PROTOCOL = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}


@contextmanager
def mcp_server(
    tmp_path: Path, *, json_response: bool = False, instructions: str | None = None, resumable: bool = False
) -> Iterator[tuple[str, Path]]:
    """The SDK's server on a free port: (its base URL, the file its received headers are logged to)."""
    port = free_port()
    headers_file = tmp_path / f"mcp-headers-{port}.jsonl"
    headers_file.touch()
    args = [sys.executable, "-m", "tests.support.mcp_server", str(port), str(headers_file)]
    if json_response:
        args.append("--json")
    if instructions is not None:
        args += ["--instructions", instructions]
    if resumable:
        args.append("--resumable")
    log = (tmp_path / f"mcp-server-{port}.log").open("w")
    process = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}", headers_file
    finally:
        process.kill()
        process.wait(5)
        log.close()


async def server_ready(url: str) -> None:
    async def answers() -> bool:
        try:
            async with httpx.AsyncClient() as client:
                await client.get(url + "/auth")
        except httpx.TransportError:
            return False
        return True

    await wait_until(answers, timeout=30, what="the MCP server answering")


@asynccontextmanager
async def mcp_client(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(headers={**CREDENTIAL, **(headers or {})}, timeout=10)
    async with http, Client(streamable_http_client(url, http_client=http), cache=None) as client:
        yield client


def received(headers_file: Path) -> list[dict[str, Any]]:
    """The HTTP requests the server received (method, path, headers)."""
    lines = [json.loads(line) for line in headers_file.read_text().splitlines() if line.strip()]
    return [line for line in lines if "path" in line]


def ran(headers_file: Path) -> list[str]:
    """The tools the server ran, in order."""
    lines = [json.loads(line) for line in headers_file.read_text().splitlines() if line.strip()]
    return [line["tool"] for line in lines if "tool" in line]


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside ``error`` (nested exception groups flattened)."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def text_of(result: Any) -> str:
    return "\n".join(getattr(part, "text", "") for part in result.content)


async def start_hop(daemons: Any, tmp_path: Path, server_url: str, *extra: str) -> Any:
    daemon = daemons("--mcp-server", f"docs={server_url}/mcp", "--mcp-server", f"auth={server_url}/auth",
                     "--state-dir", str(tmp_path / "state"), *extra)
    await daemon.wait_ready()
    await server_ready(server_url)
    return daemon


@pytest.mark.parametrize("json_response", [False, True], ids=["sse", "json"])
async def test_listing_filtered_calls_checked_and_the_session_goes_on(
    tmp_path: Path, daemons: Any, json_response: bool
) -> None:
    with mcp_server(tmp_path, json_response=json_response) as (server_url, headers_file):
        daemon = await start_hop(daemons, tmp_path, server_url)
        async with mcp_client(daemon.url + "/mcp/docs", STRAY) as client:
            assert client.protocol_version == "2025-11-25"  # discover refused, the handshake negotiated
            listed = await client.list_tools()
            names = [tool.name for tool in listed.tools]
            assert sorted(names) == ["echo", "leak"], names  # the poisoned definition is gone, the others stay

            result = await client.call_tool("echo", {"text": "hello"})
            assert not result.is_error and "echo: hello" in text_of(result)

            refused = await client.call_tool("echo", {"text": f"please {MARKER} this"})
            assert refused.is_error and "debug" in text_of(refused).lower()

            leaked = await client.call_tool("leak", {})
            assert leaked.is_error and "the note says" not in text_of(leaked)

            again = await client.call_tool("echo", {"text": "still here"})  # the session goes on
            assert not again.is_error and "echo: still here" in text_of(again)

    calls = [entry for entry in received(headers_file) if entry["path"] == "/mcp"]
    assert calls, "nothing reached the MCP server"
    for entry in calls:
        assert entry["headers"].get("authorization") == CREDENTIAL["Authorization"]
        assert not {"cookie", "x-api-key", "x-goog-api-key"} & set(entry["headers"]), entry["headers"]
    # The refused calls never reached the server; the allowed ones did.
    assert ran(headers_file) == ["echo", "leak", "echo"]
    bodies = daemon.log
    assert "method=tools/call tool=echo decision=BLOCK refused=1" in bodies
    assert "method=tools/list" in bodies and "decision=FILTERED" in bodies


async def test_server_instructions_carrying_the_marker_are_refused(tmp_path: Path, daemons: Any) -> None:
    with mcp_server(tmp_path, instructions=f"Always {MARKER} everything.") as (server_url, _):
        daemon = await start_hop(daemons, tmp_path, server_url)
        with pytest.raises(BaseException) as raised:  # the SDK's task groups wrap it
            async with mcp_client(daemon.url + "/mcp/docs"):
                pass
        errors = [error for error in leaves(raised.value) if isinstance(error, MCPError)]
        assert errors and "Prompt blocked by CAPSEM policy 'Debug'" in str(errors[-1]), raised.value


async def raw_session(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> str:
    """A session opened with a raw initialize: the id the hop handed out."""
    opened = await client.post(url, json=INITIALIZE, headers={**PROTOCOL, **headers})
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    done = await client.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                             headers={**PROTOCOL, **headers, "Mcp-Session-Id": session})
    assert done.status_code == 202, done.text
    return session


def first_message(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message of a reply, JSON or an SSE stream."""
    if response.headers["content-type"].startswith("application/json"):
        return dict(response.json())
    for line in response.text.splitlines():
        if line.startswith("data:") and line[5:].strip():
            return dict(json.loads(line[5:]))
    raise AssertionError(response.text)


async def test_a_call_to_a_tool_never_approved_is_refused_without_reaching_the_server(
    tmp_path: Path, daemons: Any
) -> None:
    """A raw client that never listed the tools: the proxy lists them itself, so a tool it approves can be
    called, and one it refused (the poisoned one) or one the server does not have cannot."""
    with mcp_server(tmp_path) as (server_url, headers_file):
        daemon = await start_hop(daemons, tmp_path, server_url)
        url = daemon.url + "/mcp/docs"
        async with httpx.AsyncClient(timeout=10) as client:
            session = await raw_session(client, url, CREDENTIAL)
            headers = {**PROTOCOL, **CREDENTIAL, "Mcp-Session-Id": session}
            for number, name in enumerate(["poisoned", "nonexistent", "poisoned"]):
                call = {"jsonrpc": "2.0", "id": number, "method": "tools/call", "params": {"name": name, "arguments": {}}}
                reply = await client.post(url, json=call, headers=headers)
                assert reply.status_code == 200
                message = first_message(reply)
                assert message["id"] == number and message["result"]["isError"] is True
                assert "not among the tools" in message["result"]["content"][0]["text"]
            call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}}
            allowed = first_message(await client.post(url, json=call, headers=headers))
            assert allowed["result"].get("isError") is not True, allowed
        assert ran(headers_file) == ["echo"]
        assert "tool=poisoned decision=BLOCK refused=2" in daemon.log  # the retry of a refused call, counted


async def test_a_session_id_is_refused_to_another_client(tmp_path: Path, daemons: Any) -> None:
    with mcp_server(tmp_path) as (server_url, headers_file):
        daemon = await start_hop(daemons, tmp_path, server_url)
        url = daemon.url + "/mcp/docs"
        async with httpx.AsyncClient(timeout=10) as client:
            session = await raw_session(client, url, CREDENTIAL)
            before = len(received(headers_file))
            ping = {"jsonrpc": "2.0", "id": 3, "method": "ping"}
            other = {"Authorization": "Bearer someone-else"}
            stolen = await client.post(url, json=ping, headers={**PROTOCOL, **other, "Mcp-Session-Id": session})
            assert stolen.status_code == 404, stolen.text
            assert len(received(headers_file)) == before
            own = await client.post(url, json=ping, headers={**PROTOCOL, **CREDENTIAL, "Mcp-Session-Id": session})
            assert own.status_code == 200 and "result" in first_message(own)
        # The server never saw the id the client was given: only its own, unwrapped.
        server_ids = {entry["headers"].get("mcp-session-id") for entry in received(headers_file)} - {None}
        assert session not in server_ids and any(session.startswith(sid + ".") for sid in server_ids)


async def test_batches_and_browser_origins_are_refused(tmp_path: Path, daemons: Any) -> None:
    with mcp_server(tmp_path) as (server_url, headers_file):
        daemon = await start_hop(daemons, tmp_path, server_url)
        url = daemon.url + "/mcp/docs"
        async with httpx.AsyncClient(timeout=10) as client:
            batch = await client.post(url, json=[INITIALIZE], headers={**PROTOCOL, **CREDENTIAL})
            assert batch.status_code == 400 and batch.json()["error"]["code"] == -32600
            browser = await client.post(url, json=INITIALIZE,
                                        headers={**PROTOCOL, **CREDENTIAL, "Origin": "http://evil.example"})
            assert browser.status_code == 403
        assert not [entry for entry in received(headers_file) if entry["path"] == "/mcp"]


async def test_an_upstream_401_reaches_the_client_unchanged(tmp_path: Path, daemons: Any) -> None:
    with mcp_server(tmp_path) as (server_url, _):
        daemon = await start_hop(daemons, tmp_path, server_url)
        async with httpx.AsyncClient(timeout=10) as client:
            reply = await client.post(daemon.url + "/mcp/auth", json=INITIALIZE, headers=PROTOCOL)
        assert reply.status_code == 401
        assert reply.headers["www-authenticate"] == 'Bearer resource_metadata="http://127.0.0.1/.well-known/x"'
        assert reply.json() == {"error": "invalid_token"}


async def test_metrics_count_messages_by_server_method_and_decision(tmp_path: Path, daemons: Any) -> None:
    with mcp_server(tmp_path) as (server_url, _):
        daemon = await start_hop(daemons, tmp_path, server_url)
        async with mcp_client(daemon.url + "/mcp/docs") as client:
            await client.list_tools()
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(daemon.url + "/metrics")).text
        assert 'capsem_proxyd_mcp_messages_total{decision="FILTERED",method="response",server="docs"}' in metrics
        assert 'method="tools/list",server="docs"' in metrics



RULES = """
[tools]
deny = ["mcp__docs__leak"]

[on_tool_call]
redact = [{ name = "ticket", regex = 'TICKET-[0-9]+' }]
"""


async def test_one_rule_names_the_tool_as_the_model_hop_does_and_masking_refuses(
    tmp_path: Path, daemons: Any
) -> None:
    """A rule on ``mcp__docs__leak`` (Claude Code's name for it on the model hop) removes it here too; a
    value a rule would mask in the arguments refuses the call (nothing is forwarded masked)."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "rules.toml").write_text(RULES)
    with mcp_server(tmp_path) as (server_url, headers_file):
        daemon = await start_hop(daemons, tmp_path, server_url, "--policy-dir", str(policies))
        async with mcp_client(daemon.url + "/mcp/docs") as client:
            names = sorted(tool.name for tool in (await client.list_tools()).tools)
            assert "leak" not in names and "echo" in names
            masked = await client.call_tool("echo", {"text": "see TICKET-123"})
            assert masked.is_error and "mask" in text_of(masked) and "TICKET-123" not in text_of(masked)
            assert not (await client.call_tool("echo", {"text": "no ticket"})).is_error
    assert ran(headers_file) == ["echo"]


async def test_priming_events_pass_unchanged_and_a_resumed_stream_is_checked_too(tmp_path: Path, daemons: Any) -> None:
    """The server's priming event (an id, ``retry:``, empty data) reaches the client as it was sent; a client
    that resumes the stream after it with ``Last-Event-ID`` on the GET stream gets the replayed result checked
    as the first delivery was: the marker never reaches it."""
    with mcp_server(tmp_path, resumable=True) as (server_url, _):
        daemon = await start_hop(daemons, tmp_path, server_url)
        url = daemon.url + "/mcp/docs"
        async with httpx.AsyncClient(timeout=10) as client:
            session = await raw_session(client, url, CREDENTIAL)
            headers = {**PROTOCOL, **CREDENTIAL, "Mcp-Session-Id": session}
            listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
            assert "result" in first_message(await client.post(url, json=listing, headers=headers))
            call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "leak", "arguments": {}}}
            reply = await client.post(url, json=call, headers=headers)
            assert reply.headers["content-type"].startswith("text/event-stream")
            events = [block for block in reply.text.replace("\r\n", "\n").split("\n\n") if block.strip()]
            priming = events[0].splitlines()
            assert "retry: 1234" in priming and any(line.startswith("id: ") for line in priming), events[0]
            primed = next(line[4:] for line in priming if line.startswith("id: "))
            assert first_message(reply)["result"]["isError"] is True
            assert "the note says" not in reply.text

            replayed = ""
            async with client.stream("GET", url, headers={**headers, "Last-Event-ID": primed}) as resumed:
                assert resumed.status_code == 200
                async for line in resumed.aiter_lines():
                    replayed += line + "\n"
                    if line.startswith("data:") and '"id":3' in line.replace(" ", ""):
                        break
            assert '"id":3' in replayed.replace(" ", "") and "the note says" not in replayed


async def test_a_proof_header_names_the_model_hop_tenant_and_owns_the_session(tmp_path: Path, daemons: Any) -> None:
    """``X-Capsem-Provider-Key`` (the agent's provider key, never forwarded) makes the request the model hop's
    tenant: the allow-list applies, and the session belongs to the tenant, whatever credential it forwards."""
    from capsem_proxyd.exchange import tenant_id_for

    allowed = tenant_id_for("sk-tenant-a")
    tenants = tmp_path / "tenants.toml"
    tenants.write_text(f'tenants = ["{allowed}"]\n')
    with mcp_server(tmp_path) as (server_url, headers_file):
        daemon = await start_hop(daemons, tmp_path, server_url, "--tenants-file", str(tenants))
        url = daemon.url + "/mcp/docs"
        proof = {"X-Capsem-Provider-Key": "sk-tenant-a"}
        ping = {"jsonrpc": "2.0", "id": 4, "method": "ping"}
        async with httpx.AsyncClient(timeout=10) as client:
            session = await raw_session(client, url, {**CREDENTIAL, **proof})
            rotated = {**PROTOCOL, **proof, "Authorization": "Bearer rotated-token", "Mcp-Session-Id": session}
            assert "result" in first_message(await client.post(url, json=ping, headers=rotated))
            unproven = {**PROTOCOL, **CREDENTIAL, "Mcp-Session-Id": session}
            assert (await client.post(url, json=ping, headers=unproven)).status_code == 404
            stranger = await client.post(url, json=INITIALIZE,
                                         headers={**PROTOCOL, **CREDENTIAL, "X-Capsem-Provider-Key": "sk-other"})
            assert stranger.status_code == 400 and "tenant" in stranger.json()["error"]["message"]
    assert all("x-capsem-provider-key" not in entry["headers"] for entry in received(headers_file))
    assert f"tenant_id={allowed}" in daemon.log and "sk-tenant-a" not in daemon.log
