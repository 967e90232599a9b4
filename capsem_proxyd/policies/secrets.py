"""The Secrets policy: credentials an agent leaks (AWS keys, GitHub and Slack tokens, private keys...), at every hook.

Configured by ``secrets.toml`` in ``--policy-dir``::

    enabled = true                     # false: off
    enable  = ["telegram-bot-token"]   # opt-in rules, by name (secret_rules.NAMES, or "private-key")
    disable = ["jwt"]                  # default rules to leave out
    log     = ["url-password"]         # rules that only record (LOG), never mask or refuse; opt-in ones too
    block   = ["private-key"]          # rules whose findings refuse the request instead of being masked
    allow   = ["AKIA0000000000000000"] # values never reported, besides the documented example keys

The rules are detect-secrets', run by RE2 behind an Aho-Corasick keyword sieve
(``secret_rules.py``, which says why and which run by default). In a request
(prompt, tool definitions and calls, tool results) an enforced finding is
masked (issue 23): the policy answers LOG with a ``MaskingDecision`` whose
findings are spans in ``hook_text``, and the proxy writes a placeholder over
each value wherever it occurs, so the session goes on where a refusal would
refuse every later turn (the agent resends the credential each time). A
``block`` rule's finding refuses instead; a ``log`` rule's is only recorded.
Replies are refused (BLOCK) until replies are masked. Placeholders are
allow-listed: a value the proxy wrote is never found again. A decision's
details name the kinds and rules found, never a value.

Splittable (``declarations.py``): a credential is found in a whole exactly
when it is in a piece or a seam (a private key's header is; its block then
runs to the piece's end). Streams hold back only from the start of a match
still pending (``pattern_holdback.Patterns``, reading the text raw, as the
rules do): nothing, for a reply without a credential's beginning in it.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable

import ahocorasick_rs
from capsem.models import DEFAULT_SAFE_DECISION, Agent, Decision, Media, Reason, Verdict
from capsem.policies import Policy
from capsem.tools import Tool

from capsem_proxyd.policies.holdback import Combined, Holdback, regex_width
from capsem_proxyd.policies.pattern_holdback import PatternDFA, Patterns, Untranslatable
from capsem_proxyd.policies.secret_rules import (
    Catalogue,
    Finding,
    SecretRules,
    catalogue,
    rule_group,
)
from capsem_proxyd.redaction.findings import Finding as MaskFinding
from capsem_proxyd.redaction.findings import MaskingDecision, hook_text
from capsem_proxyd.redaction.placeholder import is_placeholder
from capsem_proxyd.redaction.scanner import scan

log = logging.getLogger("capsem_proxyd.policies.secrets")

NAME = "Secrets"
_KEYS = frozenset({"enabled", "enable", "disable", "log", "block", "allow"})
_UNBOUNDED_HOLD = 1024  # a pending match of a rule of unbounded width whose DFA cannot be built holds this much
_WIDE = 256  # a rule wider than this gets the DFA without counters (``unbounded``), capped at its width


class SecretsPolicy(Policy):
    """Refuses credentials in prompts, tool definitions and calls, tool results and replies."""

    splittable = True
    masking = True  # declarations.masks: asked before the policies that cannot mask

    def __init__(
        self,
        *,
        enable: Iterable[str] = (),
        disable: Iterable[str] = (),
        log_only: Iterable[str] = (),
        block: Iterable[str] = (),
        allow: Iterable[str] = (),
        allow_value: Callable[[str], bool] | None = is_placeholder,
        rules: Catalogue | None = None,
    ) -> None:
        super().__init__(
            name=NAME,
            description="Credentials in any content (AWS keys, GitHub/GitLab/Slack/Stripe tokens, private keys, "
                        "URLs with passwords, JWTs): detect-secrets' rules on RE2 (secrets.toml)",
            authors="capsem-proxyd (rules: Yelp's detect-secrets)",
            url="https://github.com/Yelp/detect-secrets",
        )
        found = rules or _catalogue()
        groups: dict[str, list[str]] = {}
        for name in found.rules:
            groups.setdefault(rule_group(name), []).append(name)
        named = {"enable": list(enable), "disable": list(disable), "log": list(log_only), "block": list(block)}
        for key, names in named.items():
            unknown = sorted(set(names) - set(groups))
            if unknown:
                raise ValueError(f"{key}: unknown rule(s) {', '.join(unknown)} (known: {', '.join(sorted(groups))})")
        chosen = {group for group, members in groups.items() if found.rules[members[0]].default}
        both = sorted(set(named["log"]) & set(named["block"]))
        if both:
            raise ValueError(f"rule(s) both in log and block: {', '.join(both)}")
        chosen |= set(named["enable"]) | set(named["log"]) | set(named["block"])
        chosen -= set(named["disable"])
        self.logged = frozenset(named["log"])  # rule groups that record, never mask or refuse
        self.blocked = frozenset(named["block"])  # rule groups that refuse instead of masking
        self.rule_names = sorted(chosen)
        self.rules = SecretRules(
            (rule for group in sorted(chosen) for rule in (found.rules[name] for name in groups[group])),
            allowed=allow, allow=allow_value,
        )
        self.split_holdback = None  # seams: unbounded rules (a JWT, a private key block): the cap
        self._stream_holdback: Holdback | None = None

    # -- what the lead's masking core calls -------------------------------------

    def find(self, text: str) -> list[Finding]:
        """Every credential in ``text`` (``[start, end)`` in ``str`` indices, the value, its kind and rule),
        the logged rules' included."""
        return self.rules.find(text)

    def enforced(self, findings: Iterable[Finding]) -> list[Finding]:
        """The findings that act (not of a ``log`` rule)."""
        return [finding for finding in findings if finding.rule not in self.logged]

    # -- streams -----------------------------------------------------------------

    @property
    def stream_holdback(self) -> Holdback:
        """From the earliest start of a credential still pending (built when first asked, then kept)."""
        if self._stream_holdback is None:
            self._stream_holdback = _holdback(tuple(self.rules.holdback_patterns()))
        return self._stream_holdback

    def reply_screen(self) -> Callable[[], KeywordScreen] | None:
        """A stream channel's screen (``declarations.reply_screen``): the rules' keywords, found in each new
        piece as the sieve finds them (lower-cased, not folded), so a check whose new text holds none passes
        without asking the policy. None when a rule has no keyword (it runs on every text) or a keyword the
        per-piece reading could miss (not ASCII, or holding a line break: the hook joins text and thoughts
        with one)."""
        keywords = self.rules.keywords()
        if keywords is None or not all(word.isascii() and "\n" not in word for word in keywords):
            return None
        return functools.partial(KeywordScreen, keywords)

    # -- hooks -------------------------------------------------------------------

    async def on_model_call(
        self, invocation_id: str, agent: Agent, model_name: str, system_instructions: str, prompt: str,
        media: list[Media],
    ) -> Decision:
        text = hook_text("on_model_call", (invocation_id, agent, model_name, system_instructions, prompt, media))
        return self._check("on_model_call", "prompt", self.find(text))

    async def on_tool_call(self, invocation_id: str, agent: Agent, tool: Tool, args: dict) -> Decision:
        text = hook_text("on_tool_call", (invocation_id, agent, tool, args))
        return self._check("on_tool_call", f"tool '{tool.name}'", self._find_in_call(text, tool, args))

    async def on_tool_response(self, invocation_id: str, agent: Agent, tool: Tool, response: dict) -> Decision:
        text = hook_text("on_tool_response", (invocation_id, agent, tool, response))
        return self._check("on_tool_response", f"result of tool '{tool.name}'", self.find(text))

    async def on_model_response(
        self, invocation_id: str, agent: Agent, response: str, thoughts: str, media: list[Media],
    ) -> Decision:
        # Found in each part of ``hook_text`` (``response``, a newline, ``thoughts``), never in a joined copy: a
        # 20 MB reply would otherwise be copied whole for the check (the per-reply memory bound).
        found = self.find(response)
        if thoughts:
            shift = len(response) + 1
            found += [finding._replace(start=finding.start + shift, end=finding.end + shift)
                      for finding in self.find(thoughts)]
        return self._check("on_model_response", "model response", found)

    def _find_in_call(self, text: str, tool: Tool, args: dict) -> list[Finding]:
        """The credentials of a tool call's ``hook_text`` (name, description, arguments as JSON), each on the
        value the client wrote: the arguments are read as JSON text (a label in a key, ``{"AWS_SECRET_ACCESS_KEY":
        "..."}``, is seen with its value) and string by string, decoded (a private key's lines are one value,
        not its JSON escapes); a finding in a string is reported as the decoded value at the raw characters it
        is written with there (the masking core checks an escaped value against its JSON spelling)."""
        found = self.find(text)
        if not args:
            return found
        offset = len(tool.name) + 1 + len(tool.description or "") + 1
        decoded: list[Finding] = []
        for string in scan(text[offset:]):
            for start, end, value, kind, rule in self.find(string.text):
                decoded.append(Finding(offset + string.raw_index(start), offset + string.raw_index(end), value, kind,
                                       rule))
        # a finding of the JSON text that a decoded one covers is the same credential read through escapes
        kept = [finding for finding in found
                if not any(other.start < finding.end and finding.start < other.end for other in decoded)]
        return sorted([*kept, *decoded], key=lambda finding: (finding.start, -finding.end))

    def _check(self, hook: str, where: str, findings: list[Finding]) -> Decision:
        """The decision on ``findings`` (positions in the hook's ``hook_text``): the enforced ones are masked (LOG with the
        findings; in a reply too, where the pipeline or the stream masks them, or refuses what it cannot
        rewrite: a streamed tool call, signed thinking), a ``block`` rule's refuse; a ``log`` rule's is
        recorded (LOG)."""
        if not findings:
            return DEFAULT_SAFE_DECISION
        enforced = self.enforced(findings)
        refused = [finding for finding in enforced if finding.rule in self.blocked]
        counts = Counter((finding.kind, finding.rule) for finding in findings)
        named = ", ".join(
            f"{kind} ({rule}{_how(rule, self.logged, self.blocked, hook)})" + (f" x{count}" if count > 1 else "")
            for (kind, rule), count in counts.items()
        )
        details = f"credentials found in {where}: {named}"
        if refused or not enforced:
            return Decision(policy=NAME, callback=hook, verdict=Verdict.BLOCK if refused else Verdict.LOG,
                            reason=Reason.SENSITIVE_DATA, details=details)
        return MaskingDecision(
            policy=NAME, callback=hook, verdict=Verdict.LOG, reason=Reason.SENSITIVE_DATA, details=details,
            findings=tuple(MaskFinding(finding.start, finding.end, finding.matched_text, finding.rule)
                           for finding in enforced),
        )

    # -- configuration -----------------------------------------------------------

    @classmethod
    def from_config(cls, config: dict) -> SecretsPolicy | None:
        """Build from a parsed ``secrets.toml`` (the proxy's own keys already removed)."""
        if not config.get("enabled", True):
            return None
        unknown = sorted(set(config) - _KEYS)
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
        lists = {key: _strings(config, key) for key in ("enable", "disable", "log", "block", "allow")}
        return cls(enable=lists["enable"], disable=lists["disable"], log_only=lists["log"], block=lists["block"],
                   allow=lists["allow"])


