"""The verdict cache through a real proxy: what an agent resends is analysed once, and nothing slips through.

Policies that count what they are asked about (``tests/support/policies.py``)
run in in-process proxies; the reload test runs a real daemon and reads the
cache's counters from ``/metrics``.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from capsem_proxyd.config import Settings
from tests.support.daemon import upstream_args
from tests.support.fake_upstream import FakeUpstream
from tests.support.metrics import scrape
from tests.support.policies import CountingPolicy, WholeCountingPolicy
from tests.support.proxy import ANTHROPIC_KEY, OPENAI_KEY, in_thread
from tests.support.sdk import write_policy_folder

SYSTEM = "You are a careful coding agent. Follow the repository's conventions."
OTHER_KEY = "sk-test-openai-other-tenant-77aa"


def counting_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "counting.toml").write_text('class = "tests.support.policies:CountingPolicy"\n')
    (folder / "whole.toml").write_text('class = "tests.support.policies:WholeCountingPolicy"\n')
    return folder


def question(turn: int) -> str:
    """A user message of an agent's length (a piece of its own, ``pieces.grouped``)."""
    return f"question {turn}: read file {turn} and tell me what each of its handlers does, and why"


def conversation(turns: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    for turn in range(turns):
        messages.append({"role": "user", "content": question(turn)})
        messages.append({"role": "assistant", "content": None, "tool_calls": [{
            "id": f"call_{turn}", "type": "function",
            "function": {"name": "read_file", "arguments": json.dumps({"path": f"src/module_{turn}.py"})},
        }]})
        messages.append({"role": "tool", "tool_call_id": f"call_{turn}", "content": f"def handler_{turn}(): pass\n" * 5})
    return messages


async def chat(url: str, messages: list[dict[str, Any]], key: str = OPENAI_KEY) -> httpx.Response:
    async with httpx.AsyncClient(timeout=20) as client:
        return await client.post(url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": messages},
                                 headers={"authorization": f"Bearer {key}"})


async def test_a_resent_conversation_is_analysed_once_and_each_turn_only_for_what_is_new(
    start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path
) -> None:
    proxy = await start_proxy(proxy_settings, policy_dir=str(counting_folder(tmp_path)))
    CountingPolicy.seen.clear()
    WholeCountingPolicy.seen.clear()
    assert (await chat(proxy.url, conversation(3))).status_code == 200
    first = list(CountingPolicy.seen)
    assert ("on_model_call", question(0)) in first
    assert sum(1 for hook, _ in first if hook == "on_tool_response") == 3

    assert (await chat(proxy.url, conversation(3))).status_code == 200
    assert CountingPolicy.seen == first  # the same conversation again: nothing analysed again

    assert (await chat(proxy.url, conversation(4))).status_code == 200
    new = CountingPolicy.seen[len(first):]
    # the new message, with the short texts of the tool call before it (its id, name and arguments)
    assert any(hook == "on_model_call" and text.endswith("src/module_2.py\n" + question(3)) for hook, text in new)
    # (the client's own tool_call_id is content too, issue 20 class 9)
    assert [text for hook, text in new if hook == "on_tool_response"] == ["call_3\n" + "def handler_3(): pass\n" * 5]
    assert not any(text == question(0) or SYSTEM in text for _, text in new)

    # A non-splittable policy was handed each request whole, every time.
    wholes = [text for hook, text in WholeCountingPolicy.seen if hook == "on_model_call"]
    assert len(wholes) == 3 and SYSTEM in wholes[2] and "question 3" in wholes[2] and "question 0" in wholes[2]

    # Another tenant sending the same conversation has it analysed for itself.
    before = len(CountingPolicy.seen)
    assert (await chat(proxy.url, conversation(3), key=OTHER_KEY)).status_code == 200
    assert len(CountingPolicy.seen) - before == len(first)


async def test_a_term_split_across_two_messages_is_still_refused(
    start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path, fake: FakeUpstream
) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "rules.toml").write_text("[on_model_call]\nblock = [{ name = 'launch-code', regex = 'launch\\s+code\\s+\\d{4}' }]\n")
    (folder / "debug.toml").write_text("")
    proxy = await start_proxy(proxy_settings, policy_dir=str(folder))
    client = proxy.anthropic()
    blocks = [{"type": "text", "text": "earlier text " * 50}, {"type": "text", "text": "tomorrow we launch"}]
    ok = await in_thread(lambda: client.messages.create(
        model="claude-sonnet-4-6", max_tokens=16, messages=[{"role": "user", "content": blocks}]))
    assert ok.content
    for _ in range(2):  # the second time the earlier pieces come from the cache: the seam still catches it
        with pytest.raises(anthropic.BadRequestError, match="launch-code"):
            await in_thread(lambda: client.messages.create(model="claude-sonnet-4-6", max_tokens=16, messages=[
                {"role": "user", "content": [*blocks, {"type": "text", "text": "code 1234 now"}]}]))
    # The Debug marker inside one piece of a long, cached conversation is refused every time too.
    openai_client = proxy.openai()
    messages = conversation(5)
    await in_thread(lambda: openai_client.chat.completions.create(model="gpt-4o-mini", messages=messages))
    for _ in range(2):
        with pytest.raises(openai.BadRequestError, match="capsem_block"):
            await in_thread(lambda: openai_client.chat.completions.create(
                model="gpt-4o-mini", messages=[*messages, {"role": "user", "content": "then capsem_block"}]))
    assert all("capsem_block" not in json.dumps(request.json) for request in fake.requests)


