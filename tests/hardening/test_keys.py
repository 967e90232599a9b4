"""Keys never appear in anything the proxy says: error bodies, headers, metrics, logs, audit lines.

The session-wide scan lives in ``tests/key_watch.py`` (it fails the run at its
end); these tests show it is listening and can see a leak, and check the
places a response can carry text back to a caller.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from capsem_proxyd.config import Settings
from tests.support.bodies import chat_body
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.key_watch import KeyWatch, daemon_outputs, keys_in_sources, leaks_in_files
from tests.support.proxy import (
    ALL_TEST_KEYS,
    ANTHROPIC_AUTH,
    GEMINI_AUTH,
    GEMINI_KEY,
    OPENAI_AUTH,
    Proxy,
)
from tests.support.sdk import write_policy_folder


def test_the_watch_catches_a_key_in_a_record_and_in_a_daemon_file() -> None:
    planted = "sk-planted-for-the-self-test-0123"
    watch = KeyWatch(frozenset({planted}), prefixes=("keywatch-selftest",))
    logger = logging.getLogger("keywatch-selftest.inner")
    logger.addHandler(watch)
    try:
        logger.error("upstream said: Bearer %s", planted)
        try:
            raise RuntimeError(f"failed with {planted}")
        except RuntimeError:
            logger.exception("a trace")
    finally:
        logger.removeHandler(watch)
    assert len(watch.leaks) == 2 and watch.records == 2
    # Outside this run's temporary directory, which the session watch scans (and would rightly fail on).
    with tempfile.TemporaryDirectory() as folder:
        _plant_and_scan(Path(folder), planted, watch)


def _plant_and_scan(tmp_path: Path, planted: str, watch: KeyWatch) -> None:
    (tmp_path / "daemon0.log").write_text(f"INFO request key={planted}\n")
    (tmp_path / "audit.jsonl").write_bytes(b'{"k": "' + planted.encode() + b'"}\n')
    (tmp_path / "proxy.env").write_text(f"OPENAI_API_KEY={planted}\n")  # an input, on purpose
    (tmp_path / "nginx").mkdir()
    (tmp_path / "nginx" / "access.log").write_text(planted)  # nginx's own, not the daemon's
    files = list(daemon_outputs(tmp_path))
    assert sorted(path.name for path in files) == ["audit.jsonl", "daemon0.log"]
    assert len(leaks_in_files(files, watch.keys)) == 2


def test_the_session_watch_knows_every_test_key(key_watch: KeyWatch) -> None:
    assert set(ALL_TEST_KEYS) <= key_watch.keys
    assert set(ALL_TEST_KEYS) <= keys_in_sources()
    assert "sk-another-tenant-0000000000" in key_watch.keys  # inline in a header value in another test
    assert key_watch in logging.getLogger().handlers


async def test_the_session_watch_sees_daemon_records(key_watch: KeyWatch, proxy: Proxy, fake: FakeUpstream) -> None:
    before = key_watch.records
    async with httpx.AsyncClient() as client:
        await client.post(proxy.url + "/v1/chat/completions", headers=OPENAI_AUTH,
                          json=chat_body(model="m"))
    assert key_watch.records > before


AUTH = {
    "openai": OPENAI_AUTH,
    "anthropic": ANTHROPIC_AUTH,
    "gemini": GEMINI_AUTH,
}
CALLS = {
    "openai": ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "PROMPT"}]}),
    "anthropic": ("/v1/messages", {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "PROMPT"}]}),
    "gemini": ("/v1beta/models/gemini-2.5-flash:generateContent", {"contents": [{"parts": [{"text": "PROMPT"}]}]}),
}


@pytest.mark.parametrize("provider", AUTH)
async def test_no_key_in_any_error_body_header_or_metric(
    provider: str, start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path
) -> None:
    folder = write_policy_folder(tmp_path / "policies", debug="",
                                 explode='class = "tests.support.policies:RaisingPolicy"\nname = "Buggy"\n')
    proxy = await start_proxy(proxy_settings, policy_dir=str(folder), max_body_size=4096,
                              audit_log=str(tmp_path / "audit.jsonl"))
    path, body = CALLS[provider]

    def with_prompt(prompt: str) -> dict[str, Any]:
        import json

        return json.loads(json.dumps(body).replace("PROMPT", prompt))

    fake.script(Reply(status=401, error_message="bad key"), Reply(fault="reset_before_headers"))
    answers = []
    async with httpx.AsyncClient(timeout=10) as client:
        post = lambda **kwargs: client.post(proxy.url + path, **kwargs)  # noqa: E731
        answers.append(await post(headers=AUTH[provider], json=with_prompt("hi")))  # the provider's own 401
        answers.append(await post(headers=AUTH[provider], json=with_prompt("hi")))  # 502
        answers.append(await post(headers=AUTH[provider], json=with_prompt("capsem_block")))  # 400
        answers.append(await post(headers=AUTH[provider], json=with_prompt("explode")))  # 400, a traceback logged
        answers.append(await post(headers=AUTH[provider], content=b"{not json"))  # 400
        answers.append(await post(headers=AUTH[provider], json=with_prompt("x" * 5000)))  # 413
        answers.append(await post(headers={**AUTH[provider], **{f"x-{i}": "v" for i in range(100)}}, json=body))  # 431
        answers.append(await client.get(proxy.url + "/v1/nothing-here", headers=AUTH[provider]))  # 404
        answers.append(await client.get(proxy.url + f"/v1beta/models/x:generateContent?key={GEMINI_KEY}"))  # 404: GET, key in the query
        metrics = await client.get(proxy.url + "/metrics")
    statuses = [answer.status_code for answer in answers]
    assert statuses == [401, 502, 400, 400, 400, 413, 431, 404, 404], str(statuses)
    for answer in [*answers, metrics]:
        seen = answer.text + "".join(f"{name}: {value}\n" for name, value in answer.headers.items())
        for key in ALL_TEST_KEYS:
            assert key not in seen, (answer.request.url, answer.status_code)
    audit = (tmp_path / "audit.jsonl").read_text()
    assert audit and not any(key in audit for key in ALL_TEST_KEYS)
