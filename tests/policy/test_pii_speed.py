"""The PII policy's speed-ups change no result: its analyzer against Presidio's own, on random text.

``OfflinePIIPolicy`` computes spaCy's artifacts only when a match needs its
context words (and not at all for the entities of a pipeline that has no entity
recognizer), and runs the phone recognizer, per region, only around candidates
that can be a valid number of that region. The reference here is Presidio's
``PhoneRecognizer`` on the whole text with eagerly computed artifacts; both
must find the same entities, at the same places, with the same scores, on
random and code-like text holding numbers of every configured region, written
every way phonenumbers formats them.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytest.importorskip("presidio_analyzer", reason="the 'pii' extra is not installed")

import phonenumbers  # noqa: E402
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry  # noqa: E402
from presidio_analyzer.nlp_engine import SpacyNlpEngine  # noqa: E402
from presidio_analyzer.predefined_recognizers import PhoneRecognizer  # noqa: E402

from capsem_proxyd._compat.phonenumbers import phone_scan, phone_windows, region_prefilter  # noqa: E402
from capsem_proxyd.policies.pii import CandidatePhoneRecognizer, OfflinePIIPolicy  # noqa: E402

ENTITIES = {"EMAIL_ADDRESS": "BLOCK", "CREDIT_CARD": "BLOCK", "US_SSN": "BLOCK", "PHONE_NUMBER": "LOG",
            "IP_ADDRESS": "LOG", "IBAN_CODE": "BLOCK", "US_BANK_NUMBER": "LOG"}
POLICY = OfflinePIIPolicy.from_config({"entity_decisions": ENTITIES, "ner": False})
assert POLICY is not None
WORDS = ["call", "phone", "me", "at", "+1", "(650)", "253-0000", "650-253-0000", "+44 20 7946 0958", "020 7946 0958",
         "+49 30 901820", "030 901820", "2024-05-13", "12:30", ":45", "1234", "42", "x", "ext.", "4111 1111 1111 1111",
         "078-05-1120", "ssn", "jane@example.com", "10.0.0.1", "DE89 3704 0044 0532 0130 00", "tel:", "/", "-",
         "def", "handler_5678(timeout=30)", "rev 1a2b3c4d", "\n", "\t", "555", "0123456789", "+33 1 42 68 53 00"]

REGIONS = PhoneRecognizer.DEFAULT_SUPPORTED_REGIONS


def region_numbers() -> list[str]:
    """Example numbers of every configured region (and of a few more), each written every way phonenumbers
    writes it, plus the bare digits with its national prefix and its international prefix."""
    written = []
    for region in (*REGIONS, "IT", "JP", "AU", "AG", "GG"):
        for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE,
                     phonenumbers.PhoneNumberType.TOLL_FREE):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is None:
                continue
            for style in (phonenumbers.PhoneNumberFormat.NATIONAL, phonenumbers.PhoneNumberFormat.INTERNATIONAL,
                          phonenumbers.PhoneNumberFormat.E164, phonenumbers.PhoneNumberFormat.RFC3966):
                written.append(phonenumbers.format_number(number, style))
            national = phonenumbers.national_significant_number(number)
            written += [national, "0" + national, f"00{number.country_code}{national}", f"011 {number.country_code} "
                        f"{national}", f"{number.country_code}{national}"]
    return written


NUMBERS = region_numbers()
CODE = ["def", "handler_5678(timeout=30):", "# rev 1a2b3c4d,", "reviewed 2024-05-13", "x = f(a[3], 42)", "\n",
        "\t", "12:30:45", "id,amount,date\n", "1024,19.99,05/13/2024\n", "0x1f", "10.0.0.1:8080", "ext. 12", "/",
        "(", ")", "-", ".", ";", "%", "$", "€", "call", "phone", "tel:", "+", "0", "00", "1", "49", "0049", "=", "_"]


def reference() -> AnalyzerEngine:
    """Presidio as it comes: its phone recognizer, its artifacts computed for every text."""
    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": "blank:en"}])
    engine.nlp = POLICY.analyzer.nlp_engine.nlp  # the same blank pipeline (with its lemma component)
    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in POLICY.analyzer.registry.recognizers:
        if isinstance(recognizer, CandidatePhoneRecognizer):
            recognizer = PhoneRecognizer(context=recognizer.context, supported_regions=recognizer.supported_regions,
                                         leniency=recognizer.leniency)
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])


REFERENCE = reference()


def found(results: list[Any]) -> list[tuple[str, int, int, float]]:
    return sorted((result.entity_type, result.start, result.end, round(result.score, 6)) for result in results)


@given(st.lists(st.sampled_from(WORDS), max_size=30), st.lists(st.sampled_from([" ", "", ", ", "  "]), max_size=30))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_analyzer_finds_what_presidio_finds(words: list[str], separators: list[str]) -> None:
    text = "".join(word + (separators[index] if index < len(separators) else " ") for index, word in enumerate(words))
    ours = POLICY.analyze_text(text)
    theirs = REFERENCE.analyze(text=text, entities=list(ENTITIES), language="en", score_threshold=POLICY.score_threshold)
    assert found(ours) == found(theirs), text


@given(st.text(alphabet="0123456789 -+().:/x\nab", max_size=120))
@example("call 650-253-0000a or 650-253-0000 b")  # a letter right after a number: not a number
@example("at 2024-05-13 12:30:45 and 020 7946 0958:12")  # time stamps: the matcher reads past the candidate
@settings(max_examples=500, deadline=None)
def test_the_phone_recognizer_finds_what_presidio_finds_in_digit_soup(text: str) -> None:
    ours = CandidatePhoneRecognizer().analyze(text, ["PHONE_NUMBER"])
    theirs = PhoneRecognizer().analyze(text, ["PHONE_NUMBER"])
    assert found(ours) == found(theirs), text


def test_candidates_too_short_to_be_numbers_leave_nothing_to_scan() -> None:
    listing = "\n".join(f"{line:6d}\tx = f(a[{line % 7}], {line % 300})" for line in range(1, 200))
    assert phone_windows(listing, 4) == []
    assert phone_windows("call 650-253-0000 now", 4) == [(0, 20)]


@given(st.lists(st.sampled_from(NUMBERS + CODE), max_size=25), st.lists(st.sampled_from([" ", "", ", ", "\n", "/", "-"]),
                                                                      max_size=25))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_phone_recognizer_finds_what_presidio_finds_in_code_with_numbers_of_every_region(
        words: list[str], separators: list[str]) -> None:
    text = "".join(word + (separators[index] if index < len(separators) else " ") for index, word in enumerate(words))
    for leniency in (1, 2, 3):
        ours = CandidatePhoneRecognizer(leniency=leniency).analyze(text, ["PHONE_NUMBER"])
        theirs = PhoneRecognizer(leniency=leniency).analyze(text, ["PHONE_NUMBER"])
        assert found(ours) == found(theirs), (leniency, text)


@given(st.sampled_from(NUMBERS), st.sampled_from(CODE), st.sampled_from(CODE))
@settings(max_examples=150, deadline=None)
def test_the_analyzer_finds_every_region_s_numbers_as_presidio_does(number: str, before: str, after: str) -> None:
    text = f"{before} {number} {after} call me at {number}"
    ours = POLICY.analyze_text(text)
    theirs = REFERENCE.analyze(text=text, entities=list(ENTITIES), language="en", score_threshold=POLICY.score_threshold)
    assert found(ours) == found(theirs), text


def test_the_region_prefilter_passes_every_number_the_matcher_finds() -> None:
    """The pre-filter's promise, directly: no number phonenumbers finds for a region is in a candidate the
    pre-filter turned away for that region."""
    text = " | ".join(NUMBERS)
    for region in REGIONS:
        prefilter = region_prefilter(region)
        assert prefilter.filters, region  # every default region gets one
        found_spans = [(match.start, match.end) for match in phonenumbers.PhoneNumberMatcher(text, region)]
        assert found_spans, region
        for start, end in found_spans:
            holders = [candidate for candidate in phone_scan(text, 1)
                       if candidate.start < end and start < candidate.start + len(candidate.text)]
            assert any(prefilter.could_match(candidate.text) for candidate in holders), (region, text[start:end])


def test_the_region_prefilter_turns_away_code_for_the_regions_it_cannot_be_a_number_of() -> None:
    assert not region_prefilter("US").could_match("2024-09-04")
    assert not region_prefilter("GB").could_match("6468")
    assert region_prefilter("US").could_match("650-253-0000")
    assert region_prefilter("US").could_match("+49 30 901820")  # a plus sign: any country
    assert region_prefilter("US").could_match("011 49 30 901820")  # its international prefix: any country
    assert region_prefilter("US").could_match("1-800-FLOWERS")  # letters: the parse decides


# -- context words, looked for around each match only (``LocalTokens``) ----------------------------------------

CONTEXT_WORDS = ["phone", "Phone:", "number", "numbered", "call", "tel:", "ssn", "ssn:", "card", "credit", "ip", "zip",
                 "the", "be", "me", "at", "-PRON-", "a:b", "phone:number", ":", "::", "-", ".", ",", "(", ")", "’",
                 "can't", ":)", "U.S.", "e.g.", "https://example.com/a:b", "Mr.", "'s", "\"", "x"]
SEPARATORS = [" ", "", "  ", "\n", "\n\n", "\t", " \n ", "\u00a0", "\u2003", ":", " - "]


@pytest.mark.parametrize(("block", "everywhere"), [(1, 100.0), (7, 100.0), (2048, 100.0), (1, 0.0), (1, float("inf"))])
@given(words=st.lists(st.sampled_from(WORDS + CONTEXT_WORDS + NUMBERS[:40]), max_size=40),
       separators=st.lists(st.sampled_from(SEPARATORS), max_size=40))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_context_words_raise_the_scores_presidio_raises(block: int, everywhere: float, words: list[str],
                                                        separators: list[str]) -> None:
    """The lemmas around each match come from the blocks of text around it, each tokenized on its own: the
    same scores as Presidio's, whose tokens are the whole text's. Whether the context words count as everywhere
    (``ContextReach.EVERYWHERE``: inf, whenever one is heard, every line and match taken as reached; 0, never)
    changes nothing."""
    from capsem_proxyd._compat.presidio import ContextReach, LocalTokens

    text = "".join(word + (separators[index] if index < len(separators) else " ") for index, word in enumerate(words))
    default, LocalTokens.BLOCK = LocalTokens.BLOCK, block
    dense, ContextReach.EVERYWHERE = ContextReach.EVERYWHERE, everywhere
    try:
        ours = POLICY.analyze_text(text)
    finally:
        LocalTokens.BLOCK = default
        ContextReach.EVERYWHERE = dense
    theirs = REFERENCE.analyze(text=text, entities=list(ENTITIES), language="en", score_threshold=POLICY.score_threshold)
    assert found(ours) == found(theirs), text


@given(st.lists(st.sampled_from(CONTEXT_WORDS + WORDS), min_size=1, max_size=30),
       st.lists(st.sampled_from(SEPARATORS), max_size=30), st.integers(1, 40))
@settings(max_examples=300, deadline=None)
def test_the_tokens_of_the_blocks_are_the_whole_text_s_tokens(words: list[str], separators: list[str],
                                                              block: int) -> None:
    from capsem_proxyd._compat.presidio import LocalTokens

    text = "".join(word + (separators[index] if index < len(separators) else " ") for index, word in enumerate(words))
    engine = POLICY.analyzer.nlp_engine
    default, LocalTokens.BLOCK = LocalTokens.BLOCK, block
    try:
        local = LocalTokens(text, engine, "en")
    finally:
        LocalTokens.BLOCK = default
    tokens = [token for index in range(len(local.cuts) - 1) for token in local.block(index)]
    assert tokens == [(token.idx, token.idx + len(token), token.lower_) for token in engine.nlp["en"](text)], text
    keywords = set(REFERENCE.nlp_engine.process_text(text, "en").keywords)
    for _, _, lemma in tokens:
        assert local.is_keyword(lemma) == (lemma.lower() in keywords), lemma


# -- the corpora the bench measures (bench/pii_corpora.py): parts of each, against Presidio -------------------

def _corpus_parts() -> list[tuple[str, str]]:
    from bench import pii_corpora

    agent = pii_corpora.agent_text()
    digits = pii_corpora.digit_text(60_000, seed=11)
    context = pii_corpora.context_text(30_000, seed=13)
    return [("agent", agent[:6000]), ("agent", agent[100_000:106_000]),
            *(("digits", digits[start:start + 6000]) for start in range(0, 60_000, 6000)),
            *(("context", context[start:start + 6000]) for start in range(0, 30_000, 6000))]


@pytest.mark.parametrize(("corpus", "text"), _corpus_parts())
def test_the_analyzer_finds_what_presidio_finds_in_the_bench_corpora(corpus: str, text: str) -> None:
    """At the policy's threshold, and at none (every finding, its score raised by context words or not)."""
    from capsem_proxyd._compat.presidio import ContextReach

    reach = ContextReach(text, text.lower(), 5, 0, POLICY.analyzer.nlp_engine, "en")
    # The context corpus is the one where the phone recognizer's words are everywhere (no line or match bounded
    # before its walk): its parts test that path, the others the bounded one.
    assert reach.everywhere(["phone", "number", "telephone", "cell", "cellphone", "mobile", "call"]) == (
        corpus == "context")
    ours = POLICY.analyze_text(text)
    theirs = REFERENCE.analyze(text=text, entities=list(ENTITIES), language="en", score_threshold=POLICY.score_threshold)
    assert found(ours) == found(theirs)
    ours = POLICY.analyzer.analyze(text=text, entities=list(ENTITIES), language="en", score_threshold=0)
    theirs = REFERENCE.analyze(text=text, entities=list(ENTITIES), language="en", score_threshold=0)
    assert found(ours) == found(theirs)
    if corpus == "digits":  # the corpus holds numbers, some with a context word
        assert {0.4, 0.75} <= {round(result.score, 2) for result in theirs if result.entity_type == "PHONE_NUMBER"}
    if corpus == "context":  # a context word on every line: most numbers raised
        scores = [round(result.score, 2) for result in theirs if result.entity_type == "PHONE_NUMBER"]
        assert scores.count(0.75) > 100 and scores.count(0.75) > 4 * scores.count(0.4), scores


