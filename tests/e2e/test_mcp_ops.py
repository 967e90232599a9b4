"""The MCP hop as the operator sees and steers it, through the real daemon with the official ``mcp`` SDK:
the server as a policy field of its own, the audit record of each message, per-server timeouts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from mcp.shared.exceptions import MCPError

from capsem_proxyd.observe.audit_verify import verify
from tests.e2e.test_mcp_hop import CREDENTIAL, PROTOCOL, leaves, mcp_client, mcp_server, server_ready
from tests.e2e.test_mcp_hop_faults import RawUpstream
from tests.support.mcp_server import MARKER
from tests.support.proxy import OPENAI_AUTH

SERVER_RULES = """
[mcp_servers]
deny = ["scratch*"]
"""


async def test_a_rules_policy_refuses_a_server_by_name_on_both_hops(tmp_path: Path, daemons: Any) -> None:
    """``[mcp_servers] deny`` reads the server as a field: the same SDK server, served as ``docs`` and as
    ``scratch``, is refused only under the denied name, from its first message; and on the model hop, the
    tool Claude Code names ``mcp__scratch__echo`` is refused by the same rule."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "rules.toml").write_text(SERVER_RULES)
    with mcp_server(tmp_path) as (server_url, headers_file):
        daemon = daemons("--mcp-server", f"docs={server_url}/mcp", "--mcp-server", f"scratch={server_url}/mcp",
                         "--policy-dir", str(policies), "--state-dir", str(tmp_path / "state"),
                         "--openai-upstream", "http://127.0.0.1:9/v1")
        await daemon.wait_ready()
        await server_ready(server_url)
        async with mcp_client(daemon.url + "/mcp/docs") as client:
            assert "echo" in [tool.name for tool in (await client.list_tools()).tools]
        with pytest.raises(BaseException) as raised:  # the SDK's task groups wrap it
            async with mcp_client(daemon.url + "/mcp/scratch"):
                pass
        errors = [error for error in leaves(raised.value) if isinstance(error, MCPError)]
        assert errors and "mcp_servers.deny" in str(errors[-1]), raised.value

        def chat(tool: str) -> dict[str, Any]:
            return {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                    "tools": [{"type": "function", "function": {"name": tool, "parameters": {"type": "object"}}}]}

        async with httpx.AsyncClient(base_url=daemon.url, timeout=10) as http:
            refused = await http.post("/v1/chat/completions", json=chat("mcp__scratch__echo"), headers=OPENAI_AUTH)
            assert refused.status_code == 400 and "mcp_servers.deny" in refused.text, refused.text
            other = await http.post("/v1/chat/completions", json=chat("mcp__docs__echo"), headers=OPENAI_AUTH)
            assert other.status_code != 400, other.text  # past the policies (the upstream is not there: 502)


async def test_each_message_has_an_audit_record_in_the_model_hops_chain(tmp_path: Path, daemons: Any) -> None:
    """One ``mcp_message`` record per JSON-RPC message (method, server, tool, decision, the session hashed),
    in the same verified chain as the policies' decisions; never a header value or the session id itself."""
    audit = tmp_path / "audit.jsonl"
    with mcp_server(tmp_path) as (server_url, _):
        daemon = daemons("--mcp-server", f"docs={server_url}/mcp", "--state-dir", str(tmp_path / "state"),
                         "--audit-log", str(audit))
        await daemon.wait_ready()
        await server_ready(server_url)
        async with mcp_client(daemon.url + "/mcp/docs") as client:
            await client.list_tools()
            assert (await client.call_tool("echo", {"text": f"a {MARKER}"})).is_error
        await daemon.wait_for_log("method=tools/call tool=echo decision=BLOCK")
    records = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
    messages = [record for record in records if record.get("type") == "mcp_message"]
    seen = {(record["direction"], record["method"], record["tool"], record["decision"]) for record in messages}
    assert ("server", "tools/list response", "", "FILTERED") in seen, seen
    assert ("client", "tools/call", "echo", "BLOCK") in seen, seen
    assert ("client", "initialize", "", "ALLOW") in seen, seen
    assert all(record["server"] == "docs" and record["provider"] == "mcp" for record in messages)
    sessions = {record["session"] for record in messages} - {"-"}
    assert sessions and all(len(session) == 12 for session in sessions)  # hashed, never the id
    assert any(record.get("type") == "decision" for record in records)  # one chain for both
    text = audit.read_text()
    assert CREDENTIAL["Authorization"].split()[1] not in text and "authorization" not in text.lower()
    assert verify(audit).ok


class SilentUpstream(RawUpstream):
    """``/silent`` reads the request and never answers (``closed`` set when the proxy hangs up); every other
    path is ``RawUpstream``'s (``/slow``: an event stream opened with a comment, then nothing)."""

    async def serve(self, stream: trio.SocketStream) -> None:
        head = await self.read_head(stream)
        if head is None:
            return
        if head.split(b" ")[1] != b"/silent":
            raise AssertionError("only /silent here")
        while await stream.receive_some(65536):
            pass
        self.closed.set()


@pytest.mark.parametrize("path", ["silent", "slow"], ids=["no-reply", "stream-open"])
async def test_a_server_slower_than_its_timeout_gets_the_client_an_error_with_the_request_id(
    tmp_path: Path, daemons: Any, path: str
) -> None:
    """``--mcp-timeout NAME=SECONDS``: a server that never answers the request (no reply at all, or an event
    stream that never carries the answer) is cut off, and the client gets a JSON-RPC error carrying the
    request's id, and the upstream request is closed."""
    async with trio.open_nursery() as nursery:
        raw = SilentUpstream() if path == "silent" else RawUpstream()
        await nursery.start(trio.serve_tcp, raw.serve, raw.port)
        daemon = daemons("--mcp-server", f"slow={raw.url}/{path}", "--mcp-timeout", "slow=0.5",
                         "--state-dir", str(tmp_path / "state"))
        await daemon.wait_ready()
        ping = {"jsonrpc": "2.0", "id": 41, "method": "ping"}
        async with httpx.AsyncClient(timeout=30) as client:
            reply = await client.post(daemon.url + "/mcp/slow", json=ping, headers={**PROTOCOL, **CREDENTIAL})
        assert reply.status_code == 200, reply.text
        data = [line[5:] for line in reply.text.splitlines() if line.startswith("data:")]
        error = json.loads(data[-1]) if data else reply.json()
        assert error["id"] == 41 and "did not answer within 0.5 seconds" in error["error"]["message"], error
        with trio.fail_after(10):
            await raw.closed.wait()  # the upstream request was closed with it
        await daemon.wait_for_log("mcp server timed out server=slow method=ping")
        assert "decision=TIMEOUT" in daemon.log
        nursery.cancel_scope.cancel()
