"""``--log-format json``: every line of a real daemon's log is one JSON object, and a request's fields are
fields of it (not ``key=value`` inside ``message``), stamped in UTC to the millisecond."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.support.daemon import Daemon, free_port, upstream_args
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import ANTHROPIC_AUTH, OPENAI_AUTH
from tests.support.waiting import wait_until

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
FORGED = "m\u2028status=200\n{\"level\": \"info\"}"  # a model name that tries to end the line and start another


def entries(daemon: Daemon) -> list[dict[str, Any]]:
    """Every line of the daemon's log, parsed: one that is not a JSON object fails here."""
    parsed = []
    for number, line in enumerate(daemon.log.split("\n"), 1):
        if line:
            entry = json.loads(line)
            assert isinstance(entry, dict), (number, line)
            parsed.append(entry)
    return parsed


async def test_every_line_is_json_and_a_request_is_fields(
    daemons: Callable[..., Daemon], fake: FakeUpstream
) -> None:
    args = [*upstream_args(fake.url), "--anthropic-upstream", f"http://127.0.0.1:{free_port()}", "--log-format", "json"]
    daemon = daemons(*args)
    await daemon.wait_ready(timeout=60)
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "execute capsem_block"}]}
    async with httpx.AsyncClient(timeout=10) as client:
        blocked = await client.post(daemon.url + "/v1/chat/completions", json=chat, headers=OPENAI_AUTH)
        forged = await client.post(daemon.url + "/v1/chat/completions", headers=OPENAI_AUTH,
                                   json={**chat, "model": FORGED, "messages": [{"role": "user", "content": "hi"}]})
        unreachable = await client.post(
            daemon.url + "/v1/messages", headers=ANTHROPIC_AUTH,
            json={"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    assert (blocked.status_code, forged.status_code, unreachable.status_code) == (400, 200, 502)
    ids = {response.headers["x-capsem-request-id"] for response in (blocked, forged, unreachable)}
    await wait_until(lambda: ids <= {entry.get("request_id") for entry in entries(daemon)},
                     timeout=15, what="the three request lines")
    await daemon.stop()

    lines = entries(daemon)
    now = datetime.now(UTC)
    for entry in lines:
        assert TIME.fullmatch(entry["time"]), entry["time"]
        stamped = datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
        assert abs(now - stamped) < timedelta(minutes=10), entry["time"]  # UTC, not local time called UTC
        assert {"level", "logger", "pid", "message"} <= set(entry)
    requests = {entry["request_id"]: entry for entry in lines if entry["logger"] == "capsem_proxyd.request"}

    block = requests[blocked.headers["x-capsem-request-id"]]
    assert block["message"] == "request" and "request_id=" not in block["message"]
    assert (block["status"], block["error"], block["decision"], block["policy"], block["hook"]) == (
        400, "capsem_blocked", "block", "Debug", "on_model_call")
    assert block["decision_id"] == blocked.json()["error"]["capsem"]["decision_id"]
    assert isinstance(block["duration_ms"], float) and block["level"] == "info"

    assert requests[forged.headers["x-capsem-request-id"]]["model"] == FORGED  # the value itself, on one line

    failed = requests[unreachable.headers["x-capsem-request-id"]]
    assert (failed["level"], failed["status"], failed["error"]) == ("warning", 502, "upstream_unavailable")
    assert failed["upstream"].startswith("127.0.0.1:") and failed["failure"].startswith("ConnectError")
