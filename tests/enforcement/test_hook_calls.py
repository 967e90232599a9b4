"""Views as CAPSEM hook calls (``enforcement/hook_calls.py``): what each policy is asked, built once."""

from __future__ import annotations

from typing import Any

from capsem.models import DEFAULT_SAFE_DECISION, Decision

from capsem_proxyd.enforcement import hook_calls
from capsem_proxyd.views import MediaPart, RequestView, ToolCall, ToolDefinition, ToolResult


class Asked:
    """Records the hook it is asked and the arguments."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, hook: str) -> Any:
        async def answer(*args: Any) -> Decision:
            self.asked.append((hook, args))
            return DEFAULT_SAFE_DECISION

        return answer


async def test_each_view_becomes_its_hook_with_capsem_arguments() -> None:
    policy = Asked()
    calls = [
        hook_calls.tool_response("r", "agent", ToolResult(name="read", content="file body")),
        hook_calls.model_call("r", "agent", RequestView(model="m", system="sys", prompt="hi"), []),
        hook_calls.tool_definition("r", "agent", ToolDefinition(name="grep", description="finds", content="schema text")),
        hook_calls.tool_call("r", "agent", ToolCall(name="grep", arguments={"q": "x"})),
        hook_calls.model_response("r", "agent", "text", "thoughts", [MediaPart(data=b"\x89PNG", mime_type="image/png")]),
    ]
    for call in calls:
        assert await call.invoke(policy) is DEFAULT_SAFE_DECISION  # type: ignore[arg-type]
    hooks = [hook for hook, _ in policy.asked]
    assert hooks == ["on_tool_response", "on_model_call", "on_tool_call", "on_tool_call", "on_model_response"]
    (_, (_, _, tool, response)), (_, model_call), (_, (_, _, definition, arguments)) = policy.asked[:3]
    assert tool.name == "read" and response == {"content": "file body"}
    assert model_call == ("r", "agent", "m", "sys", "hi", [])
    assert definition.name == "grep" and definition.description == "finds" and arguments == {"definition": "schema text"}
    media = policy.asked[4][1][4]
    assert [(item.mime_type, item.content) for item in media] == [("image/png", b"\x89PNG")]
    assert [call.what for call in calls] == [
        "Tool result for 'read'", "Prompt", "Tool definition 'grep'", "Tool call 'grep'", "Model response"]


def test_only_single_pieces_have_an_identity_and_it_names_all_their_content() -> None:
    result = hook_calls.tool_response("r", None, ToolResult(name="read", content="body"))
    assert result.identity is not None and result.identity() == "read\0body"
    first = hook_calls.tool_definition("r", None, ToolDefinition(name="t", parameters={"b": 1, "a": 2}))
    second = hook_calls.tool_definition("r", None, ToolDefinition(name="t", parameters={"a": 2, "b": 1}))
    assert first.identity is not None and second.identity is not None and first.identity() == second.identity()
    changed = hook_calls.tool_definition("r", None, ToolDefinition(name="t", parameters={"a": 3, "b": 1}))
    assert changed.identity is not None and changed.identity() != first.identity()
    assert hook_calls.model_call("r", None, RequestView(model="m", prompt="p"), []).identity is None
    assert hook_calls.tool_call("r", None, ToolCall(name="t", arguments={})).identity is None


def test_an_odd_schema_makes_a_tool_without_one_rather_than_an_error() -> None:
    tool = hook_calls.capsem_tool("", "", {"type": 12, "properties": "nonsense"})
    assert tool.name == "unknown" and tool.description == "No description provided"
    assert hook_calls.capsem_tool("t", "d", {"type": "object", "properties": {"q": {"type": "string"}}}).name == "t"


async def test_asking_puts_the_same_arguments_to_any_policy() -> None:
    first, second = Asked(), Asked()
    invoke = hook_calls.asking("on_model_call", ("r", None, "m", "", "piece", []))
    await invoke(first)  # type: ignore[arg-type]
    await invoke(second)  # type: ignore[arg-type]
    assert first.asked == second.asked == [("on_model_call", ("r", None, "m", "", "piece", []))]


def test_an_mcp_tool_carries_its_server_as_a_tag_on_both_hops() -> None:
    """The MCP hop names the server; the model hop's Claude Code name ``mcp__SERVER__tool`` says it too."""
    from capsem_proxyd.enforcement.hook_calls import tool_call, tool_definition, tool_response
    from capsem_proxyd.views import ToolCall, ToolDefinition, ToolResult, mcp_server, tagged_server

    assert mcp_server("mcp__docs__echo") == "docs"
    assert mcp_server("mcp__docs__a__b") == "docs"
    assert mcp_server("echo") == mcp_server("mcp__") == mcp_server("mcp____x") == ""
    assert mcp_server("anything", "tracker") == "tracker"
    for call in (tool_call("r", None, ToolCall("mcp__docs__echo")),
                 tool_definition("r", None, ToolDefinition("mcp__docs__echo")),
                 tool_response("r", None, ToolResult("mcp__docs__echo", "ok"))):
        assert tagged_server(call.args[2].tags) == "docs"
    assert tool_call("r", None, ToolCall("shell")).args[2].tags is None
    # A result of the same tool name on another server is another piece for the verdict cache.
    first = tool_response("r", None, ToolResult("t", "ok", server="a")).identity
    second = tool_response("r", None, ToolResult("t", "ok", server="b")).identity
    assert first is not None and second is not None and first() != second()
