"""A policy's findings, checked against the text it read, as the spans a fold carries.

A masking policy answers with a ``MaskingDecision`` (``redaction/findings.py``):
positions in ``hook_text`` of the hook's arguments and the text it read there.
Before anything is masked the engine checks each one: a finding whose text is
not at its place (offsets computed on a folded or NFKC text, a bug, a policy
speaking another text) refuses the request under the policy's name (fail
closed: masking the wrong characters would forward the value). In a tool call's
arguments (JSON text in ``hook_text``) a finding may name the decoded string
at the raw characters that write it (``\\n`` for a newline). A finding inside
a placeholder is no finding (the grammar is allow-listed for every policy).
What goes on is a plain CAPSEM ``Decision``: the values never reach a recorder,
a log line, a cached decision's details or a client's error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from capsem.models import Decision, Reason, Verdict

from capsem_proxyd.enforcement.combining import Combined, Span, decided
from capsem_proxyd.enforcement.hook_calls import Invoke, asking
from capsem_proxyd.enforcement.pieces import Piece, Split
from capsem_proxyd.enforcement.verdict_cache import VerdictCache
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.redaction.findings import MaskingDecision, hook_text
from capsem_proxyd.redaction.placeholder import inside_placeholder

_DECISION_FIELDS = tuple(Decision.model_fields)


def result_of(decision: Decision, hook: str, args: tuple[Any, ...]) -> Combined:
    """``decision`` as a fold's result: with the spans to mask when it is a ``MaskingDecision``."""
    if not isinstance(decision, MaskingDecision):
        return decided(decision)
    plain = Decision.model_construct(**{name: getattr(decision, name) for name in _DECISION_FIELDS})
    if not decision.findings or not args:  # no arguments: a shadow evaluation, which masks nothing
        return decided(plain)
    text = hook_text(hook, args)
    spans: list[Span] = []
    for start, end, matched, kind in decision.findings:
        if not (0 <= start < end <= len(text)) or not _written_as(text[start:end], matched, hook):
            return decided(misplaced(decision, hook))
        if not inside_placeholder(text, start, end):
            spans.append(Span(start, end, kind, matched))
    return decided(plain, tuple(spans))


def _written_as(found: str, matched: str, hook: str) -> bool:
    """Whether ``found`` (the text at a finding's place) is ``matched``: as is, or, in a tool call's arguments
    (JSON in ``hook_text``), as JSON writes the string ``matched`` (a private key's newlines are ``\\n``
    there; what is masked, by value, is the string the client's JSON decodes to)."""
    if found == matched:
        return True
    return hook == "on_tool_call" and json.dumps(matched, ensure_ascii=False)[1:-1] == found


def misplaced(decision: Decision, hook: str) -> Decision:
    """The refusal of a policy whose finding is not where it said (never quoting either text)."""
    return Decision(
        policy=decision.policy, callback=hook, verdict=Verdict.BLOCK, reason=Reason.POLICY_VIOLATION,
        details="the policy asked to mask text that is not where it said; refused rather than masking the wrong "
                "characters",
    )


# -- the masked view ------------------------------------------------------------------------------
#
# Masking policies are asked first on every hook (the engine sorts them first); a policy that cannot mask
# (a third-party one, which may send what it reads to an outside service) is then given the hook's
# arguments with every value found so far in the request (on this hook and the hooks before it: tool
# results are checked before the prompt) and every value the tenant's memory knows replaced by the
# placeholder the forwarded body will carry: it never reads a value the proxy masks.

Mask = Callable[[str], str]


def masked_view(exchange: Exchange) -> Mask | None:
    """What masks a text as the forwarded body will be masked, or None when nothing is to be masked."""
    masker = exchange.masker
    if masker is None:
        return None
    findings: dict[str, str] = {}
    for value, kind, _, _ in exchange.redactions:
        findings.setdefault(value, kind)
    return masker.view(exchange.tenant_id, findings)


def masked_args(hook: str, args: tuple[Any, ...], mask: Mask) -> tuple[Any, ...]:
    """``args`` with the content's strings masked (``args`` itself when nothing changed): the prompt and
    system text, a tool result's content, a tool call's arguments. Names (of tools, models) are kept."""
    if hook == "on_model_call" and len(args) >= 5:
        system, prompt = mask(args[3]), mask(args[4])
        if system is args[3] and prompt is args[4]:
            return args
        return (*args[:3], system, prompt, *args[5:])
    if hook in ("on_tool_response", "on_tool_call") and len(args) >= 4:
        content = _masked_json(args[3], mask)
        return args if content is args[3] else (*args[:3], content, *args[4:])
    return args


def masked_split(split: Split, hook: str, mask: Mask, cache: VerdictCache) -> Split:
    """``split`` with each piece's arguments masked; a masked piece is known to the cache by what it was
    and what it became, so a decision on the masked text is never served for the client's text."""
    pieces: list[Piece] = []
    changed = False
    for piece in split.pieces:
        args = masked_args(hook, piece.args, mask)
        if args is piece.args:
            pieces.append(piece)
            continue
        changed = True
        digest = cache.digest(f"{piece.digest.hex()}\0masked\0{hook_text(hook, args)}")
        pieces.append(Piece(digest, args, piece.size))
    return Split(pieces, split.whole) if changed else split


def masked_call(
    exchange: Exchange, hook: str, invoke: Invoke, args: tuple[Any, ...], split: Split | None,
    cache: VerdictCache | None, *, whole: bool = True,
) -> tuple[Invoke, tuple[Any, ...], Split | None]:
    """The call as the policies that cannot mask are given it, once every masking policy on the hook has
    answered: its arguments (and pieces) with every value found so far, and every value the tenant's memory
    knows, replaced by its placeholder, as the forwarded body will have it; the call itself when nothing is
    to be masked. ``whole=False``: only the pieces are asked about from here on (every policy left is asked
    piece by piece), so the whole arguments are not masked (the call and arguments come back unmasked and
    must not be given to a policy): a turn's text is masked once, not twice."""
    mask = masked_view(exchange) if args else None
    if mask is None:
        return invoke, args, split
    if whole or split is None or cache is None:
        view_args = masked_args(hook, args, mask)
        invoke = invoke if view_args is args else asking(hook, view_args)
        args = view_args
    view_split = masked_split(split, hook, mask, cache) if split is not None and cache is not None else split
    return invoke, args, view_split


def _masked_json(value: Any, mask: Mask) -> Any:
    """A JSON value with its strings (not its keys) masked; the same object when nothing changed."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        items = {key: _masked_json(member, mask) for key, member in value.items()}
        return value if all(items[key] is value[key] for key in value) else items
    if isinstance(value, list):
        members = [_masked_json(member, mask) for member in value]
        return value if all(new is old for new, old in zip(members, value, strict=True)) else members
    return value
