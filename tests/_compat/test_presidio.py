"""Canary for ``capsem_proxyd/_compat/presidio.py``: Presidio's spaCy engine without its download, and its
e-mail recognizer without the network.

``NoDownloadSpacyNlpEngine`` overrides Presidio's private static method
``SpacyNlpEngine._download_spacy_model_if_needed``, which ``load`` calls for
each model; ``OfflineEmailRecognizer`` replaces ``EmailRecognizer.validate_result``,
the one place the recognizer reads tldextract's module-level (network-fetching)
extractor. Presidio ships every change as a patch release: the pin is exact.
"""

from __future__ import annotations

import inspect
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

pytest.importorskip("presidio_analyzer", reason="the 'pii' extra is not installed")

import spacy.cli  # noqa: E402
from presidio_analyzer.nlp_engine import SpacyNlpEngine  # noqa: E402
from presidio_analyzer.predefined_recognizers import EmailRecognizer  # noqa: E402

from capsem_proxyd._compat.presidio import NoDownloadSpacyNlpEngine, OfflineEmailRecognizer  # noqa: E402
from tests._compat.pins import assert_exact  # noqa: E402


def test_presidio_is_pinned_exactly_to_the_release_installed() -> None:
    assert str(assert_exact("presidio-analyzer")) == "2.2.366"


def test_the_private_download_step_is_still_a_static_method_that_load_calls_per_model() -> None:
    download = vars(SpacyNlpEngine)["_download_spacy_model_if_needed"]
    assert isinstance(download, staticmethod)
    assert list(inspect.signature(download.__func__).parameters) == ["model_name"]
    assert 'self._download_spacy_model_if_needed(model["model_name"])' in inspect.getsource(SpacyNlpEngine.load)
    assert isinstance(vars(NoDownloadSpacyNlpEngine)["_download_spacy_model_if_needed"], staticmethod)


def test_a_missing_model_fails_to_load_instead_of_being_downloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    def download(*args: object, **kwargs: object) -> None:
        raise AssertionError("Presidio tried to download a spaCy model")

    monkeypatch.setattr(spacy.cli, "download", download)  # Presidio's way out to the network, closed
    engine = NoDownloadSpacyNlpEngine(models=[{"lang_code": "en", "model_name": "capsem_no_such_model"}])
    with pytest.raises(ValueError, match="spaCy model 'capsem_no_such_model' is not installed"):
        engine.load()


def test_validate_result_is_where_the_e_mail_recognizer_reads_tldextract() -> None:
    source = inspect.getsource(inspect.getmodule(EmailRecognizer))  # type: ignore[arg-type]
    assert source.count("tldextract.") == 1 and "tldextract.extract(pattern_text)" in inspect.getsource(
        EmailRecognizer.validate_result)
    assert list(inspect.signature(EmailRecognizer.validate_result).parameters) == ["self", "pattern_text"]
    recognizer = OfflineEmailRecognizer(supported_language="en")
    assert "offline_extract" not in vars(EmailRecognizer(supported_language="en"))  # ours collides with nothing
    assert recognizer.validate_result("someone@example.com") and not recognizer.validate_result("someone@example")


def test_the_phone_recognizer_still_builds_its_results_the_way_ours_repeats() -> None:
    """``CandidatePhoneRecognizer.analyze`` repeats ``PhoneRecognizer.analyze``'s loop per region on windows."""
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    source = inspect.getsource(PhoneRecognizer.analyze)
    for line in ("for region in self.supported_regions:",
                 "phonenumbers.PhoneNumberMatcher(\n                text, region, leniency=self.leniency",
                 "parsed_number = phonenumbers.parse(text[match.start : match.end])",
                 "region = phonenumbers.region_code_for_number(parsed_number)",
                 "self._get_recognizer_result(match, text, region, nlp_artifacts)",
                 "return EntityRecognizer.remove_duplicates(results)"):
        assert line in source, line
    assert list(inspect.signature(PhoneRecognizer._get_recognizer_result).parameters) == [
        "self", "match", "text", "region", "nlp_artifacts"]


