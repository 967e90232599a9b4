"""Presidio's spaCy engine without its silent model download, and its e-mail recognizer without the network.

* ``NoDownloadSpacyNlpEngine``: ``SpacyNlpEngine.load`` calls its private
  static ``_download_spacy_model_if_needed``, which runs ``spacy download``
  (pip, over the network) when a model is missing. Ours raises instead; the
  PII policy checks for the model first and names it in one line.
* ``OfflineEmailRecognizer``: ``EmailRecognizer.validate_result`` calls
  tldextract's module-level extractor, which fetches the Public Suffix List
  over HTTP on first use. Ours reads only tldextract's bundled snapshot (public
  ``TLDExtract`` arguments); what it relies on of Presidio is that
  ``validate_result`` is the only place the recognizer consults tldextract.

presidio-analyzer is pinned exactly in pyproject.toml (Presidio ships every
change, renames included, as a patch release); ``tests/_compat/test_presidio.py``
is the canary: it fails when the release differs, when
``_download_spacy_model_if_needed`` is no longer the static method ``load``
calls, or when ``validate_result`` reads tldextract some other way. The engine
subclass can go when Presidio stops downloading models (or offers a switch);
the recognizer when it lets a caller pass the extractor.

* ``CandidatePhoneRecognizer``: ``PhoneRecognizer.analyze`` runs phonenumbers'
  matcher over the whole text once per region (70-80% of the PII policy's time
  on source code). Ours asks it, per region, only about the candidates that can
  be a number of that region (``_compat/phonenumbers.py``),
  and builds each result as ``analyze`` does, with its private
  ``_get_recognizer_result`` (the canary checks ``analyze``'s shape). During an
  analysis by ``PruningAnalyzerEngine`` where a number's score (``SCORE``, 0.4)
  is under the threshold unless a context word raises it, it scans only the
  lines from which the enhancer's walk may read one of its context words
  (``ContextReach.lines_reaching``) and decides only the candidates there that
  may (``ContextReach.spans_reaching``): on a log or a CSV, the numbers near
  "phone" or "call"; none in a text without them; all of them, without
  bounding any, when its words are heard every 100 characters or more often
  (``ContextReach.everywhere``: a contact list). Its results' duplicates are
  removed by ``without_contained`` (Presidio's ``remove_duplicates`` for one
  entity type and one score). It can go when Presidio's recognizer gets a
  pre-filter of its own.
* ``IndexedContextEnhancer``: ``LemmaContextAwareEnhancer`` finds each match's
  token by walking every token of the text (its private static
  ``_find_index_of_match_token``): quadratic on text full of matches. Ours
  bisects (the canary checks the walk's condition). It can go when Presidio
  indexes the tokens. With the blank pipeline (lemmas are the words in lower
  case) it also overrides the private ``_extract_surrounding_words``: the
  lemmas around a match come from ``LocalTokens``, the text tokenized in
  blocks cut where spaCy starts a span of non-space characters (it tokenizes
  each such span on its own), only where a match's walk reaches, and the
  keywords (``NlpArtifacts.set_keywords``' filter, its split at colons) are
  tested one lemma at a time, instead of spaCy over the whole text as soon as
  a context word is anywhere in it (the canary checks the walk, ``_add_n_words``
  and ``set_keywords``). ``ContextReach`` bounds the part of the text that walk
  can read without tokenizing (a span with a digit and no colon holds a
  keyword): a match with no context word there is left as it is. Its own
  ``_raised`` repeats the body of Presidio's loop and copies a result only when
  its score rises, where Presidio deep-copies them all. When the request's
  explanations are dropped (``analyze`` without ``return_decision_process``:
  the policy's), the walk back from a match stops at the first lemma holding a
  context word (``_any_supportive_word``): the score rises the same; only the
  word an explanation would name can differ. In Presidio's default "substring"
  mode that is one walk each way from the match's token, found once, with
  whether a lemma holds a context word remembered per lemma
  (``LocalTokens.supporting_word``); from a match starting a block, the blocks
  before it are read first, and its own (a new text every time: the number)
  is tokenized only when they hold no context word close enough. Blocks'
  tokens are kept relative to the block, shared by every block of the same
  text. A result whose score rises is copied as ``copy.copy`` copies it
  (``plain_copy``: the canary checks that results and explanations have no
  copy hooks). Runs of digits are tokenized
  without spaCy, and so is any span spaCy keeps whole (``LocalTokens._plain_block``) or cuts at its
  affixes with no special case (``AffixTokenizer``: spaCy's ``_split_affixes`` / ``_attach_tokens``
  repeated with the tokenizer's public patterns, compared with spaCy's tokenizer by a hypothesis test in
  ``tests/policy/test_pii_speed.py``; spaCy's suffix pattern searched only where a match can start,
  ``EndAnchoredSearch``); a lemma holding a digit passes the keyword filter without a
  lexeme (the canary pins spaCy's ``is_punct`` and ``is_stop``);
  an occurrence of a context word inside a span that is one token whose lemma is
  no keyword ("call" is a stop word) is no occurrence for ``ContextReach``.
* ``PruningAnalyzerEngine``: ``AnalyzerEngine.analyze`` drops results below the
  request's threshold right after its private ``_enhance_using_context`` and
  before removing duplicates; ours drops before enhancement the results no
  context word can lift to it, and repeats ``_enhance_using_context`` with the
  results grouped once (the canary checks the order and the method's lines). It
  can go when Presidio filters before enhancing.
* ``PruningRegistry``: for the same reason, the patterns whose results cannot
  reach the threshold even with a context word (US_BANK_NUMBER's, the weak
  US_SSN ones, the IP recognizer's ``::``) are not run at all, nor the ones a
  text cannot hold a match of (``WITNESSES``: an IPv6 address holds "::" or six
  hex groups followed by colons, an IBAN two letters, two digits and eight letters
  or digits, a Bitcoin address 26 letters or digits in a row): during an analysis by
  ``PruningAnalyzerEngine``, ``get_recognizers`` (public) gives a copy of each
  such recognizer holding only its other patterns, or leaves it out (the canary
  checks how Presidio's pattern recognizer scores a pattern's matches, through
  its private ``__analyze_patterns``, that each witnessed pattern is still
  Presidio's, and on random text that each of its matches holds its witness).
"""

from __future__ import annotations

import bisect
import copy
import functools
import hashlib
import re
import threading
from collections.abc import Callable
from itertools import accumulate
from pathlib import Path
from typing import Any

import phonenumbers
import spacy
from phonenumbers import NumberParseException
from presidio_analyzer import (
    AnalysisExplanation,
    AnalyzerEngine,
    EntityRecognizer,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer, LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import EmailRecognizer, PhoneRecognizer
from tldextract import TLDExtract

from capsem_proxyd._compat import sre
from capsem_proxyd._compat.phonenumbers import (
    RegionSieve,
    RememberingMatcher,
    lines_around,
    phone_scan,
    region_matches,
    shortest_valid_number,
)


def spacy_model_installed(model_name: str) -> bool:
    """Whether ``model_name`` loads without a download: an installed package or a model folder (Presidio's test)."""
    return bool(spacy.util.is_package(model_name)) or Path(model_name).exists()


class NoDownloadSpacyNlpEngine(SpacyNlpEngine):
    """Presidio's spaCy engine that fails to load a missing model instead of downloading it."""

    @staticmethod
    def _download_spacy_model_if_needed(model_name: str) -> None:
        if not spacy_model_installed(model_name):
            raise ValueError(f"spaCy model '{model_name}' is not installed")


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail recognizer with a Public Suffix List that never leaves the disk."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # No remote lists, no cache directory: tldextract's bundled snapshot only.
        self.offline_extract = TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)

    def validate_result(self, pattern_text: str) -> bool:
        return self.offline_extract(pattern_text).fqdn != ""


_UNKNOWN = object()
_UNPARSED = object()