def test_context_words_are_everywhere_by_how_often_they_are_heard_not_by_lines() -> None:
    """``ContextReach.everywhere``: one occurrence on a long line (a JSON body) is not everywhere; one every 50
    characters is, on one line or many; a word inside a span that gives no keyword ("call", a stop word) is not heard."""
    from capsem_proxyd._compat.presidio import ContextReach, LocalTokens

    def everywhere(text: str, words: list[str]) -> bool:
        local = LocalTokens(text, POLICY.analyzer.nlp_engine, "en")
        return ContextReach(text, text.lower(), 5, 0, POLICY.analyzer.nlp_engine, "en",
                            silent=local.silent).everywhere(words)

    row = "id 4821 phone +44 121 234 5678 due 2024 ok; "  # 45 characters
    assert everywhere(row * 200, ["Phone", "cell"]) and everywhere((row + "\n") * 200, ["phone"])
    assert not everywhere("phone " + "x" * 10_000, ["phone"])
    assert not everywhere(row.replace("phone", "call") * 200, ["call"])  # a stop word alone: no keyword
    assert everywhere(row.replace("phone", "callme") * 200, ["call"])


@given(st.lists(st.sampled_from(CONTEXT_WORDS + WORDS[:12] + ["callme", "phone,+44", "cellphone", "x" * 30]),
                max_size=40), st.lists(st.sampled_from(SEPARATORS), max_size=40),
       st.lists(st.sampled_from(["phone", "Cell", "call", "number", "", "x"]), min_size=1, max_size=4),
       st.sampled_from([100.0, 0.0, float("inf"), 1.0, 3.0, 7.5, 12.0, 40.0, -1.0]), st.booleans())
@example(["phone"] * 4, [" "] * 4, ["phone"], 6.0, False)  # 4 heard in 24 characters: exactly one every 6
@settings(max_examples=300, deadline=None)
def test_context_words_are_everywhere_and_held_as_every_occurrence_heard_says(
        words: list[str], separators: list[str], context: list[str], everywhere: float, holds_first: bool) -> None:
    """``ContextReach.everywhere`` and ``holds_none`` stop counting the occurrences heard once they have enough to
    answer: the same answers as from every occurrence heard (``_occurrences`` of each word, all of them), whichever
    is asked first, and every occurrence still there for a later question."""
    from capsem_proxyd._compat.presidio import ContextReach, LocalTokens

    text = "".join(word + (separators[index] if index < len(separators) else " ") for index, word in enumerate(words))

    def reach() -> ContextReach:
        local = LocalTokens(text, POLICY.analyzer.nlp_engine, "en")
        return ContextReach(text, text.lower(), 5, 0, POLICY.analyzer.nlp_engine, "en", silent=local.silent)

    dense, ContextReach.EVERYWHERE = ContextReach.EVERYWHERE, everywhere
    try:
        whole = reach()
        heard = {word.lower(): whole._occurrences(word.lower()) for word in context if word}
        count = sum(len(found) for found in heard.values())
        usable = whole.usable and all(context)  # (else neither counts: not everywhere, and may hold one)
        expected_everywhere = usable and bool(count) and len(text) <= everywhere * count
        expected_none = usable and not count
        ours = reach()
        if holds_first:
            assert ours.holds_none(context) == expected_none, text
        assert ours.everywhere(context) == expected_everywhere, (text, count)
        assert ours.holds_none(context) == expected_none, text
        assert {word: ours._occurrences(word) for word in heard} == heard, text
    finally:
        ContextReach.EVERYWHERE = dense


