"""CAPSEM policies written for tests, loaded by ``class = "tests.support.policies:..."`` in policy TOML."""

from __future__ import annotations

from typing import Any, ClassVar

import trio
from capsem.models import DEFAULT_SAFE_DECISION, Agent, Decision, Media, Reason, Verdict
from capsem.policies import Policy


class HangingPolicy(Policy):
    """Never answers for a prompt containing ``hang`` (like a policy waiting on a dead service)."""

    trigger = "hang"

    def __init__(self, name: str = "Hanging") -> None:
        super().__init__(name=name, description="hangs on prompts containing its trigger", authors="tests", url="")

    async def on_model_call(
        self, invocation_id: str, agent: Agent, model_name: str, system_instructions: str, prompt: str, media: list[Media]
    ) -> Decision:
        if self.trigger in prompt:
            await trio.sleep_forever()
        return DEFAULT_SAFE_DECISION

    @classmethod
    def from_config(cls, config: dict) -> HangingPolicy:
        return cls(config.get("name", cls.__name__.removesuffix("Policy")))


class RaisingPolicy(HangingPolicy):
    """Raises for a prompt containing ``explode`` (a policy with a bug)."""

    trigger = "explode"

    async def on_model_call(
        self, invocation_id: str, agent: Agent, model_name: str, system_instructions: str, prompt: str, media: list[Media]
    ) -> Decision:
        if self.trigger in prompt:
            raise RuntimeError("the policy broke")
        return DEFAULT_SAFE_DECISION


MARKER = b"capsem_block"


class MediaRecorder(Policy):
    seen: ClassVar[list[tuple[str, bytes]]] = []
    prompts: ClassVar[list[str]] = []

    def __init__(self) -> None:
        super().__init__(name="MediaRecorder", description="records media for tests", authors="tests", url="")

    async def on_model_call(
        self, invocation_id: str, agent: Agent, model_name: str, system_instructions: str, prompt: str, media: list[Media]
    ) -> Decision:
        MediaRecorder.prompts.append(prompt)
        MediaRecorder.seen.extend((item.mime_type, item.content) for item in media)
        if any(MARKER in item.content for item in media):
            return Decision(verdict=Verdict.BLOCK, reason=Reason.POLICY_VIOLATION, details="marker in media")
        return DEFAULT_SAFE_DECISION

    @classmethod
    def from_config(cls, config: dict) -> MediaRecorder:
        return cls()


class SlowPolicy(Policy):
    def __init__(self) -> None:
        super().__init__(name="Slow", description="waits an hour on every prompt", authors="tests", url="")

    async def on_model_call(
        self, invocation_id: str, agent: Agent, model_name: str, system_instructions: str, prompt: str, media: list[Media]
    ) -> Decision:
        await trio.sleep(3600)
        return DEFAULT_SAFE_DECISION

    @classmethod
    def from_config(cls, config: dict) -> SlowPolicy:
        return cls()


class CountingPolicy(Policy):
    """Splittable: records what each hook is asked about, so tests can count analyses.

    In-process proxies share ``seen`` (clear it first). Blocks a prompt piece containing ``counting_block``.
    """

    splittable = True
    seen: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, name: str = "Counting") -> None:
        super().__init__(name=name, description="records what it is asked about", authors="tests", url="")

    def _saw(self, hook: str, text: str) -> None:
        type(self).seen.append((hook, text))

    async def on_model_call(
        self, invocation_id: str, agent: Agent, model_name: str, system_instructions: str, prompt: str, media: list[Media]
    ) -> Decision:
        self._saw("on_model_call", f"{system_instructions}\n{prompt}" if system_instructions else prompt)
        if "counting_block" in prompt:
            return Decision(verdict=Verdict.BLOCK, reason=Reason.POLICY_VIOLATION, details="counting_block in prompt")
        return DEFAULT_SAFE_DECISION

    async def on_tool_call(self, invocation_id: str, agent: Agent, tool: Any, args: dict) -> Decision:
        self._saw("on_tool_call", tool.name)
        return DEFAULT_SAFE_DECISION

    async def on_tool_response(self, invocation_id: str, agent: Agent, tool: Any, response: dict) -> Decision:
        self._saw("on_tool_response", str(response.get("content", "")))
        return DEFAULT_SAFE_DECISION

    @classmethod
    def from_config(cls, config: dict) -> CountingPolicy:
        return cls(config.get("name", cls.__name__.removesuffix("Policy")))


class WholeCountingPolicy(CountingPolicy):
    """The same, not splittable: the engine must always hand it the whole view."""

    splittable = False
    seen: ClassVar[list[tuple[str, str]]] = []


