"""The request's log line says what was decided and why the upstream failed, without the audit log.

Through the real app on a real socket, read with caplog: each line's fields
(``record.fields``, what ``--log-format json`` writes) and its text (what
the text format writes) are both checked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from capsem_proxyd.config import Settings
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.observe.recorders import Recorders
from capsem_proxyd.observe.request_log import RequestLog
from tests.support.daemon import free_port
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import OPENAI_AUTH, Proxy
from tests.support.sdk import write_policy_folder

# Rules decides in enforce mode; Debug (which blocks "capsem_block") only watches.
RULES = '[on_model_call]\nblock = ["forbidden plan"]\nconfirm = ["delete everything"]\nlog = ["mildly odd"]\n'
WATCHING_DEBUG = 'mode = "monitor"\n'


async def post(proxy: Proxy, content: str | None = None, *, body: bytes | None = None,
               model: str = "gpt-4o-mini") -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        if body is not None:
            return await client.post(proxy.url + "/v1/chat/completions", content=body,
                                     headers={**OPENAI_AUTH, "content-type": "application/json"})
        return await client.post(
            proxy.url + "/v1/chat/completions", headers=OPENAI_AUTH,
            json={"model": model, "messages": [{"role": "user", "content": content}]},
        )


async def stream_chat(proxy: Proxy) -> tuple[str, bytes]:
    """A streamed chat read to its end, as raw bytes: (its request id, the body)."""
    async with httpx.AsyncClient(timeout=10) as client, client.stream(
        "POST", proxy.url + "/v1/chat/completions", headers=OPENAI_AUTH,
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True},
    ) as response:
        return response.headers["x-capsem-request-id"], b"".join([chunk async for chunk in response.aiter_bytes()])


def request_line(caplog: pytest.LogCaptureFixture, request_id: str) -> tuple[int, Mapping[str, Any], str]:
    """The one ``capsem_proxyd.request`` line of ``request_id``: level, fields, text."""
    lines = [record for record in caplog.records
             if record.name == "capsem_proxyd.request" and getattr(record, "fields", {}).get("request_id") == request_id]
    assert len(lines) == 1, [record.getMessage() for record in lines]
    (record,) = lines
    return record.levelno, record.fields, record.getMessage()  # type: ignore[attr-defined]


@pytest.fixture
async def ruled(start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path) -> Proxy:
    folder = write_policy_folder(tmp_path / "policies", rules=RULES, debug=WATCHING_DEBUG)
    return await start_proxy(proxy_settings, policy_dir=str(folder))


# (prompt, status, the line's decision fields, its outcome)
DECISIONS = [
    ("execute the forbidden plan", 400,
     {"decision": "block", "policy": "Rules", "hook": "on_model_call", "reason": "policy_violation"}, "capsem_blocked"),
    ("please delete everything", 400,
     {"decision": "confirm", "policy": "Rules", "hook": "on_model_call"}, "capsem_confirmation_required"),
    ("a mildly odd question", 200, {"decision": "log", "policy": "Rules", "hook": "on_model_call"}, "200"),
    # the monitored policy let it through (LOG) and says what it would have done
    ("capsem_block this", 200,
     {"decision": "log", "monitored": "block", "policy": "Debug", "hook": "on_model_call"}, "200"),
    # an enforced LOG does not hide the dry run's would-be block
    ("a mildly odd capsem_block", 200, {"decision": "log", "monitored": "block", "policy": "Debug"}, "200"),
    ("hello", 200, {"decision": "allow"}, "200"),
]


@pytest.mark.parametrize(("prompt", "status", "expected", "outcome"), DECISIONS, ids=[d[0] for d in DECISIONS])
async def test_the_request_line_names_the_decision_that_weighed_most(
    ruled: Proxy, caplog: pytest.LogCaptureFixture, prompt: str, status: int, expected: dict[str, str], outcome: str,
) -> None:
    response = await post(ruled, prompt)
    assert response.status_code == status, response.text
    level, fields, text = request_line(caplog, response.headers["x-capsem-request-id"])
    assert {name: fields.get(name) for name in expected} == expected
    assert fields.get("error", str(status)) == outcome and fields["status"] == status
    assert level == pytest.approx(20)  # INFO: a decision is the proxy working, not a fault
    for name, value in expected.items():
        assert f"{name}={value}" in text
    if expected["decision"] == "allow":
        assert "policy" not in fields and "decision_id" not in fields
    else:
        assert fields["decision_id"]
        assert "monitored" in fields or expected.get("monitored") is None
    if status == 400:  # the id the client got is the one logged
        assert response.json()["error"]["capsem"]["decision_id"] == fields["decision_id"]
    assert prompt not in text  # never the prompt (nor the policy's details, which may quote it)


async def test_a_block_reads_apart_from_malformed_json(ruled: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    blocked = await post(ruled, "execute the forbidden plan")
    malformed = await post(ruled, body=b'{"model": "gpt-4o-mini", "messages": [')
    assert blocked.status_code == malformed.status_code == 400
    _, block, _ = request_line(caplog, blocked.headers["x-capsem-request-id"])
    _, bad, text = request_line(caplog, malformed.headers["x-capsem-request-id"])
    assert block["decision"] == "block" and block["error"] == "capsem_blocked"
    assert "decision" not in bad and bad["error"] == "invalid_request"  # no policy was asked
    assert "decision=" not in text


async def test_a_streamed_reply_blocked_midway_logs_its_response_decision(
    proxy: Proxy, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(Reply(chunks=["fine so far, ", "then capsem_", "block arrives", " and more"]))
    request_id, body = await stream_chat(proxy)
    assert b"capsem_blocked" in body
    _, fields, _ = request_line(caplog, request_id)
    assert (fields["decision"], fields["policy"], fields["hook"], fields["outcome"]) == (
        "block", "Debug", "on_model_response", "blocked")


async def test_a_model_name_cannot_add_a_field_to_the_text_line(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    response = await post(proxy, "hello", model="m decision=allow status=200\u2028forged")
    _, fields, text = request_line(caplog, response.headers["x-capsem-request-id"])
    assert fields["model"] == "m decision=allow status=200\u2028forged"  # the JSON field is the value itself
    assert "model=\"m decision=allow status=200\\u2028forged\"" in text
    assert len(text.splitlines()) == 1


# -- upstream failures ------------------------------------------------------------------------------


async def test_a_refused_connection_is_a_warning_with_the_host_and_the_reason(
    start_proxy: Callable[..., Any], proxy_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    proxy = await start_proxy(proxy_settings, openai_upstream=f"http://127.0.0.1:{port}/v1")
    response = await post(proxy, "hello")
    assert response.status_code == 502
    level, fields, text = request_line(caplog, response.headers["x-capsem-request-id"])
    assert level == 30  # WARNING
    assert fields["error"] == "upstream_unavailable"
    assert fields["upstream"] == f"127.0.0.1:{port}"
    assert fields["failure"].startswith("ConnectError")
    assert f"upstream=127.0.0.1:{port}" in text and "failure=\"ConnectError" in text


@pytest.mark.parametrize(("upstream", "host"), [("ftp://files.invalid/v1", "files.invalid"), ("not-a-url", "-")])
async def test_an_upstream_url_httpx_cannot_speak_is_a_warning_that_says_so(
    start_proxy: Callable[..., Any], proxy_settings: Settings, caplog: pytest.LogCaptureFixture, upstream: str, host: str
) -> None:
    """What ``check`` lets through (a config made before it refused these, a URL it cannot judge) still says why."""
    proxy = await start_proxy(proxy_settings, openai_upstream=upstream)
    response = await post(proxy, "hello")
    assert response.status_code == 502
    level, fields, _ = request_line(caplog, response.headers["x-capsem-request-id"])
    assert (level, fields["error"], fields["upstream"]) == (30, "upstream_unavailable", host)
    assert fields["failure"].startswith("UnsupportedProtocol: ")


async def test_a_reset_and_a_timeout_are_warnings_that_say_so(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await start_proxy(proxy_settings, upstream_timeout=0.5)
    host = fake.url.removeprefix("http://")
    fake.script(Reply(fault="reset_before_headers"), Reply(delay=3))
    reset = await post(proxy, "hello")
    slow = await post(proxy, "hello")
    assert (reset.status_code, slow.status_code) == (502, 504)
    level, fields, _ = request_line(caplog, reset.headers["x-capsem-request-id"])
    assert (level, fields["error"], fields["upstream"]) == (30, "upstream_unavailable", host)
    assert fields["failure"].split(":")[0] in ("RemoteProtocolError", "ReadError", "ConnectError")
    level, fields, _ = request_line(caplog, slow.headers["x-capsem-request-id"])
    assert (level, fields["error"], fields["upstream"]) == (30, "upstream_timeout", host)
    assert "Timeout" in fields["failure"]


async def test_a_stream_cut_by_the_upstream_is_a_warning(
    proxy: Proxy, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(Reply(chunks=["part one. "] * 10, fault="reset_mid_stream", fault_after_events=3))
    request_id, _ = await stream_chat(proxy)
    level, fields, _ = request_line(caplog, request_id)
    assert (level, fields["outcome"], fields["status"]) == (30, "upstream_error", 200)
    assert fields["upstream"] == fake.url.removeprefix("http://") and fields["failure"]


async def test_a_provider_error_is_not_an_upstream_failure(
    proxy: Proxy, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(Reply(status=500, error_message="provider broke"))
    response = await post(proxy, "hello")
    assert response.status_code == 500
    level, fields, _ = request_line(caplog, response.headers["x-capsem-request-id"])
    assert level == 20 and "failure" not in fields  # the provider answered; its own error went to the client


# -- the REDACT slot (masking calls ``redacted``; nothing in the proxy masks yet) ------------------


def test_a_redaction_outweighs_a_log_and_yields_to_a_refusal(caplog: pytest.LogCaptureFixture) -> None:
    from capsem.models import Decision, Reason, Verdict

    log = Recorders(RequestLog())
    exchange = Exchange.begin("/v1/chat/completions")
    noted = Decision(verdict=Verdict.LOG, reason=Reason.POLICY_VIOLATION, details="d", policy="Rules",
                     callback="on_model_call")
    log.decision_made(exchange, "on_model_call", "Rules", noted, "enforce")
    log.redacted(exchange, "on_model_call", "PII", 2)
    log.request_done(exchange, 200, "200")
    assert "decision=redact policy=PII hook=on_model_call" in caplog.records[-1].getMessage()

    exchange = Exchange.begin("/v1/chat/completions")
    log.redacted(exchange, "on_model_call", "PII", 1)
    log.decision_made(exchange, "on_model_call", "Rules", noted.model_copy(update={"verdict": Verdict.BLOCK}), "enforce")
    log.request_done(exchange, 400, "capsem_blocked")
    assert "decision=block policy=Rules" in caplog.records[-1].getMessage()