# -- results no context word can lift to the threshold, dropped before enhancement (``PruningAnalyzerEngine``) ----

@given(st.lists(st.sampled_from(WORDS + CONTEXT_WORDS + NUMBERS[:40] + ["12345678", "bank", "account 123456789",
                                                                          "078051120", "ip"]), max_size=30),
       st.lists(st.sampled_from(SEPARATORS), max_size=30),
       st.sampled_from([0.01, 0.05, 0.3, 0.39, 0.4, 0.41, 0.5, 0.6, 0.75, 0.76, 0.95, 1.0]))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_analyzer_finds_what_presidio_finds_at_any_threshold(words: list[str], separators: list[str],
                                                                   threshold: float) -> None:
    text = "".join(word + (separators[index] if index < len(separators) else " ") for index, word in enumerate(words))
    ours = POLICY.analyzer.analyze(text=text, entities=list(ENTITIES), language="en", score_threshold=threshold)
    theirs = REFERENCE.analyze(text=text, entities=list(ENTITIES), language="en", score_threshold=threshold)
    assert found(ours) == found(theirs), (threshold, text)


# -- where the words around a match can be, told without spaCy (``ContextReach``) -------------------------------

@given(st.lists(st.sampled_from(CONTEXT_WORDS + WORDS + NUMBERS[:40] + ["12:30", "a1:b2", "x9"]), min_size=1,
                max_size=40),
       st.lists(st.sampled_from(SEPARATORS), max_size=40), st.integers(0, 3), st.integers(0, 2))
@settings(max_examples=200, deadline=None)
def test_no_context_word_near_a_match_means_none_in_the_words_presidio_reads(
        words: list[str], separators: list[str], prefix: int, suffix: int) -> None:
    """Wherever a match starts, ``ContextReach.may_find`` says no only when no context word is part of a
    word Presidio's enhancer reads around it (its own walk over spaCy's tokens of the whole text)."""
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    from capsem_proxyd._compat.presidio import ContextReach

    text = "".join(word + (separators[index] if index < len(separators) else " ") for index, word in enumerate(words))
    artifacts = REFERENCE.nlp_engine.process_text(text, "en")
    enhancer = LemmaContextAwareEnhancer(context_prefix_count=prefix, context_suffix_count=suffix)
    context = ["phone", "call", "number", "ssn", "card", "ip", "1", "0", "x"]
    reach = ContextReach(text, text.lower(), prefix, suffix, POLICY.analyzer.nlp_engine, "en")
    for start in range(len(text)):
        if reach.may_find(start, context):
            continue
        near = enhancer._extract_surrounding_words(artifacts, "w", start)
        assert not [word for word in context if any(word in lemma for lemma in near)], (start, near, text)


SHARED = CandidatePhoneRecognizer()  # its decisions remembered from one example to the next


@given(st.lists(st.sampled_from(NUMBERS + CODE), max_size=25), st.lists(st.sampled_from([" ", "", ", ", "\n", "/", "-"]),
                                                                      max_size=25))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_phone_recognizer_that_remembers_finds_what_presidio_finds_text_after_text(
        words: list[str], separators: list[str]) -> None:
    text = "".join(word + (separators[index] if index < len(separators) else " ") for index, word in enumerate(words))
    ours = SHARED.analyze(text, ["PHONE_NUMBER"])
    theirs = PhoneRecognizer().analyze(text, ["PHONE_NUMBER"])
    assert found(ours) == found(theirs), text


def explained(results: list[Any]) -> list[tuple[int, int, str]]:
    return sorted((result.start, result.end, result.analysis_explanation.textual_explanation) for result in results)


@given(st.lists(st.sampled_from(NUMBERS[::3] + ["call", "+", "(", "x", "2024-05-13"]), min_size=1, max_size=14),
       st.lists(st.sampled_from([" ", ", ", "; ", "\n", " or "]), max_size=14))
@example(["+44 20 7946 0958", "(201) 555-0123", "+49 30 901820", "+44 20 7946 0958", "030 901820"], [" "] * 5)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_phone_recognizer_explains_each_number_as_presidio_does(numbers: list[str], separators: list[str]
                                                                   ) -> None:
    """``PhoneRecognizer.analyze`` names in a result's explanation the region of the number it parses with no
    region, or, when that parse fails (no plus sign), the one named last before it in the same region's loop:
    a number found again in a later region (``settled``, left out of that region's list) still names it."""
    text = "".join(number + (separators[index] if index < len(separators) else " ")
                   for index, number in enumerate(numbers))
    ours = SHARED.analyze(text, ["PHONE_NUMBER"])
    theirs = PhoneRecognizer().analyze(text, ["PHONE_NUMBER"])
    assert explained(ours) == explained(theirs), text


@given(st.sampled_from(["", "0", "00", "011", "1", "44", "49", "972", "91", "55", "33", "0049", "01", "0033", "90",
                        "9014", "018", "0180020", "1800", "+"]),
       st.text(alphabet="0123456789", min_size=1, max_size=16))
@settings(max_examples=400, deadline=None)
def test_one_run_of_digits_is_turned_away_at_once_only_when_every_region_turns_it_away(lead: str,
                                                                                    rest: str) -> None:
    """A candidate that is one run of digits: the all-regions screen (``any_region_prefilter``) is asked first,
    for every region at once; the sieve's verdicts are every region's own."""
    from capsem_proxyd._compat.phonenumbers import RegionSieve

    candidate = lead + rest
    regions = [*REGIONS, "IT", "JP", "AU", "AG", "GG"]
    sieve = RegionSieve(regions)
    assert sieve._any_region is not None or not all(region_prefilter(region).filters for region in regions)
    verdicts = tuple(region_prefilter(region).could_match(candidate) for region in regions)
    assert sieve.regions_of(candidate) == (verdicts if any(verdicts) else None), candidate


# -- numbers of every region in logs, CSV and code, with near misses (issue 22: PII at 1 MB/s) --------------------

NEAR_MISSES = ["2024-05-13", "13/05/2024", "2024.05.13", "05/13/2024 12:30", "2024-05-13T12:30:45.123Z", "12:30:45",
               "1715603445", "1715603445123", "1.2.3", "v10.4.12", "3.11.7", "192.168.10.254", "10.0.0.1:8080",
               "[12345]", "pid=4242", "bytes=10485760", "0x7fff5fbff8a8", "123456789012345678901234", "00000000",
               "1,234,567.89", "-42", "(2)", "§ 12-3", "ISBN 978-3-16-148410-0", "50%", "$1234.50", "€ 12 34",
               "4111 1111 1111 1111", "078-05-1120", "DE89 3704 0044 0532 0130 00", "fe80::1%eth0", "::1",
               "2001:db8::8a2e:370:7334", "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "::ffff:192.168.1.1",
               "64:ff9b::192.0.2.33", "1BoatSLRHtKNngkdXEeobR76b53LETtpyT", "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
               "123456789", "12345678901234", "078051120", "req=3fa9c2 10.1.2.3", "id=ab7 030 901820", "a650-253-0000",
               "%650 253 0000", "$030 901820", "é030 901820"]
FIELD_SEPARATORS = [",", " ", "\n", "; ", "=", ": ", "|", "\t", " - ", "/", " / ", ".", "", "(", ")", " x ", ":"]


@st.composite
def digit_heavy_text(draw: st.DrawFn) -> str:
    """Log-, CSV- and code-like text holding numbers of every configured region (as written, with a digit
    more or less, run into a near miss) among dates, versions, addresses, time stamps and long runs."""
    fields = []
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.integers(0, 4))
        if kind == 0:
            field = draw(st.sampled_from(NUMBERS))
        elif kind == 1:
            field = draw(st.sampled_from(NEAR_MISSES))
        elif kind == 2:  # a number with a digit added or dropped at either end
            number = draw(st.sampled_from(NUMBERS))
            digit = draw(st.sampled_from("0123456789"))
            field = draw(st.sampled_from([number + digit, digit + number, number[1:], number[:-1]]))
        elif kind == 3:
            field = draw(st.sampled_from(CODE + WORDS))
        else:  # a number run into a near miss
            field = draw(st.sampled_from(NUMBERS)) + draw(st.sampled_from(["-", ".", ":", "", " ", "/"])) + draw(
                st.sampled_from(NEAR_MISSES))
        fields.append(field + draw(st.sampled_from(FIELD_SEPARATORS)))
    return "".join(fields)


@given(digit_heavy_text())
@example("650-253-0000 - 12345 030 901820")  # a number found inside a candidate: the search goes on from it
@example("+44 20 7946 0958 - 2024-05-13 +49 30 901820")
@example("(650) 253-0000 (020 7946 0958) 1234")
@example("call 020 7946 0958 / x 12 and 030 901820")
@example("req=3fa9c2 10.1.2.3 id=ab030 901820 a650-253-0000 %650 253 0000 \u20ac030 901820 x(650) 253-0000")
@example("req=3fa9c5 650 253 0000 tel.030 901820 b+49 30 901820 z0049 30 901820")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_phone_recognizer_finds_what_presidio_finds_in_logs_csv_and_code(text: str) -> None:
    for leniency in (1, 2):
        ours = CandidatePhoneRecognizer(leniency=leniency).analyze(text, ["PHONE_NUMBER"])
        theirs = PhoneRecognizer(leniency=leniency).analyze(text, ["PHONE_NUMBER"])
        assert found(ours) == found(theirs), (leniency, text)


