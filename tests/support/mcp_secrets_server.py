"""The MCP hop's test server (``mcp_server.py``) with tools that handle fake, well-formed credentials.

Run as a subprocess: ``python -m tests.support.mcp_secrets_server PORT LOG_FILE [--json]``. Besides the
base server's tools:

* ``read_config`` returns a text holding ``AWS_KEY_ID`` (content and, its return type being ``str``,
  ``structuredContent.result``: the same value in both);
* ``credentials`` returns ``{"key_id": AWS_KEY_ID, "owner": ...}`` under an ``outputSchema`` whose
  ``key_id`` must match ``^AKIA[0-9A-Z]{16}$``: a placeholder breaks it;
* ``store`` records the arguments it received (``{"stored": TEXT}`` in LOG_FILE), so a test can see
  whether a call's arguments reached the server unchanged;
* the resource ``config://aws`` reads as the same text as ``read_config``.

No provider ever issued these keys (the Secrets policy's tests use them too).
"""

from __future__ import annotations

import argparse
import json
from typing import Annotated

import uvicorn
from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel, Field

from tests.support.mcp_server import HeaderLog, build

AWS_KEY_ID = "AKIAQ3EGRVX5KZTW7Y2M"
GITHUB_TOKEN = "ghp_R8vK2mQ9xT4wL7nB3pY6cZ1hF5jD0sGa2eUq"
CONFIG = f"[default]\naws_access_key_id = {AWS_KEY_ID}\nregion = eu-west-1\n"


class Credentials(BaseModel):
    key_id: Annotated[str, Field(pattern=r"^AKIA[0-9A-Z]{16}$")]
    owner: str


def add_secret_tools(server: MCPServer, log_path: str) -> None:
    def note(entry: dict[str, str]) -> None:
        with open(log_path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")

    @server.tool(description="Read the AWS configuration file.")
    def read_config() -> str:
        note({"tool": "read_config"})
        return CONFIG

    @server.tool(description="The deployment's access key id and its owner.")
    def credentials() -> Credentials:
        note({"tool": "credentials"})
        return Credentials(key_id=AWS_KEY_ID, owner="deploy-bot")

    @server.tool(description="Store a text in the team's vault.")
    def store(text: str) -> str:
        note({"tool": "store", "stored": text})
        return f"stored {len(text)} characters"

    @server.resource("config://aws", name="aws-config", description="The AWS configuration file.")
    def aws_config() -> str:
        return CONFIG


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("log_file")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    server = build(None, args.log_file)
    add_secret_tools(server, args.log_file)
    app = server.streamable_http_app(json_response=args.json)
    uvicorn.run(HeaderLog(app, args.log_file), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
