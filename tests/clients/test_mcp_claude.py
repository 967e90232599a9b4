"""Claude Code with an MCP server behind the proxy's MCP hop, its model calls behind the model hop.

Claude Code's MCP configuration points at ``/mcp/docs`` with a static header (its ``headers``) and no
proof header, so the MCP hop runs under the server's own tenant, whose profile here is stricter than the
model hop's Debug policy: it also refuses ``forbidden-word`` in tool calls (a call the model hop lets
through, so that the MCP hop is the one that refuses it). The fake provider scripts the model: a call of
the echo tool with that word, then a call of the tool whose result carries the marker, then a closing
answer. What must hold: the poisoned tool is never offered to the model, the blocked call comes back to
the model as the tool's failure and the agent finishes its turn, and the refused result never reaches
the provider.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from capsem_proxyd.config import Settings
from capsem_proxyd.exchange import tenant_id_for
from tests.clients.agents import CLAUDE_CODE, Trap, missing_tools, run_agent
from tests.e2e.test_mcp_hop import mcp_server, ran, server_ready
from tests.support.fake_upstream import Reply, ToolCall, run_fake_upstream

pytestmark = pytest.mark.skipif(missing_tools() is not None, reason=f"client suite: {missing_tools()}")

CLOSING = "Finished after the proxy refused a tool."
# Rules named, so that a refusal's message (which names the rule) does not carry the term to the model.
STRICT = """
[on_tool_call]
block = [{ name = "marker", term = "capsem_block" }, { name = "forbidden", term = "forbidden-word" }]

[on_tool_response]
block = [{ name = "marker", term = "capsem_block" }]
"""


async def test_claude_code_sees_no_poisoned_tool_and_finishes_after_a_blocked_call(
    tmp_path: Path, start_proxy: Any, nursery: trio.Nursery
) -> None:
    trap = Trap()
    await nursery.start(trap.serve)
    with mcp_server(tmp_path) as (server_url, headers_file):
        await server_ready(server_url)
        async with run_fake_upstream() as fake:
            fake.script_generations(
                Reply(tool_calls=[ToolCall(name="mcp__docs__echo", arguments={"text": "say forbidden-word"})]),
                Reply(tool_calls=[ToolCall(name="mcp__docs__leak", arguments={})]),
                Reply(text=CLOSING),
            )
            strict = tmp_path / "strict"
            strict.mkdir()
            (strict / "rules.toml").write_text(STRICT)
            profiles = tmp_path / "profiles.toml"
            profiles.write_text(f'[profiles]\n"{tenant_id_for("mcp-server:docs")}" = "{strict}"\n')
            settings = Settings(host="127.0.0.1", port=0, upstream_timeout=30.0, connect_timeout=2.0,
                                graceful_timeout=1.0, state_dir=str(tmp_path / "state"),
                                mcp_servers=(f"docs={server_url}/mcp",), tenant_profiles=str(profiles))
            proxy = await start_proxy(settings, anthropic_upstream=fake.url, openai_upstream=fake.url + "/v1",
                                      gemini_upstream=fake.url)
            config = tmp_path / "mcp.json"
            config.write_text(json.dumps({"mcpServers": {"docs": {
                "type": "http", "url": f"{proxy.url}/mcp/docs", "headers": {"Authorization": "Bearer docs-token"},
            }}}))
            agent = replace(CLAUDE_CODE, argv=lambda prompt, streamed: [
                "-p", prompt, "--model", "claude-sonnet-4-6", "--mcp-config", str(config), "--strict-mcp-config",
                "--allowedTools", "mcp__docs__echo,mcp__docs__leak",
            ])
            run = await run_agent(agent, proxy.url, tmp_path / "claude", "Use the docs tools.", streamed=False,
                                  trap_url=trap.url)
            bodies = [request.body.decode() for request in fake.generation_requests]
    assert run.returncode == 0, run.output[-2000:]
    assert CLOSING in run.output
    assert len(bodies) == 3, bodies
    assert "mcp__docs__echo" in bodies[0] and "mcp__docs__poisoned" not in bodies[0]
    assert "blocked by CAPSEM policy" in bodies[1]  # the refused call, shown to the model as the tool's failure
    assert all("the note says" not in body for body in bodies)  # the refused result never reached the provider
    assert ran(headers_file) == ["leak"]
    assert trap.connections == []
