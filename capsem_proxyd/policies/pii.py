"""CAPSEM's PIIPolicy (Microsoft Presidio), made to run offline and off the event loop.

``pii.toml`` keeps CAPSEM's own format (``entity_decisions``,
``check_prompts``, ``check_responses``, ``check_tool_args``,
``check_tool_responses``, ``score_threshold``, ``language``,
``nlp_engine_config``) and adds three keys of ours:

* ``ner`` (default true): whether PERSON / LOCATION / DATE_TIME are checked.
  They need a spaCy model; when it is missing startup fails with one line
  naming it, unless ``ner = false``, which skips them with a warning.
* ``spacy_model`` (default ``en_core_web_lg``, Presidio's own default): the
  model used when NER entities are configured.
* ``analysis_threads`` (default 1): worker threads analysing at once.
* ``redact`` (default none): entities masked instead of decided (issue 23),
  e.g. ``redact = ["EMAIL_ADDRESS"]`` (a top-level key, before the
  ``[entity_decisions]`` table: CAPSEM's own loader ignores it). An entity
  listed there is analysed even when ``entity_decisions`` does not name it; in
  the request hooks each one found is masked in the forwarded body (the
  entity's name is the placeholder's kind), and the texts analysed there are
  the ones findings are positions in (``redaction.findings.hook_text``: a tool
  result's content as it is, not as JSON).

The pattern entities (EMAIL_ADDRESS, CREDIT_CARD, US_SSN, PHONE_NUMBER,
IP_ADDRESS, IBAN_CODE, CRYPTO, US_BANK_NUMBER, ...) need no model: they run on
a blank spaCy pipeline. Nothing touches the network, at startup or per request.

Defects of ``capsem`` 0.3.2's ``capsem/policies/pii_policy.py`` worked around
here, without forking it. Every override of a private name of capsem, Presidio
or phonenumbers lives in ``capsem_proxyd/_compat/`` (pinned, canary-tested):
this module builds on the public methods those shims give it
(``PIIPolicyBase.build_analyzer`` / ``analyze_text`` / ``decide`` in
``_compat/capsem_pii.py``, ``_compat/presidio.py``, ``_compat/phonenumbers.py``).

1. Stray imports at its top (``from click.core import V``, ``from regex import
   R``): without presidio (which brings ``regex``) the module fails with "No
   module named 'regex'" instead of its install hint, and it would break the day
   click drops ``V``. We import it lazily and turn any failure into one line
   naming our ``pii`` extra.
2. ``_init_analyzer`` builds ``AnalyzerEngine(registry=...)`` on Presidio's
   default NLP engine, spaCy ``en_core_web_lg``, which Presidio *downloads*
   when it is not installed (and a failing ``nlp_engine_config`` silently falls
   back to that download). We build the analyzer ourselves, check that a model
   is installed before using it, and never download (``NoDownloadSpacyNlpEngine``).
3. Presidio's e-mail recognizer validates domains with tldextract's module-level
   extractor, which fetches the Public Suffix List over HTTP on first use (a
   long traceback when offline). We register an e-mail recognizer whose
   extractor reads only tldextract's bundled snapshot (``OfflineEmailRecognizer``).
4. ``_analyze_text`` catches every exception and reports no PII: a broken
   analyzer lets PII through. Ours lets the error propagate, so the engine
   blocks the request under this policy's name (fail closed).
5. The hooks are ``async`` but analyse synchronously, so a long prompt stalls
   the event loop for every other request. Ours analyse in a worker thread
   (``trio.to_thread.run_sync``) behind a bounded ``trio.CapacityLimiter``.
6. ``from_config`` accepts verdicts only in upper case; ours accepts any case.
7. Without a model spaCy sets no lemmas, so Presidio's context words ("phone",
   "ssn", "card" next to a match) never raise a score and e.g. PHONE_NUMBER
   stays below the 0.5 threshold. Our blank pipeline sets each token's lemma to
   its lower-case form, which restores context-aware scoring.

Streamed replies (``check_responses``) hold back only what may still become an
entity (``stream_holdback``, built when first asked): from the earliest start of a
pending match of the checked recognizers' regexes, read as Presidio reads the
text (raw), plus a superset of phonenumbers' candidate pattern for phone
numbers (``_compat/phonenumbers.py``); see ``policies/pattern_holdback.py``.
Before, the e-mail pattern's unbounded width made every reply wait for the
64-character cap. And a stream's checks ask this policy only once one of
those regexes has a match in the reply (``reply_screen``,
``policies/pattern_screen.py``; for phone numbers: a run with enough digits to
be a valid number anywhere, ``number_superset``): a reply with no e-mail
address and no long number is analysed once, whole, at its end, instead of at
every check (a worker process round trip and Presidio over the whole reply so
far, which made every streamed character wait ~50-100 ms).

And one of Presidio's own: its ``presidio-analyzer`` logger writes the words
around every match (prompt text) at DEBUG, and device chatter at INFO, through
whatever the daemon's log level is. We cap that logger at WARNING.

Speed-ups that change no result (``tests/policy/test_pii_speed.py``
compares them with Presidio's own on random and code-like text holding numbers
of every configured region):

* the spaCy pass (tokens and lemmas, ~25% of the time) only feeds context
  words to matches already found: it runs only when a recognizer found one.
  Presidio's ``SpacyRecognizer`` (registered for PHONE_NUMBER too) reads the
  entities of every text; the blank pipeline has no entity recognizer, so they
  are known to be none without running spaCy;
* the phone recognizer (``phonenumbers``, pure Python: each candidate parsed
  for each of its 8 regions, 70-80% of the time on source code, whose every
  number is a candidate) scans the text's candidates once and asks the matcher,
  per region (following its scan), only about the candidates that can be a
  valid number of that region: enough digits to be valid anywhere (4), and
  either a plus sign, a letter, the region's international prefix or a run of
  digits matching its numbering plan, starting where ``parse`` can start a
  national number (a raw input's first digit, after the country code or
  national prefix there) and ending where a run of digits ends, and, read in
  the region's national format without its national prefix, a format that does
  not require one (dates in code are no German or Israeli numbers, addresses
  and amounts in logs no numbers at all); each candidate decided once for all
  regions and remembered; a number found whole after a plus sign and a known
  country code (parsed alike in every region) is not parsed again for the other
  regions, and a number found again in a later region is not built again
  (``CandidatePhoneRecognizer`` in ``_compat/presidio.py``; ``phone_scan``,
  ``RegionPrefilter``, ``RegionSieve``, ``region_matches`` in
  ``_compat/phonenumbers.py``);
* context words (a context word of a recognizer that found something is
  somewhere in the text): only that recognizer's results go through Presidio's
  enhancement, and the lemmas near each match come from the text's blocks
  around it, tokenized on their own (spaCy tokenizes each span of non-space
  characters alone; runs of digits, spans it keeps whole and spans cut only at
  their affixes without spaCy), not from spaCy over the
  whole text, the walk back stopping at the first lemma holding a context word
  (``IndexedContextEnhancer``, ``LocalTokens``); and only for a match with a
  context word in the part of the text those words can come from
  (``ContextReach``: a span with a digit and no colon holds a keyword);
* results that no context word can lift to the threshold (US_BANK_NUMBER's
  0.05) are dropped before enhancement, which Presidio does right after it,
  before removing duplicates (``PruningAnalyzerEngine``), and the patterns
  whose results none can lift to it are not run, nor those the text holds no
  witness of (an IPv6 address holds "::" or six hex groups followed by colons:
  ``PruningRegistry``);
* a phone number scores 0.4, under the threshold unless a context word near it raises it: the phone
  recognizer scans only the lines from which Presidio's walk around a match may read one of its context
  words, and decides only the candidates there from which it may (``ContextReach.lines_reaching``,
  ``spans_reaching``; the same bounds as ``ContextReach.bounds``, for every start in a candidate); none in a
  text holding no "phone", "call", "number"... (no candidate holds a newline: a line's scan finds what the
  whole text's scan finds there);
* a phone candidate's decision is remembered per region under the characters
  phonenumbers reads around it (``RememberingMatcher``): a number written many
  times is parsed once per region; a candidate is turned away for every region
  at once when no region's valid number can start near one of its raw inputs'
  starts (``any_region_prefilter``: nine in ten of a log's), each part tried
  only for the regions whose numbers can be that long (``length_screen``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from capsem_proxyd.policies.declarations import in_worker
from capsem_proxyd.policies.holdback import Combined, Fixed, Holdback, regex_width
from capsem_proxyd.policies.pattern_holdback import PatternDFA, Patterns, Untranslatable
from capsem_proxyd.policies.pattern_screen import PatternScreen, pattern_screen
from capsem_proxyd.redaction.findings import Finding, MaskingDecision, hook_text

log = logging.getLogger("capsem_proxyd.enforcement.pii")
logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)  # its DEBUG lines quote prompt text

INSTALL_HINT = "install the 'pii' extra: uv sync --extra pii (or pip install 'capsem-proxyd[pii]')"

try:  # defect 1: the module's stray imports make this fail without presidio
    import spacy
    from capsem.models import DEFAULT_SAFE_DECISION, Agent, Decision, Media, Verdict
    from capsem.policies.pii_policy import PIIEntityType
    from capsem.tools import Tool
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import EmailRecognizer, PhoneRecognizer, SpacyRecognizer
    from spacy.language import Language

    from capsem_proxyd._compat.capsem_pii import PIIPolicyBase
    from capsem_proxyd._compat.phonenumbers import candidate_superset, number_superset, shortest_valid_number
    from capsem_proxyd._compat.presidio import (
        CandidatePhoneRecognizer,
        IndexedContextEnhancer,
        NoDownloadSpacyNlpEngine,
        OfflineEmailRecognizer,
        PruningAnalyzerEngine,
        PruningRegistry,
        spacy_model_installed,
    )
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"the PII policy needs presidio-analyzer ({error}); {INSTALL_HINT}") from None

NER_ENTITIES = frozenset({"PERSON", "LOCATION", "DATE_TIME"})
# What a built policy analyses once before its first request: an address, a card number, and phone numbers
# beside a context word of the phone recognizer (without one, its candidates are never decided).
WARM_UP = "warm-up: someone@example.com 4111 1111 1111 1111, phone: +1 415-555-0134 or 020 7946 0958"
DEFAULT_SPACY_MODEL = "en_core_web_lg"
_LEMMA_COMPONENT = "capsem_proxyd_lowercase_lemma"
_OUR_KEYS = ("ner", "spacy_model", "analysis_threads")


@Language.component(_LEMMA_COMPONENT)
def _lowercase_lemma(doc: Any) -> Any:
    """Defect 7: a lemma for every token, so Presidio's context words can match."""
    for token in doc:
        token.lemma_ = token.lower_
    return doc


