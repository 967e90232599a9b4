"""Redaction at the MCP hop: the official ``mcp`` SDK as client and server, through the real daemon, with the
Secrets policy as it runs by default (no ``secrets.toml``).

A credential in a server's result reaches the client as its placeholder, in ``content`` and
``structuredContent`` alike (one placeholder for one value); a result whose masked ``structuredContent`` no
longer matches the tool's ``outputSchema`` becomes the tool's failure carrying the masked text; a call whose
arguments a policy would mask is refused, unless the operator lists the tool, whose arguments then reach the
server unchanged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from capsem_proxyd.redaction.placeholder import PLACEHOLDER
from tests.e2e.test_mcp_hop import mcp_client, server_ready, text_of
from tests.support.daemon import REPO, free_port
from tests.support.mcp_secrets_server import AWS_KEY_ID, GITHUB_TOKEN


@contextmanager
def secrets_server(tmp_path: Path, *, json_response: bool = False) -> Iterator[tuple[str, Path]]:
    """``tests/support/mcp_secrets_server.py`` on a free port: (its base URL, its log file)."""
    port = free_port()
    log_file = tmp_path / f"mcp-secrets-{port}.jsonl"
    log_file.touch()
    args = [sys.executable, "-m", "tests.support.mcp_secrets_server", str(port), str(log_file)]
    if json_response:
        args.append("--json")
    output = (tmp_path / f"mcp-secrets-{port}.log").open("w")
    process = subprocess.Popen(args, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}", log_file
    finally:
        process.kill()
        process.wait(5)
        output.close()


async def start(daemons: Any, tmp_path: Path, server_url: str, *extra: str) -> Any:
    daemon = daemons("--mcp-server", f"vault={server_url}/mcp", "--state-dir", str(tmp_path / "state"), *extra)
    await daemon.wait_ready()
    await server_ready(server_url)
    return daemon


def stored(log_file: Path) -> list[str]:
    """The texts the server's ``store`` tool received."""
    lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    return [line["stored"] for line in lines if "stored" in line]


@pytest.mark.parametrize("json_response", [False, True], ids=["sse", "json"])
async def test_a_credential_in_a_result_reaches_the_client_as_its_placeholder(
    tmp_path: Path, daemons: Any, json_response: bool
) -> None:
    audit = tmp_path / "audit.log"
    with secrets_server(tmp_path, json_response=json_response) as (server_url, _):
        daemon = await start(daemons, tmp_path, server_url, "--audit-log", str(audit))
        async with mcp_client(daemon.url + "/mcp/vault") as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert {"read_config", "credentials", "store"} <= names, names

            result = await client.call_tool("read_config", {})
            assert not result.is_error, text_of(result)
            text, structured = text_of(result), result.structured_content
            assert AWS_KEY_ID not in text and AWS_KEY_ID not in json.dumps(structured)
            placeholders = set(PLACEHOLDER.findall(text))
            assert len(placeholders) == 1, text
            # content and structuredContent masked together: the same placeholder in both
            assert structured is not None and set(PLACEHOLDER.findall(structured["result"])) == placeholders
            assert "region = eu-west-1" in text  # every other character as the server sent it

            resource = await client.read_resource("config://aws")
            read = "\n".join(getattr(part, "text", "") for part in resource.contents)
            assert AWS_KEY_ID not in read and set(PLACEHOLDER.findall(read)) == placeholders

            again = await client.call_tool("read_config", {})  # the session goes on, the same placeholder
            assert set(PLACEHOLDER.findall(text_of(again))) == placeholders
    assert AWS_KEY_ID not in daemon.log and AWS_KEY_ID not in audit.read_text()
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    masked = [record for record in records if record.get("type") == "redaction"]
    assert masked and {record["placeholder"] for record in masked} == placeholders
    assert {record["policy"] for record in masked} == {"Secrets"}


async def test_a_masked_result_that_breaks_the_output_schema_is_the_tools_failure(tmp_path: Path, daemons: Any) -> None:
    """``credentials`` promises ``key_id`` matching ``^AKIA...``: its masked result would fail the client's own
    check of the schema, so it comes as ``isError`` with the masked text (the model can read it)."""
    with secrets_server(tmp_path) as (server_url, _):
        daemon = await start(daemons, tmp_path, server_url)
        async with mcp_client(daemon.url + "/mcp/vault") as client:
            await client.list_tools()
            result = await client.call_tool("credentials", {})
            text = text_of(result)
            assert result.is_error, text
            assert result.structured_content is None
            assert AWS_KEY_ID not in text and PLACEHOLDER.search(text) and "deploy-bot" in text
            assert "output schema" in text
            assert not (await client.call_tool("read_config", {})).is_error  # the session goes on
    assert AWS_KEY_ID not in daemon.log


async def test_arguments_to_mask_refuse_the_call_unless_the_tool_is_listed(tmp_path: Path, daemons: Any) -> None:
    """``store`` with a token in its text: refused (a placeholder would be stored in its place, silently);
    with ``--mcp-redact-passthrough vault/store`` the server gets the text as the client sent it."""
    with secrets_server(tmp_path) as (server_url, log_file):
        daemon = await start(daemons, tmp_path, server_url)
        async with mcp_client(daemon.url + "/mcp/vault") as client:
            await client.list_tools()
            refused = await client.call_tool("store", {"text": f"token {GITHUB_TOKEN}"})
            assert refused.is_error and "mask" in text_of(refused) and GITHUB_TOKEN not in text_of(refused)
            assert not (await client.call_tool("store", {"text": "no secret here"})).is_error
        assert stored(log_file) == ["no secret here"]
        await daemon.stop()

        daemon = await start(daemons, tmp_path, server_url, "--mcp-redact-passthrough", "vault/store")
        async with mcp_client(daemon.url + "/mcp/vault") as client:
            await client.list_tools()
            passed = await client.call_tool("store", {"text": f"token {GITHUB_TOKEN}"})
            assert not passed.is_error, text_of(passed)
            # another tool is not listed: its arguments still refuse
            other = await client.call_tool("echo", {"text": f"token {GITHUB_TOKEN}"})
            assert other.is_error
        assert stored(log_file) == ["no secret here", f"token {GITHUB_TOKEN}"]
        assert "mcp-redact-passthrough" in daemon.log and GITHUB_TOKEN not in daemon.log
