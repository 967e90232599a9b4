"""The Rules policy: declarative block / confirm / log rules from ``rules.toml``.

What a security team writes without code::

    case_sensitive = false          # the default for every rule
    max_prompt_chars = 100000       # prompt + system instructions; longer is blocked

    [on_model_call]                 # prompts and system instructions
    block   = ["project falcon", { name = "aws-key", regex = 'AKIA[0-9A-Z]{16}' }]
    confirm = [{ name = "wire-transfer", term = "wire transfer" }]
    log     = ["password"]

    [on_tool_call]                  # tool names, descriptions and call arguments
    [on_tool_response]              # what tools returned
    redact  = [{ name = "aws-secret", regex = 'AWS_SECRET_ACCESS_KEY *= *(?P<value>[A-Za-z0-9/+]{40})',
                 group = "value" }]
    [on_model_response]             # the model's text and thoughts

    [tools]                         # tool definitions and model tool calls, by glob
    allow = ["get_*", "search"]     # when set, every other tool is blocked
    deny  = ["*shell*"]

    [models]
    allow = ["gpt-4o*", "gemini-2.*"]

    [mcp_servers]                   # MCP tools by their server, on both hops
    deny = ["scratch-*"]            # (a tool without a server is not affected)

A plain string is a literal term; a table has ``term`` or ``regex``, an
optional ``name`` and ``case_sensitive``.

``redact`` (every text hook: ``on_model_call``, ``on_tool_call``,
``on_tool_response``, and ``on_model_response``: what the model writes) masks
instead of refusing: each match is replaced in the forwarded body (or the
released reply) by a placeholder (``redaction/``), and the request goes on.
``group`` names the regex's group that is masked (the value after
``password=``, never the key); without it the whole match is. A redact rule
matches the text as written (a term: its exact letters, case aside) and, a
regex, the text as read (invisible characters removed, NFKC): a match there is
widened to the whole characters it was read from (the combining marks and
invisible characters after each included), and those are masked. Where the
text as read cannot be mapped back character by character (NFKC joining Hangul
jamo), a match only the text as read has is refused instead. Every match names its rule in the
decision details (a literal's default name is the term, a regex's its
position, e.g. ``on_model_call.block[1]``); matched text is never echoed, so a
decision never carries the data it refused. Regexes are compiled once, at load:
a bad one is a startup error naming the file, the line and the rule.

What each kind of rule sees (``normalize.py`` defines the functions); the
text forwarded is always the original, this only decides what matches:

* a literal term matches when ``fold(term) in fold(text)``: the text as a
  reader sees it, so fullwidth letters, zero-width characters and soft
  hyphens, combining marks (``é`` reads as ``e``), Cyrillic/Greek (TR39)
  lookalikes, letters with a stroke, hook or bar and enclosed letters do not
  hide a term, and case is folded (``ß`` reads as ``ss``); every reading of the
  text counts (``normalize.readings``: a combining low line as ``_``, visual
  order under bidi controls). A space or dash inside a term is a gap
  (``holdback.Term``): it matches any run of whitespace, dash-like and
  invisible characters, so ``project falcon`` is found in ``project\\tfalcon``,
  ``project-falcon`` and ``project\\u200bfalcon``.
  With ``case_sensitive = true`` the same folding without the case folding:
  ``ＬＡＵＮＣＨ``, and ``LАUNCH`` with a Cyrillic ``А``, still read as ``LAUNCH``;
  ``launch`` does not. The term is folded once, at load; a term with nothing visible in it is
  a configuration error.
* a regex runs on ``visible(text)``: invisible characters (format characters
  such as zero-width spaces and soft hyphens, and the other default-ignorable
  ones) removed, then NFKC (fullwidth ``ＡＫＩＡ`` is ``AKIA``, ``e`` + combining
  acute is ``é``); neither lookalikes nor case are folded, since the regex's own
  classes and flags decide those: ``AKIA[0-9A-Z]{16}`` means what it says, and
  is case-insensitive unless ``case_sensitive = true``. For words, prefer a term.
* a ``deny`` glob (tools, models) matches each reading of the name against the
  folded glob, so ``*shell*`` also refuses a ``run_ѕhell`` spelled with a Cyrillic ѕ
  or a ``U+202E llehs_nur`` shown right to left; an
  ``allow`` glob must match the name as written (case aside, unless
  ``case_sensitive``): a lookalike of an allowed name is a different name.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from capsem.models import DEFAULT_SAFE_DECISION, Agent, Decision, Media, Reason, Verdict
from capsem.policies import Policy
from capsem.tools import Tool

from capsem_proxyd.policies.holdback import Combined, Holdback, LiteralTerms, Term, Visible, regex_width
from capsem_proxyd.policies.normalize import GAP_MARK, readings, visible, visible_with_places
from capsem_proxyd.policies.pattern_holdback import PatternDFA, Patterns, Untranslatable
from capsem_proxyd.redaction.findings import Finding, MaskingDecision, hook_text
from capsem_proxyd.views import tagged_server

log = logging.getLogger(__name__)

HOOKS = ("on_model_call", "on_tool_call", "on_tool_response", "on_model_response")
ACTIONS = {"block": Verdict.BLOCK, "confirm": Verdict.CONFIRM, "log": Verdict.LOG}
_SEVERITY = {Verdict.BLOCK: 3, Verdict.CONFIRM: 2, Verdict.LOG: 1}
# Keys the policy loader and engine read; allowed in the file, ignored here.
_ENGINE_KEYS = {"enabled", "class", "mode"}
_TOP_KEYS = {"case_sensitive", "max_prompt_chars", "tools", "models", "mcp_servers", *HOOKS, *_ENGINE_KEYS}
_RULE_KEYS = {"name", "term", "regex", "case_sensitive", "group"}
_MASKING_HOOKS = ("on_model_call", "on_tool_call", "on_tool_response", "on_model_response")


class _Views:
    """The text as each kind of rule sees it, each computed once and only if a rule asks.

    ``gapped``: a rule of the hook has a term of several words, so the spaced readings will be
    asked for: the folded ones are then those with the invisible characters' marks taken out
    (``fold`` is the spaced fold less ``GAP_MARK``), not a second fold of the text.
    """

    def __init__(self, text: str, gapped: bool = False) -> None:
        self.text = text
        self.gapped = gapped

    @cached_property
    def folded(self) -> tuple[str, ...]:
        if self.gapped:
            return tuple(dict.fromkeys(reading.replace(GAP_MARK, "") for reading in self.spaced))
        return readings(self.text)

    @cached_property
    def folded_cased(self) -> tuple[str, ...]:
        if self.gapped:
            return tuple(dict.fromkeys(reading.replace(GAP_MARK, "") for reading in self.spaced_cased))
        return readings(self.text, keep_case=True)

    @cached_property
    def spaced(self) -> tuple[str, ...]:
        return readings(self.text, spaced=True)

    @cached_property
    def spaced_cased(self) -> tuple[str, ...]:
        return readings(self.text, keep_case=True, spaced=True)

    @cached_property
    def visible(self) -> str:
        return visible(self.text)


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule: what it is called, what it does, what it looks for.

    Exactly one of ``term`` (folded, see the module docstring) and ``pattern``.
    """

    name: str
    verdict: Verdict
    term: Term | None = None
    case_sensitive: bool = False
    pattern: re.Pattern[str] | None = None
    group: str | int = 0  # a redact rule's group that is masked (0: the whole match)

    def matches(self, views: _Views) -> bool:
        if self.pattern is not None:
            return self.pattern.search(views.visible) is not None
        assert self.term is not None
        if self.case_sensitive:
            return self.term.found(views.folded_cased, lambda: views.spaced_cased)
        return self.term.found(views.folded, lambda: views.spaced)