class LazySpacyNlpEngine(NoDownloadSpacyNlpEngine):
    """Presidio's spaCy engine, minus the silent model download (defect 2), computing lazily."""

    finds_no_entities = False  # a pipeline without an entity recognizer (the blank one) sets it

    def process_text(self, text: str, language: str) -> Any:
        known: dict[str, Any] = {"entities": [], "scores": []} if self.finds_no_entities else {}
        return _LazyArtifacts(lambda: SpacyNlpEngine.process_text(self, text, language), known)


class _LazyArtifacts:
    """Presidio's ``NlpArtifacts`` of a text, computed when first read: only context enhancement of a
    match found reads them, so a text without a match skips spaCy. Presidio's ``SpacyRecognizer`` (run
    for PHONE_NUMBER too) reads the entities of every text: a pipeline that has no entity recognizer
    finds none, so they are ``known`` without running it."""

    def __init__(self, compute: Any, known: dict[str, Any]) -> None:
        self._compute = compute
        self._known = known
        self._artifacts: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._artifacts is None:
            if name in self._known:
                return self._known[name]
            self._artifacts = self._compute()
        return getattr(self._artifacts, name)


def missing_model_message(model_name: str, entities: list[str]) -> str:
    return (
        f"PII entities {', '.join(entities)} need the spaCy model '{model_name}', which is not installed: "
        f"install it (python -m spacy download {model_name}, or pip install its wheel) "
        "or set ner = false in pii.toml to skip them"
    )


