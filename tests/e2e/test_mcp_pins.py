"""Pinned definitions on the MCP hop: a server that changes its tools after they were approved.

The SDK's server changes a tool through its ``/mutate`` route between two listings the SDK's client
makes through the real daemon: the first listing is pinned in ``--state-dir``; a new description is
never served, a new schema removes the tool, a new tool is held pending, and calls follow the list.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.test_mcp_hop import mcp_client, mcp_server, start_hop, text_of
from tests.support.waiting import wait_until


async def mutate(server_url: str, change: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.post(server_url + "/mutate", content=change)).status_code == 200


async def test_a_changed_description_is_never_served_and_new_tools_wait(tmp_path: Path, daemons: Any) -> None:
    with mcp_server(tmp_path) as (server_url, _):
        daemon = await start_hop(daemons, tmp_path, server_url)
        async with mcp_client(daemon.url + "/mcp/docs") as client:
            first = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert sorted(first) == ["echo", "leak"]
            pins = json.loads((tmp_path / "state" / "mcp-pins.json").read_text())
            assert sorted(pins["docs"]) == ["echo", "leak"]

            await mutate(server_url, "describe")
            await mutate(server_url, "add")
            second = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert sorted(second) == ["echo", "leak"]  # the newcomer is held pending
            assert second["echo"].description == first["echo"].description  # the pinned text, not the new one
            assert "ssh" not in json.dumps([tool.model_dump() for tool in second.values()])
            held = await client.call_tool("newcomer", {})
            assert held.is_error and "not among the tools" in text_of(held)
            assert not (await client.call_tool("echo", {"text": "a"})).is_error

            await mutate(server_url, "reshape")
            third = [tool.name for tool in (await client.list_tools()).tools]
            assert third == ["leak"]  # a changed schema removes the tool
            removed = await client.call_tool("echo", {"text": "a", "target": "b"})
            assert removed.is_error and "not among the tools" in text_of(removed)
        async with httpx.AsyncClient() as http:
            health = (await http.get(daemon.url + "/health")).json()
            metrics = (await http.get(daemon.url + "/metrics")).text
        assert health["mcp"]["servers"]["docs"] == {"pinned": 2, "pending": 1}
        assert 'capsem_proxyd_mcp_pending_tools{server="docs"} 1.0' in metrics
    assert "mcp tool definition changed; the pinned one is served server=docs tool=echo" in daemon.log
    assert "mcp tool held pending" in daemon.log and "tool=newcomer" in daemon.log


async def test_an_operator_accepts_a_change_by_editing_the_pins_and_reloading(tmp_path: Path, daemons: Any) -> None:
    """The held tool and the new description are served once the server's entry is removed from the pins
    file and the proxy reloads: the next listing is pinned whole."""
    with mcp_server(tmp_path) as (server_url, _):
        daemon = await start_hop(daemons, tmp_path, server_url)
        pins_file = tmp_path / "state" / "mcp-pins.json"
        async with mcp_client(daemon.url + "/mcp/docs") as client:
            await client.list_tools()
            await mutate(server_url, "describe")
            await mutate(server_url, "add")
            assert sorted(tool.name for tool in (await client.list_tools()).tools) == ["echo", "leak"]

            pins = json.loads(pins_file.read_text())
            del pins["docs"]
            pins_file.write_text(json.dumps(pins))
            daemon.process.send_signal(signal.SIGHUP)
            await wait_until(lambda: daemon.log.count("reloaded:") >= 1, timeout=20, what="the reload")

            accepted = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert sorted(accepted) == ["echo", "leak", "newcomer"]
            assert "ssh" in (accepted["echo"].description or "")  # the change the operator accepted
            assert not (await client.call_tool("newcomer", {})).is_error
        assert sorted(json.loads(pins_file.read_text())["docs"]) == ["echo", "leak", "newcomer"]
