"""The MCP hop: Streamable HTTP traffic to the operator's MCP servers, checked by the same policies.

``servers.py`` reads ``--mcp-server``/``--mcp-header``; ``jsonrpc.py`` the
message shapes (no I/O); ``sse.py`` splits a server's event stream into
events without changing their bytes; ``sessions.py`` binds a session id to the
client that opened it; ``checks.py`` puts each message to the policy engine;
``hop.py`` is the HTTP handler the data plane hands ``/mcp/NAME`` requests.
"""