@dataclass(frozen=True, slots=True)
class GlobList:
    """Tool or model names by glob; ``allow`` empty means "anything not denied"."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    case_sensitive: bool = False

    def _as_written(self, name: str) -> tuple[str, ...]:
        return (name if self.case_sensitive else name.lower(),)

    def _as_read(self, name: str) -> tuple[str, ...]:
        return readings(name, keep_case=self.case_sensitive)

    def _matches(self, name: str, globs: tuple[str, ...], form: Callable[[str], tuple[str, ...]]) -> str | None:
        subjects = form(name)
        for glob in globs:
            pattern = form(glob)[0]
            if any(fnmatch.fnmatchcase(subject, pattern) for subject in subjects):
                return glob
        return None

    def refusal(self, name: str) -> tuple[str, str] | None:
        """(the list that refuses ``name``, why), or None when it may pass.

        Deny looks at the name as a reader sees it, allow at the name as written:
        both ways, a lookalike is refused.
        """
        denied = self._matches(name, self.deny, self._as_read)
        if denied is not None:
            return "deny", f"deny '{denied}'"
        if self.allow and self._matches(name, self.allow, self._as_written) is None:
            return "allow", "not in allow list"
        return None


class RulesPolicy(Policy):
    """Literal terms and regexes per hook, tool and model globs, a prompt size limit.

    Splittable (``policies/declarations.py``): a term or regex matches a whole
    exactly when it matches one of its pieces or seams; the prompt size and
    the model are properties of the whole, checked by ``whole_prompt_decision``.
    """

    splittable = True

    def __init__(
        self,
        rules: dict[str, list[Rule]] | None = None,
        *,
        masks: dict[str, list[Rule]] | None = None,
        tools: GlobList | None = None,
        models: GlobList | None = None,
        mcp_servers: GlobList | None = None,
        max_prompt_chars: int | None = None,
    ) -> None:
        super().__init__(
            name="Rules",
            description="Declarative block/confirm/log terms and regexes per hook, tool and model allow/deny "
                        "globs, and a prompt size limit (rules.toml)",
            authors="capsem-proxyd",
            url="https://github.com/google/capsem",
        )
        self.rules = {hook: list((rules or {}).get(hook, [])) for hook in HOOKS}
        # The redact rules per hook: regexes (a term compiled as one) matched on hook_text as written.
        self.masks = {hook: list((masks or {}).get(hook, [])) for hook in HOOKS}
        self.masking = any(self.masks.values())  # declarations.masks: asked before the other policies
        self._gapped = {hook: any(rule.term is not None and rule.term.words for rule in self.rules[hook]) for hook in HOOKS}
        self.tools = tools or GlobList()
        self.models = models or GlobList()
        # MCP tools by server (``views.tagged_server``: the MCP hop's server, or Claude Code's mcp__SERVER__tool).
        self.mcp_servers = mcp_servers or GlobList()
        self.max_prompt_chars = max_prompt_chars
        # What a stream must hold back for this policy's reply rules (policies/holdback.py): its redact
        # rules' pending matches too, so that a value the model writes is held until it can be masked.
        reply_rules = [*self.rules["on_model_response"], *self.masks["on_model_response"]]
        self.stream_holdback = stream_holdback(reply_rules, pending_only=True)
        # What it refuses replies for, when that is terms a stream can screen each new piece for (a
        # redact rule is a regex: the policy is then asked about the whole text at every check).
        self.reply_terms = reply_terms(reply_rules)
        # What a seam between request pieces must hold: the widest match of the request-side rules.
        self.split_holdback = stream_holdback(
            [rule for hook in HOOKS[:3] for rule in (*self.rules[hook], *self.masks[hook])]
        )

    # -- hooks -----------------------------------------------------------------

    async def on_model_call(
        self,
        invocation_id: str,
        agent: Agent,
        model_name: str,
        system_instructions: str,
        prompt: str,
        media: list[Media],
    ) -> Decision:
        whole = self.whole_prompt_decision(model_name, system_instructions, prompt)
        if whole is not None:
            return whole
        text = f"{system_instructions}\n{prompt}"
        return self._masked("on_model_call", self._match("on_model_call", "prompt", text), text)

    def whole_prompt_decision(self, model_name: str, system_instructions: str, prompt: str) -> Decision | None:
        """The rules about the request as a whole: its size and its model (the engine calls this once per
        request when it checks the text in pieces)."""
        size = len(prompt) + len(system_instructions)
        if self.max_prompt_chars is not None and size > self.max_prompt_chars:
            return _decision(
                "on_model_call", Verdict.BLOCK, Reason.EXCESSIVE_USAGE,
                f"rule 'max_prompt_chars' matched: prompt is {size} characters, limit {self.max_prompt_chars}",
            )
        refusal = self.models.refusal(model_name)
        if refusal is not None:
            return _decision(
                "on_model_call", Verdict.BLOCK, Reason.POLICY_VIOLATION,
                f"rule 'models.{refusal[0]}' matched: model '{model_name}' refused ({refusal[1]})",
            )
        return None

    async def on_tool_call(self, invocation_id: str, agent: Agent, tool: Tool, args: dict) -> Decision:
        refusal = self.tools.refusal(tool.name)
        if refusal is not None:
            return _decision(
                "on_tool_call", Verdict.BLOCK, Reason.UNKNOWN_TOOL,
                f"rule 'tools.{refusal[0]}' matched: tool '{tool.name}' refused ({refusal[1]})",
            )
        server = self._server_refusal("on_tool_call", tool)
        if server is not None:
            return server
        parts = [tool.name, tool.description or ""]
        if args:
            parts.append(_as_text(args))
        text = "\n".join(parts)
        return self._masked("on_tool_call", self._match("on_tool_call", f"tool '{tool.name}'", text), text)

    async def on_tool_response(self, invocation_id: str, agent: Agent, tool: Tool, response: dict) -> Decision:
        server = self._server_refusal("on_tool_response", tool)
        if server is not None:
            return server
        decision = self._match("on_tool_response", f"result of tool '{tool.name}'", _as_text(response))
        if not self.masks["on_tool_response"]:
            return decision
        return self._masked(
            "on_tool_response", decision, hook_text("on_tool_response", (invocation_id, agent, tool, response))
        )

    async def on_model_response(
        self,
        invocation_id: str,
        agent: Agent,
        response: str,
        thoughts: str,
        media: list[Media],
    ) -> Decision:
        text = f"{response}\n{thoughts}"
        return self._masked("on_model_response", self._match("on_model_response", "model response", text), text)

    def _server_refusal(self, hook: str, tool: Tool) -> Decision | None:
        """A BLOCK when ``tool``'s MCP server is refused by ``[mcp_servers]``; None for a tool of no server."""
        server = tagged_server(tool.tags)
        refusal = self.mcp_servers.refusal(server) if server else None
        if refusal is None:
            return None
        return _decision(hook, Verdict.BLOCK, Reason.POLICY_VIOLATION,
                         f"rule 'mcp_servers.{refusal[0]}' matched: MCP server '{server}' refused ({refusal[1]})")

    def _match(self, hook: str, where: str, text: str) -> Decision:
        rules = self.rules[hook]
        if not rules or not text:  # whitespace is text: a rule may be about it ("\x85", a run of spaces)
            return DEFAULT_SAFE_DECISION
        views = _Views(text, self._gapped[hook])
        matched = [rule for rule in rules if rule.matches(views)]
        if not matched:
            return DEFAULT_SAFE_DECISION
        verdict = max((rule.verdict for rule in matched), key=_SEVERITY.__getitem__)
        names = ", ".join(f"'{rule.name}' ({rule.verdict.value.lower()})" for rule in matched)
        return _decision(hook, verdict, Reason.POLICY_VIOLATION, f"rules matched in {where}: {names}")

    def _masked(self, hook: str, decision: Decision, text: str) -> Decision:
        """``decision`` with what the hook's redact rules find in ``text`` (``hook_text``) to mask; a
        BLOCK as it is (nothing is forwarded)."""
        rules = self.masks[hook]
        if not rules or decision.verdict == Verdict.BLOCK or not text:
            return decision
        findings = _findings(rules, text)
        if findings is None:
            return _decision(hook, Verdict.BLOCK, Reason.POLICY_VIOLATION,
                             "a redact rule matched text hidden behind invisible or compatibility characters, "
                             "which cannot be masked exactly")
        if not findings:
            return decision
        counts: dict[str, int] = {}
        for finding in findings:
            counts[finding.kind] = counts.get(finding.kind, 0) + 1
        masked = ", ".join(f"'{name}' x{count}" for name, count in counts.items())
        details = f"{decision.details}; masked: {masked}" if decision.details else f"masked: {masked}"
        verdict = decision.verdict if decision.verdict != Verdict.ALLOW else Verdict.LOG
        return MaskingDecision(policy="Rules", callback=hook, verdict=verdict, reason=Reason.POLICY_VIOLATION,
                               details=details, findings=tuple(findings))

    # -- configuration ---------------------------------------------------------

    @classmethod
    def from_config(cls, config: dict, source_lines: list[str] | None = None) -> RulesPolicy | None:
        """Build from a parsed ``rules.toml``; ``source_lines`` lets errors name a line."""
        if not config.get("enabled", True):
            return None
        unknown = sorted(set(config) - _TOP_KEYS)
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_TOP_KEYS))})")
        case_sensitive = _bool(config, "case_sensitive", False, "case_sensitive")
        locator = _Locator(source_lines or [])
        rules = {hook: _hook_rules(hook, config.get(hook), case_sensitive, locator) for hook in HOOKS}
        masks = {hook: _mask_rules(hook, config.get(hook), case_sensitive, locator) for hook in HOOKS}
        max_chars = config.get("max_prompt_chars")
        if max_chars is not None and (not isinstance(max_chars, int) or isinstance(max_chars, bool) or max_chars < 1):
            raise ValueError("max_prompt_chars must be a whole number >= 1")
        return cls(
            rules,
            masks=masks,
            tools=_glob_list("tools", config.get("tools"), case_sensitive),
            models=_glob_list("models", config.get("models"), case_sensitive),
            mcp_servers=_glob_list("mcp_servers", config.get("mcp_servers"), case_sensitive),
            max_prompt_chars=max_chars,
        )


