"""The MCP hop under ``--workers 2``: a session opened on one worker is served by the other.

Session ids are tagged with a key derived from the state directory's placeholder key (made before the
workers fork), so both verify them; the approved tools live in each worker's memory, so the worker that
never saw the session's listing lists the server itself before it gates a call.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.test_mcp_hop import CREDENTIAL, PROTOCOL, first_message, mcp_server, ran, raw_session, server_ready


def workers_that(log: str, text: str) -> set[str]:
    return {match.group(1) for match in re.finditer(r"capsem_proxyd\.mcp\[(\d+)\]: [^\n]*" + re.escape(text), log)}


async def test_a_session_is_served_and_gated_alike_by_both_workers(tmp_path: Path, daemons: Any) -> None:
    with mcp_server(tmp_path) as (server_url, headers_file):
        daemon = daemons("--workers", "2", "--mcp-server", f"docs={server_url}/mcp",
                         "--state-dir", str(tmp_path / "state"))
        await daemon.wait_ready()
        await server_ready(server_url)
        url = daemon.url + "/mcp/docs"
        async with httpx.AsyncClient(timeout=10) as client:
            session = await raw_session(client, url, CREDENTIAL)
        headers = {**PROTOCOL, **CREDENTIAL, "Mcp-Session-Id": session}
        allowed = "method=tools/call tool=echo decision=ALLOW"
        for number in range(200):  # fresh connections until both workers served one (the kernel picks)
            async with httpx.AsyncClient(timeout=10) as client:
                echo = {"jsonrpc": "2.0", "id": number, "method": "tools/call",
                        "params": {"name": "echo", "arguments": {"text": "x"}}}
                answer = first_message(await client.post(url, json=echo, headers=headers))
                assert answer["result"].get("isError") is not True, answer
                poisoned = {"jsonrpc": "2.0", "id": number, "method": "tools/call",
                            "params": {"name": "poisoned", "arguments": {}}}
                refused = first_message(await client.post(url, json=poisoned, headers=headers))
                assert refused["result"]["isError"] is True, refused
            if len(workers_that(daemon.log, allowed)) == 2:
                break
        assert len(workers_that(daemon.log, allowed)) == 2, "one worker served every request"
        assert "poisoned" not in ran(headers_file)
