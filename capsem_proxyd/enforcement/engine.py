"""Turns views into CAPSEM hook calls and verdicts into actions.

Every policy is called on its own so that one that raises or hangs blocks the
request under its own name (fail closed) instead of taking the others down,
and so that each decision can be recorded. Verdicts combine strictest first:
BLOCK, then CONFIRM/CLARIFY/REPLAN (block by default), then LOG (allowed,
recorded), then ALLOW.

Two ways to run a policy without letting it refuse anything:

* ``mode = "monitor"`` in its file: evaluated in line, every decision
  recorded; one that would have refused is logged and recorded as such
  (``monitor=True``) and the request goes on — a dry run before enforcing.
* shadow policies (``--shadow-policy-dir``): a second folder evaluated on the
  same live traffic *after* the main decision, in a background task, so they
  add nothing to the client's latency and can never change a response; their
  would-be verdicts are logged on ``capsem_proxyd.shadow`` and recorded with
  ``shadow=True``.

Content in pieces: with a verdict cache (``--verdict-cache-size``, the
default), a request's content is checked by the policies that declare
``splittable = True`` (``policies/declarations.py``) piece by piece (each
message's text, each tool result, each tool definition, each media item, and
the seams between a prompt's pieces, ``split.py``), and a policy is asked
about a piece only when the cache holds no decision of its on exactly that
piece for that tenant (``verdict_cache.py``). Its decision on the hook is
the strictest over the pieces, recorded once as before, with how many pieces
came from the cache. Other policies get the whole view, uncached. Replies
are never split or cached: their text is new every time, and streams are
checked as their text grows (the hold-back), which a cache of growing text
could not serve.

Which engine a tenant's requests run under (profiles, allow-list) is
``enforcement/tenants.py``'s business. Decisions are told to the ``Recorder`` the
engine was built with (metrics, audit log); the engine knows nothing else
about who listens.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import uuid4

import orjson
import trio
from capsem.models import DEFAULT_SAFE_DECISION, Decision, Media, Reason, Verdict
from capsem.policies import Policy
from capsem.tools import Schema, Tool
from pydantic import ValidationError

from capsem_proxyd.config import DEFAULTS
from capsem_proxyd.enforcement.deadlines import hook_can_suspend
from capsem_proxyd.enforcement.holdbacks import stream_holdbacks
from capsem_proxyd.enforcement.loader import PolicySet
from capsem_proxyd.enforcement.pieces import Split, batches, prompt_split, single_split
from capsem_proxyd.enforcement.verdict_cache import VerdictCache
from capsem_proxyd.errors import policy_blocked
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.observe.recorders import CacheUse, Recorder
from capsem_proxyd.policies.declarations import seam_width, splittable
from capsem_proxyd.views import MediaPart, RequestView, ResponseView, ToolCall, ToolDefinition

log = logging.getLogger("capsem_proxyd.enforcement")
shadow_log = logging.getLogger("capsem_proxyd.shadow")

_STRICTNESS = {"BLOCK": 4, "CONFIRM": 3, "CLARIFY": 3, "REPLAN": 3, "LOG": 1, "ALLOW": 0}
# Shadow evaluations in flight at once; beyond it they are dropped (and counted), never queued
# on the client's path.
MAX_PENDING_SHADOW = 256
_NO_SCHEMA = Schema.model_construct()
# A hook call on one policy: the engine decides which policies, the caller what they are asked.
Invoke = Callable[[Policy], Awaitable[Decision]]
def capsem_tool(name: str, description: str = "", parameters: Any = None) -> Tool:
    """A CAPSEM ``Tool`` from whatever the client sent, never failing on odd schemas."""
    schema = _NO_SCHEMA
    if isinstance(parameters, dict) and parameters:
        try:
            schema = Schema.model_validate(parameters)
        except ValidationError:
            schema = _NO_SCHEMA
    return Tool.model_construct(
        name=name or "unknown",
        description=description or "No description provided",
        parameters=schema,
        returns=None,
        version=None,
        tags=None,
    )


class PolicyEngine:
    """Runs one policy set's policies; immutable, so a reload swaps whole engines.

    ``shadow`` (the ``--shadow-policy-dir`` runner, shared by every engine of
    a configuration) is started after each enforced decision.
    """

    def __init__(
        self,
        policy_set: PolicySet,
        *,
        recorder: Recorder,
        confirm_action: str,
        policy_timeout: float | None,
        shadow: ShadowRunner | None = None,
        holdback_cap: int = DEFAULTS.stream_holdback,
        cache: VerdictCache | None = None,
    ) -> None:
        self.policy_set = policy_set
        self.policies: list[Policy] = policy_set.manager.policies
        self.monitored = frozenset(name for name in policy_set.names if policy_set.mode_of(name) == "monitor")
        self.fail_open = frozenset(name for name in policy_set.names if policy_set.fails_open(name))
        self.recorder = recorder
        self.confirm_action = confirm_action
        self.policy_timeout = policy_timeout
        self.shadow = shadow
        self.holdbacks = stream_holdbacks(self.policies, self.monitored, holdback_cap)
        # Pieces only pay when decisions on them are remembered: no cache, no splitting.
        self.cache = cache if cache is not None and cache.size > 0 else None
        self.split = [self.cache is not None and splittable(policy) for policy in self.policies]
        self.seam_width = max(
            (seam_width(policy, holdback_cap) for policy, split in zip(self.policies, self.split) if split), default=0
        )
        self._salt = os.urandom(8)  # this engine's part of every cache key: another policy set never shares one

    def held(self, text: str) -> int:
        """Characters at the end of a checked reply text a stream must still hold: the most any
        enforcing policy needs (``policies/holdback.py``)."""
        if not text:
            return 0
        most = 0
        for _, holdback in self.holdbacks:
            held = holdback.held(text)
            if held > most:
                most = held
        return most


    @property
    def names(self) -> list[str]:
        return [policy.name for policy in self.policies]

    async def check_request(self, exchange: Exchange, view: RequestView) -> str:
        """All request-side hooks, in order; raises ProxyError(403) on a block.

        Returns the strictest verdict that let the request through (``ALLOW``,
        ``LOG``, or ``CONFIRM`` when confirmations are allowed), for the
        ``x-capsem-decision`` header.
        """
        outcome = "ALLOW"
        agent = exchange.agent
        rid = exchange.request_id
        for result in view.tool_results:
            tool = capsem_tool(result.name)
            response = {"content": result.content}
            invoke = _tool_response_call(rid, agent, tool, response)
            split = self._single(f"{result.name}\0{result.content}", (rid, agent, tool, response))
            outcome = stricter(outcome, await self._enforce(
                exchange, "on_tool_response", f"Tool result for '{result.name}'", invoke, split,
            ))
        if view.prompt or view.system or view.media:
            media = [Media(content=part.data, mime_type=part.mime_type) for part in view.media]
            outcome = stricter(outcome, await self._enforce(
                exchange,
                "on_model_call",
                "Prompt",
                lambda p: p.on_model_call(rid, agent, view.model, view.system, view.prompt, media),
                self._prompt_split(exchange, view, media),
            ))
        for definition in view.tools:
            outcome = stricter(outcome, await self.check_tool_definition(exchange, definition))
        return outcome

    def _single(self, identity: str, args: tuple[Any, ...]) -> Split | None:
        """Content that is one piece already (a tool result, a definition): cached whole."""
        return None if self.cache is None else single_split(self.cache, identity, args)

    def _prompt_split(self, exchange: Exchange, view: RequestView, media: list[Media]) -> Split | None:
        """The prompt as pieces (``split.prompt_split``), when decisions on pieces are remembered."""
        if self.cache is None:
            return None
        return prompt_split(self.cache, self.seam_width, exchange.request_id, exchange.agent, view, media)

    async def check_tool_definition(self, exchange: Exchange, definition: ToolDefinition) -> str:
        """A definition is checked as a call whose arguments are all the definition's other content
        (schema descriptions and property names, a grammar, an MCP server's description...)."""
        tool = capsem_tool(definition.name, definition.description, definition.parameters)
        rid, agent = exchange.request_id, exchange.agent
        arguments = {"definition": definition.content} if definition.content else {}
        invoke: Invoke = lambda p: p.on_tool_call(rid, agent, tool, arguments)  # noqa: E731
        split = None
        if self.cache is not None:
            identity = orjson.dumps(
                [definition.name, definition.description, definition.parameters, definition.content],
                default=str, option=orjson.OPT_SORT_KEYS,
            )
            split = self._single(identity.decode(), (rid, agent, tool, arguments))
        return await self._enforce(exchange, "on_tool_call", f"Tool definition '{definition.name}'", invoke, split)

    async def check_tool_call(self, exchange: Exchange, call: ToolCall) -> str:
        tool = capsem_tool(call.name)
        rid, agent = exchange.request_id, exchange.agent
        return await self._enforce(
            exchange,
            "on_tool_call",
            f"Tool call '{call.name}'",
            lambda p: p.on_tool_call(rid, agent, tool, call.arguments),
        )

    async def check_model_response(
        self, exchange: Exchange, text: str, thoughts: str, media: list[MediaPart] | None = None
    ) -> str:
        if not text and not thoughts and not media:
            return "ALLOW"
        rid, agent = exchange.request_id, exchange.agent
        parts = [Media(content=part.data, mime_type=part.mime_type) for part in media or ()]
        return await self._enforce(
            exchange,
            "on_model_response",
            "Model response",
            lambda p: p.on_model_response(rid, agent, text, thoughts, parts),
        )

    async def check_response(self, exchange: Exchange, view: ResponseView) -> str:
        """Response-side hooks for a complete reply: tool calls, then text."""
        outcome = "ALLOW"
        for call in view.tool_calls:
            outcome = stricter(outcome, await self.check_tool_call(exchange, call))
        return stricter(outcome, await self.check_model_response(exchange, view.text, view.thoughts, view.media))

    async def _enforce(self, exchange: Exchange, hook: str, what: str, invoke: Invoke, split: Split | None = None) -> str:
        refusal, outcome = await self.evaluate(exchange, hook, invoke, split=split)
        if self.shadow is not None:
            self.shadow.start(exchange, hook, invoke)
        if refusal is None:
            return outcome
        if refusal.verdict.value == "BLOCK" or self.confirm_action == "block":
            raise policy_blocked(refusal, what)
        return stricter(outcome, refusal.verdict.value)

    async def evaluate(
        self, exchange: Exchange, hook: str, invoke: Invoke, *, mode: str = "enforce", split: Split | None = None
    ) -> tuple[Decision | None, str]:
        """Call every policy: (the strictest refusing decision or None, the strictest verdict that did not refuse).

        ``mode="shadow"``: nothing refuses; would-be refusals are logged on ``capsem_proxyd.shadow``.
        ``split``: the content as pieces, for the policies that may be asked piece by piece.
        """
        strictest: Decision | None = None
        outcome = "ALLOW"
        shadow = mode == "shadow"
        started = time.perf_counter()
        for index, policy in enumerate(self.policies):
            use: CacheUse | None = None
            if split is not None and self.split[index]:
                decision, use = await self._decide_pieces(exchange, hook, index, policy, split)
            else:
                decision, _ = await self._call_policy(exchange, hook, policy, invoke, shadow=shadow)
            level = _STRICTNESS.get(decision.verdict.value, 4)
            if level:
                decision = _attributed(decision, policy.name, hook)
            monitor = level >= 3 and not shadow and policy.name in self.monitored
            self.recorder.decision_made(exchange, hook, policy.name, decision, "monitor" if monitor else mode, use)
            if not level:
                continue
            if shadow:
                _log_unenforced(shadow_log, "shadow", exchange, decision)
            elif monitor:
                _log_unenforced(log, "monitor", exchange, decision)
                outcome = stricter(outcome, "LOG")
            elif level >= 3:
                if strictest is None or level > _STRICTNESS[strictest.verdict.value]:
                    strictest = decision
            else:
                outcome = stricter(outcome, decision.verdict.value)
        if not shadow:
            self.recorder.policy_checked(hook, time.perf_counter() - started)
        return strictest, outcome

    async def _decide_pieces(
        self, exchange: Exchange, hook: str, index: int, policy: Policy, split: Split
    ) -> tuple[Decision, CacheUse]:
        """A splittable policy's decision on the hook: the strictest over the pieces, each from the
        cache when it holds one. Refusing pieces end the walk at the first BLOCK; failures and
        timeouts (the deadline covers all the pieces, as it covered the whole) are never cached."""
        cache = self.cache
        assert cache is not None
        strictest: Decision | None = None
        level = -1
        from_cache = False
        if split.whole is not None:
            whole = split.whole(policy)
            if whole is not None:
                level = _STRICTNESS.get(whole.verdict.value, 4)
                if level >= 3:  # refused as a whole: its pieces are not asked (nor cached under this model)
                    return whole, CacheUse(pieces=0, hits=0, cached=False)
                strictest = whole
        scope = self._salt + index.to_bytes(2, "big") + hook.encode() + b"\0" + exchange.tenant_id.encode()
        hits = asked = 0
        suspends = bool(self.policy_timeout) and hook_can_suspend(policy, hook)
        deadline = trio.move_on_after(self.policy_timeout) if suspends and self.policy_timeout else trio.CancelScope()
        batch = getattr(policy, "decide_many", None)
        with deadline:
            if callable(batch):  # a remote policy: the pieces it has not decided on, a batch per call
                keys = [cache.key(scope, piece.digest) for piece in split.pieces]
                found = [cache.get(key) for key in keys]
                missing = [number for number, decision in enumerate(found) if decision is None]
                try:
                    for start, stop in batches([split.pieces[number].size for number in missing]):
                        numbers = missing[start:stop]
                        decided = await batch(hook, [split.pieces[number].args for number in numbers])
                        for number, decision in zip(numbers, decided):
                            found[number] = decision
                            cache.put(keys[number], decision)
                        if len(decided) < len(numbers):
                            break  # it stopped at a BLOCK: what it did not decide is not needed
                except Exception as error:  # noqa: BLE001 - fail closed, as for a single call
                    return self._policy_failed(exchange, hook, policy, error), CacheUse(len(found), 0, False)
                for number, decision in enumerate(found):
                    if decision is None:
                        continue
                    cached = number not in missing
                    hits += cached
                    asked += 1
                    piece_level = _STRICTNESS.get(decision.verdict.value, 4)
                    if piece_level > level:
                        strictest, level, from_cache = decision, piece_level, cached
            else:
                for piece in split.pieces:
                    key = cache.key(scope, piece.digest)
                    decision = cache.get(key)
                    cached = decision is not None
                    if decision is None:
                        decision, genuine = await self._call_policy(exchange, hook, policy, _asking(hook, piece.args))
                        if not genuine:
                            return decision, CacheUse(pieces=asked + 1, hits=hits, cached=False)
                        cache.put(key, decision)
                    else:
                        hits += 1
                    asked += 1
                    piece_level = _STRICTNESS.get(decision.verdict.value, 4)
                    if piece_level > level:
                        strictest, level, from_cache = decision, piece_level, cached
                    if piece_level >= 4:
                        break
        if deadline.cancelled_caught:
            log.error(
                "policy %s timed out in %s after %ss over %d pieces; %s request_id=%s tenant_id=%s",
                policy.name, hook, self.policy_timeout, asked,
                "request allowed (fail_open = true)" if policy.name in self.fail_open else "request blocked (fail closed)",
                exchange.request_id, exchange.tenant_id,
            )
            failure = _failure_decision(
                policy.name, hook, f"policy timed out after {self.policy_timeout}s", policy.name in self.fail_open
            )
            return failure, CacheUse(pieces=asked, hits=hits, cached=False)
        if strictest is None:
            return DEFAULT_SAFE_DECISION, CacheUse(pieces=0, hits=0, cached=False)
        if level > 0 and from_cache:
            strictest = strictest.model_copy(update={"id": uuid4().hex[:12]})  # one decision id per use
        return strictest, CacheUse(pieces=asked, hits=hits, cached=from_cache if level > 0 else hits == asked)

    async def _call_policy(
        self, exchange: Exchange, hook: str, policy: Policy, invoke: Invoke, *, shadow: bool = False
    ) -> tuple[Decision, bool]:
        """The policy's decision, and whether it made one (False: it failed, timed out or returned none)."""
        logger, effect = (shadow_log, "shadow verdict BLOCK") if shadow else (log, "request blocked (fail closed)")
        fails_open = not shadow and policy.name in self.fail_open
        if fails_open:
            effect = "request allowed (fail_open = true)"
        try:
            if self.policy_timeout and hook_can_suspend(policy, hook):
                with trio.fail_after(self.policy_timeout):
                    decision = await invoke(policy)
            else:  # runs to its end in one step: no deadline could fire (see deadlines)
                decision = await invoke(policy)
        except trio.TooSlowError:
            logger.error(
                "policy %s timed out in %s after %ss; %s request_id=%s tenant_id=%s",
                policy.name, hook, self.policy_timeout, effect, exchange.request_id, exchange.tenant_id,
            )
            return _failure_decision(policy.name, hook, f"policy timed out after {self.policy_timeout}s", fails_open), False
        except Exception as error:  # noqa: BLE001 - fail closed on any policy failure
            return self._policy_failed(exchange, hook, policy, error, logger, effect, fails_open), False
        if not isinstance(decision, Decision):
            return _failure_decision(policy.name, hook, "policy returned no decision"), False
        return decision, True

    def _policy_failed(
        self, exchange: Exchange, hook: str, policy: Policy, error: Exception, logger: logging.Logger = log,
        effect: str = "", fails_open: bool | None = None,
    ) -> Decision:
        """The decision of a policy that raised: BLOCK (fail closed), or LOG where it fails open."""
        if fails_open is None:
            fails_open = policy.name in self.fail_open
            effect = "request allowed (fail_open = true)" if fails_open else "request blocked (fail closed)"
        logger.error(
            "policy %s raised in %s; %s request_id=%s tenant_id=%s",
            policy.name, hook, effect, exchange.request_id, exchange.tenant_id, exc_info=error,
        )
        return _failure_decision(policy.name, hook, f"policy raised {type(error).__name__}", fails_open)


class ShadowRunner:
    """Evaluates the shadow policies in the background, after each enforced decision.

    A trio system task needs no nursery handle, so the shadow run never holds
    up the request (nor its cancellation); a bounded number run at once and
    the rest are dropped and counted rather than slowing live traffic.
    """

    def __init__(self, engine: PolicyEngine) -> None:
        self.engine = engine
        self.pending = 0
        self.dropped = 0

    def start(self, exchange: Exchange, hook: str, invoke: Invoke) -> None:
        if self.pending >= MAX_PENDING_SHADOW:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                shadow_log.warning("shadow evaluation dropped (%d so far): too many in flight", self.dropped)
            return
        self.pending += 1
        trio.lowlevel.spawn_system_task(self._run, exchange, hook, invoke, name=f"capsem shadow {hook}")

    async def _run(self, exchange: Exchange, hook: str, invoke: Invoke) -> None:
        try:
            await self.engine.evaluate(exchange, hook, invoke, mode="shadow")
        except Exception:  # noqa: BLE001 - a shadow failure must never reach live traffic
            shadow_log.exception("shadow evaluation failed request_id=%s", exchange.request_id)
        finally:
            self.pending -= 1


def _asking(hook: str, args: tuple[Any, ...]) -> Invoke:
    """The call of ``hook`` with ``args`` on whichever policy is asked."""
    return lambda policy: getattr(policy, hook)(*args)


def _tool_response_call(rid: str, agent: Any, tool: Tool, response: dict[str, Any]) -> Invoke:
    return lambda p: p.on_tool_response(rid, agent, tool, response)


def stricter(first: str, second: str) -> str:
    """The stricter of two verdict names (``ALLOW`` < ``LOG`` < ``CONFIRM`` ... < ``BLOCK``)."""
    return first if _STRICTNESS.get(first, 4) >= _STRICTNESS.get(second, 4) else second


def _attributed(decision: Decision, policy_name: str, hook: str) -> Decision:
    """The decision named after the policy and hook that made it.

    A policy returning a shared constant (``DEFAULT_BLOCK_DECISION``) would
    otherwise hand every client the same decision id: such a decision gets a
    fresh one.
    """
    if decision.policy == policy_name and decision.callback == hook:
        return decision
    update: dict[str, Any] = {"policy": policy_name, "callback": hook}
    if decision.policy in ("", "unknown"):
        update["id"] = uuid4().hex[:12]
    return decision.model_copy(update=update)


def _log_unenforced(logger: logging.Logger, role: str, exchange: Exchange, decision: Decision) -> None:
    """One line per decision that was recorded but not enforced (monitor or shadow)."""
    would = "would have refused" if _STRICTNESS.get(decision.verdict.value, 4) >= 3 else "noted"
    logger.warning(
        "%s: policy %s %s (%s in %s, %s: %s) decision_id=%s request_id=%s tenant_id=%s",
        role, decision.policy, would, decision.verdict.value, decision.callback, decision.reason.value,
        decision.details, decision.id, exchange.request_id, exchange.tenant_id,
    )


def _failure_decision(policy_name: str, hook: str, details: str, fails_open: bool = False) -> Decision:
    """BLOCK (policies fail closed), or LOG for a policy whose file opted into ``fail_open``."""
    return Decision(
        policy=policy_name,
        callback=hook,
        verdict=Verdict.LOG if fails_open else Verdict.BLOCK,
        reason=Reason.POLICY_VIOLATION,
        details=f"{details}; allowed because the policy fails open" if fails_open
        else f"{details}; blocked because policies fail closed",
    )