def reply_terms(rules: list[Rule]) -> tuple[LiteralTerms, ...] | None:
    """The reply rules as the terms a stream's screen looks for (``declarations.reply_screen``), when they
    are all terms without whitespace: ``on_model_response`` reads text and thoughts joined by a newline,
    which only a term with whitespace in it could match across. None when a regex or such a term is
    among them: the policy is then asked about the whole text at every check."""
    if any(rule.term is None or any(char.isspace() for char in rule.term.text) for rule in rules):
        return None
    return tuple(
        LiteralTerms(terms, keep_case=case_sensitive) for case_sensitive in (False, True)
        if (terms := [rule.term.text for rule in rules if rule.term is not None and rule.case_sensitive == case_sensitive])
    )


def stream_holdback(rules: list[Rule], *, pending_only: bool = False) -> Holdback | None:
    """Literal terms hold only a pending prefix. Regexes, with ``pending_only`` (streams): only from the
    earliest start of a match still pending (``pattern_holdback.Patterns``), whatever their width; a regex
    it cannot read, and every regex without ``pending_only`` (the seams between request pieces, which need
    a width), hold their widest match minus one, counted in characters a reader sees, or make the whole
    policy unbounded (the cap) when that is unbounded."""
    parts: list[Holdback] = []
    for case_sensitive in (False, True):
        terms = [rule.term.text for rule in rules if rule.term is not None and rule.case_sensitive == case_sensitive]
        if terms:
            parts.append(LiteralTerms(terms, keep_case=case_sensitive))
    tracked: list[PatternDFA] = []
    for rule in rules:
        if rule.pattern is None:
            continue
        if pending_only:
            try:
                tracked.append(PatternDFA(rule.pattern))
                continue
            except Untranslatable as error:
                log.warning("rule '%s': regex held back by its width, not by its pending matches (%s)", rule.name, error)
        width = regex_width(rule.pattern)
        if width is None:
            return None
        parts.append(Visible(width - 1))
    if tracked:
        parts.append(Patterns.of(tracked))
    return Combined(parts)


