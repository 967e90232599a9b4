"""A reply whose decision cannot be recorded is not delivered: fail closed on the reply side too.

The fault: a write wrapper that answers ENOSPC to the audit log's lines of reply decisions
(``on_model_response``) and passes every other write through, so the request's own decision is
recorded, the request goes upstream, and the disk "fills up" while the reply is being checked.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from capsem_proxyd.config import Settings
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import in_thread
from tests.support.sdk import PROVIDERS, message_of, sdk_call, sdk_errors

STREAM_TEXT = ["The first part arrives. ", "Then more words follow. ", "And the end comes. "] * 4


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_reply_decision_that_cannot_be_written_refuses_the_reply(
    start_proxy, proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    provider: str, stream: bool,
) -> None:
    proxy = await start_proxy(proxy_settings, audit_log=str(tmp_path / "audit.jsonl"))
    real_write = os.write

    def disk_full_for_replies(fd: int, data: bytes) -> int:
        if b'"on_model_response"' in bytes(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", disk_full_for_replies)
    fake.script(Reply(chunks=STREAM_TEXT) if stream else Reply(text="a reply the audit log cannot record"))

    def call() -> BaseException:
        try:
            text = sdk_call(provider, proxy, stream=stream)
        except sdk_errors(provider) as error:
            return error
        raise AssertionError(f"{provider}: the reply was delivered unrecorded: {text!r}")

    error = await in_thread(call)
    assert "audit log" in message_of(error), (provider, error)
    assert len(fake.requests) == 1  # the request's own decision was recorded: it went upstream
