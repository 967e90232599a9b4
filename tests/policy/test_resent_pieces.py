"""A resent one-piece hook answered from the verdict cache records exactly what the walk over pieces does.

The engine answers a tool result or definition every policy allowed before with one look-up per policy
(``PolicyEngine._allowed_from_cache``); anything else (a finding, a refusal, a piece not seen, a masked
view) goes the whole way. Two engines over the same turns, one that may take the short way and one that
may not, must refuse the same, let through the same, mask the same and tell the recorders (metrics,
audit) the same, for random turns with a secret in any tool result or the prompt.
"""

from __future__ import annotations

import os
from typing import Any

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capsem_proxyd.enforcement.engine import PolicyEngine
from capsem_proxyd.enforcement.loader import default_policy_set
from capsem_proxyd.enforcement.verdict_cache import VerdictCache
from capsem_proxyd.errors import ProxyError
from capsem_proxyd.observe.recorders import Recorder
from capsem_proxyd.redaction.masker import Masker
from capsem_proxyd.views import RequestView, ToolDefinition, ToolResult
from tests.support import exchanges

SECRET = "ghp_" + "Zq8xT2vLw9KpR4mN7bYc3HdF6jS1aE5uGtQo"  # a GitHub token's shape: the Secrets policy masks it
TEXTS = ["lorem ipsum dolor", "def handler(request):\n    return 42", "x" * 200, f"token = {SECRET}", "ok"]


class Tape(Recorder):
    """Every decision and check as the recorders are told them (ids and timings left out)."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def decision_made(self, exchange, hook, policy, decision, mode, cache=None):  # type: ignore[no-untyped-def]
        self.seen.append((exchange.request_id, hook, policy, decision.verdict.value, decision.details, mode, cache))

    def policy_checked(self, hook: str, seconds: float) -> None:
        self.seen.append(("checked", hook))

    def refused(self, exchange, hook, decision):  # type: ignore[no-untyped-def]
        self.seen.append(("refused", exchange.request_id, hook, decision.policy, decision.verdict.value))


def engine(tape: Tape, short_way: bool) -> PolicyEngine:
    built = PolicyEngine(default_policy_set(), recorder=tape, confirm_action="block", policy_timeout=5.0,
                         cache=VerdictCache(10_000))
    built.all_split = built.all_split and short_way
    return built


def turns_of(draw: st.DrawFn) -> list[RequestView]:
    """A conversation resent turn by turn: each turn the last one's tool results and one more."""
    results = draw(st.lists(st.sampled_from(TEXTS), min_size=1, max_size=6))
    prompts = draw(st.lists(st.sampled_from(TEXTS), min_size=len(results), max_size=len(results)))
    definition = ToolDefinition(name="read_file", description=draw(st.sampled_from(TEXTS)), parameters={})
    return [
        RequestView(model="m", prompt=prompts[turn], prompt_pieces=[prompts[turn]], tools=[definition],
                    tool_results=[ToolResult("read_file", text, f"call_{n}") for n, text in enumerate(results[:turn + 1])])
        for turn in range(len(results))
    ] * 2  # and each turn again: every piece now from the cache


def run(short_way: bool, views: list[RequestView], secret: bytes) -> tuple[list[Any], list[Any]]:
    tape = Tape()
    checked = engine(tape, short_way)
    masker = Masker(secret, "k")
    outcomes: list[Any] = []

    async def main() -> None:
        for number, view in enumerate(views):
            exchange = exchanges.exchange(request_id=f"req_{number}")
            exchange.masker = masker
            try:
                outcomes.append(await checked.check_request(exchange, view))
            except ProxyError as error:
                outcomes.append(("refused", error.status))
            outcomes.append([(value, kind, policy, hook) for value, kind, policy, hook in exchange.redactions])

    trio.run(main)
    return outcomes, tape.seen


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_short_way_refuses_masks_and_records_what_the_walk_does(data: st.DataObject) -> None:
    views = data.draw(st.composite(turns_of)())
    secret = os.urandom(32)
    assert run(True, views, secret) == run(False, views, secret)


def test_the_short_way_is_taken_for_resent_pieces_and_a_secret_still_masks() -> None:
    views = [RequestView(model="m", prompt="go", prompt_pieces=["go"],
                         tool_results=[ToolResult("read_file", TEXTS[0], "a"), ToolResult("read_file", TEXTS[3], "b")])]
    tape = Tape()
    checked = engine(tape, short_way=True)
    taken: list[str] = []
    original = checked._allowed_from_cache

    def spy(*args: Any) -> bool:
        answer = original(*args)
        taken.append(args[1] if answer else "walk")
        return answer

    checked._allowed_from_cache = spy  # type: ignore[method-assign]
    masker = Masker(os.urandom(32), "k")
    redactions = []

    async def main() -> None:
        for number in range(2):
            exchange = exchanges.exchange(request_id=f"req_{number}")
            exchange.masker = masker
            await checked.check_request(exchange, views[0])
            redactions.append([value for value, *_ in exchange.redactions])

    trio.run(main)
    # the first turn walks both results; the second takes the short way for the clean one only
    assert taken == ["walk", "walk", "on_tool_response", "walk"]
    assert redactions == [[SECRET], [SECRET]]
