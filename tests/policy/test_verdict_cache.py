"""The verdict cache and checking in pieces, on the engine itself (the proxy's own tests: tests/e2e/test_verdict_cache.py).

The property that makes splitting safe: for every splittable policy, the
request is refused in pieces exactly when it is refused whole, wherever a
term lies (inside a piece, across the joint of two pieces, spread over
several short pieces, padded with invisible characters), and the pieces'
seams never find what the whole does not hold.
"""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import pytest
import trio
from capsem.manager import SecurityManager
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capsem_proxyd.config import DEFAULTS, declaration, declared
from capsem_proxyd.enforcement.combining import decided
from capsem_proxyd.enforcement.engine import PolicyEngine
from capsem_proxyd.enforcement.loader import PolicySet
from capsem_proxyd.enforcement.pieces import GROUP_CHARS, grouped, seams
from capsem_proxyd.enforcement.verdict_cache import VerdictCache
from capsem_proxyd.errors import ProxyError
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.observe.recorders import CacheUse, Recorder
from capsem_proxyd.policies.debug import DebugPolicy
from capsem_proxyd.policies.rules import RulesPolicy
from capsem_proxyd.views import RequestView, ToolResult
from tests.support import exchanges
from tests.support.policies import CountingPolicy, WholeCountingPolicy

README = Path(__file__).resolve().parents[2] / "README.md"

RULES = {
    "on_model_call": {
        "block": ["project falcon", {"name": "launch", "regex": r"launch\s{1,3}code\s{1,3}\d{4}"}],
        "log": [{"name": "wide", "regex": r"alpha[\s\S]{0,40}omega"}],
    },
}
WORDS = ["lorem", "ipsum", "42", "launch", "code", "1234", "capsem_", "block", "capsem_block", "project", "falcon",
         "ｃａｐｓｅｍ＿ｂｌｏｃｋ", "caps\u00adem_block", "alpha", "omega", "\u200b", "é", "ß", "x" * 30]


def policy_set(*policies: object) -> PolicySet:
    manager = SecurityManager()
    for policy in policies:
        manager.add_policy(policy)
    return PolicySet(manager=manager, source="test")


def make_engine(*policies: object, cache: VerdictCache | None = None, recorder: Recorder | None = None) -> PolicyEngine:
    return PolicyEngine(policy_set(*policies), recorder=recorder or Recorder(), confirm_action="block",
                        policy_timeout=5.0, cache=cache)


def exchange(tenant: str = "a" * 16) -> Exchange:
    return exchanges.exchange("openai", "chat", request_id="req_1", tenant_id=tenant)


def outcome(engine: PolicyEngine, view: RequestView, tenant: str = "a" * 16) -> str:
    async def check() -> str:
        try:
            return await engine.check_request(exchange(tenant), view)
        except ProxyError as error:
            assert error.decision is not None
            return f"refused by {error.decision.policy}"

    return trio.run(check)


def view_of(pieces: list[str], system_count: int = 0) -> RequestView:
    system, prompt = pieces[:system_count], pieces[system_count:]
    return RequestView(model="m", prompt="\n".join(prompt), prompt_pieces=prompt,
                       system="\n".join(system), system_pieces=system)


@st.composite
def cut_texts(draw: st.DrawFn) -> tuple[list[str], int]:
    """A text of words and separators, cut into pieces anywhere (a cut at a space takes the space's place,
    as a message boundary would), some of the first pieces being system instructions."""
    words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=14))
    separators = draw(st.lists(st.sampled_from([" ", "", "  ", "\u200b", " \u200b "]), min_size=len(words), max_size=len(words)))
    text = "".join(word + separator for word, separator in zip(words, separators))
    cuts = sorted(set(draw(st.lists(st.integers(0, max(0, len(text))), max_size=6))))
    pieces, start = [], 0
    for cut in [*cuts, len(text)]:
        piece = text[start:cut]
        start = cut + 1 if cut < len(text) and text[cut] == " " and draw(st.booleans()) else cut
        pieces.append(piece)
    pieces = [piece for piece in pieces if piece]
    if not pieces:
        pieces = ["lorem"]
    return pieces, draw(st.integers(0, len(pieces)))


SPLIT = make_engine(DebugPolicy(), RulesPolicy.from_config(RULES), WholeCountingPolicy(), cache=VerdictCache(10_000))
WHOLE = make_engine(DebugPolicy(), RulesPolicy.from_config(RULES))