def test_spacy_entities_come_from_the_doc_s_ents_only() -> None:
    """The blank pipeline's artifacts answer ``entities`` and ``scores`` without spaCy: Presidio reads them
    from ``doc.ents``, which only an entity recognizer fills."""
    from presidio_analyzer.predefined_recognizers import SpacyRecognizer

    to_artifact = inspect.getsource(SpacyNlpEngine._doc_to_nlp_artifact)
    assert "entities = self._get_entities(doc)" in to_artifact and "scores = self._get_scores_for_entities(doc)" in (
        to_artifact)
    assert "return doc.ents" in inspect.getsource(SpacyNlpEngine._get_entities)
    analyze = inspect.getsource(SpacyRecognizer.analyze)
    assert "nlp_artifacts.entities" in analyze and "nlp_artifacts.scores" in analyze


def test_the_context_enhancer_still_walks_the_tokens_for_the_first_one_ending_past_the_match() -> None:
    """``IndexedContextEnhancer`` bisects where ``_find_index_of_match_token`` walks; same token, any text."""
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    from capsem_proxyd._compat.presidio import IndexedContextEnhancer

    walk = vars(LemmaContextAwareEnhancer)["_find_index_of_match_token"]
    assert isinstance(walk, staticmethod)
    source = inspect.getsource(walk.__func__)
    assert "if (tokens_indices[i] == start) or (start < tokens_indices[i] + len(token)):" in source
    assert "self._find_index_of_match_token(\n            word, start, nlp_artifacts.tokens, nlp_artifacts.tokens_indices" in (
        inspect.getsource(LemmaContextAwareEnhancer._extract_surrounding_words))
    nlp = spacy.blank("en")
    doc = nlp("call  me at +1 (650) 253-0000, or 030 901820;\tx=4111-1111-1111-1111 ok")
    indices = [token.idx for token in doc]
    ours = IndexedContextEnhancer()
    for start in range(len(doc.text)):
        try:
            expected: int | str = walk.__func__("w", start, doc, indices)
        except ValueError:
            expected = "none"
        try:
            found: int | str = ours._find_index_of_match_token("w", start, doc, indices)
        except ValueError:
            found = "none"
        assert found == expected, start


def test_the_context_enhancer_still_only_raises_scores_for_context_words_in_the_lemmas_near_a_match() -> None:
    """``IndexedContextEnhancer.enhance_using_context`` returns Presidio's deep copy of the results unchanged
    when no context word of a recognizer that found something is in the (lower-case) text."""
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    enhance = inspect.getsource(LemmaContextAwareEnhancer.enhance_using_context)
    assert "results = copy.deepcopy(raw_results)" in enhance
    assert "if not recognizer.context:" in enhance and "surrounding_words.extend(context)" in enhance
    assert 'if supportive_context_word != "":' in enhance and enhance.rstrip().endswith("return results")
    surrounding = inspect.getsource(LemmaContextAwareEnhancer._extract_surrounding_words)
    assert "nlp_artifacts.lemmas" in surrounding and "lemmatized_keywords = nlp_artifacts.keywords" in surrounding
    find = inspect.getsource(LemmaContextAwareEnhancer._find_supportive_word_in_context)
    assert "if predefined_context_word.lower() in keyword.lower()" in find
    assert "if predefined_context_word.lower() == keyword.lower()" in find


