"""The MCP hop as the operator sees and steers it, through the real daemon with the official ``mcp`` SDK:
the server as a policy field of its own, the audit record of each message, per-server timeouts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from tests.e2e.test_mcp_hop import leaves, mcp_client, mcp_server, server_ready
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