@given(cut_texts())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_pieces_and_seams_refuse_exactly_what_the_whole_refuses(case: tuple[list[str], int]) -> None:
    pieces, system_count = case
    view = view_of(pieces, system_count)
    WholeCountingPolicy.seen.clear()
    assert outcome(SPLIT, view) == outcome(WHOLE, view), pieces
    # The policy that is not splittable was handed the whole texts, every time.
    assert WholeCountingPolicy.seen[-1] == ("on_model_call", f"{view.system}\n{view.prompt}" if view.system else view.prompt)


@pytest.mark.parametrize("filler", [1, 5, 200])
def test_a_term_spread_over_many_short_pieces_is_refused_through_the_seams(filler: int) -> None:
    words = ["x" * filler, "launch", "code", "1234", "y" * filler]
    assert outcome(SPLIT, view_of(words)) == outcome(WHOLE, view_of(words)) == "refused by Rules"
    padded = ["x" * filler, "launch" + "\u200b" * 300, "code", "\u200b" * 500 + "1234"]
    assert outcome(SPLIT, view_of(padded)) == outcome(WHOLE, view_of(padded)) == "refused by Rules"


def test_every_joint_lies_inside_a_seam_whose_sides_are_wide_enough() -> None:
    texts = ["a" * 10, "b" * 3, "c" * 500, "d", "e" * 70]
    found = seams(texts, 20)
    whole = "\n".join(texts)
    joints = [index for index, char in enumerate(whole) if char == "\n"]
    for joint in joints:
        window = whole[max(0, joint - 20): joint + 21]
        assert any(window in seam for seam in found), (joint, found)
    assert all(seam in whole for seam in found)
    assert seams(["only one"], 20) == []


class Uses(Recorder):
    def __init__(self) -> None:
        self.uses: list[tuple[str, str, CacheUse | None]] = []

    def decision_made(self, exchange, hook, policy, decision, mode, cache=None):  # type: ignore[no-untyped-def]
        self.uses.append((hook, policy, cache))


def test_a_piece_is_analysed_once_per_tenant_and_a_changed_piece_again() -> None:
    """Messages (each long enough to be a piece of its own, ``pieces.grouped``) analysed once per tenant."""
    CountingPolicy.seen.clear()
    uses = Uses()
    engine = make_engine(CountingPolicy(), cache=VerdictCache(1000), recorder=uses)
    view = view_of([long("system prompt"), long("first question"), long("first answer")], 1)
    view.tool_results = [ToolResult(name="read", content="file body")]
    assert outcome(engine, view) == "ALLOW"
    first = list(CountingPolicy.seen)
    assert ("on_model_call", long("first question")) in first and ("on_tool_response", "file body") in first
    assert outcome(engine, view) == "ALLOW"
    assert CountingPolicy.seen == first  # nothing analysed again
    assert uses.uses[-1][2] == CacheUse(pieces=len([s for s in first if s[0] == "on_model_call"]), hits=4, cached=True)

    grown = view_of([long("system prompt"), long("first question"), long("first answer"), long("second question")], 1)
    assert outcome(engine, grown) == "ALLOW"
    new = CountingPolicy.seen[len(first):]
    assert ("on_model_call", long("second question")) in new
    assert ("on_model_call", long("first question")) not in new and ("on_model_call", long("system prompt")) not in new

    # Another tenant sending the very same content gets it analysed for itself.
    before = len(CountingPolicy.seen)
    assert outcome(engine, view, tenant="b" * 16) == "ALLOW"
    assert len(CountingPolicy.seen) - before == len(first)


def long(text: str) -> str:
    """``text`` made a message's length: a piece of its own (``pieces.SHORT_TEXT``)."""
    return f"{text}, as long as a message an agent sends, long enough to be one piece of its own"


def test_short_texts_are_one_piece_with_the_text_after_them_and_a_new_turn_changes_no_earlier_piece() -> None:
    """A tool call's id, name, keys and values are joined to the message that follows them; the pieces
    before a new turn are the same, so a grown conversation is analysed only from where it grew."""
    turn = ["call_1", "read_file", "path", "src/module_1.py", long("step one")]
    assert grouped(turn) == ["\n".join(turn)]
    assert grouped([*turn, "x" * 5000, "y"]) == ["\n".join(turn), "x" * 5000, "y"]
    assert all(len(group) <= GROUP_CHARS + 64 for group in grouped(["z" * 60] * 100))
    CountingPolicy.seen.clear()
    engine = make_engine(CountingPolicy(), cache=VerdictCache(1000))
    assert outcome(engine, view_of([long("system prompt"), *turn], 1)) == "ALLOW"
    before = len(CountingPolicy.seen)
    second = ["call_2", "read_file", "path", "src/module_2.py", long("step two")]
    assert outcome(engine, view_of([long("system prompt"), *turn, *second], 1)) == "ALLOW"
    new = [text for hook, text in CountingPolicy.seen[before:] if hook == "on_model_call"]
    assert "\n".join(second) in new and not any(long("step one") in text and "call_2" not in text for text in new)


