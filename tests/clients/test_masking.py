"""Claude Code, Codex and Gemini CLI through a masking proxy (issue 23): a tool prints credentials, the session goes on.

The model (the fake provider) has the agent read a file of credentials with
its own read or shell tool; the proxy masks them (its default policies: Debug and Secrets) in
the tool result the agent sends back; the model then has it read another
file, and answers: a tool result that carries credentials (an AWS key id and secret, a GitHub token, a private key block), then two more
turns, each resending the conversation. The run succeeds, every model call
reached the provider, and no request the provider received holds any of the
values, in any field, raw or JSON-escaped; each value's placeholder is the
same in every turn. One run per agent, each with its own timeout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from capsem_proxyd.config import Settings
from tests.clients.agents import AGENTS, RUN_TIMEOUT, Agent, Trap, missing_tools, run_agent
from tests.support.fake_upstream import Reply, run_fake_upstream
from tests.support.proxy import ALL_TEST_KEYS

pytestmark = pytest.mark.skipif(missing_tools() is not None, reason=f"client suite: {missing_tools()}")

# Well-formed but made up (not AWS's documented examples, which the Secrets policy allow-lists).
KEY_ID = "AKIAZ3MQ7RT2XK9PLW4N"
SECRET = "Xq7/Lm2+Zr9Tk4Wp8Yb3Nc6Vd1Hf5Gj0Ks2Qa7Re"
GITHUB = "ghp_" + "R8vK2mQ9xT4wL7nB3pY6cZ1hF5jD0sGa2eUq"
PEM_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0"
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"
VALUES = (KEY_ID, SECRET, GITHUB, PEM_BODY)
CREDENTIALS = (f"AWS_ACCESS_KEY_ID={KEY_ID}\nAWS_SECRET_ACCESS_KEY={SECRET}\nGITHUB_TOKEN={GITHUB}\n"
               f"{PEM}\nREGION=eu-west-1\n")
NOTES = "Deploy on Tuesday.\n"
ANSWER = "Both files read; the deployment is configured."
PLACEHOLDER = re.compile(r"CAPSEM-MASKED-[A-Z0-9]+-[A-Z2-7]{20}")
# Three client turns, each a model call and (for the first two) a tool run.
TIMEOUT = 3 * RUN_TIMEOUT


def escaped_forms(value: str) -> set[str]:
    """The spellings a JSON body may give ``value``."""
    return {value, value.replace("/", "\\/"), json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=True)[1:-1]}


@pytest.mark.parametrize("agent", AGENTS.values(), ids=AGENTS.keys())
async def test_credentials_a_tool_printed_are_masked_by_default_and_the_session_goes_on(
    agent: Agent, tmp_path: Path, start_proxy: Callable[..., Any], nursery: trio.Nursery,
) -> None:
    trap = Trap()
    await nursery.start(trap.serve)
    root = tmp_path / "run"
    work = root / "work"
    work.mkdir(parents=True)
    (work / "deploy.env").write_text(CREDENTIALS)
    (work / "notes.txt").write_text(NOTES)
    with trio.fail_after(TIMEOUT):
        async with run_fake_upstream() as fake:
            fake.script_generations(
                Reply(tool_calls=[agent.read_tool(work / "deploy.env")]),
                Reply(tool_calls=[agent.read_tool(work / "notes.txt")]),
                Reply(text=ANSWER),
            )
            settings = Settings(host="127.0.0.1", port=0, upstream_timeout=30.0, connect_timeout=2.0,
                                graceful_timeout=1.0, state_dir=str(tmp_path / "state"),
                                openai_upstream=fake.url + "/v1", gemini_upstream=fake.url, anthropic_upstream=fake.url)
            proxy = await start_proxy(settings)
            run = await run_agent(agent, proxy.url, root, "Read deploy.env, then notes.txt, and tell me when done.",
                                  streamed=False, trap_url=trap.url)
            generations = [request.body.decode() for request in fake.generation_requests]
            seen = [f"{r.method} {r.path} -> {r.status}" for r in fake.requests]
            everything = [request.body.decode(errors="replace") for request in fake.requests]

    context = f"exit {run.returncode}, fake saw {seen}\noutput tail:\n{run.output.strip()[-1500:]}"
    assert run.returncode == 0, context
    assert ANSWER in run.output, context
    assert len(generations) == 3, context  # the session went on: two turns after the credentials
    for body in everything:
        for value in VALUES:
            assert not [form for form in escaped_forms(value) if form in body], (
                f"a credential reached the provider ({value[:4]}...)")
    # the credentials' tool result reached the model masked, the same way in both later turns
    masked = [set(PLACEHOLDER.findall(body)) for body in generations[1:]]
    assert len(masked[0]) == 4 and masked[0] == masked[1], masked
    assert "REGION=eu-west-1" in generations[1] and "Deploy on Tuesday." in generations[2]
    assert not [key for key in ALL_TEST_KEYS if key in run.output]
    assert trap.connections == [], f"{agent.name} tried to reach another host: {trap.connections}"