@given(digit_heavy_text())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_analyzer_finds_what_presidio_finds_in_logs_csv_and_code(text: str) -> None:
    ours = POLICY.analyzer.analyze(text=text, entities=list(ENTITIES), language="en", score_threshold=0)
    theirs = REFERENCE.analyze(text=text, entities=list(ENTITIES), language="en", score_threshold=0)
    assert found(ours) == found(theirs), text
    ours = POLICY.analyze_text(text)
    theirs = REFERENCE.analyze(text=text, entities=list(ENTITIES), language="en", score_threshold=POLICY.score_threshold)
    assert found(ours) == found(theirs), text


@given(st.lists(st.tuples(st.text(alphabet="0123456789", min_size=1, max_size=20),
                          st.text(alphabet=" \t\n\r", max_size=4)), min_size=1, max_size=12),
       st.sampled_from(["", "call ", "x ", "+"]))
@settings(max_examples=200, deadline=None)
def test_runs_of_digits_are_tokenized_as_spacy_tokenizes_them(runs: list[tuple[str, str]], lead: str) -> None:
    """``LocalTokens._digits_block``: a block of digits and whitespace, told without spaCy, and its keywords."""
    from capsem_proxyd._compat.presidio import LocalTokens

    text = lead + "".join(digits + (space or " ") for digits, space in runs)
    engine = POLICY.analyzer.nlp_engine
    local = LocalTokens(text, engine, "en")
    tokens = [token for index in range(len(local.cuts) - 1) for token in local.block(index)]
    assert tokens == [(token.idx, token.idx + len(token), token.lower_) for token in engine.nlp["en"](text)], text
    keywords = set(REFERENCE.nlp_engine.process_text(text, "en").keywords)
    for _, _, lemma in tokens:
        assert local.is_keyword(lemma) == (lemma.lower() in keywords), lemma


@given(st.lists(st.tuples(st.sampled_from(["", "0", "00", "011", "1", "44", "49", "972", "91", "55", "33", "90"]),
                          st.text(alphabet="0123456789", min_size=1, max_size=6)), min_size=2, max_size=5),
       st.lists(st.sampled_from([" ", "-", ".", " - ", "/", "(", ") "]), min_size=4, max_size=4), st.booleans())
@settings(max_examples=300, deadline=None)
def test_the_all_regions_screen_turns_away_only_what_every_region_turns_away(
        runs: list[tuple[str, str]], separators: list[str], after_letter: bool) -> None:
    """``any_region_prefilter``: one search for every region before each region's own check."""
    from capsem_proxyd._compat.phonenumbers import DigitShape, RegionSieve

    candidate = separators[0].join(lead + rest for lead, rest in runs[:2]) + "".join(
        separator + lead + rest for separator, (lead, rest) in zip(separators[1:], runs[2:], strict=False))
    regions = list(REGIONS)
    sieve = RegionSieve(regions)
    assert sieve._any_region is not None
    shape = DigitShape(candidate, after_letter=after_letter)
    verdicts = [region_prefilter(region).plain_could_match(shape) for region in regions]
    assert sieve._plain_verdicts(shape) == tuple(verdicts), candidate


@given(st.sampled_from(["", "0", "00", "011", "1", "44", "49", "972", "91", "55", "33", "90", "0180", "1800"]),
       st.text(alphabet="0123456789", max_size=26), st.integers(0, 6), st.integers(0, 6),
       st.sampled_from([tuple(REGIONS), ("US", "DE"), ("IT", "JP", "AU", "GB"), ("GB", "BR", "IN", "FR")]))
@example("", "12345", 0, 0, tuple(REGIONS))  # 5 digits: only Germany's numbers can be that long
@example("49", "30901820", 0, 0, tuple(REGIONS))
@example("1", "6502530000", 0, 0, tuple(REGIONS))
@settings(max_examples=400, deadline=None)
def test_the_screen_for_a_length_matches_where_the_whole_screen_matches(
        lead: str, rest: str, start: int, cut: int, regions: tuple[str, ...]) -> None:
    """``length_screen``: the all-regions national screen with only the regions whose part can be that many
    digits long (``RegionPrefilter.screened_lengths``) matches a part exactly where the whole one does."""
    from capsem_proxyd._compat.phonenumbers import RegionSieve, any_region_prefilter, length_screen

    digits = lead + rest
    start = min(start, len(digits))
    end = max(start, len(digits) - cut)
    distinct = RegionSieve(list(regions))._screened_regions
    whole = any_region_prefilter(distinct)
    assert whole is not None
    screen = length_screen(distinct, end - start)
    assert (whole[1].match(digits, start, end) is not None) == (
        screen is not None and screen.match(digits, start, end) is not None), (digits, start, end)
    if end - start == 5 and distinct == RegionSieve(list(REGIONS))._screened_regions:
        assert screen is not None and screen is not whole[1] and "US" not in [
            region for region in distinct if region_prefilter(region).near_a_raw_start() in screen.pattern]


@given(st.lists(st.sampled_from(NUMBERS[::2] + CODE + ["req=3fa9c2 10.1.2.3", "[12345", "58.618", "10.23.193.169",
                                                   "q1 8005550123", "$650-253-0000", "é020 7946 0958"]),
                max_size=20),
       st.lists(st.sampled_from([" ", "", ", ", "\n", "a", "€"]), max_size=20),
       st.sampled_from([REGIONS, ("US", "DE"), ("IT", "JP", "AU", "GB")]))
@settings(max_examples=200, deadline=None)
def test_a_scan_s_verdicts_are_each_candidate_s_regions(words: list[str], separators: list[str],
                                                        regions: tuple[str, ...]) -> None:
    """``RegionSieve.verdicts``, one loop over a scan with its shortcuts (the character before a candidate, digits
    alone screened in one match), says for each candidate what ``regions_of`` says of it, asked one at a time
    with ``letter_before``; text after text (one sieve)."""
    from capsem_proxyd._compat.phonenumbers import RegionSieve, letter_before

    text = "".join(word + (separators[index] if index < len(separators) else " ") for index, word in enumerate(words))
    scan = phone_scan(text, 4, long_only=True)
    one_by_one = RegionSieve(list(regions))
    expected = [one_by_one.regions_of(candidate.text, letter_before(text, candidate.start, candidate.text))
                for candidate in scan]
    sieve = VERDICT_SIEVES.setdefault(regions, RegionSieve(list(regions)))
    assert sieve.verdicts(text, scan) == expected, text


VERDICT_SIEVES: dict = {}


@given(st.sampled_from(NUMBERS), st.sampled_from(["", "0", "1", "00", "011", "90", "014", "0 21 ", "9021", "180020",
                                                  "0180020", "44", "49 ", "1-", "0-"]),
       st.sampled_from(["", "0", "9", "12", "-1", " 42", ".5"]), st.sampled_from(["", "-", " ", ".", "/", ") "]),
       st.booleans())
@settings(max_examples=500, deadline=None)
def test_the_region_prefilter_passes_every_number_the_matcher_finds_in_a_mutated_candidate(
        number: str, lead: str, tail: str, separator: str, after_letter: bool) -> None:
    """The pre-filter's promise on numbers of every region written with a national prefix, a carrier code, an
    international prefix or a country code before them, a digit more at the end, separators changed, or run
    into a letter: wherever the matcher finds a number of a region in the candidate, the sieve lets the
    candidate through for that region (the screen, the length and start bounds included)."""
    from capsem_proxyd._compat.phonenumbers import RegionSieve, letter_before

    body = number.replace(" ", separator) if separator else number
    text = ("a" if after_letter else "") + lead + body + tail
    regions = [*REGIONS, "IT", "JP", "AU", "AG", "GG"]
    sieve = RegionSieve(regions)
    scan = phone_scan(text, 1)
    verdicts = [sieve.regions_of(candidate.text, letter_before(text, candidate.start, candidate.text))
                for candidate in scan]
    for index, region in enumerate(regions):
        for match in phonenumbers.PhoneNumberMatcher(text, region):
            assert any(wanted is not None and wanted[index] for candidate, wanted in zip(scan, verdicts, strict=True)
                       if candidate.start < match.end and match.start < candidate.start + len(candidate.text)), (
                region, text, match.raw_string)


# -- spans spaCy keeps whole, tokenized without it; context words in spans that give no keyword ----------------

SPAN_ALPHABET = "ab0123456789+-().,:;/=@'\"%$#_xyzCALLcall\u00e9"