def _decision(hook: str, verdict: Verdict, reason: Reason, details: str) -> Decision:
    return Decision(policy="Rules", callback=hook, verdict=verdict, reason=reason, details=details)


def _as_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _bool(table: dict, key: str, default: bool, where: str) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{where} must be true or false")
    return value


class _Locator:
    """Finds the line a rule was written on (tomllib keeps no positions)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def line_of(self, hook: str, needles: list[str]) -> int | None:
        header = next((i for i, line in enumerate(self.lines) if line.strip().startswith(f"[{hook}]")), None)
        for number in range(header or 0, len(self.lines)):
            if any(needle and needle in self.lines[number] for needle in needles):
                return number + 1
        return header + 1 if header is not None else None


def _hook_rules(hook: str, table: Any, case_sensitive: bool, locator: _Locator) -> list[Rule]:
    if table is None:
        return []
    if not isinstance(table, dict):
        raise ValueError(f"[{hook}] must be a table with block / confirm / log lists")
    unknown = sorted(set(table) - set(ACTIONS) - {"redact"})
    if unknown:
        raise ValueError(f"[{hook}]: unknown key(s) {', '.join(unknown)} (known: block, confirm, log, redact)")
    rules: list[Rule] = []
    for action, verdict in ACTIONS.items():
        entries = table.get(action, [])
        if not isinstance(entries, list):
            raise ValueError(f"[{hook}] {action} must be a list of terms or {{ regex = ... }} tables")
        for index, entry in enumerate(entries):
            rules.append(_compile_rule(hook, action, index, entry, verdict, case_sensitive, locator))
    return rules


def _mask_rules(hook: str, table: Any, case_sensitive: bool, locator: _Locator) -> list[Rule]:
    """The hook's ``redact`` list, each a regex (a term compiled as its exact letters) and its group."""
    entries = table.get("redact", []) if isinstance(table, dict) else []
    if not entries:
        return []
    if hook not in _MASKING_HOOKS:
        raise ValueError(f"[{hook}] redact: unknown hook (on_model_call, on_tool_call, on_tool_response and "
                         "on_model_response take redact rules)")
    if not isinstance(entries, list):
        raise ValueError(f"[{hook}] redact must be a list of terms or {{ regex = ... }} tables")
    rules: list[Rule] = []
    for index, entry in enumerate(entries):
        group = entry.get("group") if isinstance(entry, dict) else None
        if isinstance(entry, dict):
            entry = {key: value for key, value in entry.items() if key != "group"}
        if isinstance(entry, str) or (isinstance(entry, dict) and "term" in entry and "regex" not in entry):
            term = entry if isinstance(entry, str) else entry.get("term")
            if not isinstance(term, str) or not term.strip():
                raise ValueError(f"rule {hook}.redact[{index}]: empty term")
            entry = {**({} if isinstance(entry, str) else entry), "regex": re.escape(term), "name": (
                entry.get("name") if isinstance(entry, dict) and entry.get("name") else term)}
            entry.pop("term", None)
        rule = _compile_rule(hook, "redact", index, entry, Verdict.LOG, case_sensitive, locator)
        assert rule.pattern is not None
        if group is not None:
            if not isinstance(group, str) or group not in rule.pattern.groupindex:
                raise ValueError(f"rule '{rule.name}' ({hook}.redact[{index}]): group = {group!r} names no "
                                 "(?P<name>...) group of its regex")
            rule = Rule(name=rule.name, verdict=Verdict.LOG, case_sensitive=rule.case_sensitive, pattern=rule.pattern,
                        group=group)
        rules.append(rule)
    return rules