def test_a_refusal_from_the_cache_refuses_again_with_a_fresh_decision_id() -> None:
    uses = Uses()
    engine = make_engine(CountingPolicy(), cache=VerdictCache(1000), recorder=uses)
    view = view_of(["hello", "counting_block here"])
    ids = []
    for _ in range(2):
        with pytest.raises(ProxyError) as raised:
            trio.run(engine.check_request, exchange(), view)
        assert raised.value.decision is not None
        ids.append(raised.value.decision.id)
    assert ids[0] != ids[1]
    assert uses.uses[-1][2] is not None and uses.uses[-1][2].cached


def test_no_cache_means_whole_views() -> None:
    CountingPolicy.seen.clear()
    engine = make_engine(CountingPolicy(), cache=VerdictCache(0))
    outcome(engine, view_of(["one", "two"]))
    assert CountingPolicy.seen == [("on_model_call", "one\ntwo")]


def test_the_cache_stays_within_its_bound_under_a_stream_of_distinct_pieces() -> None:
    cache = VerdictCache(64)
    engine = make_engine(DebugPolicy(), RulesPolicy.from_config(RULES), cache=cache)
    for number in range(500):
        outcome(engine, view_of([f"piece {number}", f"other {number}"]))
        assert len(cache) <= 64
    # And what an entry costs at the default size, the number --help and the README state (one number).
    entries = DEFAULTS.verdict_cache_size
    big = VerdictCache(entries)
    from capsem.models import DEFAULT_SAFE_DECISION

    allowed = decided(DEFAULT_SAFE_DECISION)  # what the engine stores for a piece a policy allowed
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for number in range(entries):
            big.put(big.key(b"scope", big.digest(str(number))), allowed)
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / entries
    finally:
        tracemalloc.stop()
    help_text = next(declaration(item).help for item in declared() if item.name == "verdict_cache_size")
    stated = {int(n) for n in re.findall(r"about (\d+) bytes each", help_text)}
    stated |= {int(n) for n in re.findall(r"LRU[;,] ~(\d+) bytes each", README.read_text())}
    assert len(stated) == 1, stated  # --help and the README say the same
    assert abs(per_entry - stated.pop()) < 20, per_entry


def test_whole_prompt_rules_still_refuse_and_are_not_taken_from_piece_verdicts() -> None:
    rules = RulesPolicy.from_config({"max_prompt_chars": 20, "models": {"allow": ["gpt-*"]}})
    engine = make_engine(rules, cache=VerdictCache(1000))
    small = RequestView(model="gpt-4o", prompt="short\ntext", prompt_pieces=["short", "text"])
    assert outcome(engine, small) == "ALLOW"
    other_model = RequestView(model="claude", prompt="short\ntext", prompt_pieces=["short", "text"])
    assert outcome(engine, other_model) == "refused by Rules"
    big = RequestView(model="gpt-4o", prompt="short\ntext\n" + "y" * 30, prompt_pieces=["short", "text", "y" * 30])
    assert outcome(engine, big) == "refused by Rules"
    assert outcome(engine, small) == "ALLOW"


def test_either_keyed_hash_gives_digests_only_its_key_reproduces() -> None:
    from hashlib import blake2b, sha256

    from capsem_proxyd.enforcement import verdict_cache

    chosen = {type(VerdictCache(8)._keyed).__name__ for _ in range(3)}
    assert chosen <= {type(blake2b()).__name__, type(sha256()).__name__}
    for hasher in ("blake2b", "sha256"):
        secret = bytes(range(64))
        pick = {"blake2b": lambda s: blake2b(digest_size=16, key=s[:32]), "sha256": lambda s: sha256(s)}[hasher]
        one, other = VerdictCache(8), VerdictCache(8)
        one._keyed, other._keyed = pick(secret), pick(bytes(64))
        assert len(one.digest("text")) == verdict_cache.DIGEST_SIZE
        assert one.digest("text") == one.digest("text") != one.digest("text", b"seam\0")
        assert one.digest("text") != other.digest("text")  # another key, another digest