@given(st.one_of(st.text(alphabet=SPAN_ALPHABET + "!?[]{}<>*&^|~`\\kmspMSTdnt", min_size=1, max_size=20),
                 st.lists(st.sampled_from(["tel:", "+49", "-", "30", "123456", ";", ",", "(02)", "1234", "05/13/2024",
                                           "8803.87", "x", "ext.", "n't", "'s", "a.m.", ":)", "km", "$", "%", "http://",
                                           "www.", "example.com", "U.S.", "e.g.", "...", "'", '"', "(", ")"]),
                          min_size=1, max_size=8).map("".join)))
@example("tel:+49-1512-3456789")
@example("591471,9976.93,04/05/2024,909835668,tel:+49-30-123456")
@example("+15062345678;")
@example("2345-6789;")
@settings(max_examples=500, deadline=None)
def test_spans_are_cut_at_their_affixes_as_spacy_cuts_them(span: str) -> None:
    """``AffixTokenizer``: spaCy's prefix, suffix and infix splitting of one span, in Python; where it answers
    (no special case may apply), its tokens are spaCy's."""
    from capsem_proxyd._compat.presidio import AffixTokenizer

    if not span.isascii() or not span.strip() or any(char.isspace() for char in span):
        return
    tokenizer = POLICY.analyzer.nlp_engine.nlp["en"].tokenizer
    ours = AffixTokenizer(tokenizer).tokens(span)
    if ours is not None:
        assert ours == [token.text for token in tokenizer(span)], span
    if span in ("tel:+49-1512-3456789", "+15062345678;", "2345-6789;"):
        assert ours is not None


SUFFIX_PIECES = ["...", "..", ".", "km", "m", "kg", "'s", "n't", "%", "°C", "°", "mph", "$", "€", ")", "'", '"', ",",
                 ";", "a.m.", "x", "0", "12", "ab", "\n", "-", "’", "!", "?", ":", "…", "—", "(", "ß", "km²", "اكواب"]


@given(st.one_of(st.text(alphabet=SPAN_ALPHABET + ".…\n’°", max_size=24),
                 st.lists(st.sampled_from(SUFFIX_PIECES), max_size=10).map("".join)))
@example("691000,phone,tel:+39-312-345-6789,3992.88,08/19/2024,717078099")
@example("a....")  # a run of dots from before the last five characters: the run branch's match
@example("12km")
@example("3اكواب")  # a digit, then the widest bounded branch's word (Arabic "cups": 5 characters)
@example("..\n")
@settings(max_examples=1000, deadline=None)
def test_the_suffix_search_near_the_end_finds_what_spacy_s_search_finds(string: str) -> None:
    """``EndAnchoredSearch`` on spaCy's suffix pattern (the one it speeds up: its shape is read, not given up on):
    the same match as the pattern's own ``search`` over the whole string, or none as it finds none."""
    from capsem_proxyd._compat.presidio import EndAnchoredSearch

    search = POLICY.analyzer.nlp_engine.nlp["en"].tokenizer.suffix_search
    near_end = EndAnchoredSearch(search)
    assert near_end.pattern is not None and near_end.width >= 1 and near_end.runs == [(".", 2)]
    ours, theirs = near_end(string), search(string)
    assert (ours and ours.span()) == (theirs and theirs.span()), string


@pytest.mark.parametrize(("pattern", "shape"), [
    (r"(?<=[0-9])km$|\.\.+$|ab$", (2, [(".", 2)])),
    (r"xx{2,}$|\bq$", (1, [("x", 3)])),
    (r"(?<=\w)xx{2,}$|\bq$", None),  # a run after a lookbehind: not the one other shape
    (r"a+$", None),  # a repeat alone: not the shape read (refused, searched as it is)
    (r"ab+$|c$", None),  # an unbounded branch of another shape: searched as it is
    (r"a$b|c$", None),  # a branch going on after its $
    (r"(?:a$|b$)c?", None),
])
def test_patterns_of_other_shapes_are_searched_as_they_are(pattern: str, shape: Any) -> None:
    import re

    from capsem_proxyd._compat.presidio import EndAnchoredSearch

    compiled = re.compile(pattern)
    near_end = EndAnchoredSearch(compiled.search)
    assert (None if near_end.pattern is None else (near_end.width, near_end.runs)) == shape
    for string in ["", "a", "aaaa", "12km", "1km", "x..", "...", "xxxxx", "9xxx", "wxx", "q", "a q", "abbb", "c",
                   "cab", "abc", "b", "ab\n", "zzzzzzz...", "zzzzzzab", "a\nb"]:
        ours, theirs = near_end(string), compiled.search(string)
        assert (ours and ours.span()) == (theirs and theirs.span()), (pattern, string)
    assert EndAnchoredSearch(re.compile("A+$", re.IGNORECASE).search).pattern is None  # "a" is another case of it


@given(st.lists(st.tuples(st.text(alphabet=SPAN_ALPHABET, min_size=1, max_size=16),
                          st.text(alphabet=" \t\n\r", max_size=3)), min_size=1, max_size=12))
@settings(max_examples=300, deadline=None)
def test_spans_spacy_keeps_whole_are_tokenized_as_spacy_tokenizes_them(spans: list[tuple[str, str]]) -> None:
    """``LocalTokens._plain_block``: a span no special case, prefix, suffix or infix applies to, and its
    whitespace, told without spaCy: the same tokens, lemmas and keywords as spaCy's over the whole text."""
    from capsem_proxyd._compat.presidio import LocalTokens

    text = "".join(span + (space or " ") for span, space in spans)
    engine = POLICY.analyzer.nlp_engine
    local = LocalTokens(text, engine, "en")
    tokens = [token for index in range(len(local.cuts) - 1) for token in local.block(index)]
    assert tokens == [(token.idx, token.idx + len(token), token.lower_) for token in engine.nlp["en"](text)], text
    keywords = set(REFERENCE.nlp_engine.process_text(text, "en").keywords)
    for _, _, lemma in tokens:
        assert local.is_keyword(lemma) == (lemma.lower() in keywords), lemma
    for span, _ in spans:
        if local.single_token(span):
            assert [token.text for token in engine.nlp["en"].tokenizer(span)] == [span]
        if local.silent(span):
            assert span.lower() not in keywords, span


@given(st.lists(st.sampled_from(["call", "me", "phone", "x" * 30, "y" * 33, "-", "recall", ":", "12"]), min_size=1,
                max_size=12),
       st.lists(st.sampled_from([" ", "", "\n", "  ", "\u2003", "\x1c"]), max_size=12))
@example(["x" * 30, "y" * 33, "-", "call"], ["", "", ""])  # 64 characters before the word: not looked at
@example(["x" * 30, "y" * 33, "call"], ["", ""])  # 63: the span is looked at
@settings(max_examples=300, deadline=None)
def test_an_occurrence_is_unheard_only_inside_a_whole_span_that_gives_no_keyword(words: list[str],
                                                                                separators: list[str]) -> None:
    """``ContextReach._occurrences``: an occurrence of a word is left out only when the whole span of non-space
    characters holding it (``SPAN`` characters at most on either side of its start) is ``silent``."""
    import re

    from capsem_proxyd._compat.presidio import ContextReach, LocalTokens

    text = "".join(word + (separators[index] if index < len(separators) else " ") for index, word in enumerate(words))
    local = LocalTokens(text, POLICY.analyzer.nlp_engine, "en")
    reach = ContextReach(text, text.lower(), 5, 0, POLICY.analyzer.nlp_engine, "en", silent=local.silent)
    for word in ("call", "phone"):
        expected = []
        for found in re.finditer(f"(?={word})", text.lower()):
            at = found.start()
            span = next(run for run in re.finditer(r"\S+", text) if run.start() <= at < run.end())
            whole = at - span.start() <= ContextReach.SPAN and span.end() - at < ContextReach.SPAN
            if not (whole and local.silent(span.group())):
                expected.append(at)
        assert reach._occurrences(word) == expected, (word, text)


@given(st.lists(st.sampled_from(CONTEXT_WORDS + WORDS + NUMBERS[:40] + ["12:30", "a1:b2", "x9", "call", "Call", "me",
                                                                         "the", "call:", "recall", "x:call"]),
                min_size=1, max_size=40),
       st.lists(st.sampled_from(SEPARATORS), max_size=40), st.integers(0, 5), st.integers(0, 2))