async def test_the_audit_log_marks_cached_decisions_and_metrics_count_hits_and_misses(
    start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    # Debug alone (the default set less Secrets, so each count below is one policy's)
    folder = write_policy_folder(tmp_path / "policies", debug="", secrets="enabled = false\n")
    proxy = await start_proxy(proxy_settings, audit_log=str(audit), policy_dir=str(folder))
    for _ in range(2):
        assert (await chat(proxy.url, conversation(2))).status_code == 200
    decisions = [json.loads(line) for line in audit.read_text().splitlines() if '"type":"decision"' in line]
    prompts = [record for record in decisions if record["hook"] == "on_model_call"]
    assert [record["cached"] for record in prompts] == [False, True]
    assert prompts[1]["pieces"] == prompts[1]["cached_pieces"] == prompts[0]["pieces"] > 3
    # Within the first request, only repeats (pieces that recur in it, if any) were hits.
    repeats = prompts[0]["cached_pieces"]
    assert repeats < prompts[0]["pieces"]
    results = [record for record in decisions if record["hook"] == "on_tool_response"]
    assert [record["cached"] for record in results] == [False, False, True, True]

    metrics = await scrape(proxy.url)
    pieces = prompts[0]["pieces"]
    assert metrics("capsem_proxyd_verdict_cache_misses_total", hook="on_model_call") == pieces - repeats
    assert metrics("capsem_proxyd_verdict_cache_hits_total", hook="on_model_call") == pieces + repeats
    assert metrics("capsem_proxyd_verdict_cache_hits_total", hook="on_tool_response") == 2


async def test_a_reload_empties_the_cache(tmp_path: Path, fake: FakeUpstream, daemons: Callable[..., Any]) -> None:
    daemon = daemons(*upstream_args(fake.url))
    await daemon.wait_ready()
    for _ in range(2):
        assert (await chat(daemon.url, conversation(2))).status_code == 200
    metrics = await scrape(daemon.url)
    misses = metrics("capsem_proxyd_verdict_cache_misses_total", hook="on_model_call")
    hits = metrics("capsem_proxyd_verdict_cache_hits_total", hook="on_model_call")
    assert misses > 0 and hits >= misses
    daemon.process.send_signal(signal.SIGHUP)
    await daemon.wait_for_log("reloaded:")
    assert (await chat(daemon.url, conversation(2))).status_code == 200
    metrics = await scrape(daemon.url)
    assert metrics("capsem_proxyd_verdict_cache_misses_total", hook="on_model_call") == 2 * misses
    assert metrics("capsem_proxyd_verdict_cache_hits_total", hook="on_model_call") == hits + (hits - misses) / 2  # only the repeats within the request
    assert await daemon.stop() == 0


async def test_verdict_cache_size_zero_checks_whole_views(
    start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path
) -> None:
    proxy = await start_proxy(proxy_settings, policy_dir=str(counting_folder(tmp_path)), verdict_cache_size=0)
    CountingPolicy.seen.clear()
    for _ in range(2):
        assert (await chat(proxy.url, conversation(1))).status_code == 200
    prompts = [text for hook, text in CountingPolicy.seen if hook == "on_model_call"]
    assert len(prompts) == 2 and SYSTEM in prompts[0] and "question 0" in prompts[0]
    assert ANTHROPIC_KEY not in "".join(prompts)
