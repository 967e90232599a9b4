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
from typing import Any

from capsem.models import Decision, Reason, Verdict

from capsem_proxyd.enforcement.combining import Combined, Span, decided
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


def unmasked_reply(decision: Decision, hook: str) -> Decision:
    """The refusal of what a policy asked to mask in a reply (a tool call the model makes): replies are not
    masked yet, and letting it through would release the value."""
    return Decision(
        policy=decision.policy, callback=hook, verdict=Verdict.BLOCK, reason=decision.reason,
        details=f"{decision.details}; a reply is not masked, so it is refused" if decision.details
        else "a reply is not masked, so it is refused",
    )


def misplaced(decision: Decision, hook: str) -> Decision:
    """The refusal of a policy whose finding is not where it said (never quoting either text)."""
    return Decision(
        policy=decision.policy, callback=hook, verdict=Verdict.BLOCK, reason=Reason.POLICY_VIOLATION,
        details="the policy asked to mask text that is not where it said; refused rather than masking the wrong "
                "characters",
    )
