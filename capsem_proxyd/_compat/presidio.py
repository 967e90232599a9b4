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
  on source code). Ours runs it per region only on the windows around
  candidates that can be a number of that region (``_compat/phonenumbers.py``),
  and builds each result as ``analyze`` does, with its private
  ``_get_recognizer_result`` (the canary checks ``analyze``'s shape). It can go
  when Presidio's recognizer gets a pre-filter of its own.
* ``IndexedContextEnhancer``: ``LemmaContextAwareEnhancer`` finds each match's
  token by walking every token of the text (its private static
  ``_find_index_of_match_token``): quadratic on text full of matches. Ours
  bisects (the canary checks the walk's condition). It can go when Presidio
  indexes the tokens.
"""

from __future__ import annotations

import bisect
import copy
import threading
from pathlib import Path
from typing import Any

import phonenumbers
import spacy
from phonenumbers import NumberParseException
from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import EmailRecognizer, PhoneRecognizer
from tldextract import TLDExtract

from capsem_proxyd._compat.phonenumbers import RegionSieve, phone_scan, shortest_valid_number


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


class CandidatePhoneRecognizer(PhoneRecognizer):
    """Presidio's phone recognizer, run per region only where a candidate can be a number of it.

    ``PhoneRecognizer.analyze`` runs phonenumbers' matcher over the whole text once per region; this
    scans the text's candidates once (``phone_scan``), keeps per region those that can be a valid
    number of it (``RegionPrefilter``) and runs the matcher on the windows around them, building each
    result the way ``PhoneRecognizer.analyze`` does (``tests/_compat/test_presidio.py`` checks that
    method's shape)."""

    min_digits = 0  # set at first use
    _sieve: RegionSieve | None = None  # built at first use, for the regions then configured

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list:
        if self.leniency is None or self.leniency < 1:  # POSSIBLE accepts shorter, local-only numbers
            return super().analyze(text, entities, nlp_artifacts)
        if not CandidatePhoneRecognizer.min_digits:
            CandidatePhoneRecognizer.min_digits = shortest_valid_number()
        scan = phone_scan(text, CandidatePhoneRecognizer.min_digits, long_only=True)  # the others: no number
        if not scan:
            return []
        sieve = self._sieve
        if sieve is None or sieve.regions != list(self.supported_regions):
            sieve = self._sieve = RegionSieve(self.supported_regions)
        results = []
        for region, windows in zip(self.supported_regions, sieve.windows(scan, len(text)), strict=True):
            explained = region  # PhoneRecognizer.analyze reuses its loop variable for the explanation
            for start, end in windows:
                window = text[start:end]
                for match in phonenumbers.PhoneNumberMatcher(window, region, leniency=self.leniency):
                    try:
                        explained = phonenumbers.region_code_for_number(
                            phonenumbers.parse(window[match.start:match.end]))
                    except NumberParseException:
                        pass
                    result = self._get_recognizer_result(match, window, explained, nlp_artifacts)
                    result.start += start
                    result.end += start
                    results.append(result)
        return EntityRecognizer.remove_duplicates(results)


class IndexedContextEnhancer(LemmaContextAwareEnhancer):
    """Presidio's context enhancer, finding a match's token by bisection instead of a walk over every token.

    ``_find_index_of_match_token`` (private, static) returns the first token that starts at the match
    or ends after its start, walking the tokens from the first for every match: quadratic in a text full
    of matches (half the PII policy's time on a log or a CSV). Tokens follow each other without overlap
    and are never empty, so their ends increase strictly and that token is the first whose end is past
    the start: ``bisect_right`` over the ends, computed once per text. And skipped altogether where no
    context word can be found (``enhance_using_context``)."""

    def __init__(self, *args: Any, lowercase_lemmas: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lowercase_lemmas = lowercase_lemmas  # the pipeline's lemmas are its words in lower case
        self._ends = threading.local()  # analysis threads share the analyzer

    def enhance_using_context(self, text: str, raw_results: list[RecognizerResult], nlp_artifacts: Any,
                              recognizers: list[EntityRecognizer], context: list[str] | None = None,
                              ) -> list[RecognizerResult]:
        """Presidio's, skipped (its deep copy of the results returned) when no context word of a recognizer
        that found something is anywhere in the text: a context word counts when it is part of the
        lower-case lemma of a word near the match; when the lemmas are the words in lower case (the
        blank pipeline's, ``lowercase_lemmas``) it would be part of the lower-case text. Then spaCy
        need not run at all (its artifacts are lazy)."""
        if context or nlp_artifacts is None or not self.lowercase_lemmas:
            return list(super().enhance_using_context(text, raw_results, nlp_artifacts, recognizers, context))
        by_id = {recognizer.id: recognizer for recognizer in recognizers}
        words: set[str] = set()
        for result in raw_results:
            metadata = result.recognition_metadata or {}
            recognizer = by_id.get(metadata.get(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY))
            if recognizer is not None and recognizer.context:
                words.update(str(word).lower() for word in recognizer.context)
        lowered = text.lower().lower()
        if any(word in lowered for word in words):
            return list(super().enhance_using_context(text, raw_results, nlp_artifacts, recognizers, context))
        return copy.deepcopy(raw_results)

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
