"""Regexes of any width hold back exactly what could still become a match (``policies/pattern_holdback.py``).

The oracle is brute force with another engine: ``regex``'s partial matching
says whether ``text[i:]`` is the beginning of some match; what is held must
start at the first such ``i``. Through the real release path (``StreamPump``),
whatever the pattern and the cuts, the client never receives a character of
the first match. And the work is counted: DFA steps, linear in the text.
"""

from __future__ import annotations

import re
import string

import pytest
import regex
import trio
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from capsem_proxyd.policies.holdback import regex_width
from capsem_proxyd.policies.normalize import visible
from capsem_proxyd.policies.pattern_holdback import PatternDFA, Patterns, Untranslatable
from capsem_proxyd.policies.rules import RulesPolicy
from tests.policy.test_holdback import _set
from tests.proxy.test_release import Playbook
from tests.proxy.test_release import text as text_view
from tests.support.engines import engine
from tests.support.streams import chat_stream_through

ALPHABET = "ab@.-"


def _atoms() -> st.SearchStrategy[str]:
    literal = st.sampled_from(["a", "b", "@", r"\.", "-", "ab"])
    klass = st.sampled_from(["[ab]", "[a-b@]", "[^a]", "[^@.]", r"\w", r"\d", r"\s", r"\W", "."])
    return st.one_of(literal, klass)


def _patterns() -> st.SearchStrategy[str]:
    """A small grammar: literals, classes, * + ? {m,n}, alternation and groups."""

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        quantified = st.tuples(inner, st.sampled_from(["*", "+", "?", "{2}", "{1,3}", "{2,}", ""])).map(
            lambda pair: f"(?:{pair[0]}){pair[1]}")
        sequence = st.lists(quantified, min_size=1, max_size=3).map("".join)
        alternation = st.lists(sequence, min_size=2, max_size=3).map(lambda parts: "(?:" + "|".join(parts) + ")")
        return st.one_of(sequence, alternation)

    return st.recursive(_atoms(), extend, max_leaves=6)


def _oracle(pattern: str, text: str) -> int:
    """Characters of ``text``'s end from the first position where a match may still begin and be completed."""
    for start in range(len(text)):
        if regex.fullmatch(pattern, text[start:], partial=True) is not None:
            return len(text) - start
    return 0


def _cut(text: str, cuts: list[int]) -> list[str]:
    cuts = sorted(cut for cut in cuts if 0 < cut < len(text))
    return [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)]) if end > start]


@given(pattern=_patterns(), text=st.text(alphabet=ALPHABET + " x", max_size=30), cuts=st.lists(st.integers(1, 29)))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_what_is_held_is_the_earliest_start_of_a_pending_match(pattern: str, text: str, cuts: list[int]) -> None:
    """Any pattern of the grammar, any ASCII text, any cuts: held == the brute-force earliest live start;
    at least that when the text ends in a letter a combining mark still to come may change (``a`` → ``à``)."""
    try:
        tracker = Patterns([re.compile(pattern)]).tracker()
    except Untranslatable:  # nested repeats: the Rules policy holds them by their width or the cap
        assume(False)
        raise
    seen = ""
    for piece in _cut(text, cuts):
        seen += piece
        held, exact = tracker.feed(piece), _oracle(pattern, seen)
        if seen[-1] in "@.- ":  # nothing composes with these
            assert held == exact, (pattern, seen)
        else:
            assert held >= exact, (pattern, seen)


@given(data=st.data(), pattern=_patterns())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_split_of_a_stream_ever_delivers_a_character_of_the_first_match(data: st.DataObject, pattern: str) -> None:
    """Through the release path with the Rules policy: refused, and nothing of the first match went out."""
    compiled = re.compile(pattern, re.IGNORECASE)
    assume(compiled.search("") is None)  # a pattern that matches nothing-at-all matches every text
    match = data.draw(st.from_regex(compiled, fullmatch=True).filter(lambda found: 0 < len(found) < 20))
    noise = st.text(alphabet=ALPHABET + " xé\u0301\u200bＡ", max_size=20)
    text = data.draw(noise) + match + data.draw(noise)
    pieces = _cut(text, data.draw(st.lists(st.integers(1, len(text)), max_size=10)))
    rules = RulesPolicy.from_config({"on_model_response": {"block": [{"regex": pattern}]}})
    first = compiled.search(visible(text))
    # A combining mark after the match composes with it as the text is read ("a" + U+0301 reads "á"): no match.
    assume(first is not None)
    texts, raw = trio.run(chat_stream_through, pieces, engine(_set(rules)))
    received = "".join(texts)
    assert text.startswith(received)
    assert len(visible(received)) <= first.start(), (pattern, text, received)
    assert b"CAPSEM policy" in raw


