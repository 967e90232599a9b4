"""``capsem-proxyd mcp-pins list|diff|accept`` against the real daemon and the SDK's MCP server.

The server changes after its first listing (``/mutate``); the command, run as the real executable, shows
the pending changes and their diff, and an accept through the daemon is served on the next listing and
recorded in the audit log with the user who accepted.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.e2e.test_mcp_hop import mcp_client, mcp_server, start_hop
from tests.e2e.test_mcp_pins import mutate
from tests.e2e.test_mcp_workers import workers_that
from tests.support.daemon import run_cli


async def pins(daemon: Any, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    where = ["--port", str(daemon.port), "--state-dir", str(tmp_path / "state")]
    return await trio.to_thread.run_sync(lambda: run_cli("mcp-pins", args[0], *where, *args[1:]))


async def test_pending_changes_are_listed_diffed_and_accepted_through_the_daemon(tmp_path: Path, daemons: Any) -> None:
    audit = tmp_path / "audit.log"
    with mcp_server(tmp_path) as (server_url, _):
        daemon = await start_hop(daemons, tmp_path, server_url, "--audit-log", str(audit))
        async with mcp_client(daemon.url + "/mcp/docs") as client:
            await client.list_tools()
            await mutate(server_url, "describe")
            await mutate(server_url, "add")
            listed = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert sorted(listed) == ["echo", "leak"] and "ssh" not in (listed["echo"].description or "")

            shown = await pins(daemon, tmp_path, "list")
            assert shown.returncode == 0, shown.stderr
            assert "docs: 2 pinned, 2 pending" in shown.stdout
            assert "pending  newcomer  (new)" in shown.stdout and "pinned   echo  (pending: text)" in shown.stdout

            diff = await pins(daemon, tmp_path, "diff", "docs", "echo")
            assert diff.returncode == 0, diff.stderr
            removed = [line for line in diff.stdout.splitlines() if line.startswith("-  ")]
            added = [line for line in diff.stdout.splitlines() if line.startswith("+  ")]
            assert any('"description"' in line and "ssh" in line for line in added), diff.stdout
            assert any('"description"' in line and "ssh" not in line for line in removed), diff.stdout
            assert "newcomer" not in diff.stdout  # narrowed to the tool asked for

            accepted = await pins(daemon, tmp_path, "accept", "docs", "echo")
            assert accepted.returncode == 0, accepted.stderr
            assert "accepted docs echo" in accepted.stdout
            after = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert "ssh" in (after["echo"].description or "")  # the accepted text is served on the next listing
            assert "newcomer" not in after  # accepting one tool leaves the others pending

            everything = await pins(daemon, tmp_path, "accept", "docs")
            assert everything.returncode == 0 and "accepted docs newcomer" in everything.stdout, everything.stderr
            final = {tool.name for tool in (await client.list_tools()).tools}
            assert final == {"echo", "leak", "newcomer"}
            assert not (await client.call_tool("newcomer", {})).is_error

        assert "docs: 3 pinned, 0 pending" in (await pins(daemon, tmp_path, "list", "docs")).stdout
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(daemon.url + "/metrics")).text
        assert 'capsem_proxyd_mcp_pending_tools{server="docs"} 0.0' in metrics

    records = [json.loads(line) for line in audit.read_text().splitlines()]
    accepts = [record for record in records if record.get("type") == "mcp_pin_accepted"]
    assert [(record["server"], record["tool"]) for record in accepts] == [("docs", "echo"), ("docs", "newcomer")]
    assert accepts[0]["accepted_by"]["uid"] == os.getuid()
    assert accepts[0]["previous_definition_hash"] and accepts[0]["definition_hash"] != accepts[0]["previous_definition_hash"]
    assert accepts[1]["previous_definition_hash"] is None
    verified = await trio.to_thread.run_sync(lambda: run_cli("audit", "verify", str(audit), "--state-dir",
                                                             str(tmp_path / "state")))
    assert verified.returncode == 0, verified.stderr  # the daemon wrote them into its one chain


async def test_a_bad_name_is_one_line_and_exit_2_and_the_endpoint_wants_the_token(
    tmp_path: Path, daemons: Any
) -> None:
    with mcp_server(tmp_path) as (server_url, _):
        daemon = await start_hop(daemons, tmp_path, server_url)
        async with mcp_client(daemon.url + "/mcp/docs") as client:
            await client.list_tools()
        for args in (("list", "nope"), ("diff", "docs", "nope"), ("accept", "nope"), ("accept", "docs", "echo")):
            result = await pins(daemon, tmp_path, *args)
            assert result.returncode == 2, (args, result.stdout, result.stderr)
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "no pending change" in result.stderr  # echo is pinned and unchanged: nothing to accept

        async with httpx.AsyncClient() as http:
            assert (await http.get(daemon.url + "/mcp-pins")).status_code == 404
            wrong = await http.post(daemon.url + "/mcp-pins/accept", json={"server": "docs"},
                                    headers={"x-capsem-control-token": "0" * 64})
            assert wrong.status_code == 404
        elsewhere = await trio.to_thread.run_sync(lambda: run_cli(
            "mcp-pins", "list", "--port", str(daemon.port), "--state-dir", str(tmp_path / "other")))
        assert elsewhere.returncode == 2 and "no control token" in elsewhere.stderr


async def test_an_accept_through_one_worker_is_served_by_both(tmp_path: Path, daemons: Any) -> None:
    """Under ``--workers 2`` each worker holds the pins in memory: an accept answered by one is written to
    the pins file, and the other serves it on its next listing (it reads the file again when it changed)."""
    with mcp_server(tmp_path) as (server_url, _):
        daemon = await start_hop(daemons, tmp_path, server_url, "--workers", "2")

        async def echo_description() -> str:
            async with mcp_client(daemon.url + "/mcp/docs") as client:  # a fresh connection: the kernel picks
                listed = {tool.name: tool for tool in (await client.list_tools()).tools}
            return listed["echo"].description or ""

        await echo_description()
        await mutate(server_url, "describe")
        for _ in range(100):  # until both workers have held the change pending
            assert "ssh" not in await echo_description()
            if len(workers_that(daemon.log, "mcp tool definition changed")) == 2:
                break
        assert len(workers_that(daemon.log, "mcp tool definition changed")) == 2, daemon.log[-3000:]

        accepted = await pins(daemon, tmp_path, "accept", "docs", "echo")
        assert accepted.returncode == 0, accepted.stderr
        since = len(daemon.log)
        for _ in range(100):  # until both workers have listed since the accept: each serves the new text
            assert "ssh" in await echo_description()
            if len(workers_that(daemon.log[since:], "method=tools/list")) == 2:
                break
        assert len(workers_that(daemon.log[since:], "method=tools/list")) == 2, daemon.log[since:][-3000:]
