"""The policy engine: asks each policy, combines their decisions, records them.

Every policy is called on its own (``calling.py``) so that one that raises
or hangs refuses under its own name (fail closed) instead of taking the
others down, and so that each decision can be recorded. Decisions combine
strictest first (``verdicts.py``; the fold is ``combining.py``): BLOCK, then
CONFIRM/CLARIFY/REPLAN (refused unless ``--confirm-action allow``), then LOG
(allowed, recorded), then ALLOW.

What each policy is asked is ``hook_calls.py``'s business. Two ways to run a policy without letting it refuse:

* ``mode = "monitor"`` in its file: evaluated in line, every decision
  recorded; one that would have refused is logged and recorded as such
  (``mode="monitor"``) and the content goes on, counted as LOG — a dry run
  before enforcing.
* shadow policies (``--shadow-policy-dir``, ``shadow.py``): evaluated after
  the main decision, in the background.

Content in pieces: with a verdict cache (``--verdict-cache-size``, the
default), the policies that declare ``splittable = True``
(``policies/declarations.py``) are asked about a request's content piece by
piece (``pieces.py``), each piece only when the cache holds no decision of
theirs on it (``piece_decisions.py``); their decision on the hook is the
strictest over the pieces, recorded once with how many pieces came from
the cache. Other policies get the whole view, uncached. Replies are never
split or cached: their text is new every time, and streams are checked as
their text grows (the hold-back, ``holdbacks.py``), which a cache of
growing text could not serve. Where every policy checking replies declares the
terms it refuses them for (``reply_terms``), a stream's checks read only its new
text (``reply_screens``) and ask the policies only where a term is found, and
at the end of the stream.

Which engine a tenant's requests run under is ``tenants.py``'s business. Decisions
go to the ``Recorder`` the engine was built with; it knows nothing else of who listens.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from capsem.models import DEFAULT_SAFE_DECISION, Decision
from capsem.policies import Policy
from capsem.tools import Tool

from capsem_proxyd.config import DEFAULTS
from capsem_proxyd.enforcement import hook_calls
from capsem_proxyd.enforcement.calling import PolicyCaller
from capsem_proxyd.enforcement.combining import NOTHING, SAFE, Combined, attributed, fold
from capsem_proxyd.enforcement.documents import read_documents
from capsem_proxyd.enforcement.holdbacks import channel_screens, stream_holdbacks
from capsem_proxyd.enforcement.hook_calls import HookCall, Invoke
from capsem_proxyd.enforcement.loader import PolicySet
from capsem_proxyd.enforcement.masking import masked_call, masked_view, result_of
from capsem_proxyd.enforcement.piece_decisions import ONE_CACHED_ALLOW, decide_pieces
from capsem_proxyd.enforcement.pieces import SeamScans, Split, prompt_split, single_split
from capsem_proxyd.enforcement.shadow import ShadowRunner
from capsem_proxyd.enforcement.verdict_cache import VerdictCache
from capsem_proxyd.errors import policy_blocked
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.observe.recorders import CacheUse, Recorder
from capsem_proxyd.policies.declarations import masks, seam_width, splittable
from capsem_proxyd.verdicts import REFUSING_LEVEL, VerdictRank, rank, stricter
from capsem_proxyd.views import MediaPart, RequestView, ResponseView, ToolCall, ToolDefinition

log = logging.getLogger("capsem_proxyd.enforcement")
ALLOW_LEVEL = int(VerdictRank.ALLOW)
shadow_log = logging.getLogger("capsem_proxyd.shadow")
_MONITORED = Combined(verdict="LOG")  # a monitor-mode refusal: let through, counted as LOG


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
        # Policies that mask are asked first (issue 23; a stable sort: the configured order otherwise).
        self.policies: list[Policy] = sorted(policy_set.manager.policies, key=lambda policy: not masks(policy))
        self.masking = [masks(policy) for policy in self.policies]
        self.monitored = frozenset(name for name in policy_set.names if policy_set.mode_of(name) == "monitor")
        self.fail_open = frozenset(name for name in policy_set.names if policy_set.fails_open(name))
        self.recorder = recorder
        self.confirm_action = confirm_action
        self.policy_timeout = policy_timeout
        self.caller = PolicyCaller(policy_timeout, self.fail_open)
        self.shadow = shadow
        self.holdbacks = stream_holdbacks(self.policies, self.monitored, holdback_cap)
        # A stream's checks read only new text where every policy checking replies says what it refuses
        # them for (holdbacks.channel_screens); a shadow runner is started per check, so none with one.
        self.reply_screens = channel_screens(self.policies) if shadow is None else None
        # Pieces only pay when decisions on them are remembered: no cache, no splitting.
        self.cache = cache if cache is not None and cache.size > 0 else None
        self.split = [self.cache is not None and splittable(policy) for policy in self.policies]
        self.all_split = bool(self.policies) and all(self.split)  # a resent one-piece hook: ``_allowed_from_cache``
        self.seam_width = max(
            (seam_width(policy, holdback_cap) for policy, split in zip(self.policies, self.split) if split), default=0
        )
        self._salt = os.urandom(8)  # this engine's part of every cache key: another policy set never shares one
        self._scopes: dict[tuple[int, str], bytes] = {}  # a scope's bytes before the tenant's, per policy and hook
        self._seam_scans = SeamScans()  # each conversation's last seam scan, resumed by its next turn
        self._defined_tools: hook_calls.DefinedTools = {}  # the CAPSEM tools of definitions seen (hook_calls)

    @property
    def names(self) -> list[str]:
        return [policy.name for policy in self.policies]

    async def check_request(self, exchange: Exchange, view: RequestView) -> str:
        """All request-side hooks, in order; raises ProxyError(400) on a refusal.

        Returns the strictest verdict that let the request through (``ALLOW``,
        ``LOG``, or ``CONFIRM`` when confirmations are allowed), for the
        ``x-capsem-decision`` header.
        """
        verdict = "ALLOW"
        rid, agent = exchange.request_id, exchange.agent
        if view.documents:  # PDFs: their text joins the prompt or tool result before any hook reads it
            await read_documents(view, exchange.tenant_id)
        tools: dict[str, Tool] = {}
        for result in view.tool_results:
            verdict = stricter(verdict, await self._enforce(exchange, hook_calls.tool_response(rid, agent, result, tools)))
        if view.prompt or view.system or view.media:
            media = hook_calls.capsem_media(view.media)
            split = None
            if self.cache is not None:
                split = prompt_split(self.cache, self.seam_width, rid, agent, view, media, self._seam_scans,
                                     exchange.tenant_id)
            verdict = stricter(verdict, await self._enforce(exchange, hook_calls.model_call(rid, agent, view, media), split))
        for definition in view.tools:
            verdict = stricter(verdict, await self.check_tool_definition(exchange, definition))
        return verdict

    async def check_tool_definition(self, exchange: Exchange, definition: ToolDefinition) -> str:
        return await self._enforce(exchange, hook_calls.tool_definition(exchange.request_id, exchange.agent, definition,
                                                                        self._defined_tools))

    async def check_tool_call(self, exchange: Exchange, call: ToolCall) -> str:
        return await self._enforce(exchange, hook_calls.tool_call(exchange.request_id, exchange.agent, call))

    async def check_model_response(
        self, exchange: Exchange, text: str, thoughts: str, media: list[MediaPart] | None = None
    ) -> str:
        if not text and not thoughts and not media:
            return "ALLOW"
        return await self._enforce(
            exchange, hook_calls.model_response(exchange.request_id, exchange.agent, text, thoughts, media)
        )

    async def check_response(self, exchange: Exchange, view: ResponseView) -> str:
        """Response-side hooks for a complete reply: tool calls, then text."""
        verdict = "ALLOW"
        for call in view.tool_calls:
            verdict = stricter(verdict, await self.check_tool_call(exchange, call))
        return stricter(verdict, await self.check_model_response(exchange, view.text, view.thoughts, view.media))

    async def _enforce(self, exchange: Exchange, call: HookCall, split: Split | None = None) -> str:
        """``call`` put to every policy: the verdict that let the content through, or ProxyError(400)."""
        if split is None and self.cache is not None and call.identity is not None:
            split = single_split(self.cache, call.identity(), call.args)
        refusal, verdict = await self.evaluate(exchange, call.hook, call.invoke, split=split, args=call.args)
        if self.shadow is not None:  # shadow policies read the masked view too (the values found so far)
            self.shadow.start(exchange, call.hook, masked_call(exchange, call.hook, call.invoke, call.args, None, None)[0])
        if refusal is None:
            return verdict
        if refusal.verdict.value == "BLOCK" or self.confirm_action == "block":
            self.recorder.refused(exchange, call.hook, refusal)
            raise policy_blocked(refusal, call.what)
        return stricter(verdict, refusal.verdict.value)

    async def evaluate(
        self, exchange: Exchange, hook: str, invoke: Invoke, *, mode: str = "enforce", split: Split | None = None,
        args: tuple[Any, ...] = (),
    ) -> tuple[Decision | None, str]:
        """Call every policy: (the strictest refusing decision or None, the strictest verdict that let it through).

        ``mode="shadow"``: nothing refuses; would-be refusals are logged on ``capsem_proxyd.shadow``.
        ``split``: the content as pieces, for the policies that may be asked piece by piece.
        ``args``: the hook's arguments, which a masking policy's findings are checked against (``masking.py``);
        what enforcing policies ask to mask is added to ``exchange.redactions``.

        Masking policies come first; the others are given the masked view (``masking.masked_view``): the
        arguments with every value found so far, and every value the tenant's memory knows, replaced by
        its placeholder, as the forwarded body will have it.
        """
        combined = NOTHING
        shadow = mode == "shadow"
        started = time.perf_counter()
        if (split is not None and not shadow and self.all_split and split.whole is None and len(split.pieces) == 1
                and self._allowed_from_cache(exchange, hook, split.pieces[0].digest, args, mode, started)):
            return None, "ALLOW"
        viewed = False
        for index, policy in enumerate(self.policies):
            use: CacheUse | None = None
            if not viewed and not self.masking[index] and args and not shadow:
                viewed = True  # every masking policy has answered on this hook: the values are known
                # the whole arguments are masked only for a policy asked about them whole (else: its pieces)
                whole = split is None or not all(self.split[index:])
                invoke, args, split = masked_call(exchange, hook, invoke, args, split, self.cache, whole=whole)
            if split is not None and self.cache is not None and self.split[index]:
                scope = self._scope(index, hook, exchange)
                result, use = await decide_pieces(self.caller, self.cache, scope, exchange, hook, policy, split)
            else:
                decision, _ = await self.caller.call(exchange, hook, policy, invoke, shadow=shadow)
                result = result_of(decision, hook, args)
            combined = self._combine(combined, exchange, hook, policy, result, mode, use)
        if not shadow:
            self.recorder.policy_checked(hook, time.perf_counter() - started)
        return combined.refusal, combined.verdict

    def _allowed_from_cache(
        self, exchange: Exchange, hook: str, digest: bytes, args: tuple[Any, ...], mode: str, started: float
    ) -> bool:
        """A one-piece hook (a tool result or definition an agent resends) that every policy allowed before,
        answered with one look-up per policy and the same records as the walk below would make; False,
        having recorded nothing, for anything else (the walk then decides).

        An agent's turn resends dozens of them: each walk through masking, the pieces and the fold cost
        more than its look-ups. Exact only where the walk would come to the same: every policy is asked
        piece by piece (``split``), the cache holds CAPSEM's shared ALLOW (``SAFE``: no spans, no finding)
        for each, and nothing is to be masked in what the policies that cannot mask read (no masked view:
        their piece is the client's piece, known by the same digest)."""
        cache = self.cache
        assert cache is not None  # ``all_split`` holds only with a cache
        if args and masked_view(exchange) is not None:
            return False
        for index in range(len(self.policies)):
            if cache.get(cache.key(self._scope(index, hook, exchange), digest)) is not SAFE:
                return False
        for policy in self.policies:
            self.recorder.decision_made(exchange, hook, policy.name, DEFAULT_SAFE_DECISION, mode, ONE_CACHED_ALLOW)
        self.recorder.policy_checked(hook, time.perf_counter() - started)
        return True

    def _combine(
        self, combined: Combined, exchange: Exchange, hook: str, policy: Policy, result: Combined, mode: str,
        use: CacheUse | None,
    ) -> Combined:
        """Record one policy's result and fold it in, as its mode says (a shadow's and a monitored refusal's
        count for nothing but a monitored refusal's LOG)."""
        assert result.decision is not None
        decision = result.decision
        level = result.level  # the decision's rank as an int (``Combined``): this runs per policy per hook
        if level > ALLOW_LEVEL:
            decision = attributed(decision, policy.name, hook)
        monitor = level >= REFUSING_LEVEL and mode != "shadow" and policy.name in self.monitored
        # What an enforcing policy asks to mask is the request's before its decision is recorded: an audit
        # record with the prompt (--audit-prompts) leaves out the values known so far.
        masks = bool(result.spans) and mode != "shadow" and policy.name not in self.monitored
        if masks:
            exchange.redactions.extend((span.value, span.label, policy.name, hook) for span in result.spans)
        self.recorder.decision_made(exchange, hook, policy.name, decision, "monitor" if monitor else mode, use)
        if level == ALLOW_LEVEL and not masks:
            return combined
        if mode == "shadow":
            _log_unenforced(shadow_log, "shadow", exchange, decision)
            return combined
        if monitor:
            _log_unenforced(log, "monitor", exchange, decision)
            return fold(combined, _MONITORED)
        if result.spans and not masks:  # a dry run masks nothing: noted as what it is, a LOG
            _log_unenforced(log, "monitor", exchange, decision)
            return fold(combined, Combined(decision, "LOG"))
        return fold(combined, Combined(decision, result.verdict, result.spans))

    def _scope(self, index: int, hook: str, exchange: Exchange) -> bytes:
        """What a piece's cache key is scoped to: this engine, the policy's place in it, the hook, the tenant."""
        head = self._scopes.get((index, hook))
        if head is None:
            head = self._scopes[(index, hook)] = self._salt + index.to_bytes(2, "big") + hook.encode() + b"\0"
        return head + exchange.tenant_id.encode()


def _log_unenforced(logger: logging.Logger, role: str, exchange: Exchange, decision: Decision) -> None:
    """One line per decision that was recorded but not enforced (monitor or shadow)."""
    would = "would have refused" if rank(decision.verdict.value).refuses else "noted"
    fields = {
        "mode": role, "policy": decision.policy, "verdict": decision.verdict.value, "hook": decision.callback,
        "reason": decision.reason.value, "details": decision.details, "decision_id": decision.id,
        "request_id": exchange.request_id, "tenant_id": exchange.tenant_id,
    }
    logger.warning(
        "%s: policy %s %s (%s in %s, %s: %s) decision_id=%s request_id=%s tenant_id=%s",
        role, decision.policy, would, decision.verdict.value, decision.callback, decision.reason.value,
        decision.details, decision.id, exchange.request_id, exchange.tenant_id,
        extra={"event": f"policy {would}", "fields": fields},  # --log-format json: real fields
    )