@given(text=st.text(alphabet="0123456789 ,.;:!?\n", min_size=1, max_size=60), cuts=st.lists(st.integers(1, 59)))
@settings(max_examples=60, deadline=None)
def test_with_no_match_pending_nothing_is_held(text: str, cuts: list[int]) -> None:
    """An e-mail regex of unbounded width and text with no letter: every event goes as soon as it is checked
    (the release core, ``proxy/release.py``, with the Rules policy's declaration)."""
    rules = RulesPolicy.from_config({"on_model_response": {"block": [{"regex": r"[a-z]+@[a-z]+\.com"}]}})
    assert rules is not None
    play = Playbook(holdbacks=[("Rules", rules.stream_holdback)], refuse=lambda check: False)
    for number, piece in enumerate(_cut(text, cuts)):
        play.event(text_view(piece), str(number).encode())
        play.read_over()  # the upstream read is over: cheap checks run now
        assert play.written[-1:] == [str(number).encode()]  # out with the event that brought it


def test_an_address_being_written_is_held_from_its_first_letter() -> None:
    tracker = Patterns([re.compile(r"[a-z]+@[a-z]+\.com", re.IGNORECASE)]).tracker()
    assert tracker.feed("write to 12") == 0
    assert tracker.feed(" Bob") == 3
    assert tracker.feed("@exam") == len("Bob@exam")
    assert tracker.feed("ple, or") == len("or")  # the address ended without .com: only the next word may start one


def test_the_text_the_rules_regexes_read_is_the_visible_one() -> None:
    """Invisible characters and decomposed accents read as the regex sees them (``normalize.visible``)."""
    secret = Patterns([re.compile("secret-[a-z]+", re.IGNORECASE)])
    assert secret.held("say sec\u200bret") == len("sec\u200bret")
    assert secret.held("say ＳＥＣＲＥＴ-ab") == len("ＳＥＣＲＥＴ-ab")
    accent = Patterns([re.compile("café+x")])
    tracker = accent.tracker()
    assert tracker.feed("the cafe") == len("cafe")  # "cafe" + a combining acute to come is "café"
    assert tracker.feed("\u0301") == len("cafe\u0301")
    assert tracker.feed("e\u0301x!") == 0  # the match is whole (the check refuses it); nothing more can come


def _counted(pattern: str, text: str, piece: int) -> tuple[int, int]:
    """(DFA steps per character of ``text`` fed in pieces, what is held at its end)."""
    tracker = Patterns([re.compile(pattern, re.IGNORECASE)]).tracker()
    held = 0
    for start in range(0, len(text), piece):
        held = tracker.feed(text[start:start + piece])
    return tracker.steps / len(text), held


def test_the_work_is_linear_in_the_text_however_long_a_match_stays_pending() -> None:
    """A match pending for 16 kB, an address that never ends: DFA steps at most a constant times the text."""
    pem = "-----BEGIN PRIVATE KEY-----" + "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n" * 500
    per_char, held = _counted(r"-----BEGIN [A-Z ]+-----[A-Za-z0-9+/=\s]+-----END [A-Z ]+-----", pem, 7)
    assert held == len(pem) and per_char <= 8  # at most the live states per character, however long
    address = "x" * 16_000 + "@" + "y" * 16_000
    per_char, held = _counted(r"[a-z]+@[a-z]+\.com", address, 3)
    assert held == len(address) and per_char <= 8
    words = "word " * 4_000  # every word may begin an address: each is held only while it is the last
    per_char, held = _counted(r"[a-z]+@[a-z]+\.com", words, 5)
    assert held == 0 and per_char <= 8
    short, _ = _counted(r"[a-z]+@[a-z]+\.com", address[:1_000] + address[-1_000:], 3)
    assert abs(per_char - short) < 1  # the same per character on 2 kB as on 32 kB: linear, not quadratic


def test_a_run_of_marks_no_boundary_ends_is_held_without_reading_it_again() -> None:
    """``e`` and 16,000 combining marks fed one by one: held whole, and the work stays linear."""
    tracker = Patterns([re.compile("café+x")]).tracker()
    tracker.feed("the cafe")
    for _ in range(16_000):
        held = tracker.feed("\u0301")
    assert held == len("cafe") + 16_000
    assert tracker.steps <= 256 * 256  # the first 256 are read again with each one (a constant), then never
    assert tracker.feed(" done.") == 0


def test_a_declaration_pickles_for_the_policy_workers() -> None:
    import pickle

    patterns = Patterns([re.compile(r"[a-z]+@[a-z]+\.com")])
    again = pickle.loads(pickle.dumps(patterns))
    assert again.held("mail bob@ex") == len("bob@ex") and again.bound is None


