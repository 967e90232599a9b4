"""The MCP hop's content-surface table (docs/content-surfaces.md), made from the hop's own declarations.

``python -m capsem_proxyd.mcp.surfaces`` prints it; ``tests/mcp/test_surfaces.py``
fails when the copy in docs/ differs, and checks each row with a message that
carries the marker where the row says, through the hop's checks: the hook that
refuses it must be the row's. The listings come from ``checks.LISTINGS`` and
what is not content from ``checks.ENVELOPE``, so a listing filtered, or a key
declared not content, cannot be added without the table showing it.

The model APIs' tables are ``dialects/surfaces.py``'s; this one lives here
because the dialects may not import the hop (the layers go the other way).
"""

from __future__ import annotations

from capsem_proxyd.dialects.content import Surface
from capsem_proxyd.mcp.checks import ENVELOPE, LISTINGS

_ENTRY = {"tools": "each tool whole (name, title, description, inputSchema, outputSchema, annotations, icons, `_meta`)",
          "prompts": "each prompt whole, named `prompts:NAME`",
          "resources": "each resource whole, named `resources:NAME`",
          "resourceTemplates": "each template whole, named `resourceTemplates:NAME`"}


def surfaces() -> tuple[Surface, ...]:
    """Where each message's content goes, in the order ``MessageChecks`` reads it; ``side`` is who sends it."""
    listings = tuple(
        Surface("server", f"`{method}` result: `{key}[]`, {_ENTRY.get(key, 'each entry whole')}; refused: the entry "
                          "removed, the others kept (a name listed twice: removed)", "on_tool_call (definition)")
        for method, key in LISTINGS.items()
    )
    return (
        Surface("client", "`tools/call` request: `params.arguments` (once the tool is in the session's approved "
                          "set); refused: a result with `isError`, never forwarded", "on_tool_call"),
        Surface("client", "every other message (`initialize`, unknown methods, notifications, replies to server "
                          "requests: elicitation form values, `roots/list` results): `params`, or a reply's "
                          "`result`/`error`, whole, as a call of `mcp__SERVER__METHOD`; refused: a JSON-RPC error "
                          "(a request), dropped (a notification or reply)", "on_tool_call"),
        *listings,
        Surface("server", "`initialize` result: `instructions`; refused: a JSON-RPC error", "on_model_call (system)"),
        Surface("server", "`initialize` result: `serverInfo` whole; refused: a JSON-RPC error",
                "on_tool_call (definition)"),
        Surface("server", "every other message (results of `tools/call`, `resources/read`, `prompts/get`, "
                          "any other; JSON-RPC errors; notifications; server requests): `result`, `error` or "
                          "`params` whole; refused: `isError` (a `tools/call` result), a JSON-RPC error (another "
                          "result), dropped (a notification or server request)", "on_tool_response"),
    )


def markdown() -> str:
    lines = ["**MCP (Streamable HTTP, `/mcp/NAME`)**", "", "| from | where | hook |", "|---|---|---|"]
    lines += [f"| {surface.side} | {surface.where} | `{surface.hook}` |" for surface in surfaces()]
    lines += ["", "Not content: the JSON-RPC envelope at the top of a message, and only there: "
              + ", ".join(f"`{key}`" for key in sorted(ENVELOPE))
              + ". Every other string and key is content, wherever it appears (`type`, `mimeType`, cursors too)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