def _blank_nlp_engine(language: str) -> SpacyNlpEngine:
    """A tokenizer-only pipeline: enough for every pattern recognizer, no model needed."""
    nlp = spacy.blank(language)
    nlp.add_pipe(_LEMMA_COMPONENT)
    engine = LazySpacyNlpEngine(models=[{"lang_code": language, "model_name": f"blank:{language}"}])
    engine.nlp = {language: nlp}  # type: ignore[assignment]  # Presidio declares it None until load()
    engine.finds_no_entities = not nlp.has_pipe("ner") and not nlp.has_pipe("entity_ruler")  # blank: true
    return engine


def _model_nlp_engine(language: str, model_name: str) -> SpacyNlpEngine:
    engine = LazySpacyNlpEngine(models=[{"lang_code": language, "model_name": model_name}])
    engine.load()
    return engine


def _model_from_nlp_config(nlp_engine_config: dict[str, Any] | None, language: str, default: str) -> str:
    """The spaCy model named by CAPSEM's ``nlp_engine_config`` (only spaCy runs offline)."""
    if not nlp_engine_config:
        return default
    engine_name = nlp_engine_config.get("nlp_engine_name", "spacy")
    if engine_name != "spacy":
        raise ValueError(f"nlp_engine_config: only the 'spacy' engine is supported offline, not {engine_name!r}")
    for model in nlp_engine_config.get("models", []):
        if isinstance(model, dict) and model.get("lang_code") == language and model.get("model_name"):
            return str(model["model_name"])
    return default


