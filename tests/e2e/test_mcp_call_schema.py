"""A call checked against the approved input schema, and a tool first listed later (``--mcp-new-tools``).

The official SDK's client sends whatever arguments it is given (it checks a result's shape, not a
call's); the SDK's server is the upstream. A call whose arguments do not validate against the pinned
``inputSchema`` is refused at the hop and never reaches the server; a valid one goes on; a server that
later changes only a description keeps having its calls checked against the pinned schema.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_mcp_hop import mcp_client, mcp_server, received, start_hop, text_of
from tests.e2e.test_mcp_pins import mutate

# An argument value that must never come back in a refusal, a log line or an audit record.
VALUE = 90417263


def tool_calls(headers_file: Path) -> int:
    """The POST requests the server received: a call refused at the hop adds none."""
    return sum(1 for line in received(headers_file) if line["method"] == "POST")


async def test_arguments_that_do_not_validate_are_refused_before_the_server(tmp_path: Path, daemons: Any) -> None:
    audit = tmp_path / "audit.log"
    with mcp_server(tmp_path) as (server_url, headers_file):
        daemon = await start_hop(daemons, tmp_path, server_url, "--audit-log", str(audit))
        async with mcp_client(daemon.url + "/mcp/docs") as client:
            await client.list_tools()
            before = tool_calls(headers_file)
            wrong_type = await client.call_tool("echo", {"text": VALUE})
            missing = await client.call_tool("echo", {})
            assert tool_calls(headers_file) == before  # neither reached the server
            assert wrong_type.is_error and missing.is_error
            assert "do not validate against its approved input schema" in text_of(wrong_type)
            assert "'type'" in text_of(wrong_type) and "$.properties.text" in text_of(wrong_type)
            assert "'required'" in text_of(missing) and "Do not retry" in text_of(missing)
            assert str(VALUE) not in text_of(wrong_type)

            valid = await client.call_tool("echo", {"text": "hello"})
            assert not valid.is_error and "echo: hello" in text_of(valid)
            assert tool_calls(headers_file) == before + 1

            # A new description over the same schema: the pinned definition is served, and still checks calls.
            await mutate(server_url, "describe")
            await client.list_tools()
            before = tool_calls(headers_file)
            again = await client.call_tool("echo", {"text": VALUE})
            assert again.is_error and "approved input schema" in text_of(again)
            assert tool_calls(headers_file) == before
            assert not (await client.call_tool("echo", {"text": "still"})).is_error
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(daemon.url + "/metrics")).text
    assert "mcp call refused: arguments do not validate against the approved input schema" in daemon.log
    assert "decision=BLOCK refused=3" in daemon.log  # counted per session and tool, as every refusal
    assert str(VALUE) not in daemon.log and str(VALUE) not in audit.read_text()
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert sum(1 for record in records if record.get("type") == "mcp_message" and record.get("tool") == "echo"
               and record.get("decision") == "BLOCK") == 3
    assert 'decision="BLOCK"' in metrics


@pytest.mark.parametrize("mode", ["hold", "serve"])
async def test_a_tool_listed_later_is_held_or_served_as_configured(tmp_path: Path, daemons: Any, mode: str) -> None:
    audit = tmp_path / "audit.log"
    with mcp_server(tmp_path) as (server_url, _):
        daemon = await start_hop(daemons, tmp_path, server_url, "--mcp-new-tools", mode, "--audit-log", str(audit))
        async with mcp_client(daemon.url + "/mcp/docs") as client:
            assert sorted(tool.name for tool in (await client.list_tools()).tools) == ["echo", "leak"]
            await mutate(server_url, "add")
            listed = sorted(tool.name for tool in (await client.list_tools()).tools)
            called = await client.call_tool("newcomer", {})
        async with httpx.AsyncClient() as http:
            health = (await http.get(daemon.url + "/health")).json()
    pins = json.loads((tmp_path / "state" / "mcp-pins.json").read_text())
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    automatic = [record for record in records if record.get("type") == "mcp_pin_accepted"]
    if mode == "hold":
        assert listed == ["echo", "leak"]
        assert called.is_error and "not among the tools" in text_of(called)
        assert health["mcp"]["servers"]["docs"] == {"pinned": 2, "pending": 1}
        assert sorted(pins["docs"]) == ["echo", "leak"] and not automatic
        assert "mcp tool held pending" in daemon.log and "pinned automatically" not in daemon.log
        return
    assert listed == ["echo", "leak", "newcomer"]
    assert not called.is_error and "new" in text_of(called)
    assert health["mcp"]["servers"]["docs"] == {"pinned": 3, "pending": 0}
    assert sorted(pins["docs"]) == ["echo", "leak", "newcomer"]
    assert "mcp tool pinned automatically (--mcp-new-tools serve)" in daemon.log and "tool=newcomer" in daemon.log
    assert [(record["server"], record["tool"], record["accepted_by"]) for record in automatic] == [
        ("docs", "newcomer", {"automatic": "--mcp-new-tools serve"})]
    assert automatic[0]["definition_hash"] == pins["docs"]["newcomer"]["hash"]
