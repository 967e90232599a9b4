"""Policies that cannot mask read the masked view (issue 23): never a value the proxy masks.

A third-party policy may send what it reads to an outside service. Masking
policies (Rules with ``redact`` rules) are asked first; every other policy —
here a recorder written as a third party would write one, asked about the
whole view, and a splittable one whose pieces the verdict cache remembers —
is then given the content with each value found so far replaced by the
placeholder the provider receives: on the hook where it was found, on the
hooks after it (a tool result is checked before the prompt that quotes it),
and in later requests where the tenant's memory finds it bare.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from capsem_proxyd.config import Settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.policies import CountingPolicy, ShadowThirdPartyRecorder, ThirdPartyRecorder
from tests.support.proxy import OPENAI_AUTH
from tests.support.sdk import policy_proxy, write_policy_folder
from tests.support.waiting import wait_until

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
RULES = r"""
[on_tool_response]
redact = [{ name = "aws-secret", regex = 'AWS_SECRET_ACCESS_KEY\s*=\s*(?P<value>[A-Za-z0-9/+]{40})', group = "value" }]
[on_model_call]
redact = [{ name = "aws-secret", regex = 'AWS_SECRET_ACCESS_KEY\s*=\s*(?P<value>[A-Za-z0-9/+]{40})', group = "value" }]
"""
PLACEHOLDER = re.compile(r"CAPSEM-MASKED-AWSSECRET-[A-Z2-7]{20}")


def messages(extra: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "deploy"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "shell", "arguments": '{"cmd": "env"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": f"HOME=/root\nAWS_SECRET_ACCESS_KEY={SECRET}\n"},
        {"role": "user", "content": extra},
    ]


async def test_a_policy_that_cannot_mask_reads_placeholders_where_the_values_were(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path,
) -> None:
    ThirdPartyRecorder.seen.clear()
    CountingPolicy.seen.clear()
    # The third-party policies are listed first: the masking policy is still asked before them.
    proxy = await policy_proxy(
        start_proxy, proxy_settings, tmp_path / "policies",
        aaa_third='class = "tests.support.policies:ThirdPartyRecorder"\n',
        aab_counting='class = "tests.support.policies:CountingPolicy"\n', rules=RULES,
    )
    tool = {"type": "function", "function": {"name": "deploy", "description": "deploys",
                                             "parameters": {"type": "object", "properties": {}}}}
    async with httpx.AsyncClient(timeout=20) as client:
        for extra in (f"did you see {SECRET}?", "go on", f"the key {SECRET} was rotated"):
            reply = await client.post(proxy.url + "/v1/chat/completions", headers=dict(OPENAI_AUTH),
                                      json={"model": "gpt-4o-mini", "messages": messages(extra), "tools": [tool]})
            assert reply.status_code == 200 and reply.headers["x-capsem-decision"] == "redact", reply.text
        # A later request with the value bare (no label, no tool result): the tenant's memory knows it.
        reply = await client.post(proxy.url + "/v1/chat/completions", headers=dict(OPENAI_AUTH), json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"summary: the key was {SECRET}"}]})
        assert reply.status_code == 200 and reply.headers["x-capsem-decision"] == "redact", reply.text

    sent = {found for request in fake.generation_requests for found in PLACEHOLDER.findall(request.body.decode())}
    assert len(sent) == 1 and not any(SECRET in request.body.decode() for request in fake.generation_requests)
    (placeholder,) = sent
    for recorded in (ThirdPartyRecorder.seen, CountingPolicy.seen):
        hooks = {hook for hook, _ in recorded}
        assert {"on_model_call", "on_tool_response"} <= hooks, recorded
        assert not [text for _, text in recorded if SECRET in text], "a policy that cannot mask read the value"
    third = ThirdPartyRecorder.seen
    assert sum(placeholder in text for hook, text in third if hook == "on_tool_response") == 3
    prompts = [text for hook, text in third if hook == "on_model_call"]
    assert len(prompts) == 4 and [placeholder in text for text in prompts] == [True, False, True, True], prompts
    assert f"the key was {placeholder}" in prompts[-1]
    assert f"did you see {placeholder}?" in prompts[0]
    assert any(placeholder in text for hook, text in CountingPolicy.seen if hook == "on_model_call")


async def test_a_shadow_policy_reads_the_masked_view_too(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path,
) -> None:
    ShadowThirdPartyRecorder.seen.clear()
    shadow = write_policy_folder(tmp_path / "shadow", third='class = "tests.support.policies:ShadowThirdPartyRecorder"\n')
    proxy = await start_proxy(proxy_settings, policy_dir=str(write_policy_folder(tmp_path / "main", rules=RULES)),
                              shadow_policy_dir=str(shadow))
    async with httpx.AsyncClient(timeout=20) as client:
        reply = await client.post(proxy.url + "/v1/chat/completions", headers=dict(OPENAI_AUTH),
                                  json={"model": "gpt-4o-mini", "messages": messages(f"did you see {SECRET}?")})
    assert reply.status_code == 200 and reply.headers["x-capsem-decision"] == "redact", reply.text
    seen = ShadowThirdPartyRecorder.seen
    await wait_until(lambda: {hook for hook, _ in seen} >= {"on_model_call", "on_tool_response"}, timeout=15,
                     what="the shadow policy's evaluations")
    assert not [text for _, text in seen if SECRET in text], "a shadow policy read the value"
    assert all(PLACEHOLDER.search(text) for hook, text in seen if hook in ("on_model_call", "on_tool_response"))