def test_the_surrounding_words_are_still_keyword_lemmas_walked_from_the_match_s_token() -> None:
    """``IndexedContextEnhancer._extract_surrounding_words`` (an override of Presidio's private method)
    repeats it on ``LocalTokens``: from the match's token, up to ``context_prefix_count + 1`` lemmas that are
    keywords walking back and ``context_suffix_count + 1`` walking on, as a set; a keyword is a lemma that
    ``NlpArtifacts.set_keywords`` keeps (no stop word, no punctuation, not ``-PRON-`` or ``be``), split at
    colons."""
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
    from presidio_analyzer.nlp_engine import NlpArtifacts

    from capsem_proxyd._compat.presidio import IndexedContextEnhancer

    enhance = inspect.getsource(LemmaContextAwareEnhancer.enhance_using_context)
    assert "surrounding_words = self._extract_surrounding_words(\n                nlp_artifacts=nlp_artifacts, " \
           "word=word, start=result.start\n            )" in enhance
    assert list(inspect.signature(LemmaContextAwareEnhancer._extract_surrounding_words).parameters) == [
        "self", "nlp_artifacts", "word", "start"]
    assert "_extract_surrounding_words" in vars(IndexedContextEnhancer)
    surrounding = inspect.getsource(LemmaContextAwareEnhancer._extract_surrounding_words)
    for line in ("if not nlp_artifacts.tokens:", "token_index,\n            self.context_prefix_count,",
                 "token_index,\n            self.context_suffix_count,", "context_list = list(set(context_list))"):
        assert line in surrounding, line
    words = inspect.getsource(LemmaContextAwareEnhancer._add_n_words)
    for line in ("remaining = n_words + 1", "while 0 <= i < len(lemmas) and remaining > 0:",
                 "lower_lemma = lemmas[i].lower()", "if lower_lemma in lemmatized_filtered_keywords:",
                 "context_words.append(lower_lemma)", "i = i - 1 if is_backward else i + 1"):
        assert line in words, line
    keywords = inspect.getsource(NlpArtifacts.set_keywords)
    for line in ("k.lower()", "if not nlp_engine.is_stopword(k, language)", "and not nlp_engine.is_punct(k, language)",
                 'and k != "-PRON-"', 'and k != "be"', 'keywords = [i.split(":") for i in keywords]'):
        assert line in keywords, line
    assert "vocab[word].is_stop" in inspect.getsource(SpacyNlpEngine.is_stopword)
    assert "vocab[word].is_punct" in inspect.getsource(SpacyNlpEngine.is_punct)


def test_spacy_still_tokenizes_each_span_of_non_space_characters_on_its_own() -> None:
    """``LocalTokens`` tokenizes a text in blocks cut where a span of non-space characters starts (the
    tokenizer's ``_tokenize_affixes`` splits at ``isspace`` changes); a block's tokens are the text's."""
    from capsem_proxyd._compat.presidio import LocalTokens

    nlp = spacy.blank("en")
    text = "call  me:at +1 (650) 253-0000,\n\n or 030 901820;\tx=4111 can't :) U.S. ssn:078-05-1120 \u00a0end "
    whole = [(token.idx, token.idx + len(token), token.lower_) for token in nlp(text)]

    class Engine:
        def __init__(self) -> None:
            self.nlp = {"en": nlp}

    for block in (1, 5, 30):
        default, LocalTokens.BLOCK = LocalTokens.BLOCK, block
        try:
            local = LocalTokens(text, Engine(), "en")
        finally:
            LocalTokens.BLOCK = default
        assert [token for index in range(len(local.cuts) - 1) for token in local.block(index)] == whole