def _how(rule: str, logged: frozenset[str], blocked: frozenset[str], hook: str) -> str:
    if rule in logged:
        return ", log"
    if rule in blocked:
        return ", block"
    return ", masked"


class KeywordScreen:
    """One stream channel's search for the Secrets rules' keywords (``SecretRules.candidates`` reads the same
    words in the whole lower-cased text: no rule can match a text without one). Each piece is lower-cased
    alone (``str.lower`` maps each character alone but a final sigma, not ASCII either way) and read with
    the last ``longest - 1`` characters before it, so a keyword split between reads is found whole.

    Unlike a term, a keyword is where a credential *begins*: the rest may come in later pieces that hold no
    keyword (``AKIA`` now, its 16 characters next). So from the first keyword on, the screen flags every
    piece (the policy is asked at every check of that channel, as without a screen); a reply without any
    keyword is never asked about until its end.

    The words are found in one pass (``_keyword_search``: an Aho-Corasick automaton, the sieve's library), not
    a ``str.find`` per word: fifty finds per streamed token were most of the Secrets policy's CPU per event.
    The tail holds no keyword whole (one found there would have set ``seen``), so a word found in the tail
    and the new piece ends in the new piece."""

    __slots__ = ("keywords", "seen", "_keep", "_tail", "_search")

    def __init__(self, keywords: Iterable[str]) -> None:
        self.keywords = tuple(keywords)
        self.seen = False  # a keyword was found: every later piece is flagged
        self._keep = max((len(word) for word in self.keywords), default=1) - 1
        self._tail = ""
        self._search = _keyword_search(self.keywords)

    def feed(self, new_text: str) -> bool:
        if self.seen or not new_text:
            return self.seen
        tail = self._tail
        text = tail + new_text.lower()
        self.seen = bool(self._search(text))
        self._tail = text[-self._keep:] if self._keep else ""
        return self.seen