class CandidatePhoneRecognizer(PhoneRecognizer):
    """Presidio's phone recognizer, run per region only where a candidate can be a number of it.

    ``PhoneRecognizer.analyze`` runs phonenumbers' matcher over the whole text once per region; this
    scans the text's candidates once (``phone_scan``), decides once for every region which can be a
    valid number of which (``RegionSieve``) and, per region, follows the matcher's scan over them,
    asking it only about those (``region_matches``), building each result the way
    ``PhoneRecognizer.analyze`` does (``tests/_compat/test_presidio.py`` checks that method's shape).
    A number found again in a later region is not built again: Presidio's result there has the same
    entity, start, end and score, and its ``remove_duplicates`` (a set, then its first) keeps the
    first region's."""

    min_digits = 0  # set at first use
    _sieve: RegionSieve | None = None  # built at first use, for the regions then configured
    _decisions: dict[tuple[str, Any], dict] | None = None  # RememberingMatcher's, per region and leniency
    _regions_of: dict[str, Any] | None = None  # a number's region (region_code_for_number), by its text

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.near_context = threading.local()  # .reach: set by PruningRegistry for one analysis (``analyze``)

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list:
        """Presidio's results, or, during an analysis where a number scores under the threshold unless a context
        word raises it (``near_context.reach``, set by ``PruningRegistry``), those a context word may raise:
        only the candidates from which a walk may read one are decided (``ContextReach.spans_reaching``: every
        result lies inside its candidate), none when the text holds none of the recognizer's words. The others'
        results would score under the threshold and be removed, and, each inside its own candidate, contain no
        result kept (Presidio's ``remove_duplicates`` here removes only a result contained in another)."""
        if self.leniency is None or self.leniency < 1:  # POSSIBLE accepts shorter, local-only numbers
            return super().analyze(text, entities, nlp_artifacts)
        near: tuple[ContextReach, list[str]] | None = getattr(self.near_context, "reach", None)
        if near is not None and near[0].holds_none(near[1]):
            return []
        if not CandidatePhoneRecognizer.min_digits:
            CandidatePhoneRecognizer.min_digits = shortest_valid_number()
        min_digits = CandidatePhoneRecognizer.min_digits
        near = _unless_everywhere(near)
        lines = None if near is None else near[0].lines_reaching(near[1])
        scan = phone_scan(text, min_digits, long_only=True, lines=lines)  # the others: no number
        if not scan:
            return []
        sieve = self._sieve
        if sieve is None or sieve.regions != list(self.supported_regions):
            sieve = self._sieve = RegionSieve(self.supported_regions)
        starts = [candidate.start for candidate in scan]
        wants = _verdicts_near(sieve, text, scan, starts, near)
        if not any(wants):
            return []
        scan_index = {candidate.start: at for at, candidate in enumerate(scan)}
        settled: dict[int, Any] = {}  # candidates found whole, parsed alike everywhere: found again in every region
        results = []
        spans: set[tuple[int, int]] = set()  # found already: Presidio's result there would be a duplicate
        decisions = self._decisions
        if decisions is None:
            decisions = self._decisions = {}
        wanted_at = wanted_by_region(wants, len(self.supported_regions))
        named = self._regions_of
        if named is None:
            named = self._regions_of = {}
        for index, region in enumerate(self.supported_regions):
            explained = region  # PhoneRecognizer.analyze reuses its loop variable for the explanation
            matcher = RememberingMatcher(text, region, self.leniency, decisions.setdefault((region, self.leniency), {}))
            for match in region_matches(matcher, scan, wants, scan_index, index, sieve, settled, min_digits,
                                        wanted_at[index], starts):
                raw = match.raw_string
                found_in = named.get(raw, _UNKNOWN)  # _number_region's answer, without a call once it is known
                if found_in is _UNKNOWN:
                    explained = self._number_region(raw, explained)
                elif found_in is not _UNPARSED:
                    explained = str(found_in)  # (region_code_for_number may give None)
                span = (match.start, match.end)
                if span in spans:
                    continue  # the same entity, start, end and score: remove_duplicates keeps the first
                spans.add(span)
                results.append(self._get_recognizer_result(match, text, explained, nlp_artifacts))
                at = scan_index.get(match.start)
                if at is not None and match.start not in settled and raw == scan[at].text and (
                        sieve.parsed_alike_everywhere(raw)):
                    settled[match.start] = match
        return without_contained(results)

    def _number_region(self, raw: str, explained: str) -> str:
        """The region ``PhoneRecognizer.analyze`` names for a number it found (``region_code_for_number`` of
        the number parsed with no region), or ``explained`` when that parse fails; remembered by its text."""
        regions_of = self._regions_of
        if regions_of is None:
            regions_of = self._regions_of = {}
        found_in = regions_of.get(raw, _UNKNOWN)
        if found_in is _UNKNOWN:
            try:
                found_in = phonenumbers.region_code_for_number(phonenumbers.parse(raw))
            except NumberParseException:
                found_in = _UNPARSED
            if len(regions_of) >= RememberingMatcher.KNOWN:
                regions_of.clear()
            regions_of[raw] = found_in
        return explained if found_in is _UNPARSED else str(found_in)


def without_contained(results: list[RecognizerResult]) -> list[RecognizerResult]:
    """``EntityRecognizer.remove_duplicates`` of results at distinct spans (the phone recognizer's: ``spans``), for
    results of one entity type and one score above zero (else Presidio's own is asked). Presidio's sorts them by
    start, the longest first, and drops one contained in a result it kept scoring as much; with one score, one is
    dropped exactly when an earlier one in that order contains it (one containing it was dropped for a kept one
    containing that one, which still reaches it), that is when the furthest end of the earlier ones is at its end
    or past it: the same list, in the same order, without Presidio's set, its sort key of four fields and its
    scan of the results kept so far (~5% of a contact list's analysis, where every number is a result)."""
    if not results:
        return []
    entity, score = results[0].entity_type, results[0].score
    if not score or any(result.entity_type != entity or result.score != score for result in results):
        return list(EntityRecognizer.remove_duplicates(results))
    kept = []
    furthest = -1
    for result in sorted(results, key=lambda result: (result.start, result.start - result.end)):
        if result.end > furthest:
            kept.append(result)
            furthest = result.end
    return kept


_PLAIN_COPIES = (RecognizerResult, AnalysisExplanation)  # no copy hooks of their own (tests/_compat canary)


def plain_copy(thing: Any) -> Any:
    """``copy.copy(thing)``: for a result or its explanation (plain classes: no ``__slots__``, no ``__copy__``,
    ``__reduce_ex__`` or ``__getstate__`` of their own, so ``copy.copy`` makes an instance with ``__new__`` and
    updates its ``__dict__`` with the original's), the same without ``copy``'s dispatch through ``__reduce_ex__``
    (a fifth of the enhancer's time on a contact list, where every number's score rises)."""
    if type(thing) not in _PLAIN_COPIES:
        return copy.copy(thing)
    twin = object.__new__(type(thing))
    twin.__dict__.update(thing.__dict__)
    return twin


def _unless_everywhere(near: tuple[ContextReach, list[str]] | None) -> tuple[ContextReach, list[str]] | None:
    """``near``, or None when its words are everywhere (``ContextReach.everywhere``): nearly every line and candidate
    is then reached (on a contact list, 14,000 of 14,400 candidates, for 19 ms of ``spans_reaching``), and none is
    bounded before it is decided, as in an analysis without a threshold."""
    return None if near is not None and near[0].everywhere(near[1]) else near


def _verdicts_near(sieve: RegionSieve, text: str, scan: list[Any], starts: list[int],
                   near: tuple[ContextReach, list[str]] | None) -> list[tuple[bool, ...] | None]:
    """``sieve.verdicts`` of the candidates of ``scan`` (starting at ``starts``) from which a walk may read one of
    ``near``'s words (``ContextReach.spans_reaching``; all of them when ``near`` is None); None for the others."""
    reaching = None if near is None else near[0].spans_reaching(starts, [candidate.end for candidate in scan],
                                                                 near[1])
    if reaching is None:
        return sieve.verdicts(text, scan)
    kept = iter(sieve.verdicts(text, [candidate for candidate, reached in zip(scan, reaching, strict=True)
                                      if reached]))
    return [next(kept) if reached else None for reached in reaching]


def wanted_by_region(wants: list[tuple[bool, ...] | None], regions: int) -> list[list[int]]:
    """Per region, the positions of the scan's candidates it must see (``RegionSieve.verdicts``), in order."""
    wanted_at: list[list[int]] = [[] for _ in range(regions)]
    for position, wanted in enumerate(wants):
        if wanted is not None:
            for index, must in enumerate(wanted):
                if must:
                    wanted_at[index].append(position)
    return wanted_at