class HeavyPolicy(Policy):
    """``cpu_heavy``: runs in the policy worker processes. What a prompt asks of it:
    ``whoami`` blocks naming the process that decided, ``crash_worker`` kills that process,
    ``stall_worker`` computes (sleeps, without awaiting) for a minute, ``heavy_block`` blocks."""

    cpu_heavy = True

    def __init__(self) -> None:
        super().__init__(name="Heavy", description="a stand-in for a CPU-heavy policy", authors="tests", url="")

    async def on_model_call(
        self, invocation_id: str, agent: Agent, model_name: str, system_instructions: str, prompt: str, media: list[Media]
    ) -> Decision:
        import os
        import time

        if "crash_worker" in prompt:
            os._exit(3)
        if "stall_worker" in prompt:
            time.sleep(60)
        if "whoami" in prompt:
            return Decision(verdict=Verdict.BLOCK, reason=Reason.POLICY_VIOLATION, details=f"decided in pid {os.getpid()}")
        if "heavy_block" in prompt:
            return Decision(verdict=Verdict.BLOCK, reason=Reason.POLICY_VIOLATION, details="heavy_block in prompt")
        return DEFAULT_SAFE_DECISION

    @classmethod
    def from_config(cls, config: dict) -> HeavyPolicy:
        return cls()


class SplittableHeavyPolicy(HeavyPolicy):
    """The same, splittable: the engine sends it its pieces in batches (``decide_many``)."""

    splittable = True


class SlowStartHeavyPolicy(HeavyPolicy):
    """The same, with a start-up the test can slow down: while the file named by ``start_delay_file``
    exists, building the policy (a worker's start) first sleeps as many seconds as the file says.
    A stand-in for the PII policy's 2.5-6 s start, without spaCy. Its reply hook answers in the
    worker too, so a stream's checks need a worker as well."""

    def __init__(self, start_delay_file: str = "") -> None:
        import os
        import time
        from pathlib import Path

        super().__init__()
        if start_delay_file and os.path.exists(start_delay_file):
            time.sleep(float(Path(start_delay_file).read_text() or 0))

    async def on_model_response(
        self, invocation_id: str, agent: Agent, response: str, thoughts: str, media: list[Media]
    ) -> Decision:
        if "heavy_block" in response:
            return Decision(verdict=Verdict.BLOCK, reason=Reason.POLICY_VIOLATION, details="heavy_block in reply")
        return DEFAULT_SAFE_DECISION

    @classmethod
    def from_config(cls, config: dict) -> SlowStartHeavyPolicy:
        return cls(str(config.get("start_delay_file", "")))


class BlockingPolicy(Policy):
    """Not ``cpu_heavy``, yet blocks the thread (``time.sleep``, as a synchronous HTTP client would) for
    ``seconds`` on a prompt containing ``block_loop``, then allows: a hook that never awaits."""

    def __init__(self, name: str = "Blocking", seconds: float = 1.0) -> None:
        super().__init__(name=name, description="blocks the event loop", authors="tests", url="")
        self.seconds = seconds

    def _block(self, prompt: str) -> Decision:
        import time

        if "block_loop" in prompt:
            time.sleep(self.seconds)
        return DEFAULT_SAFE_DECISION

    async def on_model_call(
        self, invocation_id: str, agent: Agent, model_name: str, system_instructions: str, prompt: str, media: list[Media]
    ) -> Decision:
        return self._block(prompt)

    @classmethod
    def from_config(cls, config: dict) -> BlockingPolicy:
        return cls(config.get("name", cls.__name__.removesuffix("Policy")), float(config.get("seconds", 1.0)))


class AwaitsBlockingPolicy(BlockingPolicy):
    """The same block, inside a helper the hook awaits (which never suspends either)."""

    async def _lookup(self, prompt: str) -> Decision:
        return self._block(prompt)

    async def on_model_call(
        self, invocation_id: str, agent: Agent, model_name: str, system_instructions: str, prompt: str, media: list[Media]
    ) -> Decision:
        return await self._lookup(prompt)


class SplittableBlockingPolicy(BlockingPolicy):
    """The same, asked piece by piece (a verdict cache is on by default): each piece's block fits in the
    deadline, all of them together do not."""

    splittable = True


class SplittableSlowStartHeavyPolicy(SlowStartHeavyPolicy):
    """The same, splittable: the engine sends it its pieces in batches (``decide_many``)."""

    splittable = True


class ThirdPartyRecorder(Policy):
    """A policy that cannot mask (no ``masking``), as a third-party one that sends what it reads to an outside
    service: records every text it is given on the request hooks, so a test can check it only ever read the
    masked view. Not splittable: asked about the whole view."""

    seen: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, name: str = "ThirdParty") -> None:
        super().__init__(name=name, description="records what it reads", authors="tests", url="")

    async def on_model_call(
        self, invocation_id: str, agent: Agent, model_name: str, system_instructions: str, prompt: str, media: list[Media]
    ) -> Decision:
        type(self).seen.append(("on_model_call", f"{system_instructions}\n{prompt}"))
        return DEFAULT_SAFE_DECISION

    async def on_tool_call(self, invocation_id: str, agent: Agent, tool: Any, args: dict) -> Decision:
        type(self).seen.append(("on_tool_call", repr(args)))
        return DEFAULT_SAFE_DECISION

    async def on_tool_response(self, invocation_id: str, agent: Agent, tool: Any, response: dict) -> Decision:
        type(self).seen.append(("on_tool_response", repr(response)))
        return DEFAULT_SAFE_DECISION

    @classmethod
    def from_config(cls, config: dict) -> ThirdPartyRecorder:
        return cls(config.get("name", cls.__name__))


class ShadowThirdPartyRecorder(ThirdPartyRecorder):
    """The same, with a record of its own: run as a shadow policy (``--shadow-policy-dir``)."""

    seen: ClassVar[list[tuple[str, str]]] = []