@settings(max_examples=200, deadline=None)
def test_context_words_in_spans_that_give_no_keyword_are_not_near_a_match(
        words: list[str], separators: list[str], prefix: int, suffix: int) -> None:
    """``ContextReach.may_find`` with ``LocalTokens.silent``: an occurrence of a context word inside a span that
    is one token whose lemma is no keyword ("call", a stop word) is none; it still says no only when no context
    word is part of a word Presidio's enhancer reads around the match."""
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    from capsem_proxyd._compat.presidio import ContextReach, LocalTokens

    text = "".join(word + (separators[index] if index < len(separators) else " ") for index, word in enumerate(words))
    artifacts = REFERENCE.nlp_engine.process_text(text, "en")
    enhancer = LemmaContextAwareEnhancer(context_prefix_count=prefix, context_suffix_count=suffix)
    context = ["phone", "call", "number", "ssn", "card", "ip", "1", "0", "x", "me", "the"]
    local = LocalTokens(text, POLICY.analyzer.nlp_engine, "en")
    reach = ContextReach(text, text.lower(), prefix, suffix, POLICY.analyzer.nlp_engine, "en", silent=local.silent)
    for start in range(len(text)):
        if reach.may_find(start, context):
            continue
        near = enhancer._extract_surrounding_words(artifacts, "w", start)
        assert not [word for word in context if any(word in lemma for lemma in near)], (start, near, text)


def test_a_stop_word_before_a_number_sends_it_through_no_walk() -> None:
    """"call" is a stop word of spaCy's English: a number after it alone has no context word Presidio reads
    (0.4), so ``ContextReach`` says no without tokenizing; "phone" raises it (0.75) as Presidio does."""
    from capsem_proxyd._compat.presidio import ContextReach, LocalTokens

    text = "call +1 201-555-0123 or phone +1 201-555-0124"
    local = LocalTokens(text, POLICY.analyzer.nlp_engine, "en")
    reach = ContextReach(text, text.lower(), 5, 0, POLICY.analyzer.nlp_engine, "en", silent=local.silent)
    assert local.silent("call") and not local.silent("phone")
    assert not reach.may_find(text.index("+1"), ["call", "number"])
    assert reach.may_find(text.rindex("+1"), ["phone"])
    ours = POLICY.analyzer.analyze(text=text, entities=["PHONE_NUMBER"], language="en", score_threshold=0)
    theirs = REFERENCE.analyze(text=text, entities=["PHONE_NUMBER"], language="en", score_threshold=0)
    assert found(ours) == found(theirs)
    assert {round(result.score, 2) for result in theirs} == {0.4, 0.75}


@given(st.text(alphabet=SPAN_ALPHABET + "!?*&-_.\u0660\u00b2", min_size=1, max_size=12))
@example("-5")
@example("tel:+49")
@example("\u0660")  # an Arabic-Indic digit: a decimal digit, no ASCII one
@settings(max_examples=300, deadline=None)
def test_a_lemma_with_a_digit_passes_the_keyword_filter_as_spacy_s_lexeme_says(lemma: str) -> None:
    """``LocalTokens._qualifies`` lets a lemma holding a decimal digit pass without making its lexeme: Presidio's
    filter (no stop word, no punctuation, not "-PRON-" or "be") on the lexeme says the same."""
    from capsem_proxyd._compat.presidio import LocalTokens

    engine = POLICY.analyzer.nlp_engine
    local = LocalTokens(lemma, engine, "en")
    assert local._qualifies(lemma) == (not engine.is_stopword(lemma, "en") and not engine.is_punct(lemma, "en") and (
        lemma not in ("-PRON-", "be"))), lemma


# -- phone candidates decided only where a context word can raise them (``ContextReach.spans_reaching``) -------

@given(st.lists(st.sampled_from(CONTEXT_WORDS + WORDS + NUMBERS[:40] + ["12:30", "a1:b2", "x9"]), min_size=1,
                max_size=40),
       st.lists(st.sampled_from(SEPARATORS), max_size=40), st.integers(0, 3), st.integers(0, 2),
       st.lists(st.tuples(st.integers(0, 400), st.integers(1, 24)), min_size=1, max_size=12))
@example(["phone", "+1 201-555-0123"], [" "], 5, 0, [(5, 16)])  # the span starts on the space before the number
@example(["phone", "a1:b2", "x9", "12:30", "1234", "42"], [" "] * 6, 3, 0, [(20, 4)])
@settings(max_examples=300, deadline=None)
def test_a_span_no_walk_from_reaches_a_context_word_from_holds_no_start_that_does(
        words: list[str], separators: list[str], prefix: int, suffix: int, spans: list[tuple[int, int]]) -> None:
    """``spans_reaching`` says no for a span only when, from every start in it (on a space or not), Presidio's
    enhancer (its own walk over spaCy's tokens of the whole text) reads no context word: what lets the phone
    recognizer leave out the candidates there."""
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    from capsem_proxyd._compat.presidio import ContextReach, LocalTokens

    text = "".join(word + (separators[index] if index < len(separators) else " ") for index, word in enumerate(words))
    firsts, lasts = [], []
    for first, width in sorted(spans):
        if first < len(text) and (not firsts or first > firsts[-1]):
            firsts.append(first)
            lasts.append(min(len(text), first + width))
    if not firsts:
        return
    artifacts = REFERENCE.nlp_engine.process_text(text, "en")
    enhancer = LemmaContextAwareEnhancer(context_prefix_count=prefix, context_suffix_count=suffix)
    context = ["phone", "call", "number", "ssn", "card", "ip", "x", "tel"]
    local = LocalTokens(text, POLICY.analyzer.nlp_engine, "en")
    reach = ContextReach(text, text.lower(), prefix, suffix, POLICY.analyzer.nlp_engine, "en", silent=local.silent)
    reaching = reach.spans_reaching(firsts, lasts, context)
    if reaching is None:
        assert not text.isascii()
        return
    if reach.holds_none(context):
        assert not any(reaching)
    for first, last, reached in zip(firsts, lasts, reaching, strict=True):
        if reached:
            continue
        for start in range(first, last):
            try:
                near = enhancer._extract_surrounding_words(artifacts, "w", start)
            except ValueError:  # no token ends past it (trailing space): Presidio's enhancer fails there
                continue
            assert not [word for word in context if any(word in lemma for lemma in near)], (start, near, text)


@given(st.lists(st.sampled_from(NUMBERS + ["call", "phone", "Phone:", "phone:", "mobile", "cell", "number", "tel:",
                                           "contact", "or", "the", "me", "at", "order", "12345678", "qty", "2024-05-13",
                                           "10.0.0.1", "x", "a1:b2", "é"]), max_size=24),
       st.lists(st.sampled_from([" ", "", ", ", "\n", "; ", " - ", "  ", ":", "/"]), max_size=24),
       st.sampled_from([0.3, 0.4, 0.41, 0.5, 0.75, 0.76]))
@example(["phone", NUMBERS[0], "or", NUMBERS[1], "order", "12345678", "qty", NUMBERS[2]], [" "] * 8, 0.5)
@example(["call", "me", "at", NUMBERS[3], "x", "the", "number", NUMBERS[4]], [" "] * 8, 0.5)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_numbers_of_every_region_near_and_far_from_context_words_are_found_as_presidio_finds_them(
        words: list[str], separators: list[str], threshold: float) -> None:
    """The phone recognizer leaves out, during the policy's analysis, the candidates no context word can raise
    to the threshold: numbers of every configured region, a context word a few words before or after them or
    none, at thresholds below, at and above a number's 0.4 and its 0.75 with a context word."""
    text = "".join(word + (separators[index] if index < len(separators) else " ") for index, word in enumerate(words))
    ours = POLICY.analyzer.analyze(text=text, entities=list(ENTITIES), language="en", score_threshold=threshold)
    theirs = REFERENCE.analyze(text=text, entities=list(ENTITIES), language="en", score_threshold=threshold)
    assert found(ours) == found(theirs), (threshold, text)


def test_a_text_without_a_phone_context_word_is_not_scanned_for_numbers() -> None:
    """With no context word of the phone recognizer in the text, no number it finds can reach the policy's
    threshold: the policy finds none, as Presidio, and the recognizer is handed the text's ContextReach only
    for the analysis."""
    from capsem_proxyd._compat.presidio import CandidatePhoneRecognizer as Phone

    text = "order +1 201-555-0123 or 030 901820 qty 3"
    phone = next(recognizer for recognizer in POLICY.analyzer.registry.recognizers if isinstance(recognizer, Phone))
    assert found(POLICY.analyze_text(text)) == found(REFERENCE.analyze(
        text=text, entities=list(ENTITIES), language="en", score_threshold=POLICY.score_threshold)) == []
    assert getattr(phone.near_context, "reach", None) is None  # released after the analysis
    assert {round(result.score, 2) for result in REFERENCE.analyze(text=text, entities=["PHONE_NUMBER"],
                                                                   language="en", score_threshold=0)} == {0.4}


@given(digit_heavy_text(), st.lists(st.tuples(st.integers(0, 600), st.integers(0, 80)), max_size=6),
       st.sampled_from([1, 4]))