class IndexedContextEnhancer(LemmaContextAwareEnhancer):
    """Presidio's context enhancer, finding a match's token by bisection instead of a walk over every token.

    ``_find_index_of_match_token`` (private, static) returns the first token that starts at the match
    or ends after its start, walking the tokens from the first for every match: quadratic in a text full
    of matches (half the PII policy's time on a log or a CSV). Tokens follow each other without overlap
    and are never empty, so their ends increase strictly and that token is the first whose end is past
    the start: ``bisect_right`` over the ends, computed once per text. And skipped altogether where no
    context word can be found (``enhance_using_context``)."""

    def __init__(self, *args: Any, lowercase_lemmas: bool = False, nlp_engine: Any = None, language: str = "en",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lowercase_lemmas = lowercase_lemmas  # the pipeline's lemmas are its words in lower case
        self.nlp_engine = nlp_engine  # Presidio's engine of that pipeline: its tokenizer, stop words, punctuation
        self.language = language
        self._ends = threading.local()  # analysis threads share the analyzer
        self._local = threading.local()  # the text being enhanced, tokenized where a match needs it
        self._tokens_by_text: dict[str, tuple[list[tuple[int, int, str]], list[int]]] = {}  # LocalTokens' blocks
        self.unexplained = threading.local()  # .on: the analysis drops its results' explanations

    def enhance_using_context(self, text: str, raw_results: list[RecognizerResult], nlp_artifacts: Any,
                              recognizers: list[EntityRecognizer], context: list[str] | None = None,
                              ) -> list[RecognizerResult]:
        """Presidio's, run only on the results whose score a context word near them can raise (the others
        returned as they are: Presidio returns deep copies of them, unchanged, and its caller drops the
        originals). A context word counts when it is part of the lower-case lemma of a word near the match;
        when the lemmas are the words in lower case (the blank pipeline's, ``lowercase_lemmas``) it is then
        part of the lower-case text near the match (``ContextReach``). spaCy then need not run at all (its
        artifacts are lazy), and the words near a match come from ``LocalTokens``."""
        if context or nlp_artifacts is None or not self.lowercase_lemmas:
            return list(super().enhance_using_context(text, raw_results, nlp_artifacts, recognizers, context))
        by_id = {recognizer.id: recognizer for recognizer in recognizers}
        reach, local = self.reach_of(text)
        lowered = reach.lowered
        present: dict[str, int] = {}  # per recognizer: 0 none of its context words is in the text, 1 one is,
        # 2 they are heard everywhere (``ContextReach.everywhere``: every result walked, none bounded first)

        def may_rise(result: RecognizerResult) -> bool:
            metadata = result.recognition_metadata or {}
            recognizer = by_id.get(metadata.get(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY))
            if recognizer is None or not recognizer.context:
                return False
            known = present.get(recognizer.id)
            if known is None:
                known = 0 if not any(str(word).lower() in lowered for word in recognizer.context) else (
                    2 if reach.everywhere(recognizer.context) else 1)
                present[recognizer.id] = known
            return known == 2 or (known == 1 and reach.may_find(result.start, recognizer.context))

        rising = [may_rise(result) for result in raw_results]
        if not any(rising):
            return list(raw_results)
        if self.nlp_engine is None:
            return list(super().enhance_using_context(text, raw_results, nlp_artifacts, recognizers, context))
        # Presidio's loop treats each result on its own: the others are left as they are.
        self._local.text = tokens = local()
        try:
            if getattr(self.unexplained, "on", False) and self.context_matching_mode == "substring":
                return self._raised_unexplained(text, tokens, raw_results, rising, by_id, nlp_artifacts)
            return [self._raised(text, result, by_id, nlp_artifacts) if rises else result
                    for result, rises in zip(raw_results, rising, strict=True)]
        finally:
            self._local.text = None

    def _raised_unexplained(self, text: str, local: LocalTokens, results: list[RecognizerResult], rising: list[bool],
                            recognizers: dict[Any, EntityRecognizer], nlp_artifacts: Any) -> list[RecognizerResult]:
        """``_raised`` of each result of ``rising``, the others as they are, when the analysis drops every explanation
        (``unexplained``) and a context word counts as part of a lemma ("substring"): a recognizer's words are read
        once, not once per result (a contact list has thousands), and a raised result is a copy sharing the original's
        explanation, left untouched (``_raised``). A recognizer with an empty word goes through ``_raised``."""
        back, on = self.context_prefix_count + 1, self.context_suffix_count + 1
        words_of: dict[Any, tuple[str, ...] | None] = {}  # per recognizer id: its words, None when one is empty
        supporting = local.supporting_word
        out: list[RecognizerResult] = []
        append = out.append
        for result, rises in zip(results, rising, strict=True):
            if not rises:
                append(result)
                continue
            metadata = result.recognition_metadata
            key = metadata[RecognizerResult.RECOGNIZER_IDENTIFIER_KEY]
            if key in words_of:
                words = words_of[key]
            else:
                context = recognizers[key].context
                words = words_of[key] = tuple(context) if all(context) else None
            if words is None:
                append(self._raised(text, result, recognizers, nlp_artifacts))
                continue
            if metadata.get(RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY) or not supporting(
                    result.start, back, on, words):
                append(result)
                continue
            result = plain_copy(result)
            result.score = self._raised_score(result.score)
            append(result)
        return out

    def _raised_score(self, score: float) -> float:
        """A score a supporting context word raises, as Presidio's enhancer raises it."""
        score = max(score + self.context_similarity_factor, self.min_score_with_context_similarity)
        return min(score, ContextAwareEnhancer.MAX_SCORE)

    def keep_reach(self, on: bool) -> None:
        """From ``True`` to ``False`` (one analysis, this thread): ``reach_of`` keeps the text's ``ContextReach``."""
        self._local.keep_reach = on
        self._local.reach = None

    def reach_of(self, text: str) -> tuple[ContextReach, Callable[[], LocalTokens]]:
        """The ``ContextReach`` of ``text`` (lemmas = lower-case words), and a maker of its ``LocalTokens`` (made
        when first needed), shared during an analysis by ``PruningAnalyzerEngine`` (``keep_reach``: the phone
        recognizer asks first, ``enhance_using_context`` after it) so the text is scanned once."""
        kept: tuple[str, ContextReach, Callable[[], LocalTokens]] | None = getattr(self._local, "reach", None)
        if kept is not None and kept[0] is text:
            return kept[1], kept[2]
        made: list[LocalTokens] = []  # the text's LocalTokens, made when first needed

        def local() -> LocalTokens:
            if not made:
                made.append(LocalTokens(text, self.nlp_engine, self.language, self._tokens_by_text))
            return made[0]

        reach = ContextReach(text, text.lower().lower(), self.context_prefix_count, self.context_suffix_count,
                             self.nlp_engine, self.language,
                             silent=(lambda span: local().silent(span)) if self.nlp_engine is not None else None)
        if getattr(self._local, "keep_reach", False):
            self._local.reach = (text, reach, local)
        return reach, local

    def _raised(self, text: str, result: RecognizerResult, recognizers: dict[Any, EntityRecognizer],
                nlp_artifacts: Any) -> RecognizerResult:
        """The body of Presidio's loop over the results (``LemmaContextAwareEnhancer.enhance_using_context``,
        with no context of the request's own), on a copy of ``result`` made only when its score rises:
        Presidio deep-copies every result first, a deep copy of thousands of results on a log."""
        recognizer = recognizers[result.recognition_metadata[RecognizerResult.RECOGNIZER_IDENTIFIER_KEY]]
        if result.recognition_metadata.get(RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY):
            return result
        word = text[result.start:result.end]
        local: LocalTokens | None = getattr(self._local, "text", None)
        if local is not None and getattr(self.unexplained, "on", False):
            supportive_context_word = self._any_supportive_word(local, result.start, recognizer.context)
        else:
            surrounding_words = self._extract_surrounding_words(nlp_artifacts=nlp_artifacts, word=word,
                                                                start=result.start)
            supportive_context_word = self._find_supportive_word_in_context(
                surrounding_words, recognizer.context, self.context_matching_mode)
        if supportive_context_word == "":
            return result
        explained = not getattr(self.unexplained, "on", False)
        result = plain_copy(result)
        if explained:  # else the analysis drops every explanation: the copy shares the original's, left untouched
            result.analysis_explanation = plain_copy(result.analysis_explanation)
        result.score = self._raised_score(result.score)
        if explained:
            result.analysis_explanation.set_supportive_context_word(supportive_context_word)
            result.analysis_explanation.set_improved_score(result.score)
        return result

    def _any_supportive_word(self, local: LocalTokens, start: int, context: list[str]) -> str:
        """A context word supporting a match at ``start``, found in the lemmas ``_extract_surrounding_words``
        reads (the match's own and the ones after it first), the walk back stopping at the first lemma that
        holds one. Whether there is one is Presidio's answer: ``_find_supportive_word_in_context`` asks, for each
        context word, whether some lemma holds it, so one lemma that holds one decides, and the score rises the
        same whichever it is. Which word it names can differ from Presidio's (the first of the recognizer's
        list that some lemma holds): only when the request's explanations are dropped (``unexplained``)."""
        mode = self.context_matching_mode
        if mode == "substring" and all(context):
            return local.supporting_word(start, self.context_prefix_count + 1, self.context_suffix_count + 1,
                                         tuple(context))
        forward = local.keywords_from(start, self.context_suffix_count + 1, backward=False)
        found = self._find_supportive_word_in_context(forward, context, mode)
        if found:
            return str(found)
        if mode == "substring":  # Presidio's test, on one lemma: a context word in lower case is part of it
            lowered = [str(word).lower() for word in context]

            def holds(lemma: str) -> bool:
                lemma = lemma.lower()
                return any(word in lemma for word in lowered)
        else:
            def holds(lemma: str) -> bool:
                return bool(self._find_supportive_word_in_context([lemma], context, mode))
        backward = local.keywords_from(start, self.context_prefix_count + 1, backward=True, stop=holds)
        return str(self._find_supportive_word_in_context(list(set(backward + forward)), context, mode))

    def best_score(self, result: RecognizerResult, recognizers: dict[Any, EntityRecognizer]) -> float:
        """The highest score ``enhance_using_context`` can give ``result``: raised once by a context word,
        as Presidio raises it (same operations, same order), if its recognizer has context words and it
        was not raised already."""
        metadata = result.recognition_metadata or {}
        recognizer = recognizers.get(metadata.get(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY))
        if recognizer is None or not recognizer.context or metadata.get(
                RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY):
            return float(result.score)
        score = result.score + self.context_similarity_factor
        score = max(score, self.min_score_with_context_similarity)
        return float(min(score, ContextAwareEnhancer.MAX_SCORE))

    def _extract_surrounding_words(self, nlp_artifacts: Any, word: str, start: int) -> list[str]:
        """Presidio's (the lemmas of the ``context_prefix_count`` keywords before the match's token and the
        ``context_suffix_count`` after, the token's own counted on each side), from the tokens around the
        match only (``LocalTokens``) when the text is one ``enhance_using_context`` set up."""
        local: LocalTokens | None = getattr(self._local, "text", None)
        if local is None:
            return list(super()._extract_surrounding_words(nlp_artifacts, word, start))
        backward = local.keywords_from(start, self.context_prefix_count + 1, backward=True)
        forward = local.keywords_from(start, self.context_suffix_count + 1, backward=False)
        return list(set(backward + forward))

    def _find_index_of_match_token(  # type: ignore[override]  # static there, called through self
        self, word: str, start: int, tokens: Any, tokens_indices: list[int],
    ) -> int:
        cached: tuple[Any, list[int] | None] | None = getattr(self._ends, "of", None)
        if cached is None or cached[0] is not tokens:
            ends = [offset + len(token) for offset, token in zip(tokens_indices, tokens, strict=True)]
            increasing = all(earlier < later for earlier, later in zip(ends, ends[1:], strict=False))
            cached = (tokens, ends if increasing else None)
            self._ends.of = cached
        if cached[1] is None:  # never seen; Presidio's own walk then
            return int(LemmaContextAwareEnhancer._find_index_of_match_token(word, start, tokens, tokens_indices))
        index = bisect.bisect_right(cached[1], start)
        if index == len(cached[1]):
            raise ValueError(f"Did not find word '{word}' in the list of tokens although it is expected to be found")
        return index


_PLAIN_BLOCK = re.compile(r"([0-9A-Za-z_=+]+)([ \t\n\r]*)")  # no punctuation an infix or suffix is made of
_SPAN_START = re.compile(r"(?<=\s)(?=\S)")  # where spaCy's tokenizer starts a span of non-space characters
_SPACE_BEFORE_SPAN = re.compile(r"\s(?=\S)")  # its end: the same places
_COLON_SPAN = re.compile(r"\S*:\S*")


class LocalTokens:
    """A text's spaCy tokens (the blank pipeline's, lemmas = lower-case words), tokenized block by block
    where a match needs them, and its keywords (Presidio's ``NlpArtifacts.set_keywords``) tested one lemma
    at a time.

    spaCy's tokenizer splits the text at its whitespace and tokenizes each span of non-space characters on
    its own (and each run of whitespace after the single space it gives the token before): the tokens of
    ``text[a:b]``, with ``a`` and ``b`` where such a span starts (or the text's ends), are the text's own
    tokens there. The text is cut at such places about every ``BLOCK`` characters; a block is tokenized
    when a walk first reaches it. A lemma is a keyword of the text when it passes ``set_keywords``' filter
    (no stop word, no punctuation, not ``be`` or ``-PRON-``) and holds no colon, or when it is a
    colon-separated piece of such a lemma that holds one: those come from the spans holding that piece
    next to a colon, tokenized when first asked."""

    BLOCK = 1  # characters per block, at least (1: a block per span, each span's tokens looked up by its text)
    KNOWN = 16_384  # block texts whose tokens a shared ``known`` remembers (a few MB), then forgets all at once

    def __init__(self, text: str, nlp_engine: Any, language: str,
                 known: dict[str, tuple[list[tuple[int, int, str]], list[int]]] | None = None) -> None:
        self.text = text
        self.engine = nlp_engine
        self.language = language
        self.tokenizer = nlp_engine.nlp[language].tokenizer
        self.block_size = self.BLOCK  # as it is when made (the tests vary it)
        self._known = {} if known is None else known  # a block's tokens (offsets from its start) and ends, by its text
        self._blocks: dict[int, tuple[int, list[tuple[int, int, str]], list[int]]] = {}  # _relative's
        self._holding: dict[tuple[str, ...], tuple[list[str], dict[str, str]]] = {}  # supporting_word's
        self.lowered = text.lower()
        self._keyword: dict[str, bool] = {}
        self._digits_qualify = not _stop_words_with_digits(nlp_engine, language)
        self._silent: dict[str, bool] = {}
        self._affixes: AffixTokenizer | None = None

    @functools.cached_property
    def cuts(self) -> list[int]:
        """Where the blocks start, and the text's end: block i is ``text[cuts[i]:cuts[i + 1]]``. Found when a
        walk first needs a block (``silent`` needs none: a text where nothing rises is not scanned)."""
        text = self.text
        if self.block_size <= 1:  # a block per span (a span starts after a space: never at 0)
            # Right after a space followed by a non-space character: the engine looks for the space first (a third
            # faster than the lookbehind at every position of ``_SPAN_START``).
            cuts = [found.end() for found in _SPACE_BEFORE_SPAN.finditer(text)]
            cuts.insert(0, 0)
        else:
            cuts = [0]
            for found in _SPAN_START.finditer(text):
                if found.start() - cuts[-1] >= self.block_size:
                    cuts.append(found.start())
        if cuts[-1] != len(text):
            cuts.append(len(text))
        return cuts

    def _qualifies(self, lemma: str) -> bool:
        """``NlpArtifacts.set_keywords``' filter: a lemma holding a decimal digit passes it when no stop word of
        the pipeline holds a digit (spaCy's ``is_punct`` wants every character to be punctuation: a digit is
        none), without a lexeme made for it (spaCy computes some twenty attributes for a new one, ~25 µs: a
        CSV row's or a ``tel:`` number's pieces are each new)."""
        if self._digits_qualify and _A_DIGIT.search(lemma):
            return True
        return not self.engine.is_stopword(lemma, self.language) and not self.engine.is_punct(
            lemma, self.language) and lemma != "-PRON-" and lemma != "be"

    def is_keyword(self, lemma: str) -> bool:
        """Whether ``lemma.lower()`` is among the text's keywords (what ``_add_n_words`` asks)."""
        known = self._keyword.get(lemma)
        if known is None:
            lowered = lemma.lower()
            known = (":" not in lemma and lemma == lowered and self._qualifies(lemma)) or (
                self._a_colon_piece(lowered)) or self._lowered_elsewhere(lemma, lowered)
            self._keyword[lemma] = known
        return known

    def _lowered_elsewhere(self, lemma: str, lowered: str) -> bool:
        """A lemma not in lower case (never, with lower-case lemmas): its lower case is a keyword when that
        is a lemma of its own; answered by Presidio's way, on the text's every token."""
        if lemma == lowered:
            return False
        return lowered in {piece for token in self.tokenizer(self.text) for piece in self._split(token.lower_)}

    def _split(self, lemma: str) -> list[str]:
        return lemma.lower().split(":") if self._qualifies(lemma) else []

    def _a_colon_piece(self, piece: str) -> bool:
        """Whether ``piece`` is a colon-separated piece of a keyword lemma holding a colon: such a lemma
        is the lower case of a token of a span holding ``piece`` next to a colon; those spans, joined by
        spaces (each tokenized on its own all the same), are tokenized once."""
        if ":" in piece or (piece + ":" not in self.lowered and ":" + piece not in self.lowered):
            return False
        near = re.compile(r"\S*(?:%s:|:%s)\S*" % (re.escape(piece), re.escape(piece)))
        spans = [self.text[found.start():found.end()] for found in near.finditer(self.lowered)]
        if len(self.lowered) != len(self.text):  # lower case changed the length: Presidio's way, on every span
            spans = _COLON_SPAN.findall(self.text)
        return any(piece in self._split(token.lower_) for token in self.tokenizer(" ".join(spans))
                   if ":" in token.lower_)

    def block(self, index: int) -> list[tuple[int, int, str]]:
        """The tokens (start, end, lemma) of block ``index``: its text's tokens, where it starts."""
        first, relative, _ = self._relative(index)
        return [(first + begin, first + end, lemma) for begin, end, lemma in relative]

    def _relative(self, index: int) -> tuple[int, list[tuple[int, int, str]], list[int]]:
        """Block ``index``: where it starts, and its text's tokens (start, end, lemma, from there) and their ends,
        remembered by that text and shared by every block of the same text: the walks read lemmas and compare
        ends with ``start - first``, so no block's tokens are copied to offsets of their own (on a contact list,
        about a third of the walks' time, and young objects for the collector)."""
        found = self._blocks.get(index)
        if found is None:
            first, last = self.cuts[index], self.cuts[index + 1]
            piece = self.text[first:last]
            known = self._known.get(piece)
            if known is None:
                relative = self._plain_block(piece)  # remembered too: a log repeats its words and short counts
                if relative is None:
                    relative = self._affix_block(piece)
                if relative is None:
                    relative = [(token.idx, token.idx + len(token), token.lower_) for token in self.tokenizer(piece)]
                if len(self._known) >= self.KNOWN:
                    self._known.clear()
                known = self._known[piece] = (relative, [end for _, end, _ in relative])
            found = self._blocks[index] = (first, known[0], known[1])
        return found

    def _plain_block(self, piece: str) -> list[tuple[int, int, str]] | None:
        """The tokens of a block that is one span of ASCII letters, digits, ``_``, ``=`` and ``+`` and its ASCII
        whitespace, told without spaCy when the span is one token (a log's or a CSV's ids, counts and words, each
        a new string spaCy would add to its vocabulary; a span with other punctuation is likely split, and goes
        to spaCy without these tests, which spaCy repeats): its tokenizer keeps a span whole when it is no
        special case and no prefix, suffix or infix of it applies (``Tokenizer._split_affixes`` then
        ``_attach_tokens``: nothing to split; its special-case matcher then finds no rule in one token that is
        none). A single space after it is that token's, and the rest of the whitespace (all of it, when it
        does not start with a space) is one token of its own. None for any other block."""
        found = _PLAIN_BLOCK.fullmatch(piece)
        if found is None:
            return None
        span, space = found.group(1), found.group(2)
        if not self.single_token(span):
            return None
        tokens = [(0, len(span), span.lower())]
        rest = space[1:] if space.startswith(" ") else space
        if rest:
            tokens.append((len(piece) - len(rest), len(piece), rest))
        return tokens

    def _affix_block(self, piece: str) -> list[tuple[int, int, str]] | None:
        """The tokens of a block that is one span of printable ASCII characters and its ASCII whitespace, cut as
        spaCy cuts it (``AffixTokenizer``) when that needs no special case; None when it may."""
        found = _ASCII_BLOCK.fullmatch(piece)
        if found is None:
            return None
        span, space = found.group(1), found.group(2)
        affixes = self._affixes
        if affixes is None:
            affixes = self._affixes = affix_tokenizer(self.tokenizer)
        # Kept whole when no special case, prefix, suffix or infix applies (``single_token``, as ``_plain_block``
        # asks): a contact list's CSV row is one token, told by three searches instead of the special cases'
        # search and the affix loop.
        pieces = [span] if self.single_token(span) else affixes.tokens(span)
        if pieces is None:
            return None
        tokens = []
        at = 0
        for text in pieces:
            tokens.append((at, at + len(text), text.lower()))
            at += len(text)
        rest = space[1:] if space.startswith(" ") else space
        if rest:
            tokens.append((len(piece) - len(rest), len(piece), rest))
        return tokens

    def single_token(self, span: str) -> bool:
        """Whether spaCy's tokenizer, given ``span`` (non-space characters), leaves it one token because no
        special case, prefix, suffix or infix of it applies (False: it may split it)."""
        tokenizer = self.tokenizer  # the cheapest tests first: the suffix pattern, the dearest, only near the end
        affixes = self._affixes
        if affixes is None:
            affixes = self._affixes = affix_tokenizer(tokenizer)
        return not (span in tokenizer.rules or (
            tokenizer.infix_finditer is not None and next(iter(tokenizer.infix_finditer(span)), None)) or (
            tokenizer.prefix_search is not None and tokenizer.prefix_search(span)) or (
            affixes.suffix_search is not None and affixes.suffix_search(span)))

    def silent(self, span: str) -> bool:
        """Whether the span of non-space characters ``span`` gives the walks no keyword: spaCy keeps it one
        token (``single_token``) whose lemma, its lower case, is no keyword of the text (a stop word such as
        "call", punctuation). A context word inside it is then in no lemma Presidio's enhancer reads. A span with
        a decimal digit and no colon gives one when digits pass the keyword filter (``_qualifies``), told without
        asking the tokenizer (on a contact list, the label is often in the same span as the number: "id,phone,+44")."""
        known = self._silent.get(span)
        if known is None:
            if self._digits_qualify and ":" not in span and _A_DIGIT.search(span):
                known = False  # one token or more; one alone would be its lower case, holding a digit: a keyword
            else:
                known = self.single_token(span) and not self.is_keyword(span.lower())
            self._silent[span] = known
        return known

    def keywords_from(self, start: int, count: int, *, backward: bool,
                      stop: Callable[[str], bool] | None = None) -> list[str]:
        """``_add_n_words`` from the match's token (``_find_index_of_match_token``: the first that starts at
        ``start`` or ends past it): up to ``count`` lower-case lemmas that are keywords, walking back or on;
        ``stop``: the walk ends after a lemma it says yes to."""
        at, tokens, index = self._token_at(start)
        blocks = len(self.cuts) - 1
        words: list[str] = []
        step = -1 if backward else 1
        while len(words) < count:
            if not 0 <= index < len(tokens):
                at += step
                if not 0 <= at < blocks:
                    break
                tokens = self._relative(at)[1]
                index = len(tokens) - 1 if backward else 0
                continue
            lemma = tokens[index][2]
            if self.is_keyword(lemma):
                words.append(lemma.lower())
                if stop is not None and stop(words[-1]):
                    break
            index += step
        return words

    def _token_at(self, start: int) -> tuple[int, list[tuple[int, int, str]], int]:
        """The match's token (``_find_index_of_match_token``: the first that starts at ``start`` or ends past it):
        its block, that block's tokens (``_relative``) and its index among them."""
        blocks = len(self.cuts) - 1
        at = max(0, bisect.bisect_right(self.cuts, start) - 1)  # tokens of earlier blocks end before start
        while True:
            if at >= blocks:
                raise ValueError(f"Did not find the token at {start} in the list of tokens although it "
                                 "is expected to be found")
            first, tokens, ends = self._relative(at)
            # The first token starting at start or ending past it: its end is past start (tokens are never
            # empty), and the ends increase (tokens follow each other): bisection over them.
            index = bisect.bisect_right(ends, start - first)
            if index < len(tokens):
                return at, tokens, index
            at += 1

    def supporting_word(self, start: int, back: int, on: int, context: tuple[str, ...]) -> str:
        """Whether a keyword lemma that ``_add_n_words`` reads from a match at ``start`` (``on`` from its token
        on, ``back`` from it back) holds one of ``context`` (non-empty words, in any case): what Presidio's
        ``_find_supportive_word_in_context`` in "substring" mode answers on those lemmas. One walk each way from
        the match's token, found once, ending at the first lemma holding one; whether a lemma does is
        remembered per lemma. The word named is the first of ``context`` that lemma holds ("" when none).

        A match starting where a block starts has that block's first token for its own: the walk back reads it,
        then the blocks before. One of the first ``back - 1`` keywords of those holding a word is read whatever
        that token is (a keyword or not), so it answers without the match's own block, tokenized only when
        none does (the match's text is new every time; the label before it, "phone:" or "tel", is not)."""
        holding = self._holding.get(context)
        if holding is None:
            holding = self._holding[context] = ([word.lower() for word in context], {})
        cuts = self.cuts
        block = bisect.bisect_right(cuts, start) - 1
        if back > 1 and block > 0 and cuts[block] == start:
            before = self._relative(block - 1)[1]
            word = self._walk_holding(block - 1, before, len(before) - 1, -1, back - 1, context, holding)
            if word:
                return word
        at, tokens, index = self._token_at(start)
        return self._walk_holding(at, tokens, index, 1, on, context, holding) or self._walk_holding(
            at, tokens, index, -1, back, context, holding)

    def _walk_holding(self, at: int, tokens: list[tuple[int, int, str]], index: int, step: int, count: int,
                      context: tuple[str, ...], holding: tuple[list[str], dict[str, str]]) -> str:
        """``_add_n_words``' walk from token ``index`` of block ``at`` (``tokens``: its tokens), on (``step`` 1) or
        back (-1), over up to ``count`` keyword lemmas: the first of ``context`` held by the first that holds one."""
        lowered, held = holding
        blocks = len(self.cuts) - 1
        is_keyword = self.is_keyword
        words = 0
        while words < count:
            if not 0 <= index < len(tokens):
                at += step
                if not 0 <= at < blocks:
                    break
                tokens = self._relative(at)[1]
                index = len(tokens) - 1 if step < 0 else 0
                continue
            lemma = tokens[index][2]
            if is_keyword(lemma):
                words += 1
                word = held.get(lemma)
                if word is None:
                    low = lemma.lower().lower()  # Presidio lowers the lemma, then the keyword
                    word = ""
                    for k, wanted in enumerate(lowered):  # the first of the recognizer's words the lemma holds
                        if wanted in low:
                            word = context[k]
                            break
                    held[lemma] = word
                if word:
                    return word
            index += step
        return ""


_ASCII_BLOCK = re.compile(r"([!-~]+)([ \t\n\r]*)")


class AffixTokenizer:
    """spaCy's tokenizer on one span of non-space characters, in Python, for the spans it cuts without a special
    case: a CSV row or ``tel:+49-30-123456;`` split at its hyphens and its semicolon (each a new string spaCy
    would add to its vocabulary, about 100 µs a span through ``Tokenizer.__call__``).

    It repeats ``Tokenizer._split_affixes`` and ``_attach_tokens`` (spaCy's Cython, read in the pinned release):
    while the string changes, stop where ``token_match`` matches; strip a prefix (``prefix_search``) and a suffix
    (``suffix_search`` on what the prefix leaves), both when they do not overlap; then the rest is one token when
    ``token_match`` or ``url_match`` matches it, else it is cut at ``infix_finditer``'s matches (one at its start
    ignored, an empty one cutting without a token); prefixes first, suffixes last in reverse. A special case
    (``rules``) anywhere makes it answer None (spaCy's own answer is then asked): the span, the string left or
    either side of a strip being one, or the span holding the text of a special case that spaCy's special-case
    matcher looks for across tokens (those with an affix, an infix or a space, ``add_special_case``; all of
    them without ``faster_heuristics``). ``tests/policy/test_pii_speed.py`` compares it with spaCy's tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self.prefix_search = tokenizer.prefix_search
        self.suffix_search = EndAnchoredSearch(tokenizer.suffix_search) if tokenizer.suffix_search is not None else None
        self.infix_finditer = tokenizer.infix_finditer
        self.token_match = tokenizer.token_match
        self.url_match = tokenizer.url_match
        self.rules = frozenset(tokenizer.rules or ())
        key = (self.rules, bool(tokenizer.faster_heuristics), *(
            getattr(getattr(found, "__self__", None), "pattern", found)  # a compiled pattern's method: its pattern
            for found in (self.prefix_search, tokenizer.suffix_search, self.infix_finditer)))
        if key not in _ACROSS:  # the same for every pipeline of a language (~8 ms to find)
            across = [rule for rule in self.rules
                      if not tokenizer.faster_heuristics or self._affixed(rule) or " " in rule]
            across.sort(key=len, reverse=True)
            if len(_ACROSS) >= 8:
                _ACROSS.clear()
            _ACROSS[key] = any_of(across) if across else None
        self._across = _ACROSS[key]

    def _prefix(self, string: str) -> int:
        found = self.prefix_search(string) if self.prefix_search is not None else None
        return found.end() - found.start() if found is not None else 0

    def _suffix(self, string: str) -> int:
        found = self.suffix_search(string) if self.suffix_search is not None else None
        return found.end() - found.start() if found is not None else 0

    def _affixed(self, key: str) -> bool:
        return bool(self._prefix(key) or self._suffix(key) or (
            self.infix_finditer is not None and list(self.infix_finditer(key))))

    def tokens(self, span: str) -> list[str] | None:
        """The texts of spaCy's tokens of ``span`` (ASCII, no space), or None when a special case may apply."""
        rules = self.rules
        if not span or span in rules or (self._across is not None and self._across.search(span)):
            return None
        prefixes: list[str] = []
        suffixes: list[str] = []
        string = self._split_affixes(span, prefixes, suffixes)
        if string is None:
            return None
        pieces = prefixes
        if string:
            if string in rules:
                return None
            if (self.token_match is not None and self.token_match(string)) or (
                    self.url_match is not None and self.url_match(string)):
                pieces.append(string)
            else:
                self._split_infixes(string, pieces)
        pieces.extend(reversed(suffixes))
        return pieces

    def _split_affixes(self, string: str, prefixes: list[str], suffixes: list[str]) -> str | None:
        """``_split_affixes``: what is left once prefixes and suffixes are stripped (None: a special case)."""
        rules = self.rules
        token_match = self.token_match
        last = 0
        while string and len(string) != last:
            if token_match is not None and token_match(string):
                break
            if string in rules:
                return None
            last = len(string)
            pre_len = self._prefix(string)
            if pre_len and string[pre_len:] in rules:
                return None
            suf_len = self._suffix(string[pre_len:])
            if suf_len and string[:-suf_len] in rules:
                return None
            if pre_len and suf_len and pre_len + suf_len <= len(string):
                prefixes.append(string[:pre_len])
                suffixes.append(string[-suf_len:])
                string = string[pre_len:-suf_len]
            elif pre_len:
                prefixes.append(string[:pre_len])
                string = string[pre_len:]
            elif suf_len:
                suffixes.append(string[-suf_len:])
                string = string[:-suf_len]
        return string

    def _split_infixes(self, string: str, pieces: list[str]) -> None:
        """``_attach_tokens``' cut of ``string`` at its infixes (one at its start ignored, an empty one cutting)."""
        start = 0
        for infix in (self.infix_finditer(string) if self.infix_finditer is not None else ()):
            infix_start, infix_end = infix.start(), infix.end()
            if infix_start == 0:
                continue
            if infix_start != start:
                pieces.append(string[start:infix_start])
            if infix_start != infix_end:
                pieces.append(string[infix_start:infix_end])
            start = infix_end
        if string[start:]:
            pieces.append(string[start:])


_ACROSS: dict[tuple[Any, ...], re.Pattern[str] | None] = {}  # AffixTokenizer's special cases across tokens


_END_ANCHORED: dict[tuple[str, int], tuple[int, list[tuple[str, int]]] | None] = {}  # EndAnchoredSearch's shapes


class EndAnchoredSearch:
    """A pattern's ``search``, looking only where a match can start, for a pattern each of whose branches ends at the
    string's end (spaCy's suffix pattern: 82 alternatives, each ending with ``$``).

    ``search`` tries every branch at every position: ~27 µs on a 60-character CSV row, which the affix tokenizer
    asks two or three times per span. On a string without a newline every match ends at the string's end (``$``
    matches there, or before a last newline), so a branch consuming at most ``width`` characters (``getwidth``:
    lookbehinds consume none) starts no earlier than the end less ``width`` (5 for spaCy's). The one other shape
    allowed is a character then ``k`` or more of it (``\\.\\.+$``), which matches from anywhere in the string's last
    run of that character leaving ``k + 1`` of it or more: from that run's start when it is long enough. Every match
    starts at or after the first of those places, and ``search`` from it (``pos``) finds the leftmost: the same match
    as from the string's start (lookbehinds and ``\\b`` still see the characters before ``pos``; ``^`` matches only at
    the string's real start either way). Any other pattern (or flags under which the run's character has another
    case) is searched as it is. Its shape is read with ``re``'s own parser (``_compat/sre``, canaried)."""

    def __init__(self, search: Callable[[str], Any] | None) -> None:
        self.search = search
        self.pattern: re.Pattern[str] | None = None
        self.width = 0
        self.runs: list[tuple[str, int]] = []  # a run branch's character, and the run's least length
        pattern = getattr(search, "__self__", None)
        if not isinstance(pattern, re.Pattern) or not isinstance(pattern.pattern, str) or (
                search != pattern.search):
            return
        key = (pattern.pattern, pattern.flags)
        if key not in _END_ANCHORED:  # parsed once per process (spaCy's suffix pattern: ~4 ms)
            if len(_END_ANCHORED) >= 8:
                _END_ANCHORED.clear()
            _END_ANCHORED[key] = self._shape(pattern)
        shape = _END_ANCHORED[key]
        if shape is not None:
            self.pattern = pattern
            self.width, self.runs = shape

    @classmethod
    def _shape(cls, pattern: re.Pattern[str]) -> tuple[int, list[tuple[str, int]]] | None:
        """The widest branch's width and the run branches (``_run``), or None when the pattern has another shape."""
        parsed = sre.parse(pattern.pattern, pattern.flags)
        items = list(parsed)
        branches = items[0][1][1] if len(items) == 1 and str(items[0][0]) == "BRANCH" else [parsed]
        width = 0
        runs = []
        for branch in branches:
            data = list(branch)
            if not data or str(data[-1][0]) != "AT" or str(data[-1][1]) != "AT_END":
                return None
            high = branch.getwidth()[1]
            if high < sre.MAXREPEAT:
                width = max(width, high)
                continue
            run = cls._run(data, pattern.flags)
            if run is None:
                return None
            runs.append(run)
        return width, runs

    @staticmethod
    def _run(data: list[Any], flags: int) -> tuple[str, int] | None:
        """A branch ``c c{k,}$`` (a character that has no other case under ``flags``): (c, k + 1); else None."""
        if len(data) != 3 or str(data[0][0]) != "LITERAL" or str(data[1][0]) != "MAX_REPEAT":
            return None
        low, high, repeated = data[1][1]
        repeated = list(repeated)
        if high != sre.MAXREPEAT or len(repeated) != 1 or str(repeated[0][0]) != "LITERAL" or (
                repeated[0][1] != data[0][1]):
            return None
        char = chr(data[0][1])
        if flags & re.IGNORECASE and (char.lower() != char or char.upper() != char or char.casefold() != char):
            return None
        return char, int(low) + 1

    def __call__(self, string: str) -> Any:
        pattern = self.pattern
        if pattern is None or "\n" in string:
            return self.search(string) if self.search is not None else None
        end = len(string)
        first = end - self.width
        for char, least in self.runs:
            run = end - len(string.rstrip(char))
            if run >= least:
                first = min(first, end - run)
        return pattern.search(string, max(first, 0))


def any_of(words: list[str]) -> re.Pattern[str]:
    """A pattern that finds an occurrence of one of ``words`` (not empty) wherever there is one: their trie, with a
    word left out when a shorter one is its prefix (an occurrence of it holds one of the shorter word where it
    starts). ``re`` tries an alternation's branches one after the other at every position: the special cases'
    366 words took ~8 µs per span, their trie ~2 µs. Only whether it finds something is its answer (where, and
    which word, can differ from the alternation's)."""
    trie: dict[Any, Any] = {}  # a character's node; None: a word ends here
    for word in sorted(words, key=len):
        node = trie
        for char in word:
            if None in node:
                break  # a shorter word is a prefix of this one
            node = node.setdefault(char, {})
        else:
            node.clear()
            node[None] = True

    def branch(node: dict[Any, Any]) -> str:
        if None in node:
            return ""
        paths = [re.escape(char) + branch(child) for char, child in sorted(node.items())]
        return paths[0] if len(paths) == 1 else "(?:" + "|".join(paths) + ")"

    return re.compile(branch(trie))
_AFFIX_TOKENIZERS: dict[int, tuple[Any, AffixTokenizer]] = {}


def affix_tokenizer(tokenizer: Any) -> AffixTokenizer:
    """The ``AffixTokenizer`` of a spaCy tokenizer, made once (its special cases' pattern is large)."""
    known = _AFFIX_TOKENIZERS.get(id(tokenizer))
    if known is None or known[0] is not tokenizer:
        if len(_AFFIX_TOKENIZERS) >= 8:  # pipelines built and dropped (a policy per test): not kept alive
            _AFFIX_TOKENIZERS.clear()
        known = _AFFIX_TOKENIZERS[id(tokenizer)] = (tokenizer, AffixTokenizer(tokenizer))
    return known[1]


_SURE_SPAN = re.compile(r"(?<!\S)(?=[^\s:]*\d)[^\s:]+(?!\S)")  # a span of non-space characters: a digit, no colon
_SPAN_END = re.compile(r"\S*")
_SPAN_END_CAPPED = re.compile(r"\S{0,64}")
_A_DIGIT = re.compile(r"\d")


class ContextReach:
    """Where in a text the lemmas Presidio reads around a match can lie, found without tokenizing it.

    From the match's token, ``_add_n_words`` walks back until it has ``prefix + 1`` keyword lemmas and on
    until it has ``suffix + 1``. spaCy tokenizes each span of non-space characters on its own and its tokens
    cover the span; a span holding a decimal digit and no colon holds a token with a digit and no colon, and
    such a token's lemma (its lower case, ``lowercase_lemmas``) is a keyword: no stop word holds a digit
    (checked on the pipeline's list, else nothing is skipped), punctuation holds none, and there is no colon
    to split at. So the walk back stops within the ``prefix + 1``-th such span before the match's span, and
    the walk on within the ``suffix + 1``-th such unit from the match on (the rest of the match's span,
    counted when it holds a digit and the span is one of them). A context word in a lemma there is in the
    lower-case text there (ASCII text: the lower case of a part is that part of the lower case); with none
    there, no context word can raise the match's score. Only a match starting on a non-space character of
    an ASCII text is decided this way."""

    SPAN = 64  # characters of a span looked at around an occurrence of a context word, at most
    EVERYWHERE = 100.0  # characters per occurrence heard, at most, where context words are everywhere (``everywhere``)

    def __init__(self, text: str, lowered: str, prefix: int, suffix: int, nlp_engine: Any, language: str,
                 silent: Callable[[str], bool] | None = None) -> None:
        self.silent = silent  # whether a span of non-space characters gives no keyword (LocalTokens.silent)
        self.text = text
        self.lowered = lowered
        self.prefix = prefix
        self.suffix = suffix
        self.usable = text.isascii() and nlp_engine is not None and not _stop_words_with_digits(nlp_engine, language)
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._scanned = False
        self._found: dict[str, list[int]] = {}  # per context word: where it starts in the lower-case text
        self._merged: dict[int, tuple[Any, list[int] | None, list[int]]] = {}  # per list of words (its id; the list
        # kept so its id stays its own): _all_occurrences
        self._everywhere: dict[tuple[str, ...], bool] = {}

    def _scan(self) -> None:
        spans = [span.span() for span in _SURE_SPAN.finditer(self.text)]
        self._starts = [start for start, _ in spans]
        self._ends = [end for _, end in spans]
        self._scanned = True

    def _occurrences(self, word: str, enough: int | None = None) -> list[int]:
        """Where ``word`` starts in the lower-case text, less where it lies inside a span that gives no keyword
        (``_heard_at``); ``enough``: the first ``enough`` of them will do (the count ``holds_none`` and
        ``everywhere`` need: each occurrence heard costs a look at its span, thousands on a contact list), or all
        when there are fewer (all are remembered once found)."""
        found = self._found.get(word)
        if found is None:
            found = []
            at = self.lowered.find(word)
            while at >= 0:
                if self._heard_at(at, word):
                    found.append(at)
                    if enough is not None and len(found) >= enough:
                        return found  # a part: not remembered
                at = self.lowered.find(word, at + 1)
            self._found[word] = found
        return found

    def bounds(self, start: int) -> tuple[int, int] | None:
        """The part of the text holding every token the walks from a match at ``start`` read; None when
        it cannot be told without tokenizing."""
        text = self.text
        if not self.usable or not 0 <= start < len(text) or text[start].isspace():
            return None
        if not self._scanned:
            self._scan()
        starts, ends = self._starts, self._ends
        before = bisect.bisect_right(ends, start)  # sure spans ending before the match's span
        back = before - (self.prefix + 1)
        low = starts[back] if back >= 0 else 0
        rest = _SPAN_END.match(text, start)  # \S* always matches
        span_end = rest.end() if rest is not None else start
        units = 0
        own = before < len(starts) and starts[before] <= start  # the match's span is a sure one
        if own and _A_DIGIT.search(text, start, span_end):
            units = 1
        if units >= self.suffix + 1:
            return low, span_end
        after = bisect.bisect_left(starts, span_end) + (self.suffix - units)
        return low, ends[after] if after < len(ends) else len(text)

    def may_find(self, start: int, words: list[str]) -> bool:
        """Whether one of ``words`` may be in a lemma the walks from a match at ``start`` read."""
        bounds = self.bounds(start)
        if bounds is None:
            return True
        low, high = bounds
        return self._found_between(low, high, words)

    def _found_between(self, low: int, high: int, words: list[str]) -> bool:
        """Whether an occurrence of one of ``words`` starts at ``low`` or later and ends by ``high``."""
        merged = self._merged.get(id(words))
        if merged is None or merged[0] is not words:
            merged = self._merged[id(words)] = (words, *self._all_occurrences(words))
        _, starts, nearest_end = merged
        if starts is None:
            return True  # an empty word: in every lemma
        at = bisect.bisect_left(starts, low)
        return at < len(starts) and nearest_end[at] <= high

    def holds_none(self, words: list[str]) -> bool:
        """Whether no walk from any match can read one of ``words``: the text holds no occurrence of them outside
        the spans that give no keyword (``_occurrences``), and the text is ``usable`` (else: False)."""
        if not self.usable:
            return False
        for word in words:
            word = str(word).lower()
            if not word or self._occurrences(word, 1):
                return False
        return True

    def everywhere(self, words: list[str]) -> bool:
        """Whether ``words`` (none empty) are heard (``_occurrences``) once every ``EVERYWHERE`` characters or more
        often: a contact list, a CSV naming its phone column on every row, a log of calls (the bench's context
        corpus: every 49 characters; its digit corpus every 330, its agent text once). Nearly every line and every
        match is then within a walk's reach of one (six keywords back), and telling which (``lines_reaching``,
        ``spans_reaching``, ``may_find``: a tenth of the analysis of such a text) spares next to nothing: their
        callers then take every one as reached. That is always exact (they only spare work; the enhancer's walk
        decides whether a score rises), so this is a guess about cost only. Per character, not per line: a long
        text on one line (a JSON body) with one occurrence is still bounded."""
        key = tuple(str(word).lower() for word in words)
        known = self._everywhere.get(key)
        if known is None:
            heard = 0
            if self.usable and all(key):
                enough = self._enough()
                for word in key:
                    heard += len(self._occurrences(word, None if enough is None else enough - heard))
                    if enough is not None and heard >= enough:
                        break  # as many or more would say the same (the test below grows with ``heard``)
            known = bool(heard) and len(self.text) <= self.EVERYWHERE * heard
            self._everywhere[key] = known
        return known

    def _enough(self) -> int | None:
        """A count of occurrences heard (1 or more) at which ``everywhere`` says yes, which it then says for any larger
        count too (``EVERYWHERE`` is not negative); None when no count makes it say yes."""
        if not self.EVERYWHERE > 0:
            return None
        enough = max(1, int(len(self.text) / self.EVERYWHERE))  # (1 when every character is too few: inf)
        while not len(self.text) <= self.EVERYWHERE * enough:  # the float division's rounding, made good
            enough += 1
        return enough

    def lines_reaching(self, words: list[str]) -> list[tuple[int, int]] | None:
        """The lines (``phone_scan``'s) holding every span ``spans_reaching`` can say yes to: a span reaching an
        occurrence of a word starts before ``F`` and ends at ``L`` or after (``spans_reaching``' bounds), so it
        holds the character before ``L`` or the one before ``F``, whichever comes first (it starts before ``F``;
        when it starts before ``L - 1`` it ends past it). None when that cannot be told (``spans_reaching``)."""
        if not self.usable:
            return None
        if not self._scanned:
            self._scan()
        parts = []
        for low, high in self._reach_bounds(words) or ():
            if low is None or high is None:
                return None
            parts.append((min(low, high), max(low, high)))
        return lines_around(self.text, parts)

    def _reach_bounds(self, words: list[str]) -> list[tuple[int | None, int | None]] | None:
        """Per occurrence of ``words`` (``_occurrences``): ``L - 1`` and ``F - 1`` of ``spans_reaching``, each
        clipped to the text (None: an empty word, every span may reach it)."""
        starts, ends = self._starts, self._ends
        sure = len(starts)
        bounds: list[tuple[int | None, int | None]] = []
        for word in words:
            word = str(word).lower()
            if not word:
                return [(None, None)]
            for begin in self._occurrences(word):
                beyond = bisect.bisect_right(starts, begin) + self.prefix
                before = bisect.bisect_left(ends, begin + len(word)) - self.suffix - 1
                bounds.append((starts[before] if before >= 0 else 0,
                               ends[beyond] - 1 if beyond < sure else len(self.text) - 1))
        return bounds

    def spans_reaching(self, firsts: list[int], lasts: list[int], words: list[str]) -> list[bool] | None:
        """For each span ``[firsts[k], lasts[k])`` of the text (``firsts`` increasing, each span not empty),
        whether a match starting anywhere in it, on a space or not, may have one of ``words`` in a lemma its
        walks read: a superset of what ``may_find`` says yes to at any of those starts. None when that cannot
        be told without tokenizing (``bounds``' cases: not ``usable``, or an empty word).

        The reasoning of ``bounds``, for a range of starts, turned around per occurrence of a word: a walk from
        a start ``s`` reads nothing before the ``prefix + 1``-th sure span ending by ``s`` (the match's token
        is the first ending past ``s``, so every span ending by ``s`` is before it, a space at ``s`` or not),
        and nothing past the end of the ``suffix + 1``-th sure span starting after ``s``'s own span (the rest
        of it read first; a space at ``s`` has no span: the spans after ``s``). The first bound only grows with
        ``s``, the second too: a span ``[first, last)`` reads nothing before the bound of ``first`` nor past
        that of ``last - 1``, whose own span's end is where the next span starts, at or after ``last``. So an
        occurrence from ``os`` to ``oe`` may be read from the span only when ``first`` is before the end of
        the ``prefix + 1``-th sure span after the last one starting by ``os`` (``before(first) <= j + prefix
        + 1``), and ``last`` is past the start of the ``suffix + 1``-th sure span before the first one ending
        at ``oe`` or after (so that one is among those the walk on may reach). The spans it may be read from
        are a range of ``k``: marked in one slice per occurrence."""
        if not self.usable:
            return None
        if not self._scanned:
            self._scan()
        occurrences: list[tuple[int, int]] = []
        for word in words:
            word = str(word).lower()
            if not word:
                return None
            occurrences += [(at, at + len(word)) for at in self._occurrences(word)]
        count = len(firsts)
        reaching = [False] * count
        if not occurrences or not count:
            return reaching
        starts, ends = self._starts, self._ends
        sure = len(starts)
        furthest = list(accumulate(lasts, max))  # spans may overlap: the furthest end so far
        prefix, suffix = self.prefix, self.suffix
        for begin, end in occurrences:
            beyond = bisect.bisect_right(starts, begin) + prefix  # j + prefix + 1, j the last span starting by begin
            high = bisect.bisect_left(firsts, ends[beyond]) if beyond < sure else count  # spans with first before it
            before = bisect.bisect_left(ends, end) - suffix - 1  # q - suffix - 1, q the first span ending at end or after
            low = bisect.bisect_left(furthest, starts[before] + 1) if before >= 0 else 0  # last past its start
            if low < high:
                reaching[low:high] = [True] * (high - low)
        return reaching

    def _all_occurrences(self, words: list[str]) -> tuple[list[int] | None, list[int]]:
        """Where each of ``words`` (lower case) occurs (``_occurrences``), all merged in order of their starts,
        with, for each, the earliest end of it and the ones after it: an occurrence starting at ``low`` or
        later ends by ``high`` when the first such one's earliest end does (what a search per word asked:
        its first occurrence from ``low`` on, the one of its occurrences that ends first). (None, []) when
        a word is empty."""
        found: list[tuple[int, int]] = []
        for word in words:
            word = str(word).lower()
            if not word:
                return None, []
            found += [(at, at + len(word)) for at in self._occurrences(word)]
        found.sort()
        nearest_end = [end for _, end in found]
        for index in range(len(nearest_end) - 2, -1, -1):
            nearest_end[index] = min(nearest_end[index], nearest_end[index + 1])
        return [at for at, _ in found], nearest_end

    def _heard_at(self, at: int, word: str) -> bool:
        """Whether the occurrence of ``word`` at ``at`` may be part of a keyword lemma: not when it lies inside
        a span of non-space characters (of at most ``SPAN`` characters, else it is not looked at) that
        ``silent`` says gives none (one token, its lemma no keyword: "call" before a number)."""
        silent = self.silent
        if silent is None:
            return True
        text = self.text
        first = at
        while first > 0 and first > at - self.SPAN and not text[first - 1].isspace():
            first -= 1
        rest = _SPAN_END_CAPPED.match(text, at)
        end = rest.end() if rest is not None else at
        if end - at < self.SPAN and (first == 0 or text[first - 1].isspace()) and at + len(word) <= end:
            return not silent(text[first:end])
        return True


_DIGIT_STOP_WORDS: dict[int, bool] = {}


def _stop_words_with_digits(nlp_engine: Any, language: str) -> bool:
    """Whether a stop word of the pipeline (what ``is_stopword`` reads) holds a decimal digit."""
    nlp = nlp_engine.nlp[language]
    known = _DIGIT_STOP_WORDS.get(id(nlp))
    if known is None:
        known = _DIGIT_STOP_WORDS[id(nlp)] = any(_A_DIGIT.search(word) for word in nlp.Defaults.stop_words)
    return known


class PruningAnalyzerEngine(AnalyzerEngine):
    """Presidio's analyzer, dropping before context enhancement the results no context word can lift to the
    request's ``score_threshold``.

    ``analyze`` removes the results below the threshold right after enhancement, before duplicates are
    removed (``__remove_low_scores`` then ``remove_duplicates``): such a result never shows and never
    hides another, and Presidio's enhancement treats each result on its own. Enhancing one costs a deep
    copy and, near a context word, spaCy; a log or a CSV holds thousands of numbers a recognizer scores
    0.05 (US_BANK_NUMBER, weak US_SSN patterns) that context can raise to 0.4 at most. Its private
    ``_enhance_using_context`` is repeated here (each recognizer's own enhancement of its results, given
    the others'), with the results grouped by recognizer once instead of twice per recognizer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request = threading.local()

    def analyze(self, text: str, language: str, entities: list[str] | None = None,  # type: ignore[override]
                correlation_id: str | None = None, score_threshold: float | None = None,
                **kwargs: Any) -> list[RecognizerResult]:
        self._request.threshold = score_threshold
        registry = self.registry
        enhancer = self.context_aware_enhancer
        pruning = registry if isinstance(registry, PruningRegistry) and isinstance(enhancer, IndexedContextEnhancer) and (
            score_threshold is not None and not self.log_decision_process and kwargs.get("context") is None) else None
        if pruning is not None:
            pruning.request.reach = (enhancer, score_threshold, text)
            assert isinstance(enhancer, IndexedContextEnhancer)  # (pruning's condition)
            enhancer.keep_reach(True)  # the phone recognizer's ContextReach, the enhancer's too
        unexplained = enhancer if isinstance(enhancer, IndexedContextEnhancer) and not self.log_decision_process and (
            not kwargs.get("return_decision_process")) else None  # analyze then drops every explanation
        if unexplained is not None:
            unexplained.unexplained.on = True
        try:
            return list(super().analyze(text, language, entities, correlation_id, score_threshold, **kwargs))
        finally:
            self._request.threshold = None
            if pruning is not None:
                pruning.request.reach = None
                pruning.release()
                assert isinstance(enhancer, IndexedContextEnhancer)
                enhancer.keep_reach(False)
            if unexplained is not None:
                unexplained.unexplained.on = False

    def _enhance_using_context(self, text: str, raw_results: list[RecognizerResult], nlp_artifacts: Any,
                               recognizers: list[EntityRecognizer], context: list[str] | None = None,
                               ) -> list[RecognizerResult]:
        by_recognizer: dict[Any, list[RecognizerResult]] = {}
        for result in raw_results:
            by_recognizer.setdefault(result.recognition_metadata[RecognizerResult.RECOGNIZER_IDENTIFIER_KEY],
                                     []).append(result)
        results: list[RecognizerResult] = []
        for recognizer in recognizers:
            own = list(by_recognizer.get(recognizer.id, ()))
            if type(recognizer).enhance_using_context is EntityRecognizer.enhance_using_context:
                results.extend(own)  # the base class's returns them as they are
                continue
            others = [result for result in raw_results
                      if result.recognition_metadata[RecognizerResult.RECOGNIZER_IDENTIFIER_KEY] != recognizer.id]
            results.extend(recognizer.enhance_using_context(
                text=text, raw_recognizer_results=own, other_raw_recognizer_results=others,
                nlp_artifacts=nlp_artifacts, context=context))
        threshold = getattr(self._request, "threshold", None)
        enhancer = self.context_aware_enhancer
        if threshold is not None and not self.log_decision_process and isinstance(enhancer, IndexedContextEnhancer):
            known = {recognizer.id: recognizer for recognizer in recognizers}
            results = [result for result in results if enhancer.best_score(result, known) >= threshold]
        return list(enhancer.enhance_using_context(text=text, raw_results=results, nlp_artifacts=nlp_artifacts,
                                                   recognizers=recognizers, context=context))


class PruningRegistry(RecognizerRegistry):
    """Presidio's registry, giving an analysis run by ``PruningAnalyzerEngine`` its pattern recognizers with only
    the patterns whose results can reach the request's threshold, and none of a recognizer left with none.

    A pattern's result scores the pattern's score, or ``MAX_SCORE`` when the recognizer's ``validate_result``
    says so (only a recognizer that overrides it), or ``MIN_SCORE``; context can then raise it once
    (``IndexedContextEnhancer.best_score``'s arithmetic). A result that cannot reach the threshold is removed
    by Presidio before duplicates are (``PruningAnalyzerEngine``): it never shows and never hides another,
    and Presidio's enhancement treats each result on its own. Its recognizer's own ``remove_duplicates``
    only removes a result contained in one of the same type scoring as much or more: never one of a pattern
    kept, which scores more than any dropped one can. A pattern with a witness (``WITNESSES``) the text does
    not hold has no match there. So nothing changes but the work: on a log or a CSV,
    US_BANK_NUMBER's ``\\b[0-9]{8,17}\\b`` (0.05, 0.4 at most with a context word) matches every id and
    order number, and four weak US_SSN patterns every nine-digit count. Recognizers that enhance their own
    results (``enhance_using_context``) or are not pattern recognizers are given as they are."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request = threading.local()  # .reach: (enhancer, threshold, text) while PruningAnalyzerEngine analyses
        self._pruned: dict[tuple[str, float], list[Any] | None] = {}

    def get_recognizers(self, language: str, entities: list[str] | None = None, all_fields: bool = False,
                        ad_hoc_recognizers: list[EntityRecognizer] | None = None) -> list[EntityRecognizer]:
        recognizers = list(super().get_recognizers(language, entities, all_fields, ad_hoc_recognizers))
        reach: tuple[IndexedContextEnhancer, float, str] | None = getattr(self.request, "reach", None)
        if reach is None:
            return recognizers
        enhancer, threshold, text = reach
        searched: dict[re.Pattern[str], bool] = {}
        kept = []
        for recognizer in recognizers:
            if isinstance(recognizer, CandidatePhoneRecognizer) and self._near_context_only(
                    recognizer, enhancer, threshold, recognizers):
                recognizer.near_context.reach = (enhancer.reach_of(text)[0], list(recognizer.context))
                self.request.phones = [*getattr(self.request, "phones", ()), recognizer]
            if recognizer not in self.recognizers:
                kept.append(recognizer)
                continue
            patterns = self._reaching(recognizer, enhancer, threshold)
            if patterns is None:  # not a pattern recognizer, or one that enhances its own results
                kept.append(recognizer)
                continue
            running = [pattern for pattern in patterns if _may_match(pattern.regex, text, searched)]
            if not running:
                continue
            if len(running) == len(getattr(recognizer, "patterns", None) or []):
                kept.append(recognizer)
                continue
            clone: Any = copy.copy(recognizer)  # the same id: its results are its own
            clone.patterns = running
            kept.append(clone)
        return kept

    def release(self) -> None:
        """The end of an analysis: the phone recognizers handed a ``ContextReach`` (``get_recognizers``) forget it."""
        for recognizer in getattr(self.request, "phones", ()):
            recognizer.near_context.reach = None
        self.request.phones = []

    @staticmethod
    def _near_context_only(phone: CandidatePhoneRecognizer, enhancer: IndexedContextEnhancer, threshold: float,
                           recognizers: list[EntityRecognizer]) -> bool:
        """Whether ``phone``'s results below ``threshold`` unless a context word raises them can be left out where
        none can (``CandidatePhoneRecognizer.analyze``): each scores its ``SCORE`` (``_get_recognizer_result``)
        under the threshold, the enhancer reads context as ``ContextReach`` does (lower-case lemmas, its own
        tokens), and no recognizer of the analysis enhances its results itself (reading the others' results)."""
        return bool(phone.context) and float(phone.SCORE) < threshold and enhancer.lowercase_lemmas and (
            enhancer.nlp_engine is not None) and all(
            type(recognizer).enhance_using_context is EntityRecognizer.enhance_using_context
            for recognizer in recognizers)

    def _reaching(self, recognizer: EntityRecognizer, enhancer: IndexedContextEnhancer,
                  threshold: float) -> list[Any] | None:
        """The patterns of ``recognizer`` whose results can reach ``threshold``; None when it is not a pattern
        recognizer or enhances its own results."""
        key = (recognizer.id, threshold)
        if key in self._pruned:
            return self._pruned[key]
        patterns: list[Any] | None = None
        if isinstance(recognizer, PatternRecognizer) and (
                type(recognizer).enhance_using_context is EntityRecognizer.enhance_using_context):
            validates = type(recognizer).validate_result is not PatternRecognizer.validate_result
            own: list[Any] = getattr(recognizer, "patterns", None) or []
            patterns = [pattern for pattern in own
                        if self._best(recognizer, EntityRecognizer.MAX_SCORE if validates else pattern.score,
                                      enhancer) >= threshold]
        if len(self._pruned) >= 1024:
            self._pruned.clear()
        self._pruned[key] = patterns
        return patterns

    @staticmethod
    def _best(recognizer: EntityRecognizer, score: float, enhancer: IndexedContextEnhancer) -> float:
        """``IndexedContextEnhancer.best_score`` of a result of ``recognizer`` scoring ``score``."""
        if not recognizer.context:
            return score
        raised = score + enhancer.context_similarity_factor
        raised = max(raised, enhancer.min_score_with_context_similarity)
        return float(min(raised, ContextAwareEnhancer.MAX_SCORE))


# Patterns of Presidio's predefined recognizers (by the SHA-256 of their regex, as released in the pinned version)
# and a pattern that every one of their matches holds a match of: where the text holds none, the pattern is not
# run (``PruningRegistry``). An IPv6 address (and one embedding an IPv4 address) is written with "::" or with at
# least six groups of hex digits each followed by a colon, so it holds a colon followed by a colon or by five
# groups of one to four characters that are neither colons nor spaces, each followed by a colon (whatever the
# pattern's case folding makes a hex digit, it is no colon and no space); an IPv4-mapped one starts with "::".
# The witness starts with a colon, which the regular expression engine looks for first: 0.4 ms on the 250 kB
# digit-heavy corpus, whose time stamps ("12:30:45") hold neither, against 97 ms for the two IPv6 patterns,
# tried at every hex digit.
_IPV6_WITNESS = re.compile(r":(?::|(?:[^:\s]{1,4}:){5})")
# An IBAN (``[A-Z]{2}[0-9]{2}(?:[ -]?[A-Z0-9]{4}){2,6}...``) and a Bitcoin address (``(bc1|[13])`` then 25 to 59 of
# ``[a-zA-HJ-NP-Z0-9]``) hold runs of letters and digits; a letter of these classes, read with or without
# IGNORECASE by the ``regex`` module, is an ASCII letter or a non-ASCII character that folds to one ("ſ", the
# Kelvin sign), so the witnesses take any ASCII letter or digit, and any non-ASCII character, where the pattern
# takes one. In code (the agent workload) neither is there: 2.8 ms for the first, against ~10 ms for the IBAN
# pattern, and 3 ms against ~7 ms for the Bitcoin one on the digit-heavy corpus.
_LETTER_OR_MORE = "A-Za-z\x80-\U0010ffff"
_IBAN_WITNESS = re.compile(f"[{_LETTER_OR_MORE}]{{2}}[0-9]{{2}}(?:[ -]?[0-9{_LETTER_OR_MORE}]{{4}}){{2}}")
_CRYPTO_WITNESS = re.compile(f"[0-9{_LETTER_OR_MORE}]{{26}}")
WITNESSES = {
    "66197b1f8e63cd274a8defa9ddec02d92e1b6c1c1f99600d9ab4abaf734ff7ca": _IPV6_WITNESS,  # IpRecognizer IPv4_embedded
    "c4f79b73053cd5f01ec3d23ddaee6758cc6ac273cf56ca29bc0c32a4be0ee9f8": _IPV6_WITNESS,  # IpRecognizer IPv6
    "5def597d3b4dac734f0bc1f1bfb007d7eac0987347cb882549c144e6e4967d89": re.compile("::"),  # IpRecognizer IPv4_mapped
    "1f98697e78e08d679ce1109ea41d0ec9be085a81f048829c521f4ed31442a692": _IBAN_WITNESS,  # IbanRecognizer IBAN Generic
    "9d9a993fd6aee8943056104f28b07d0ef54978e553bf57a9ef6aeccb18ad84af": _CRYPTO_WITNESS,  # CryptoRecognizer
}


@functools.cache
def _witness(pattern: str) -> re.Pattern[str] | None:
    """The witness of ``pattern`` (``WITNESSES``), or None."""
    return WITNESSES.get(hashlib.sha256(pattern.encode()).hexdigest())


def _may_match(pattern: str, text: str, searched: dict[re.Pattern[str], bool]) -> bool:
    """Whether ``pattern`` may match in ``text``; ``searched``: the witnesses already looked for in it."""
    witness = _witness(pattern)
    if witness is None:
        return True
    found = searched.get(witness)
    if found is None:
        found = searched[witness] = witness.search(text) is not None
    return found