class OfflinePIIPolicy(PIIPolicyBase):
    """CAPSEM's PIIPolicy with an analyzer built once, offline, and run off the event loop.

    Splittable (``policies/declarations.py``): an entity is found in a text's
    pieces and the seams between them as in the whole. CPU-heavy: the engine
    runs it in worker processes (``enforcement/workers.py``), where it analyses in
    line; in the proxy's own process (``processes = false`` in ``pii.toml``,
    or no worker could start) it analyses in ``analysis_threads`` threads.
    """

    splittable = True
    cpu_heavy = True
    entity_decisions: dict[Any, Any]  # set by PIIPolicy.__init__ (capsem ships no types)

    def __init__(
        self,
        *args: Any,
        ner: bool = True,
        spacy_model: str = DEFAULT_SPACY_MODEL,
        analysis_threads: int = 1,
        redact: frozenset[str] = frozenset(),
        **kwargs: Any,
    ) -> None:
        # Read by build_analyzer, which PIIPolicy.__init__ calls.
        self.redact = redact  # entity names masked in the request hooks instead of decided
        self.masking = bool(redact)  # declarations.masks: asked before the other policies
        self.ner = ner
        self.spacy_model = spacy_model
        self.warnings: list[str] = []
        self._limiter = trio.CapacityLimiter(analysis_threads)
        super().__init__(*args, **kwargs)

    # -- building (once, at load or reload) ---------------------------------

    def build_analyzer(self) -> None:
        language = self.language
        model_name = _model_from_nlp_config(self.nlp_engine_config, language, self.spacy_model)
        wanted_ner = sorted(entity.value for entity in self.entity_decisions if entity.value in NER_ENTITIES)
        if wanted_ner and not self.ner:
            self.entity_decisions = {
                entity: verdict for entity, verdict in self.entity_decisions.items() if entity.value not in NER_ENTITIES
            }
            self.warnings.append(f"PII entities {', '.join(wanted_ner)} skipped: ner = false in pii.toml")
            wanted_ner = []
        if wanted_ner and not spacy_model_installed(model_name):
            raise ValueError(missing_model_message(model_name, wanted_ner))
        nlp_engine = _model_nlp_engine(language, model_name) if wanted_ner else _blank_nlp_engine(language)
        registry = PruningRegistry(supported_languages=[language])
        registry.load_predefined_recognizers(languages=[language], nlp_engine=nlp_engine)
        if any(isinstance(recognizer, EmailRecognizer) for recognizer in registry.recognizers):
            registry.remove_recognizer("EmailRecognizer")
            registry.add_recognizer(OfflineEmailRecognizer(supported_language=language))
        for recognizer in list(registry.recognizers):
            if type(recognizer) is PhoneRecognizer:
                registry.remove_recognizer("PhoneRecognizer")
                registry.add_recognizer(CandidatePhoneRecognizer(
                    context=recognizer.context, supported_language=recognizer.supported_language,
                    supported_regions=recognizer.supported_regions, leniency=recognizer.leniency,
                ))
        self.analyzer = PruningAnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=[language],
                                              context_aware_enhancer=IndexedContextEnhancer(
                                                  lowercase_lemmas=not wanted_ner,
                                                  nlp_engine=None if wanted_ner else nlp_engine, language=language))
        widest = self._widest_match()
        self.split_holdback = widest  # the seams between request pieces: every recognizer, whatever is checked
        self._stream_holdback: Holdback | None | bool = False  # built when first asked (``stream_holdback``)
        self._screen_dfas: tuple[PatternDFA, ...] | None = None  # the reply screen's, built with it
        # Warm up now, not on the first request: the regexes, the suffix snapshot, and what the phone
        # recognizer builds at its first number near a context word (its all-regions sieve, ~0.1 s of
        # patterns compiled; the context walk's tokenizer): a text without a context word never reaches
        # them, so the warm-up holds one (``tests/policy/test_pii.py`` checks that nothing is left to build).
        self.analyze_text(WARM_UP)
        log.info(
            "PII analyzer ready: language=%s nlp=%s entities=%s",
            language, model_name if wanted_ner else "blank (pattern entities only)",
            ",".join(entity.value for entity in self.entity_decisions),
        )

    def _widest_match(self) -> Fixed | None:
        """The widest match of the recognizers of the checked entities, minus one; None
        (unbounded: the cap) as soon as one has a pattern of unbounded width or no pattern at all
        (NER entities, checksum-only recognizers)."""
        wanted = {entity.value for entity in self.entity_decisions}
        widest = 0
        for recognizer in self.analyzer.registry.recognizers:
            if not wanted & set(getattr(recognizer, "supported_entities", ())):
                continue
            patterns = getattr(recognizer, "patterns", None)
            if not patterns:
                return None
            flags = getattr(recognizer, "global_regex_flags", 0) or 0
            for pattern in patterns:
                width = regex_width(re.compile(pattern.regex, flags))
                if width is None:
                    return None
                widest = max(widest, width)
        return Fixed(widest - 1)

    @property
    def stream_holdback(self) -> Holdback | None:
        """Built when first asked, not in ``build_analyzer``: the policy workers build the policy too, and
        never ask (the engine reads the declaration of the copy built to describe the policy)."""
        if self._stream_holdback is False:
            self._stream_holdback = self._pending_matches() if self.check_responses else Fixed(0)
        assert self._stream_holdback is not True
        return self._stream_holdback

    def _pending_matches(self) -> Holdback | None:
        """What a streamed reply holds back: from the earliest start of a match still pending of a recognizer
        of the checked entities (``pattern_holdback.Patterns``, reading the text as Presidio does: raw), not
        the cap. Every pattern counts as able to match: context words and the score threshold only ever
        lower what is reported, and so do the recognizers' checksums. The phone recognizer finds numbers
        inside phonenumbers' candidates: a superset of its candidate pattern stands for it. A pattern with no
        DFA holds its widest match; a recognizer with neither (NER) makes it the cap (None).

        On the way, the DFAs of the reply screen (``reply_screen``): the same patterns, except that phone
        numbers are looked for only where one can be found (``number_superset``: enough digits, or a letter);
        none when a pattern has no DFA."""
        self._screen_dfas = None
        wanted = {entity.value for entity in self.entity_decisions}
        dfas: list[PatternDFA] = []
        screened: list[PatternDFA] = []
        screenable = True
        fixed: list[Holdback] = []
        for recognizer in self.analyzer.registry.recognizers:
            if not wanted & set(getattr(recognizer, "supported_entities", ())):
                continue
            found_in: list[re.Pattern[str]] | None = None  # where the screen looks (None: the same patterns)
            if isinstance(recognizer, PhoneRecognizer):
                patterns = [candidate_superset()]
                found_in = [number_superset(shortest_valid_number())]
            elif isinstance(recognizer, SpacyRecognizer) and getattr(self.analyzer.nlp_engine, "finds_no_entities",
                                                                      False):
                continue  # it reports only the pipeline's entities, and the blank pipeline finds none
            else:
                flags = getattr(recognizer, "global_regex_flags", 0) or 0
                patterns = [re.compile(pattern.regex, flags) for pattern in getattr(recognizer, "patterns", None) or ()]
                if not patterns:
                    return None
            built: list[PatternDFA] = []
            for pattern in patterns:
                try:
                    built.append(PatternDFA(pattern, widened=True))
                except Untranslatable as error:
                    width = regex_width(pattern)
                    if width is None:
                        log.warning("PII %s: held back by the cap, not by its pending matches (%s)",
                                    type(recognizer).__name__, error)
                        return None
                    fixed.append(Fixed(width - 1))
            dfas += built
            try:
                screened += built if found_in is None else [PatternDFA(pattern, widened=True) for pattern in found_in]
            except Untranslatable:
                screenable = False
        if screenable and not fixed:
            self._screen_dfas = tuple(screened)
        return Combined([Patterns.of(dfas, raw=True), *fixed])

    def reply_screen(self) -> Callable[[], PatternScreen] | None:
        """A stream channel's screen (``declarations.reply_screen``): this policy's ``on_model_response``
        answers ALLOW unless a recognizer of a checked entity finds one, inside a match of its pattern (a
        phone number: inside a candidate with enough digits); so a stream check whose new text completes no
        match of them (``pattern_screen.PatternScreen``) passes without asking Presidio in a worker process.
        None when a recognizer has no pattern with a DFA (NER entities: checked at every check as before)."""
        if not self.check_responses:
            return partial(PatternScreen, ())  # it never refuses a reply
        if self.stream_holdback is None or self._screen_dfas is None:
            return None
        return pattern_screen(self._screen_dfas)

    # -- analysis ------------------------------------------------------------

    def analyze_text(self, text: str) -> list:
        """Defect 4: errors propagate (the engine fails closed) instead of meaning "no PII"."""
        if not text or not text.strip() or not self.entity_decisions:
            return []
        return self.analyzer.analyze(
            text=text,
            entities=[entity.value for entity in self.entity_decisions],
            language=self.language,
            score_threshold=self.score_threshold,
        )

    async def _analyze(self, text: str) -> list:
        """Defect 5: analyse in a bounded worker thread so the event loop keeps serving (in a worker
        process, in line: the process is there for it)."""
        if not text or not text.strip():
            return []
        if in_worker():
            return self.analyze_text(text)
        return await trio.to_thread.run_sync(
            self.analyze_text, text, limiter=self._limiter, abandon_on_cancel=True
        )

    # -- hooks (same texts as PIIPolicy's, analysed off the event loop) -------

    async def on_model_call(
        self,
        invocation_id: str,
        agent: Agent,
        model_name: str,
        system_instructions: str,
        prompt: str,
        media: list[Media],
    ) -> Decision:
        if not self.check_prompts:
            return DEFAULT_SAFE_DECISION
        if self.redact:
            return await self._masking("on_model_call", "prompt", f"{system_instructions}\n{prompt}")
        results = await self._analyze(f"{system_instructions}\n{prompt}".strip())
        return self.decide(results, "on_model_call", "prompt", is_response=False)

    async def on_tool_call(self, invocation_id: str, agent: Agent, tool: Tool, args: dict) -> Decision:
        if not self.check_tool_args or not args:
            return DEFAULT_SAFE_DECISION
        if self.redact:
            text = hook_text("on_tool_call", (invocation_id, agent, tool, args))
            return await self._masking("on_tool_call", f"tool '{tool.name}' arguments", text)
        results = await self._analyze(_as_json(args))
        return self.decide(results, "on_tool_call", f"tool '{tool.name}' arguments", is_response=False)

    async def on_model_response(
        self,
        invocation_id: str,
        agent: Agent,
        response: str,
        thoughts: str,
        media: list[Media],
    ) -> Decision:
        if not self.check_responses:
            return DEFAULT_SAFE_DECISION
        results = await self._analyze(f"{response}\n{thoughts}".strip())
        return self.decide(results, "on_model_response", "model response", is_response=True)

    async def on_tool_response(self, invocation_id: str, agent: Agent, tool: Tool, response: dict) -> Decision:
        if not self.check_tool_responses:
            return DEFAULT_SAFE_DECISION
        if self.redact:
            text = hook_text("on_tool_response", (invocation_id, agent, tool, response))
            return await self._masking("on_tool_response", f"tool '{tool.name}' response", text)
        results = await self._analyze(_as_json(response))
        return self.decide(results, "on_tool_response", f"tool '{tool.name}' response", is_response=True)

    async def _masking(self, hook: str, context: str, text: str) -> Decision:
        """The decision on ``text`` (``hook_text``) with the ``redact`` entities found in it to mask."""
        results = await self._analyze(text)
        masked = [result for result in results if result.entity_type in self.redact]
        decision = self.decide([result for result in results if result.entity_type not in self.redact], hook,
                               context, is_response=False)
        if not masked or decision.verdict == Verdict.BLOCK:
            return decision
        findings = tuple(Finding(result.start, result.end, text[result.start:result.end], result.entity_type)
                         for result in masked if result.start < result.end)
        counts: dict[str, int] = {}
        for finding in findings:
            counts[finding.kind] = counts.get(finding.kind, 0) + 1
        summary = "masked: " + ", ".join(f"{kind} x{count}" for kind, count in counts.items())
        verdict = decision.verdict if decision.verdict != Verdict.ALLOW else Verdict.LOG
        details = f"{decision.details}; {summary}" if verdict == decision.verdict and decision.details else summary
        return MaskingDecision(policy=self.name, callback=hook, verdict=verdict, reason=decision.reason,
                               details=details, findings=findings)

    # -- configuration -------------------------------------------------------

    @classmethod
    def from_config(cls, config: dict) -> OfflinePIIPolicy | None:
        """CAPSEM's ``pii.toml`` plus ``ner``, ``spacy_model`` and ``analysis_threads``."""
        if not config.get("enabled", True):
            return None
        decisions = config.get("entity_decisions") or {}
        if not isinstance(decisions, dict) or not decisions:
            raise ValueError("pii.toml must have an [entity_decisions] table, e.g. EMAIL_ADDRESS = \"BLOCK\"")
        entity_decisions = {}
        for entity_name, verdict_name in decisions.items():
            try:
                entity = PIIEntityType[str(entity_name).upper()]
            except KeyError:
                known = ", ".join(member.name for member in PIIEntityType)
                raise ValueError(f"unknown PII entity {entity_name!r} (known: {known})") from None
            try:
                verdict = Verdict[str(verdict_name).upper()]
            except KeyError:
                raise ValueError(f"unknown verdict {verdict_name!r} for {entity_name}") from None
            entity_decisions[entity] = verdict
        redact = config.get("redact", [])
        if not isinstance(redact, list):
            raise ValueError('redact must be a list of PII entities, e.g. redact = ["EMAIL_ADDRESS"]')
        masked: set[str] = set()
        for entity_name in redact:
            try:
                entity = PIIEntityType[str(entity_name).upper()]
            except KeyError:
                known = ", ".join(member.name for member in PIIEntityType)
                raise ValueError(f"redact: unknown PII entity {entity_name!r} (known: {known})") from None
            entity_decisions.setdefault(entity, Verdict.LOG)  # analysed, whatever entity_decisions says
            masked.add(entity.value)
        threads = config.get("analysis_threads", 1)
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError("analysis_threads must be a whole number >= 1")
        return cls(
            entity_decisions=entity_decisions,
            check_prompts=bool(config.get("check_prompts", True)),
            check_tool_args=bool(config.get("check_tool_args", True)),
            check_responses=bool(config.get("check_responses", True)),
            check_tool_responses=bool(config.get("check_tool_responses", True)),
            score_threshold=float(config.get("score_threshold", 0.5)),
            language=str(config.get("language", "en")),
            nlp_engine_config=config.get("nlp_engine_config"),
            ner=bool(config.get("ner", True)),
            spacy_model=str(config.get("spacy_model", DEFAULT_SPACY_MODEL)),
            analysis_threads=threads,
            redact=frozenset(masked),
        )


def _as_json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, indent=2, default=str)
    except (TypeError, ValueError):
        return str(value)