def test_results_below_the_threshold_are_still_dropped_right_after_enhancement_and_before_duplicates() -> None:
    """``PruningAnalyzerEngine`` drops before enhancement the results no context word can lift to the
    request's threshold: ``analyze`` removes them after ``_enhance_using_context`` (a private method it
    repeats: each recognizer's own enhancement, then the enhancer's), before ``remove_duplicates``; the
    lemma enhancer raises a score once, by these operations, unless the recognizer has no context words or
    raised it itself; the base recognizer's own enhancement changes nothing."""
    from presidio_analyzer import AnalyzerEngine, EntityRecognizer
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    analyze = inspect.getsource(AnalyzerEngine.analyze)
    enhanced = analyze.index("results = self._enhance_using_context(\n            text, results, nlp_artifacts, "
                             "recognizers, context\n        )")
    low = analyze.index("results = self.__remove_low_scores(results, score_threshold, recognizers)")
    assert enhanced < low < analyze.index("results = EntityRecognizer.remove_duplicates(results)")
    assert "new_results = [result for result in results if result.score >= score_threshold]" in inspect.getsource(
        AnalyzerEngine._AnalyzerEngine__remove_low_scores)  # type: ignore[attr-defined]
    private = inspect.getsource(AnalyzerEngine._enhance_using_context)
    for line in ("for recognizer in recognizers:", "== recognizer.id", "!= recognizer.id",
                 "recognizer_results = recognizer.enhance_using_context(", "raw_recognizer_results=recognizer_results,",
                 "other_raw_recognizer_results=other_recognizer_results,", "results.extend(recognizer_results)",
                 "results = self.context_aware_enhancer.enhance_using_context(\n            text=text,\n"
                 "            raw_results=results,"):
        assert line in private, line
    assert inspect.getsource(EntityRecognizer.enhance_using_context).rstrip().endswith("return raw_recognizer_results")
    enhance = inspect.getsource(LemmaContextAwareEnhancer.enhance_using_context)
    for line in ("if not recognizer.context:", "RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY",
                 "result.score += self.context_similarity_factor",
                 "result.score = max(result.score, self.min_score_with_context_similarity)",
                 "result.score = min(result.score, ContextAwareEnhancer.MAX_SCORE)"):
        assert line in enhance, line
    assert enhance.count("result.score") == 6  # raised there and nowhere else


def test_the_enhancer_s_loop_body_is_still_the_one_ours_repeats_on_a_copy_of_a_result_it_raises() -> None:
    """``IndexedContextEnhancer._raised`` repeats the body of Presidio's loop (no context of the request's own)
    and copies a result (and its explanation) only when its score rises, where Presidio deep-copies them all."""
    from presidio_analyzer import AnalysisExplanation
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    enhance = inspect.getsource(LemmaContextAwareEnhancer.enhance_using_context)
    for line in ("results = copy.deepcopy(raw_results)", "word = text[result.start : result.end]",
                 "surrounding_words = self._extract_surrounding_words(\n                nlp_artifacts=nlp_artifacts, "
                 "word=word, start=result.start\n            )", "surrounding_words.extend(context)",
                 "supportive_context_word = self._find_supportive_word_in_context(\n                surrounding_words, "
                 "recognizer.context, self.context_matching_mode\n            )",
                 "result.analysis_explanation.set_supportive_context_word(\n                    supportive_context_word",
                 "result.analysis_explanation.set_improved_score(result.score)"):
        assert line in enhance, line
    # each sets attributes of its own: a shallow copy of the explanation leaves the original as it was
    assert "self.supportive_context_word = word" in inspect.getsource(AnalysisExplanation.set_supportive_context_word)
    improved = inspect.getsource(AnalysisExplanation.set_improved_score)
    assert "self.score = score" in improved and "self.score_context_improvement = self.score - self.original_score" in (
        improved)


def test_results_and_explanations_are_still_plain_objects_that_copy_copies_by_their_dict() -> None:
    """``plain_copy`` makes a result's (and its explanation's) copy with ``__new__`` and the original's ``__dict__``:
    what ``copy.copy`` does for a class with no ``__slots__`` and no copy or pickling hook of its own."""
    import copy

    from presidio_analyzer import AnalysisExplanation, RecognizerResult

    from capsem_proxyd._compat.presidio import plain_copy

    for cls in (RecognizerResult, AnalysisExplanation):
        for hook in ("__slots__", "__copy__", "__reduce__", "__reduce_ex__", "__getstate__", "__setstate__",
                     "__getnewargs__", "__getnewargs_ex__", "__new__"):
            assert all(hook not in vars(base) for base in cls.__mro__[:-1]), (cls, hook)
    explanation = AnalysisExplanation(recognizer="PhoneRecognizer", original_score=0.4, pattern_name="p",
                                      pattern="\\d+", validation_result=None, textual_explanation="x")
    result = RecognizerResult("PHONE_NUMBER", 3, 9, 0.4, analysis_explanation=explanation,
                              recognition_metadata={"recognizer_identifier": "x"})
    for original in (result, explanation):
        mine, theirs = plain_copy(original), copy.copy(original)
        assert type(mine) is type(theirs) and mine is not original and vars(mine) == vars(theirs)
        assert all(vars(mine)[name] is vars(original)[name] for name in vars(original))  # shallow, as copy's
    assert plain_copy(None) is None


