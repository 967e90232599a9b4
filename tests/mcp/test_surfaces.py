"""The MCP table of docs/content-surfaces.md is the hop's declarations, and each row is true.

The table is generated (``capsem_proxyd.mcp.surfaces``); the docs must hold exactly that text. Each row
has an example here: a message with the marker where the row says, put through the hop's checks with a
real engine (the Debug policy); the hook that refuses it must be the row's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from capsem.models import Decision

from capsem_proxyd.exchange import Exchange
from capsem_proxyd.mcp import jsonrpc
from capsem_proxyd.mcp.checks import MessageChecks
from capsem_proxyd.mcp.sessions import ApprovedTools
from capsem_proxyd.mcp.surfaces import markdown, surfaces
from capsem_proxyd.observe.recorders import Recorder
from tests.support.engines import engine

DOCS = Path(__file__).resolve().parents[2] / "docs" / "content-surfaces.md"
M = "capsem_block"
V = {"protocolVersion": "2025-11-25", "capabilities": {}}


def request(method: str, params: dict[str, Any], id_: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params}


def result(value: dict[str, Any], id_: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "result": value}


# Row number -> (the client's request it answers or None, the message carrying the marker at the row's place).
EXAMPLES: dict[int, tuple[dict[str, Any] | None, dict[str, Any]]] = {
    0: (None, request("tools/call", {"name": "echo", "arguments": {"text": M}})),
    1: (None, request("vendor/unknown", {"q": M})),
    2: (request("tools/list", {}), result({"tools": [{"name": "t", "inputSchema": {}, "annotations": {"title": M}}]})),
    3: (request("prompts/list", {}), result({"prompts": [{"name": "p", "description": M}]})),
    4: (request("resources/list", {}), result({"resources": [{"name": "r", "uri": f"file:///{M}"}]})),
    5: (request("resources/templates/list", {}),
        result({"resourceTemplates": [{"name": "r", "uriTemplate": "file:///{x}", "title": M}]})),
    6: (request("initialize", V), result({**V, "serverInfo": {"name": "s", "version": "1"}, "instructions": M})),
    7: (request("initialize", V), result({**V, "serverInfo": {"name": "s", "version": M}})),
    8: (request("resources/read", {"uri": "file:///a"}), result({"contents": [{"uri": "file:///a", "text": M}]})),
}


class Refusals(Recorder):
    """The hooks whose refusals took effect, in order."""

    def __init__(self) -> None:
        self.hooks: list[str] = []

    def refused(self, exchange: Exchange, hook: str, decision: Decision) -> None:
        self.hooks.append(hook)


def test_the_docs_show_exactly_the_generated_table() -> None:
    shown = re.search(r"<!-- mcp-surfaces:start -->\n(.*?)<!-- mcp-surfaces:end -->", DOCS.read_text(), re.S)
    assert shown is not None, "docs/content-surfaces.md lacks the mcp-surfaces markers"
    assert shown.group(1) == markdown(), "the MCP table drifted: python -m capsem_proxyd.mcp.surfaces"


def test_every_row_has_an_example() -> None:
    assert sorted(EXAMPLES) == list(range(len(surfaces())))


@pytest.mark.parametrize("row", range(len(surfaces())))
async def test_each_row_reaches_its_hook(row: int) -> None:
    surface = surfaces()[row]
    asked_body, body = EXAMPLES[row]
    refusals = Refusals()
    approved = ApprovedTools()
    approved.approve("s", ["echo"])
    checks = MessageChecks(engine(recorder=refusals), Exchange.begin("/mcp/docs"), "docs", "s", approved)
    message = jsonrpc.classify(body)
    if surface.side == "client":
        checked = await checks.client_message(message)
    else:
        asked = jsonrpc.classify(asked_body) if asked_body is not None else None
        checked = await checks.server_message(message, asked)
    assert checked.decision in ("BLOCK", "FILTERED"), checked
    assert refusals.hooks == [surface.hook.split()[0]], (surface.where, refusals.hooks)
    assert checked.forward is not message.body  # refused: not forwarded as it came
