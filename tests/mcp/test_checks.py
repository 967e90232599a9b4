"""The checks of one message, through a real engine with the Debug policy (no server needed)."""

from __future__ import annotations

from capsem_proxyd.exchange import Exchange
from capsem_proxyd.mcp import jsonrpc
from capsem_proxyd.mcp.checks import MessageChecks
from capsem_proxyd.mcp.sessions import ApprovedTools, SessionIds
from tests.support.engines import engine as debug_engine


def listing(*tools: dict) -> tuple[jsonrpc.Message, jsonrpc.Message]:
    asked = jsonrpc.classify({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    answer = jsonrpc.classify({"jsonrpc": "2.0", "id": 2, "result": {"tools": list(tools)}})
    return answer, asked


async def test_a_name_listed_twice_is_removed_and_the_others_kept() -> None:
    approved = ApprovedTools()
    checks = MessageChecks(debug_engine(), Exchange.begin("/mcp/x"), "x", "s", approved)
    answer, asked = listing({"name": "a", "inputSchema": {}}, {"name": "b", "description": "one"},
                           {"name": "b", "description": "two"})
    checked = await checks.server_message(answer, asked)
    assert checked.decision == "FILTERED"
    assert [tool["name"] for tool in checked.forward["result"]["tools"]] == ["a"]
    assert approved.allows("s", "a") and not approved.allows("s", "b")


async def test_the_marker_in_a_schema_property_removes_the_tool() -> None:
    checks = MessageChecks(debug_engine(), Exchange.begin("/mcp/x"), "x", "s", ApprovedTools())
    schema = {"type": "object", "properties": {"path": {"type": "string", "description": "capsem_block it"}}}
    answer, asked = listing({"name": "a", "inputSchema": schema}, {"name": "b"})
    checked = await checks.server_message(answer, asked)
    assert [tool["name"] for tool in checked.forward["result"]["tools"]] == ["b"]


async def test_a_refused_notification_is_dropped() -> None:
    checks = MessageChecks(debug_engine(), Exchange.begin("/mcp/x"), "x", "s", ApprovedTools())
    note = jsonrpc.classify({"jsonrpc": "2.0", "method": "notifications/message",
                             "params": {"level": "info", "data": "capsem_block"}})
    checked = await checks.server_message(note, None)
    assert checked.decision == "BLOCK" and checked.forward is None


async def test_keys_the_protocol_names_are_read_as_content_inside_a_result() -> None:
    """Only the envelope's jsonrpc and id are not content: a result's structuredContent (or a tool's arguments)
    may use "type", "id" or "mimeType" for anything, and a value under them is read like any other."""
    for key in ("type", "id", "mimeType", "protocolVersion", "nextCursor", "isError"):
        checks = MessageChecks(debug_engine(), Exchange.begin("/mcp/x"), "x", "s", ApprovedTools())
        asked = jsonrpc.classify({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                  "params": {"name": "a", "arguments": {}}})
        result = jsonrpc.classify({"jsonrpc": "2.0", "id": 3, "result": {
            "content": [{"type": "text", "text": "ok"}], "structuredContent": {"row": {key: "capsem_block"}}}})
        checked = await checks.server_message(result, asked)
        assert checked.decision == "BLOCK", key
        assert checked.forward is not None and checked.forward["result"]["isError"] is True, key
        assert "structuredContent" not in checked.forward["result"], key


def test_a_session_id_verifies_only_for_its_owner_and_server() -> None:
    ids = SessionIds(b"k" * 32)
    wrapped = ids.wrap("docs", "owner-a", "abc")
    assert ids.unwrap("docs", "owner-a", wrapped) == "abc"
    assert ids.unwrap("docs", "owner-b", wrapped) is None
    assert ids.unwrap("other", "owner-a", wrapped) is None
    assert ids.unwrap("docs", "owner-a", "abc") is None


def test_a_batch_is_refused() -> None:
    try:
        jsonrpc.parse(b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]')
    except jsonrpc.Malformed as malformed:
        assert malformed.code == jsonrpc.INVALID_REQUEST
    else:
        raise AssertionError("a batch was accepted")


def test_pins_serve_the_first_definition_remove_a_new_schema_and_hold_new_tools(tmp_path) -> None:
    from capsem_proxyd.mcp.pins import Pins

    pins = Pins(tmp_path)
    first = [{"name": "a", "description": "one", "inputSchema": {"type": "object"}},
             {"name": "b", "description": "two", "inputSchema": {"type": "object"}}]
    assert pins.apply("docs", first).tools == first
    later = [{"name": "a", "description": "CHANGED", "inputSchema": {"type": "object"}},
             {"name": "b", "description": "two", "inputSchema": {"type": "object", "required": ["x"]}},
             {"name": "c", "description": "new"}]
    served = pins.apply("docs", later)
    assert served.tools == [first[0]] and (served.replaced, served.removed, served.pending) == (1, 1, 1)
    assert Pins(tmp_path).servers == pins.servers  # saved, and read back by the next start


async def test_sampling_and_url_elicitation_requests_are_dropped_form_elicitation_checked() -> None:
    checks = MessageChecks(debug_engine(), Exchange.begin("/mcp/x"), "x", "s", ApprovedTools())
    sampling = jsonrpc.classify({"jsonrpc": "2.0", "id": 5, "method": "sampling/createMessage",
                                 "params": {"messages": [], "maxTokens": 5}})
    url = jsonrpc.classify({"jsonrpc": "2.0", "id": 6, "method": "elicitation/create",
                            "params": {"mode": "url", "url": "https://x.example", "message": "go"}})
    form = jsonrpc.classify({"jsonrpc": "2.0", "id": 7, "method": "elicitation/create",
                             "params": {"message": "Your name?", "requestedSchema": {"type": "object"}}})
    assert (await checks.server_message(sampling, None)).forward is None
    assert (await checks.server_message(url, None)).forward is None
    assert (await checks.server_message(form, None)).forward is form.body


def test_a_first_listing_in_pages_is_pinned_whole_and_a_later_new_page_waits(tmp_path) -> None:
    from capsem_proxyd.mcp.pins import Pins

    pins = Pins(tmp_path)
    assert pins.apply("docs", [{"name": "a"}], session="s", next_cursor="p2").tools == [{"name": "a"}]
    assert pins.apply("docs", [{"name": "b"}], session="s", cursor="p2").tools == [{"name": "b"}]
    assert sorted(Pins(tmp_path).servers["docs"]) == ["a", "b"]
    later = pins.apply("docs", [{"name": "c"}], session="s", cursor="p2")  # no page is open any more
    assert later.tools == [] and later.pending == 1


async def test_prompts_are_filtered_entry_by_entry() -> None:
    checks = MessageChecks(debug_engine(), Exchange.begin("/mcp/x"), "x", "s", ApprovedTools())
    asked = jsonrpc.classify({"jsonrpc": "2.0", "id": 3, "method": "prompts/list"})
    answer = jsonrpc.classify({"jsonrpc": "2.0", "id": 3, "result": {"prompts": [
        {"name": "summary", "description": "Summarise"}, {"name": "evil", "description": "capsem_block now"},
    ]}})
    checked = await checks.server_message(answer, asked)
    assert checked.decision == "FILTERED"
    assert [prompt["name"] for prompt in checked.forward["result"]["prompts"]] == ["summary"]


def secrets_checks() -> MessageChecks:
    """Checks through the default policy set (Debug and Secrets), masking with a process key."""
    import os

    from capsem_proxyd.enforcement.loader import default_policy_set
    from capsem_proxyd.redaction.masker import Masker

    return MessageChecks(debug_engine(default_policy_set()), Exchange.begin("/mcp/x"), "x", "s", ApprovedTools(),
                         masker=Masker(os.urandom(32), "test"))


async def test_a_credential_in_a_notification_or_an_error_is_masked_and_the_message_goes_on() -> None:
    from capsem_proxyd.redaction.placeholder import PLACEHOLDER
    from tests.support.mcp_secrets_server import AWS_KEY_ID

    note = jsonrpc.classify({"jsonrpc": "2.0", "method": "notifications/message",
                             "params": {"level": "info", "data": f"loaded key {AWS_KEY_ID}"}})
    checked = await secrets_checks().server_message(note, None)
    assert checked.decision == "REDACT" and checked.forward is not None
    data = checked.forward["params"]["data"]
    assert AWS_KEY_ID not in data and PLACEHOLDER.search(data) and data.startswith("loaded key ")

    asked = jsonrpc.classify({"jsonrpc": "2.0", "id": 4, "method": "resources/read", "params": {"uri": "x://y"}})
    error = jsonrpc.classify({"jsonrpc": "2.0", "id": 4, "error": {"code": -32000, "message": f"bad key {AWS_KEY_ID}"}})
    checked = await secrets_checks().server_message(error, asked)
    assert checked.decision == "REDACT" and AWS_KEY_ID not in checked.forward["error"]["message"]
    assert checked.forward["error"]["code"] == -32000


async def test_a_credential_in_an_object_key_cannot_be_masked_and_the_result_is_refused() -> None:
    from tests.support.mcp_secrets_server import AWS_KEY_ID

    asked = jsonrpc.classify({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "a"}})
    result = jsonrpc.classify({"jsonrpc": "2.0", "id": 3, "result": {
        "content": [{"type": "text", "text": "ok"}], "structuredContent": {AWS_KEY_ID: "the key"}}})
    checked = await secrets_checks().server_message(result, asked)
    assert checked.decision == "BLOCK" and checked.forward["result"]["isError"] is True
    assert AWS_KEY_ID not in jsonrpc.dumps(checked.forward).decode()


async def test_a_definition_a_policy_would_mask_is_removed_never_rewritten() -> None:
    """Already so before masking came to this hop, kept so now that it masks results (a guard, not a new rule)."""
    from tests.support.mcp_secrets_server import AWS_KEY_ID

    checks = secrets_checks()
    answer, asked = listing({"name": "a", "description": f"uses key {AWS_KEY_ID}"}, {"name": "b"})
    checked = await checks.server_message(answer, asked)
    assert checked.decision == "FILTERED"
    assert [tool["name"] for tool in checked.forward["result"]["tools"]] == ["b"]
    assert AWS_KEY_ID not in jsonrpc.dumps(checked.forward).decode()
