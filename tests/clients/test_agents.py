"""Claude Code, Codex and Gemini CLI, run for real through a real proxy to the fake provider.

Each agent CLI runs non-interactively (``claude -p``, ``codex exec``, ``gemini
-p``) with the proxy as its only provider URL. Per agent, every scenario runs at
once (trio tasks, one fake provider and one proxy each), so the suite costs
about as long as its slowest run. A block must end the run with a non-zero exit
and the policy's name in the output, after exactly the upstream model calls it
had to make: none for what the prompt carries, one for a blocked reply or tool
result. Side requests (model lists, token counts) are not model calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import trio

from capsem_proxyd.config import Settings
from tests.clients.agents import AGENTS, Agent, Run, Trap, missing_tools, run_agent
from tests.support.fake_upstream import FakeUpstream, Reply, run_fake_upstream
from tests.support.proxy import ALL_TEST_KEYS

pytestmark = pytest.mark.skipif(missing_tools() is not None, reason=f"client suite: {missing_tools()}")

PLAIN = "Plain answer from the fake provider."
STORY = [f"Part {n} of a streamed story, told piece by piece. " for n in range(1, 13)]
SECRET = "PLUM-42"
BLOCKED_STORY = ["A harmless start that goes on for a while, ", "long enough to be released; ",
                 "then the marker capsem_", "block arrives ", "and more text follows it."]


@dataclass
class Scenario:
    name: str
    prompt: str
    replies: Callable[[Agent, Path], list[Reply]] = lambda agent, work: []
    files: Callable[[Agent], dict[str, str]] = lambda agent: {}
    streamed: bool = False
    blocked: bool = False
    generations: int = 1  # model calls the fake must see
    shows: str = ""  # text the client's output must contain
    then: Callable[[FakeUpstream], None] = lambda fake: None  # extra checks on the recorded traffic


def _tool_result_reached_the_model(fake: FakeUpstream) -> None:
    second = fake.generation_requests[1].body.decode()
    assert SECRET in second, "the tool's output did not reach the model's second turn"


SCENARIOS = [
    Scenario("plain", "Say hello.", lambda a, w: [Reply(text=PLAIN)], shows=PLAIN),
    Scenario("stream", "Tell me a story.", lambda a, w: [Reply(chunks=STORY, chunk_delay=0.01)], streamed=True,
             shows=STORY[-1].strip()),
    Scenario("tool loop", "What do my notes say?",
             lambda a, w: [Reply(tool_calls=[a.read_tool(w / "notes.txt")]), Reply(text=f"Your notes say {SECRET}.")],
             files=lambda a: {"notes.txt": f"The launch code is {SECRET}.\n"}, generations=2,
             shows=f"Your notes say {SECRET}.", then=_tool_result_reached_the_model),
    Scenario("blocked prompt", "Please repeat capsem_block back to me.", blocked=True, generations=0),
    Scenario("blocked stream", "Tell me a story.", lambda a, w: [Reply(chunks=BLOCKED_STORY, chunk_delay=0.01)],
             blocked=True),
    Scenario("blocked tool result", "What do my notes say?",
             lambda a, w: [Reply(tool_calls=[a.read_tool(w / "notes.txt")]), Reply(text="never asked for")],
             files=lambda a: {"notes.txt": "The notes hold capsem_block.\n"}, blocked=True),
    Scenario("blocked instructions file", "Say hello.", lambda a, w: [Reply(text=PLAIN)],
             files=lambda a: {a.instructions_file: "Always end with the word capsem_block.\n"}, blocked=True,
             generations=0),
]


@dataclass
class Outcome:
    scenario: Scenario
    run: Run | None = None
    fake_requests: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


async def _play(agent: Agent, scenario: Scenario, root: Path, start_proxy: Callable[..., Any], trap: Trap,
                settings: Settings) -> Outcome:
    outcome = Outcome(scenario)
    work = root / "work"
    work.mkdir(parents=True)
    for name, text in scenario.files(agent).items():
        (work / name).write_text(text)
    async with run_fake_upstream() as fake:
        fake.script_generations(*scenario.replies(agent, work))
        proxy = await start_proxy(
            settings, openai_upstream=fake.url + "/v1", gemini_upstream=fake.url, anthropic_upstream=fake.url
        )
        run = outcome.run = await run_agent(
            agent, proxy.url, root, scenario.prompt, streamed=scenario.streamed, trap_url=trap.url
        )
        outcome.fake_requests = [f"{r.method} {r.path} -> {r.status}" for r in fake.requests]
        failures = outcome.failures
        generations = len(fake.generation_requests)
        if generations != scenario.generations:
            failures.append(f"{generations} model calls reached the provider, expected {scenario.generations}")
        unknown = [r.path for r in fake.requests if r.status == 404]
        if unknown:
            failures.append(f"side requests the fake does not know: {unknown}")
        if scenario.blocked:
            if run.returncode == 0:
                failures.append("exit code 0 for a blocked run")
            if "Debug" not in run.output:
                failures.append("the output does not name the policy (Debug)")
        else:
            if run.returncode != 0:
                failures.append(f"exit code {run.returncode}")
            if scenario.shows not in run.output:
                failures.append(f"the output lacks {scenario.shows!r}")
            if not failures:
                try:
                    scenario.then(fake)
                except AssertionError as error:
                    failures.append(str(error))
        leaked = [key for key in ALL_TEST_KEYS if key in run.output]
        if leaked:
            failures.append("a test key appears in the client's output")
    return outcome


@pytest.mark.parametrize("agent", AGENTS.values(), ids=AGENTS.keys())
async def test_every_scenario_through_the_proxy(
    agent: Agent, tmp_path: Path, start_proxy: Callable[..., Any], nursery: trio.Nursery
) -> None:
    trap = Trap()
    await nursery.start(trap.serve)
    settings = Settings(host="127.0.0.1", port=0, upstream_timeout=30.0, connect_timeout=2.0, graceful_timeout=1.0)
    outcomes: list[Outcome] = []

    async def play(scenario: Scenario, index: int) -> None:
        outcomes.append(await _play(agent, scenario, tmp_path / f"s{index}", start_proxy, trap, settings))

    async with trio.open_nursery() as scenarios:
        for index, scenario in enumerate(SCENARIOS):
            scenarios.start_soon(play, scenario, index)

    report = []
    for outcome in sorted(outcomes, key=lambda o: SCENARIOS.index(o.scenario)):
        run = outcome.run
        assert run is not None
        status = "FAIL" if outcome.failures else "ok"
        report.append(f"{agent.name} {outcome.scenario.name}: {status} (exit {run.returncode}, "
                      f"fake saw {outcome.fake_requests})")
        if outcome.failures:
            tail = run.output.strip()[-1500:]
            report.append(f"  failures: {outcome.failures}\n  argv: {run.argv[1:]}\n  output tail:\n{tail}")
    print("\n" + "\n".join(report))
    assert not any(outcome.failures for outcome in outcomes), "\n".join(report)
    assert trap.connections == [], f"{agent.name} tried to reach another host: {trap.connections}"


def test_scenarios_cover_the_brief() -> None:
    """Each block kind is scripted once per agent, with the model calls it may cost."""
    blocked = {s.name: s.generations for s in SCENARIOS if s.blocked}
    assert blocked == {"blocked prompt": 0, "blocked stream": 1, "blocked tool result": 1,
                       "blocked instructions file": 0}
    assert {replace(s, name="").streamed for s in SCENARIOS} == {True, False}
