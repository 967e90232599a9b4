"""Claude Code with an MCP server whose tool returns a credential: the MCP hop masks it, so the agent and the
provider read the placeholder, and the rest of the result arrives (masked, not refused).

The fake provider scripts the model: a call of ``read_config`` (its result holds a fake, well-formed AWS key
id), then a closing answer. The Secrets policy runs as by default, on both hops.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from capsem_proxyd.config import Settings
from capsem_proxyd.redaction.placeholder import PLACEHOLDER
from tests.clients.agents import CLAUDE_CODE, Trap, missing_tools, run_agent
from tests.e2e.test_mcp_hop import server_ready
from tests.e2e.test_mcp_redaction import secrets_server
from tests.support.fake_upstream import Reply, ToolCall, run_fake_upstream
from tests.support.mcp_secrets_server import AWS_KEY_ID

pytestmark = pytest.mark.skipif(missing_tools() is not None, reason=f"client suite: {missing_tools()}")

CLOSING = "Read the configuration."


async def test_claude_code_gets_a_masked_result_and_the_provider_never_the_credential(
    tmp_path: Path, start_proxy: Any, nursery: trio.Nursery
) -> None:
    trap = Trap()
    await nursery.start(trap.serve)
    with secrets_server(tmp_path) as (server_url, _):
        await server_ready(server_url)
        async with run_fake_upstream() as fake:
            fake.script_generations(
                Reply(tool_calls=[ToolCall(name="mcp__vault__read_config", arguments={})]),
                Reply(text=CLOSING),
            )
            settings = Settings(host="127.0.0.1", port=0, upstream_timeout=30.0, connect_timeout=2.0,
                                graceful_timeout=1.0, state_dir=str(tmp_path / "state"),
                                mcp_servers=(f"vault={server_url}/mcp",))
            proxy = await start_proxy(settings, anthropic_upstream=fake.url, openai_upstream=fake.url + "/v1",
                                      gemini_upstream=fake.url)
            config = tmp_path / "mcp.json"
            config.write_text(json.dumps({"mcpServers": {"vault": {
                "type": "http", "url": f"{proxy.url}/mcp/vault", "headers": {"Authorization": "Bearer vault-token"},
            }}}))
            agent = replace(CLAUDE_CODE, argv=lambda prompt, streamed: [
                "-p", prompt, "--model", "claude-sonnet-4-6", "--mcp-config", str(config), "--strict-mcp-config",
                "--allowedTools", "mcp__vault__read_config",
            ])
            run = await run_agent(agent, proxy.url, tmp_path / "claude", "Read the AWS config.", streamed=False,
                                  trap_url=trap.url)
            bodies = [request.body.decode() for request in fake.generation_requests]
    assert run.returncode == 0, run.output[-2000:]
    assert CLOSING in run.output
    assert len(bodies) == 2, bodies
    assert all(AWS_KEY_ID not in body for body in bodies)
    # the result arrived masked, not refused: its other lines and the placeholder reached the model
    assert "eu-west-1" in bodies[1] and PLACEHOLDER.search(bodies[1]), bodies[1][-2000:]
    assert AWS_KEY_ID not in run.output
    assert trap.connections == []