@functools.cache
def _keyword_search(keywords: tuple[str, ...]) -> Callable[[str], list[tuple[int, int, int]]]:
    """The keywords' automaton (once per process: every channel's screen shares it), as the search that
    lists where they occur (empty: none)."""
    if not keywords:
        return lambda text: []
    return ahocorasick_rs.AhoCorasick(keywords).find_matches_as_indexes


def _strings(config: dict, key: str) -> list[str]:
    value = config.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"{key} must be a list of strings")
    return value


@functools.cache
def _catalogue() -> Catalogue:
    """detect-secrets' rules, compiled once per process (every reload and tenant shares them)."""
    found = catalogue()
    if found.skipped:
        # DEBUG: the same every start (detect-secrets' public-IP rule, no credential), and at INFO it would be a
        # second line beside an operator error that ``check``/``start`` must print alone
        log.debug("secrets: rules RE2 cannot run, left out: %s", ", ".join(found.skipped))
    return found


@functools.cache
def _holdback(patterns: tuple[re.Pattern[str], ...]) -> Holdback:
    """The rules' regexes as DFAs read incrementally (once per process: the DFAs take a second to build).

    Each as exactly as the DFA library can (``widened``; a wide one without its counters, ``unbounded``,
    still capped at its width). A regex whose DFA cannot be built (detect-secrets' AWS labels: ``.{0,20}?``
    twice, under IGNORECASE) is replaced by a larger one that can: its leading literal, then anything up to
    its width, so a stream holds from the label on, and only while the width lasts."""
    dfas: list[PatternDFA] = []
    for pattern in patterns:
        width = regex_width(pattern)
        try:
            if _wild(pattern):
                raise Untranslatable("a wildcard repeat under IGNORECASE")
            dfas.append(PatternDFA(pattern, widened=width is None or width <= _WIDE,
                                   unbounded=width is not None and width > _WIDE))
        except Untranslatable as error:
            lead = _leading_literal(pattern)
            log.debug("secrets: rule %r held from its leading literal (%s)", pattern.pattern[:40], error)
            wider = re.compile(f"(?:{re.escape(lead)})[\\s\\S]{{0,{width or _UNBOUNDED_HOLD}}}", pattern.flags)
            dfas.append(PatternDFA(wider, unbounded=True))
    return Combined([Patterns.of(dfas, raw=True)])


def _wild(pattern: re.Pattern[str]) -> bool:
    return bool(pattern.flags & re.IGNORECASE) and ".{" in pattern.pattern


def _leading_literal(pattern: re.Pattern[str]) -> str:
    """The literal characters every match of ``pattern`` starts with (for the hold-back's fallback)."""
    match = re.match(r"(?:[A-Za-z0-9_]|\\[^A-Za-z0-9])+", pattern.pattern)
    literal = match[0] if match else ""
    if literal and pattern.pattern[len(literal):len(literal) + 1] in ("?", "*", "{"):
        literal = literal[:-1]  # its last character is optional or repeated
    return re.sub(r"\\(.)", r"\1", literal)
