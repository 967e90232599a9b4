"""A value a Rules redact regex finds only in the text as read is masked over its whole written characters (issue 23).

The value is written with a zero-width space inside, fullwidth letters and a
combining mark after its last letter: the regex sees it once invisible
characters are removed and the text is NFKC-normalised, and the proxy masks
the characters it was read from, the invisible one and the trailing mark
included, escaped as the client wrote them or not. Everything else reaches
the provider byte for byte.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from capsem_proxyd.config import Settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import OPENAI_AUTH
from tests.support.sdk import policy_proxy

RULES = r"""
[on_tool_response]
redact = [{ name = "aws-key-id", regex = 'AKIA[0-9A-Z]{16}', case_sensitive = true }]
"""
PLACEHOLDER = re.compile(r"CAPSEM-MASKED-AWSKEYID-[A-Z2-7]{20}")


@pytest.mark.parametrize("written", ["AKIA\u200bIOSFODNN7EXAMPLE", "ＡＫＩＡIOSFODNN7EXAMPL\u00adE\u0353"],
                         ids=["zero-width-space", "fullwidth-and-trailing-mark"])
@pytest.mark.parametrize("ascii_only", [False, True], ids=["utf8", "escaped"])
async def test_a_value_found_as_read_is_masked_over_its_whole_written_characters(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path, written: str,
    ascii_only: bool,
) -> None:
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", rules=RULES)
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "keys?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "shell", "arguments": '{"cmd": "env"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": f"id={written}.\nregion=eu\u0301\n"},
    ]
    raw = json.dumps({"model": "gpt-4o-mini", "messages": messages}, ensure_ascii=ascii_only).encode()
    async with httpx.AsyncClient(timeout=20) as client:
        reply = await client.post(proxy.url + "/v1/chat/completions", content=raw,
                                  headers={**OPENAI_AUTH, "content-type": "application/json"})
    assert reply.status_code == 200 and reply.headers["x-capsem-decision"] == "redact", reply.text
    (sent,) = fake.generation_requests
    (placeholder,) = set(PLACEHOLDER.findall(sent.body.decode()))
    spelled = json.dumps(written, ensure_ascii=ascii_only)[1:-1].encode()
    assert sent.body == raw.replace(spelled, placeholder.encode())
    assert f"id={placeholder}.\nregion=eu\u0301\n" == sent.json["messages"][2]["content"]