@example("650-253-0000\n030 901820 - 12345\n+44 20 7946 0958", [(14, 3)], 4)
@example("\n\n(650) 253-0000\n", [(0, 0), (15, 1)], 1)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_scan_of_some_lines_finds_the_whole_scan_s_candidates_on_them(text: str, parts: list[tuple[int, int]],
                                                                         min_digits: int) -> None:
    """``phone_scan`` over the lines ``lines_around`` gives finds, on those lines, the candidates (start, end, text)
    of the scan of the whole text: none holds a newline, and a line's scan starts where the whole one is."""
    from capsem_proxyd._compat.phonenumbers import lines_around

    text = text.replace(" - ", "\n").replace(";", "\n")  # more lines
    lines = lines_around(text, [(first, first + width) for first, width in parts])
    for begin, stop in lines:
        assert begin == 0 or text[begin - 1] == "\n"
        assert stop == len(text) or text[stop] == "\n"
    for first, width in parts:  # every character asked about is on a line
        for at in (first, first + width):
            if at < len(text):
                assert any(begin <= at <= stop for begin, stop in lines), (at, lines)
    whole = phone_scan(text, min_digits, long_only=True)
    some = phone_scan(text, min_digits, long_only=True, lines=lines)
    expected = [(c.start, c.end, c.text, c.long_enough) for c in whole
                if any(begin <= c.start < stop for begin, stop in lines)]
    assert [(c.start, c.end, c.text, c.long_enough) for c in some] == expected, (text, lines)
    assert all("\n" not in text[c.start:c.end] for c in whole)


@pytest.mark.parametrize("text", [
    "phone 1 2 3 4\n(650) 253-0000",  # the walk back from "(" (no keyword) reads "\n", four numbers, "phone"
    "phone 1 2 3 4 5\n(650) 253-0000",  # one more: out of its reach
    "phone 1 2 3 4\n+1 650-253-0000",
    "phone 1 2\n3 4\n5\n(650) 253-0000 and\n(650) 253-0001",
    "(650) 253-0000\nphone",  # a context word after the number: the walk on reads none past the number's span
    "(650) 253-0000 phone\n(650) 253-0001",
])
def test_a_number_a_whole_walk_away_from_a_context_word_on_another_line_is_found_as_presidio_finds_it(
        text: str) -> None:
    ours = POLICY.analyzer.analyze(text=text, entities=list(ENTITIES), language="en", score_threshold=0.5)
    theirs = REFERENCE.analyze(text=text, entities=list(ENTITIES), language="en", score_threshold=0.5)
    assert found(ours) == found(theirs)
    if text.startswith("phone 1 2 3 4\n("):
        assert [round(result.score, 2) for result in theirs] == [0.75]
    if text.startswith("phone 1 2 3 4 5\n("):
        assert theirs == []


@given(st.lists(st.sampled_from(CONTEXT_WORDS + WORDS + NUMBERS[:30] + ["12:30", "a1:b2", "x9", "+1", "(650)"]),
                min_size=1, max_size=30),
       st.lists(st.sampled_from(SEPARATORS), max_size=30), st.integers(0, 5), st.integers(0, 2))
@example(["call", "+1", "phone", "(650)"], ["", "", "", ""], 1, 0)  # a match right after a token, no space between
@settings(max_examples=200, deadline=None)
def test_the_words_read_around_every_start_are_presidio_s(words: list[str], separators: list[str], prefix: int,
                                                           suffix: int) -> None:
    """``LocalTokens.keywords_from`` (the match's token found by bisection over each block's token ends) reads,
    from every start, the keyword lemmas Presidio's ``_extract_surrounding_words`` reads."""
    _, local, walks = _presidio_walks(words, separators, prefix, suffix)
    for start, theirs in walks:
        ours = local.keywords_from(start, prefix + 1, backward=True) + local.keywords_from(start, suffix + 1,
                                                                                           backward=False)
        assert set(ours) == set(theirs), (start, local.text)


def _presidio_walks(words: list[str], separators: list[str], prefix: int, suffix: int) -> tuple[Any, Any, Any]:
    """The text made of ``words`` joined by ``separators``: Presidio's enhancer for ``prefix``/``suffix``, our
    ``LocalTokens`` of it, and, for every start Presidio's walk can be made from, that start and the lemmas
    Presidio's ``_extract_surrounding_words`` reads (it fails where no token ends past the start)."""
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    from capsem_proxyd._compat.presidio import LocalTokens

    text = "".join(word + (separators[index] if index < len(separators) else " ") for index, word in enumerate(words))
    artifacts = REFERENCE.nlp_engine.process_text(text, "en")
    enhancer = LemmaContextAwareEnhancer(context_prefix_count=prefix, context_suffix_count=suffix)

    def walks() -> Any:
        for start in range(len(text)):
            try:
                yield start, enhancer._extract_surrounding_words(artifacts, "w", start)
            except ValueError:
                continue

    return enhancer, LocalTokens(text, POLICY.analyzer.nlp_engine, "en"), walks()


@pytest.mark.parametrize("text", [
    "pay 1BoatSLRHtKNngkdXEeobR76b53LETtpyT or bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq to DE89 3704 0044 0532 0130 00",
    "GB82WEST12345698765432 and 3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
    "def handler_5678(timeout=30):\n    return f(a[3], 42)  # reviewed 2024-05-13, rev 1a2b3c4d\n",
    "AB12 CDEF GHIJ, \u212aE89 3704 0044, 1\u017f" + "a" * 24,
])
def test_ibans_and_bitcoin_addresses_are_found_as_presidio_finds_them_with_or_without_their_witness(text: str) -> None:
    """The IBAN and Bitcoin patterns are not run where the text holds no witness of them (``WITNESSES``)."""
    entities = [*ENTITIES, "CRYPTO"]
    for threshold in (0, POLICY.score_threshold):
        ours = POLICY.analyzer.analyze(text=text, entities=entities, language="en", score_threshold=threshold)
        theirs = REFERENCE.analyze(text=text, entities=entities, language="en", score_threshold=threshold)
        assert found(ours) == found(theirs)


# -- context words everywhere: each walk ends at the first lemma holding one (``LocalTokens.supporting_word``) ----

LABELS = ["phone", "phone:", "Phone", "PHONE,", "tel", "tel:", "mobile", "cell", "number=", "phone,", "cellphone",
          "call", "telephone:", "x", "or", ";", ",", "id=7", "name", "12:30", "680499,phone,+44", "1,phone,2", "(650)",
          "+1", "4111 1111 1111 1111", "jane@example.com"]


@given(st.lists(st.sampled_from(LABELS + NUMBERS[:40]), min_size=1, max_size=30),
       st.lists(st.sampled_from(SEPARATORS), max_size=30), st.integers(0, 6), st.integers(0, 2),
       st.sampled_from([list(PhoneRecognizer.CONTEXT), ["Phone", "TEL"], ["number", "ssn", "x"]]))
# From "34" (a block's start) the walk back reads two keywords, "34" and "12": the label is one too far.
@example(["phone", "12", "34"], [" ", " ", " "], 1, 0, list(PhoneRecognizer.CONTEXT))
@example(["phone", "+1", "650", "253", "0000", "or", "34"], [" "] * 7, 5, 0, list(PhoneRecognizer.CONTEXT))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_supporting_word_is_found_from_every_start_where_presidio_finds_one(
        words: list[str], separators: list[str], prefix: int, suffix: int, context: list[str]) -> None:
    """``LocalTokens.supporting_word`` (a walk each way from the match's token, stopping at the first lemma holding
    a context word; from a block's start, the blocks before first) says yes exactly where Presidio's
    ``_find_supportive_word_in_context`` finds a word in the lemmas its ``_extract_surrounding_words`` reads, and
    names a context word that one of them holds."""
    enhancer, local, walks = _presidio_walks(words, separators, prefix, suffix)
    for start, lemmas in walks:
        theirs = enhancer._find_supportive_word_in_context(lemmas, context, "substring")
        ours = local.supporting_word(start, prefix + 1, suffix + 1, tuple(context))
        assert bool(ours) == bool(theirs), (start, local.text, lemmas)
        if ours:
            assert ours in context and any(ours.lower() in lemma.lower() for lemma in lemmas), (ours, lemmas)


@st.composite
def contact_lines(draw: st.DrawFn) -> str:
    """Lines of a contact list or a CSV: a label with a context word (or none), then numbers of every configured
    region, on and on: every number near a context word, or nearly."""
    lines = []
    for _ in range(draw(st.integers(1, 8))):
        label = draw(st.sampled_from(LABELS))
        numbers = draw(st.lists(st.sampled_from(NUMBERS), min_size=1, max_size=3))
        joint = draw(st.sampled_from([" ", ",", ", ", " or ", ";", "  ", " phone ", ",phone,"]))
        lines.append(label + draw(st.sampled_from([" ", "", ",", ": ", "="])) + joint.join(numbers))
    return draw(st.sampled_from(["\n", " ", "\n\n", " | "])).join(lines)