def _findings(rules: list[Rule], text: str) -> list[Finding] | None:
    """Each redact rule's matches in ``text``: as written, and as read (``visible``: invisible characters
    removed, NFKC), a match on the text as read widened to the whole characters it was read from (trailing
    combining marks and invisible characters included), so the value masked is the value as written. None
    when the text as read has a match that cannot be placed in the text as written."""
    findings: list[Finding] = []
    placed: set[tuple[int, int]] = set()
    read = None if text.isascii() else visible(text)
    places = visible_with_places(text) if read is not None and read != text else None
    unplaceable = read is not None and read != text and places is None
    if unplaceable and any(_count(rule, read or "") > _count(rule, text) for rule in rules):
        return None
    for rule in rules:
        assert rule.pattern is not None
        for match in rule.pattern.finditer(text):
            start, end = match.span(rule.group)
            if start < end:
                placed.add((start, end))
                findings.append(Finding(start, end, text[start:end], rule.name))
        if places is None:
            continue
        read_text, starts, ends = places
        for match in rule.pattern.finditer(read_text):
            low, high = match.span(rule.group)
            if low >= high:
                continue
            start, end = starts[low], ends[high - 1]
            if (start, end) not in placed:
                placed.add((start, end))
                findings.append(Finding(start, end, text[start:end], rule.name))
    return findings


