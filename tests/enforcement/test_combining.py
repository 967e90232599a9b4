"""The decision step as a fold (``enforcement/combining.py``): no I/O, so plain decisions in, results out."""

from __future__ import annotations

from functools import reduce

from capsem.models import DEFAULT_SAFE_DECISION, Decision, Reason, Verdict
from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.enforcement.combining import NOTHING, Combined, Span, decided, fold
from capsem_proxyd.verdicts import rank, stricter


def decision(verdict: Verdict, details: str = "") -> Decision:
    return Decision(verdict=verdict, reason=Reason.POLICY_VIOLATION, details=details or verdict.value)


decisions = st.builds(decision, st.sampled_from(list(Verdict)), st.text(max_size=5))
spans = st.lists(st.builds(Span, st.integers(0, 50), st.integers(0, 50), st.sampled_from(["EMAIL", "KEY"])), max_size=2)
steps = st.one_of(decisions, st.builds(lambda d, s: decided(d, tuple(s)), decisions, spans))


def test_the_strictest_decision_wins_and_the_first_of_equals() -> None:
    first_log, block, second_log = decision(Verdict.LOG, "a"), decision(Verdict.BLOCK), decision(Verdict.LOG, "b")
    assert fold(fold(NOTHING, first_log), second_log).decision is first_log
    combined = reduce(fold, [first_log, block, second_log], NOTHING)
    assert combined.decision is block and combined.refusal is block


def test_the_verdict_that_lets_content_through_leaves_refusals_out() -> None:
    combined = reduce(fold, [decision(Verdict.LOG), decision(Verdict.CONFIRM), DEFAULT_SAFE_DECISION], NOTHING)
    assert combined.verdict == "LOG"
    assert combined.refusal is not None and combined.refusal.verdict is Verdict.CONFIRM
    allowed = fold(NOTHING, decision(Verdict.LOG))
    assert allowed.refusal is None and allowed.verdict == "LOG"


def test_a_verdict_without_a_decision_counts_only_as_a_verdict() -> None:
    """How a monitor-mode policy's refusal is counted: LOG, nothing refused."""
    combined = fold(fold(NOTHING, DEFAULT_SAFE_DECISION), Combined(verdict="LOG"))
    assert combined.decision is DEFAULT_SAFE_DECISION and combined.verdict == "LOG" and combined.refusal is None


def test_spans_are_gathered_in_the_order_folded() -> None:
    email, key = Span(0, 5, "EMAIL"), Span(9, 12, "KEY")
    combined = fold(fold(NOTHING, decided(decision(Verdict.LOG), (email,))), decided(DEFAULT_SAFE_DECISION, (key,)))
    assert combined.spans == (email, key)
    assert combined.verdict == "REDACT" and combined.refusal is None
    assert fold(NOTHING, decision(Verdict.BLOCK)).spans == ()


def test_the_shared_allow_is_one_shared_result() -> None:
    """What keeps a verdict cache entry as small as the decision it holds."""
    assert decided(DEFAULT_SAFE_DECISION) is decided(DEFAULT_SAFE_DECISION)
    assert decided(DEFAULT_SAFE_DECISION, (Span(0, 1, "X"),)) is not decided(DEFAULT_SAFE_DECISION)


@given(st.lists(steps, max_size=6))
def test_the_fold_keeps_the_first_strictest_decision_and_the_strictest_passing_verdict(
    sequence: list[Decision | Combined],
) -> None:
    combined = reduce(fold, sequence, NOTHING)
    made = [step if isinstance(step, Decision) else step.decision for step in sequence]
    if not made:
        assert combined == NOTHING
        return
    strictest = max(rank(item.verdict.value) for item in made)
    assert combined.decision is next(item for item in made if rank(item.verdict.value) == strictest)
    # a result with spans that lets the content through is masked: REDACT at least (issue 23)
    passing = [
        stricter(item.verdict.value, "REDACT") if isinstance(step, Combined) and step.spans else item.verdict.value
        for step, item in zip(sequence, made) if not rank(item.verdict.value).refuses
    ]
    assert combined.verdict == reduce(stricter, passing, "ALLOW")


@given(st.lists(steps, max_size=4), st.lists(steps, max_size=4))
def test_a_fold_of_folds_is_the_fold_of_all(left: list[Decision | Combined], right: list[Decision | Combined]) -> None:
    """Associative: a cached piece's result folds in as the decisions it was made from did."""
    assert fold(reduce(fold, left, NOTHING), reduce(fold, right, NOTHING)) == reduce(fold, [*left, *right], NOTHING)