def test_a_pattern_recognizer_still_scores_each_pattern_s_match_from_that_pattern_alone() -> None:
    """``PruningRegistry`` gives an analysis a copy of a pattern recognizer holding only the patterns whose
    results can reach the threshold: ``analyze`` takes its recognizers from ``registry.get_recognizers``
    (public) once and uses that list throughout; a pattern recognizer's results come from its ``patterns``
    one by one, each scored from its pattern's score, ``validate_result`` (``MAX_SCORE`` or ``MIN_SCORE``) and
    ``invalidate_result`` (``MIN_SCORE``); its ``remove_duplicates`` removes a result only when another of the
    same type contains it and scores as much or more."""
    from presidio_analyzer import AnalyzerEngine, EntityRecognizer, PatternRecognizer

    analyze = inspect.getsource(AnalyzerEngine.analyze)
    assert analyze.count("self.registry.get_recognizers(") == 1 and "for recognizer in recognizers:" in analyze
    assert "if self.patterns:\n            pattern_result = self.__analyze_patterns(text, regex_flags)" in (
        inspect.getsource(PatternRecognizer.analyze))
    patterns = inspect.getsource(PatternRecognizer._PatternRecognizer__analyze_patterns)  # type: ignore[attr-defined]
    for line in ("for pattern in self.patterns:", "score = pattern.score",
                 "validation_result = self.validate_result(current_match)",
                 "pattern_result.score = EntityRecognizer.MAX_SCORE", "pattern_result.score = EntityRecognizer.MIN_SCORE",
                 "invalidation_result = self.invalidate_result(current_match)",
                 "if pattern_result.score > EntityRecognizer.MIN_SCORE:",
                 "results = EntityRecognizer.remove_duplicates(results)"):
        assert line in patterns, line
    assert patterns.count(".score =") == 4  # the three above and the explanation's copy
    assert inspect.getsource(PatternRecognizer.validate_result).rstrip().endswith("return None")
    duplicates = inspect.getsource(EntityRecognizer.remove_duplicates)
    assert "if result.contained_in(filtered) and result.score <= filtered.score:" in duplicates


def _witnessed() -> list[tuple[str, int, re.Pattern[str]]]:
    """(pattern, flags, witness) of every predefined pattern ``WITNESSES`` names."""
    import hashlib

    from presidio_analyzer.predefined_recognizers import CryptoRecognizer, IbanRecognizer, IpRecognizer

    from capsem_proxyd._compat.presidio import WITNESSES

    found = []
    for recognizer in (IpRecognizer(), IbanRecognizer(), CryptoRecognizer()):
        for pattern in recognizer.patterns:
            witness = WITNESSES.get(hashlib.sha256(pattern.regex.encode()).hexdigest())
            if witness is not None:
                found.append((pattern.regex, recognizer.global_regex_flags, witness))
    return found


def test_every_witnessed_pattern_is_still_one_of_presidio_s() -> None:
    """``WITNESSES`` names patterns by the hash of their regex: a pattern Presidio changed is no longer
    witnessed (run everywhere, as Presidio runs it), and this fails so that its witness is reviewed."""
    from capsem_proxyd._compat.presidio import WITNESSES

    assert len(_witnessed()) == len(WITNESSES) == 5