@given(contact_lines())
@example("phone +44 121 234 5678 or tel:+34-810-12-34-56\n680499,phone,+44 121 234 5678,2569.14")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_analyzer_finds_what_presidio_finds_where_context_words_are_everywhere(text: str) -> None:
    """Every number near a context word: the phone decisions near them and the walks that raise their scores give
    Presidio's results, at the policy's threshold and at none."""
    for threshold in (POLICY.score_threshold, 0):
        ours = POLICY.analyzer.analyze(text=text, entities=list(ENTITIES), language="en", score_threshold=threshold)
        theirs = REFERENCE.analyze(text=text, entities=list(ENTITIES), language="en", score_threshold=threshold)
        assert found(ours) == found(theirs), text
    assert found(POLICY.analyze_text(text)) == found(
        REFERENCE.analyze(text=text, entities=list(ENTITIES), language="en", score_threshold=POLICY.score_threshold))


def _explanation(result: Any) -> tuple[Any, ...]:
    explanation = result.analysis_explanation
    return (result.score, explanation.score, explanation.original_score, explanation.supportive_context_word,
            explanation.score_context_improvement)


@given(contact_lines(), st.sampled_from([list(PhoneRecognizer.CONTEXT), ["Phone", "TEL"], ["", "phone"], ["ssn"]]),
       st.integers(0, 3), st.booleans())
@example("phone +44 121 234 5678 or tel:+34-810-12-34-56\n680499,phone,+44 121 234 5678,2569.14",
         list(PhoneRecognizer.CONTEXT), 2, True)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_scores_raised_with_explanations_dropped_are_presidio_s_and_the_raw_results_are_left_as_they_were(
        text: str, context: list[str], boosted: int, unexplained: bool) -> None:
    """``IndexedContextEnhancer.enhance_using_context`` against Presidio's enhancer on the same raw results: the
    same results, in order, with the same scores; with explanations dropped (``unexplained``: a recognizer's words
    read once, a raised result a copy sharing the raw one's explanation) the raw results and their explanations
    are left as they were, as Presidio's deep copy leaves them; with explanations kept, the same explanations.
    A result already raised (every ``boosted``-th) is left alone; a recognizer with an empty word goes the general
    way."""
    from presidio_analyzer import RecognizerResult
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    ours_enhancer = POLICY.analyzer.context_aware_enhancer
    recognizer = PhoneRecognizer(context=context)
    raw = recognizer.analyze(text, ["PHONE_NUMBER"])
    for index, result in enumerate(raw):
        result.recognition_metadata[RecognizerResult.RECOGNIZER_IDENTIFIER_KEY] = recognizer.id
        if boosted and index % boosted == 0:
            result.recognition_metadata[RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY] = True
    before = [_explanation(result) for result in raw]
    artifacts = REFERENCE.nlp_engine.process_text(text, "en")
    theirs = LemmaContextAwareEnhancer(
        context_similarity_factor=ours_enhancer.context_similarity_factor,
        min_score_with_context_similarity=ours_enhancer.min_score_with_context_similarity,
        context_prefix_count=ours_enhancer.context_prefix_count,
        context_suffix_count=ours_enhancer.context_suffix_count).enhance_using_context(text, raw, artifacts, [recognizer])
    ours_enhancer.unexplained.on = unexplained
    try:
        ours = ours_enhancer.enhance_using_context(text, raw, artifacts, [recognizer])
    finally:
        ours_enhancer.unexplained.on = False
    assert [(result.start, result.end, result.score) for result in ours] == [
        (result.start, result.end, result.score) for result in theirs], text
    assert [_explanation(result) for result in raw] == before, text
    if not unexplained:
        assert [_explanation(result) for result in ours] == [_explanation(result) for result in theirs], text


@given(st.text(alphabet="0123456789abcelnoph,:;+-.()'=_[]x ", min_size=1, max_size=14).map(str.strip).filter(bool)
       .filter(lambda span: " " not in span))
@example("680499,phone,+44")
@example("tel:+44")
@example("1a.m.")
@settings(max_examples=300, deadline=None)
def test_a_span_holding_a_digit_and_no_colon_is_silent_only_as_its_tokens_say(span: str) -> None:
    """``LocalTokens.silent``'s shortcut (a digit, no colon: never silent) gives what asking the tokenizer gives:
    one token (``single_token``) whose lower case is no keyword."""
    from capsem_proxyd._compat.presidio import LocalTokens

    local = LocalTokens(span, POLICY.analyzer.nlp_engine, "en")
    assert local.silent(span) == (local.single_token(span) and not local.is_keyword(span.lower())), span


@given(st.lists(st.text(alphabet="ab.:'(", min_size=1, max_size=4), min_size=1, max_size=12),
       st.lists(st.text(alphabet="ab.:'( 1", max_size=12), min_size=1, max_size=20))
@example(["a.", "a.m."], ["xa.y"])  # a word whose prefix is another word
@example(["a.m.", "a."], ["a.m"])
@settings(max_examples=300, deadline=None)
def test_the_special_cases_trie_finds_one_exactly_where_their_alternation_does(words: list[str],
                                                                              texts: list[str]) -> None:
    """``any_of`` (the special cases ``AffixTokenizer`` looks for across tokens, as a trie) finds an occurrence of a
    word in a text exactly when the plain alternation of the words does."""
    import re

    from capsem_proxyd._compat.presidio import any_of

    trie = any_of(words)
    plain = re.compile("|".join(map(re.escape, words)))
    for text in texts:
        assert (trie.search(text) is None) == (plain.search(text) is None), (words, text, trie.pattern)


@given(st.text(alphabet="ab\n", max_size=40), st.lists(st.tuples(st.integers(-2, 42), st.integers(0, 12)), max_size=12))
@settings(max_examples=300, deadline=None)
def test_the_lines_around_parts_are_each_part_s_lines_merged_where_they_touch(text: str,
                                                                             parts: list[tuple[int, int]]) -> None:
    """``lines_around`` (a part inside the stretch before it adds nothing) gives, for every part, the lines from
    the one holding its first character to the one holding its last, merged where they touch or overlap."""
    from capsem_proxyd._compat.phonenumbers import lines_around

    starts = [0] + [at + 1 for at, char in enumerate(text) if char == "\n"]
    ends = [at for at, char in enumerate(text) if char == "\n"] + [len(text)]
    held: set[int] = set()  # line numbers (a newline is on the line it ends)
    for first, width in parts:
        first, last = max(0, min(first, len(text))), max(0, min(first + width, len(text)))
        held.update(range(text.count("\n", 0, first), text.count("\n", 0, last) + 1))
    expected: list[tuple[int, int]] = []
    for number in sorted(held):
        if expected and starts[number] <= expected[-1][1] + 1:
            expected[-1] = (expected[-1][0], ends[number])
        else:
            expected.append((starts[number], ends[number]))
    clipped = [(max(0, min(first, len(text))), max(0, min(first + width, len(text)))) for first, width in parts]
    assert lines_around(text, clipped) == expected, (text, clipped)


# -- the phone recognizer's duplicates removed without Presidio's set and sort key (``without_contained``) --------

@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 12)), max_size=40, unique=True),
       st.sampled_from([0.4, 0.0, None]), st.booleans())
@example([(0, 5), (0, 3), (2, 3), (1, 4), (5, 2)], 0.4, False)  # same starts, nested, touching
@settings(max_examples=500, deadline=None)
def test_contained_results_are_removed_as_presidio_removes_them(spans: list[tuple[int, int]], score: float | None,
                                                                mixed: bool) -> None:
    """``without_contained``: the same results, in the same order, as ``EntityRecognizer.remove_duplicates`` for
    results at distinct spans (one score for all, or each its own when ``score`` is None; one entity type, or
    two when ``mixed``: Presidio's own then)."""
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    from capsem_proxyd._compat.presidio import without_contained

    results = [RecognizerResult("PHONE_NUMBER" if not mixed or index % 2 else "US_SSN", start, start + length,
                                score if score is not None else (index % 3) / 4)
               for index, (start, length) in enumerate(dict.fromkeys(spans))]
    ours = without_contained(results)
    theirs = EntityRecognizer.remove_duplicates(results)
    assert [id(result) for result in ours] == [id(result) for result in theirs]


def test_a_built_policy_leaves_nothing_to_build_for_its_first_number_near_a_context_word() -> None:
    """The phone recognizer builds its all-regions sieve (~0.1 s of patterns compiled) at the first number it
    must decide, and it decides only numbers a context word may raise: a warm-up text without one left the
    build to the first request holding "phone" (the bench's first-seen conversation: +0.27 s through the
    proxy, 0.58 MB/s where the analyzer alone does 9). The policy's warm-up must leave nothing to build."""
    fresh = OfflinePIIPolicy.from_config({"entity_decisions": ENTITIES, "ner": False})
    assert fresh is not None
    phones = [recognizer for recognizer in fresh.analyzer.registry.recognizers
              if isinstance(recognizer, CandidatePhoneRecognizer)]
    assert phones
    built = [recognizer._sieve for recognizer in phones]
    assert all(sieve is not None for sieve in built)
    found = fresh.analyze_text("the front desk's phone: +44 20 7946 0958, or call 020 7946 0958")
    assert any(result.entity_type == "PHONE_NUMBER" for result in found)
    assert all(recognizer._sieve is sieve for recognizer, sieve in zip(phones, built, strict=True))