def test_a_pattern_whose_dfa_explodes_falls_back_instead_of_stalling_the_start() -> None:
    """``(a|b)*a(a|b){16}`` needs 2^17 DFA states: without the build budget, interegular works for hours
    before the state count could refuse it, and ``check``/``start``/reload would hang with it."""
    from capsem_proxyd.policies.pattern_holdback import PatternDFA

    try:
        PatternDFA(re.compile(r"(a|b)*a(a|b){16}"))
    except Untranslatable as error:
        assert "to build" in str(error)
    else:
        raise AssertionError("an exponential DFA was built")
    assert PatternDFA(re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")).initial >= 0  # the budget leaves usual patterns be


def _pending_oracle(pattern: str, text: str) -> int:
    """Characters of ``text``'s end from the first position where a match may begin that more text must
    still complete (``regex``'s partial match: not a whole match yet)."""
    for start in range(len(text)):
        found = regex.fullmatch(pattern, text[start:], partial=True)
        if found is not None and found.partial:
            return len(text) - start
    return 0


@given(pattern=_patterns(), text=st.text(alphabet=ALPHABET + " x", max_size=30), cuts=st.lists(st.integers(1, 29)))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_a_widened_pattern_read_raw_holds_every_pending_match_and_no_more_than_its_width(
    pattern: str, text: str, cuts: list[int]
) -> None:
    """The PII policy's reading (``raw``, repeats inside repeats unbounded): whatever the pattern of the grammar
    (nested repeats included) and the cuts, at least every start of a match still to be completed is held, and
    never more than the pattern's widest match minus one when it has one."""
    compiled = re.compile(pattern)
    try:
        patterns = Patterns.of([PatternDFA(compiled, widened=True)], raw=True)
    except Untranslatable:
        assume(False)
        raise
    widest = regex_width(compiled)
    tracker = patterns.tracker()
    seen = ""
    for piece in _cut(text, cuts):
        seen += piece
        held = tracker.feed(piece)
        assert held >= _pending_oracle(pattern, seen), (pattern, seen)
        assert widest is None or held <= max(0, widest - 1), (pattern, seen, widest)


def test_nested_repeats_are_read_unbounded_only_when_widened() -> None:
    iban_like = re.compile(r"[A-Z]{2}[0-9]{2}(?:[ -]?[A-Z0-9]{4}){2,6}")
    with pytest.raises(Untranslatable, match="repeat inside a repeat"):
        PatternDFA(iban_like)
    tracker = Patterns.of([PatternDFA(iban_like, widened=True)], raw=True).tracker()
    assert tracker.feed("pay to DE89 3704") == len("DE89 3704")
    assert tracker.feed(" 0044 0532 0130 0099 8877 6655 4433") <= 42  # its widest match (43) minus one


def test_a_digit_class_under_ignorecase_takes_no_letter() -> None:
    """``\\d`` is a category: case folding gives it no letter (it used to take every letter, so every word
    was held for a pattern that starts with a digit)."""
    assert Patterns([re.compile(r"\d+-\d+", re.IGNORECASE)]).held("call me-") == 0
    assert Patterns([re.compile(r"\d+-\d+", re.IGNORECASE)]).held("call me at 12-") == len("12-")


def test_an_ascii_class_under_ignorecase_takes_exactly_what_re_takes() -> None:
    """Four non-ASCII letters match ASCII ones under IGNORECASE (U+0130, U+0131, U+017F, U+212A); the class of
    ``secret-[a-z]+``'s first letter is ``s``, ``S`` and ``ſ``, not every non-ASCII character, so a chunk
    that ends in ``e`` (which a mark still to come may make ``é``) is not held for it (it was, one chunk
    interval, for most chunks of prose)."""
    from capsem_proxyd.policies.pattern_holdback import _ASCII_FOLDS

    folding = re.compile("[a-zA-Z]", re.IGNORECASE).fullmatch
    assert {char for char in map(chr, range(128, 0x110000)) if folding(char)} == set(_ASCII_FOLDS)
    for char, letters in _ASCII_FOLDS.items():
        assert {letter for letter in string.ascii_letters if re.fullmatch(letter, char, re.IGNORECASE)} == letters
    tracker = Patterns([re.compile("secret-[a-z]+", re.IGNORECASE)]).tracker()
    assert [tracker.feed(piece) for piece in ("the ", "quick answe", "ſe", "cret-x", " done")] == [0, 0, 2, 8, 0]


# -- one start search for several DFAs (``StartIndex``): a quiet raw stream steps none ------------------------


def _stepped_everywhere(dfas: list[PatternDFA], pieces: list[str]) -> list[int]:
    """What a raw read holds after each piece when every DFA starts a thread at every character and steps it
    (no start search at all): the reference the combined search must answer exactly like."""
    from capsem_proxyd.policies.pattern_holdback import at_boundary

    threads: list[dict[int, int]] = [{} for _ in dfas]
    text, answers = "", []
    for piece in pieces:
        for char in piece:
            at = len(text)
            for index, dfa in enumerate(dfas):
                states = threads[index]
                if dfa.initial >= 0 and dfa.initial not in states and (
                        dfa.word_start is None or at_boundary(dfa.word_start, text[-1:], char)):
                    states[dfa.initial] = at
                symbol = dfa.symbols.get(char, dfa.other)
                moved: dict[int, int] = {}
                for state, begun in states.items():
                    target = dfa.step[state].get(symbol)
                    if target is not None and (target not in moved or begun < moved[target]):
                        moved[target] = begun
                threads[index] = moved
            text += char
        earliest = len(text)
        for dfa, states in zip(dfas, threads):
            if states:
                start = min(states.values())
                if dfa.widest is not None:
                    start = max(start, len(text) - dfa.widest + 1)
                earliest = min(earliest, start)
        answers.append(len(text) - earliest)
    return answers


def _raw_dfas(patterns: list[str]) -> list[PatternDFA]:
    dfas = []
    for pattern in patterns:
        try:
            dfas.append(PatternDFA(re.compile(pattern), widened=True))
        except Untranslatable:
            pass
    return dfas


@given(patterns=st.lists(st.tuples(st.sampled_from(["", r"\b"]), _patterns()).map("".join), min_size=1, max_size=4),
       text=st.text(alphabet=ALPHABET + " xé", max_size=30), start=st.integers(0, 30))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_the_combined_start_search_never_misses_a_start_a_patterns_own_search_finds(
    patterns: list[str], text: str, start: int
) -> None:
    """Whatever the patterns and the text: where any DFA's own start search (a first character, then a second
    or the end) finds a start, the combined search finds one no later, and that DFA is among the candidates it
    names from there (the reference test below checks that the pair searches skip no thread that matters)."""
    from capsem_proxyd.policies.pattern_holdback import StartIndex

    dfas = _raw_dfas(patterns)
    assume(dfas)
    index = StartIndex(dfas)
    start = min(start, len(text))
    combined = index.search(text, start)
    for number in range(len(dfas)):
        own = index.starts[number](text, start)
        if own is not None:
            assert combined is not None and combined.start() <= own.start(), (patterns, text)
            assert number in index.candidates(text, combined.start()), (patterns, text)


@given(patterns=st.lists(st.tuples(st.sampled_from(["", r"\b"]), _patterns()).map("".join), min_size=1, max_size=4),
       text=st.text(alphabet=ALPHABET + " x", max_size=30), cuts=st.lists(st.integers(1, 29)))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_several_patterns_read_raw_hold_exactly_what_stepping_every_dfa_everywhere_holds(
    patterns: list[str], text: str, cuts: list[int]
) -> None:
    """The raw tracker steps only the DFAs alive or able to begin a match in a piece; whatever the patterns
    (``\\b`` starts included) and the cuts, it holds what stepping every DFA from every character holds."""
    dfas = _raw_dfas(patterns)
    assume(dfas)
    pieces = _cut(text, cuts)
    tracker = Patterns.of(dfas, raw=True).tracker()
    assert [tracker.feed(piece) for piece in pieces] == _stepped_everywhere(dfas, pieces), (patterns, text)


@given(text=st.lists(st.sampled_from(["AKIA", "ghp_", "-----BEGIN ", "RSA PRIVATE KEY", "-----", "eyJ", "://u:",
                                      "p4ss@h", "xoxb-", "sk_live_", "tok007 ", " ", "\n", "Ab3_", "0123456789"]),
                     max_size=16).map("".join),
       cuts=st.lists(st.integers(1, 200), max_size=10))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_secrets_hold_back_holds_what_stepping_every_rule_everywhere_holds(text: str, cuts: list[int]) -> None:
    """The default Secrets rules' hold-back (thirty-odd DFAs behind one start search) on text made of their
    beginnings: the same answer, piece by piece, as every rule's DFA stepped from every character."""
    from capsem_proxyd.policies.secrets import SecretsPolicy

    patterns = SecretsPolicy().stream_holdback.parts[0]  # type: ignore[attr-defined]
    pieces = _cut(text, cuts)
    tracker = patterns.tracker()
    assert [tracker.feed(piece) for piece in pieces] == _stepped_everywhere(list(patterns.dfas), pieces), text


def test_a_quiet_stream_steps_no_secrets_rule() -> None:
    """Tokens with no character a rule begins with: one search per piece, no DFA stepped, nothing held."""
    from capsem_proxyd.policies.secrets import SecretsPolicy

    tracker = SecretsPolicy().stream_holdback.parts[0].tracker()  # type: ignore[attr-defined]
    for number in range(200):
        assert tracker.feed(f"tok{number:03d} ") == 0
    assert tracker.steps == 0 and not tracker.alive
    assert tracker.feed("Take AKIA") == len("AKIA") and tracker.alive