@given(st.lists(st.one_of(
    st.sampled_from(["::", ":", ".", "%eth0", "/64", " ", "\n", "12:30:45", "ffff", "fe80", "0", "1", "a", "G", "z",
                     "x", "\u212a", "::ffff:", "10.0.0.1", "192.168.1.254", "/", "_", "-", "\u00a0", "\t"]),
    st.text(alphabet="0123456789abcdefABCDEF:.", min_size=1, max_size=12),
    st.ip_addresses(v=6).map(str), st.ip_addresses(v=6).map(lambda address: address.exploded)),
    max_size=12))
@settings(max_examples=300, deadline=None)
def test_every_match_of_a_witnessed_pattern_holds_its_witness(parts: list[str]) -> None:
    """``PruningRegistry`` skips a witnessed pattern where the text holds no match of its witness: sound only
    if every match of the pattern (compiled as Presidio compiles it) holds one."""
    from presidio_analyzer import pattern_recognizer

    text = "".join(parts)
    for pattern, flags, witness in _witnessed():
        for match in pattern_recognizer.re.compile(pattern, flags).finditer(text):
            assert witness.search(match.group()) is not None, (pattern, text)


def test_explanations_are_still_dropped_and_a_supportive_word_is_still_any_lemma_holding_one() -> None:
    """``IndexedContextEnhancer._any_supportive_word`` stops its walk at the first lemma holding a context word
    when the request's explanations are dropped: ``analyze`` sets every result's ``analysis_explanation`` to
    None unless ``return_decision_process``, and ``_find_supportive_word_in_context`` says, per context word,
    whether any lemma holds it (substring or whole word), returning the first such context word."""
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    analyze = inspect.getsource(AnalyzerEngine.analyze)
    assert "if not return_decision_process:\n            results = self.__remove_decision_process(results)" in analyze
    assert "result.analysis_explanation = None" in inspect.getsource(
        AnalyzerEngine._AnalyzerEngine__remove_decision_process)  # type: ignore[attr-defined]
    find = LemmaContextAwareEnhancer._find_supportive_word_in_context
    source = inspect.getsource(find)
    assert "for predefined_context_word in recognizer_context_list:" in source
    assert "if predefined_context_word.lower() in keyword.lower()" in source
    assert find(["x", "mobile-phone"], ["phone", "call"], "substring") == "phone"
    assert find(["x"], ["phone"], "substring") == ""


def test_spacy_keeps_a_span_whole_when_no_special_case_prefix_suffix_or_infix_applies() -> None:
    """``LocalTokens._plain_block`` and ``silent`` tell a span of one token without spaCy when its tokenizer's
    ``_split_affixes`` (private) finds no prefix or suffix and ``_attach_tokens`` (private) no infix and no
    special case: both still read them through ``find_prefix``, ``find_suffix`` and ``find_infix`` and push the
    string whole when ``find_infix`` finds nothing (read in the tokenizer's shipped source)."""
    from pathlib import Path

    from capsem_proxyd._compat.presidio import LocalTokens

    source = (Path(spacy.__file__).parent / "tokenizer.pyx").read_text()
    split = source[source.index("cdef str _split_affixes("):source.index("cdef int _attach_tokens(")]
    for line in ("if with_special_cases and self._specials.get(hash_string(string)) != NULL:",
                 "pre_len = self.find_prefix(string)", "suf_len = self.find_suffix(string[pre_len:])",
                 "elif pre_len:", "elif suf_len:"):
        assert line in split, line
    attach = source[source.index("cdef int _attach_tokens("):source.index("cdef int _save_cached(")]
    for line in ("matches = self.find_infix(string)", "if not matches:",
                 "tokens.push_back(self.vocab.get(tokens.mem, string), False)"):
        assert line in attach, line
    nlp = spacy.blank("en")

    class Engine:
        def __init__(self) -> None:
            self.nlp = {"en": nlp}

        def is_stopword(self, word: str, language: str) -> bool:
            return bool(nlp.vocab[word].is_stop)

        def is_punct(self, word: str, language: str) -> bool:
            return bool(nlp.vocab[word].is_punct)

    local = LocalTokens("call 650", Engine(), "en")
    for span in ("call", "bytes=8086641", "+448001234567", "10km", "can't", "(650)", "a-b", "U.S.", "phone:"):
        assert local.single_token(span) <= ([token.text for token in nlp.tokenizer(span)] == [span]), span
    assert local.single_token("call") and not local.single_token("10km") and not local.single_token("(650)")


