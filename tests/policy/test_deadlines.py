"""Policy hooks that can never suspend run without a cancel scope; every other hook keeps
its timeout — and a hook that overruns it is blocked through the real proxy."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio
from capsem.models import DEFAULT_SAFE_DECISION, Decision
from capsem.policies import Policy

from capsem_proxyd.enforcement.deadlines import hook_can_suspend
from capsem_proxyd.policies.debug import DebugPolicy
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import OPENAI_KEY


class _Hooks(Policy):
    def __init__(self) -> None:
        super().__init__(name="Hooks", description="", authors="", url="")

    async def on_model_call(self, *args: object) -> Decision:  # never suspends
        return DEFAULT_SAFE_DECISION if args else DEFAULT_SAFE_DECISION

    async def on_tool_call(self, *args: object) -> Decision:
        await trio.sleep(0)
        return DEFAULT_SAFE_DECISION

    async def on_tool_response(self, *args: object) -> Decision:
        async with trio.open_nursery():
            pass
        return DEFAULT_SAFE_DECISION

    def on_model_response(self, *args: object) -> object:  # a plain function returning an awaitable
        return _later()


async def _later() -> Decision:
    return DEFAULT_SAFE_DECISION


def test_only_plain_never_awaiting_coroutines_skip_the_deadline() -> None:
    hooks = _Hooks()
    assert not hook_can_suspend(hooks, "on_model_call")
    assert hook_can_suspend(hooks, "on_tool_call")
    assert hook_can_suspend(hooks, "on_tool_response")
    assert hook_can_suspend(hooks, "on_model_response")
    assert not any(hook_can_suspend(DebugPolicy(), hook) for hook in
                   ("on_model_call", "on_tool_call", "on_tool_response", "on_model_response"))


def test_a_hook_replaced_on_the_instance_keeps_its_deadline() -> None:
    hooks = _Hooks()
    hooks.on_model_call = _later  # type: ignore[method-assign,assignment]
    assert hook_can_suspend(hooks, "on_model_call")


async def test_a_hook_that_waits_past_the_policy_timeout_is_blocked(
    start_proxy, proxy_settings, fake: FakeUpstream, tmp_path: Path
) -> None:
    (tmp_path / "slow.toml").write_text('class = "tests.support.policies:SlowPolicy"\n')
    proxy = await start_proxy(proxy_settings, policy_dir=str(tmp_path), policy_timeout=0.2)
    async with httpx.AsyncClient(base_url=proxy.url, headers={"authorization": f"Bearer {OPENAI_KEY}"}) as client:
        with trio.fail_after(10):
            reply = await client.post(
                "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
            )
    assert reply.status_code == 400
    assert "timed out" in reply.text
    assert fake.requests == []