def _count(rule: Rule, text: str) -> int:
    assert rule.pattern is not None
    return sum(1 for _ in rule.pattern.finditer(text))


def _compile_rule(
    hook: str, action: str, index: int, entry: Any, verdict: Verdict, case_sensitive: bool, locator: _Locator
) -> Rule:
    position = f"{hook}.{action}[{index}]"
    if isinstance(entry, str):
        entry = {"term": entry}
    if not isinstance(entry, dict):
        raise ValueError(f"rule {position}: must be a string or a table with term or regex")
    unknown = sorted(set(entry) - _RULE_KEYS)
    if unknown:
        raise ValueError(f"rule {position}: unknown key(s) {', '.join(unknown)}")
    term, regex = entry.get("term"), entry.get("regex")
    source = term if regex is None else regex
    if (term is None) == (regex is None) or not isinstance(source, str):
        raise ValueError(f"rule {position}: needs exactly one of term = \"...\" or regex = '...'")
    if not source:
        raise ValueError(f"rule {position}: empty {'term' if regex is None else 'regex'}")
    name = str(entry.get("name") or (term if regex is None else position))
    sensitive = _bool(entry, "case_sensitive", case_sensitive, f"rule '{name}' case_sensitive")
    if regex is None:
        term = Term(source, keep_case=sensitive)
        if not term.text.strip():
            raise ValueError(f"rule '{name}' ({position}): the term has no visible characters")
        return Rule(name=name, verdict=verdict, term=term, case_sensitive=sensitive)
    try:
        pattern = re.compile(source, 0 if sensitive else re.IGNORECASE)
    except re.error as error:
        needles = [f'"{entry["name"]}"' if entry.get("name") else "", f"'{source}'", json.dumps(source)]
        line = locator.line_of(hook, needles)
        at = f"line {line}: " if line else ""
        raise ValueError(f"{at}rule '{name}' ({position}): invalid regular expression: {error}") from None
    return Rule(name=name, verdict=verdict, case_sensitive=sensitive, pattern=pattern)


def _glob_list(section: str, table: Any, case_sensitive: bool) -> GlobList:
    if table is None:
        return GlobList(case_sensitive=case_sensitive)
    if not isinstance(table, dict) or set(table) - {"allow", "deny"}:
        raise ValueError(f"[{section}] takes only allow = [...] and deny = [...] lists of globs")
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("allow", "deny"):
        globs = table.get(key, [])
        if not isinstance(globs, list) or not all(isinstance(glob, str) and glob for glob in globs):
            raise ValueError(f"[{section}] {key} must be a list of glob strings")
        lists[key] = tuple(globs)
    return GlobList(allow=lists["allow"], deny=lists["deny"], case_sensitive=case_sensitive)