def test_spacy_s_punctuation_and_stop_word_attributes_are_still_what_the_keyword_shortcut_reads() -> None:
    """``LocalTokens._qualifies`` passes a lemma holding a digit without making its lexeme: sound while spaCy's
    ``is_punct`` wants every character to be punctuation and ``is_stop`` is membership of the lower case in the
    pipeline's stop words (what ``_stop_words_with_digits`` reads)."""
    from spacy.attrs import IS_PUNCT, IS_STOP
    from spacy.lang import lex_attrs

    punct = inspect.getsource(lex_attrs.is_punct)
    assert 'if not unicodedata.category(char).startswith("P"):\n            return False' in punct
    assert "return string.lower() in stops" in inspect.getsource(lex_attrs.is_stop)
    assert lex_attrs.LEX_ATTRS[IS_PUNCT] is lex_attrs.is_punct
    import spacy

    nlp = spacy.blank("en")
    getter = nlp.vocab.lex_attr_getters[IS_STOP]
    assert getter.func is lex_attrs.is_stop and getter.keywords["stops"] is nlp.Defaults.stop_words


def test_spacy_is_still_the_release_whose_tokenizer_affix_tokenizer_repeats() -> None:
    """``AffixTokenizer`` repeats spaCy's Cython ``Tokenizer._split_affixes`` and ``_attach_tokens`` as released
    in 3.8 (read in 3.8.18): another minor release must be read again (the hypothesis test in
    ``tests/policy/test_pii_speed.py`` compares the two on random spans)."""
    import spacy

    assert spacy.__version__.startswith("3.8."), spacy.__version__


@given(st.lists(st.one_of(
    st.sampled_from(["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "GB82 WEST 1234 5698 7654 32",
                     "DE89-3704-0044-0532-0130-00", "1BoatSLRHtKNngkdXEeobR76b53LETtpyT",
                     "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
                     "\u017f", "\u212a", "\u0131", "\u0130", "\u00e9", " ", "-", "\n", "_", ".", "1", "3", "bc1"]),
    st.text(alphabet="0123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyzIOl \u017f\u212a\u0131\u0130-",
            min_size=1, max_size=40)),
    max_size=10))
@example(["AB12 CDEF GHIJ"])  # the shortest IBAN the pattern takes: two groups of four
@example(["\u212aE89 3704 0044 \u017f\u017f12-ABCD-EFGH"])  # letters that fold to ASCII ones (IGNORECASE)
@example(["1BoatSLRHtKNngkdXEeobR76b5 3J98t1WpEZ73CNmQviecrnyi 1\u017f" + "a" * 24])  # 26 characters, the fewest
@settings(max_examples=400, deadline=None)
def test_every_iban_and_bitcoin_address_holds_its_witness(parts: list[str]) -> None:
    """The IBAN and Bitcoin witnesses, on runs of letters, digits, spaces and hyphens with the non-ASCII letters
    that fold to ASCII ones: every match of the pattern (compiled as Presidio compiles it, and with IGNORECASE
    too) holds one."""
    from presidio_analyzer import pattern_recognizer

    text = "".join(parts)
    for pattern, flags, witness in _witnessed():
        for with_flags in (flags, flags | pattern_recognizer.re.IGNORECASE):
            for match in pattern_recognizer.re.compile(pattern, with_flags).finditer(text):
                assert witness.search(match.group()) is not None, (pattern, text)
