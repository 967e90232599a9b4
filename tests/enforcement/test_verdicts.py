"""The verdict order (``capsem_proxyd/verdicts.py``): one ranking for the engine, OpenTelemetry and the pipeline."""

from __future__ import annotations

from capsem.models import Verdict
from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.verdicts import VerdictRank, rank, stricter

NAMES = ["ALLOW", "LOG", "REDACT", "CONFIRM", "CLARIFY", "REPLAN", "BLOCK"]
names = st.sampled_from([*NAMES, "SOMETHING_NEWER", ""])


def test_the_order_is_allow_log_redact_asking_block() -> None:
    assert [rank(name) for name in NAMES] == [0, 1, 2, 3, 3, 3, 4]
    assert VerdictRank.ALLOW < VerdictRank.LOG < VerdictRank.REDACT < VerdictRank.CONFIRM < VerdictRank.BLOCK
    assert VerdictRank.CLARIFY is VerdictRank.CONFIRM and VerdictRank.REPLAN is VerdictRank.CONFIRM


def test_every_capsem_verdict_has_a_rank_of_its_own_name() -> None:
    for verdict in Verdict:
        assert verdict.value in VerdictRank.__members__, verdict


def test_an_unknown_verdict_ranks_as_block() -> None:
    assert rank("SOMETHING_NEWER") is VerdictRank.BLOCK
    assert rank("") is VerdictRank.BLOCK
    assert stricter("CONFIRM", "SOMETHING_NEWER") == "SOMETHING_NEWER"


def test_only_the_asking_ranks_and_block_refuse() -> None:
    assert [name for name in NAMES if rank(name).refuses] == ["CONFIRM", "CLARIFY", "REPLAN", "BLOCK"]


@given(names, names)
def test_stricter_picks_the_higher_rank_and_the_first_of_equals(first: str, second: str) -> None:
    chosen = stricter(first, second)
    assert rank(chosen) == max(rank(first), rank(second))
    if rank(first) == rank(second):
        assert chosen == first


@given(names, names, names)
def test_stricter_is_associative_in_rank(a: str, b: str, c: str) -> None:
    assert rank(stricter(stricter(a, b), c)) == rank(stricter(a, stricter(b, c)))
