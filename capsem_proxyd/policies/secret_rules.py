"""The credential formats the Secrets policy knows: detect-secrets' rules, run by RE2 behind a keyword sieve.

Why these rules: they are Yelp's ``detect-secrets`` (a maintained, widely used
scanner; pinned below its next minor release): its plugin classes' ``denylist``
regexes, as ``secret_denylists`` copies them (importing detect-secrets costs the
proxy's process ~5 MiB of ``requests`` it never uses) and a test checks them
against the installed release, not patterns written here. Its scanner is
not used: it reads files line by line with Python's backtracking ``re``, and a
proxy reads text an agent (or whoever injected it) chose. Here every rule runs
on RE2 (``google-re2``): linear in the text, whatever the text.

How a text is read (``SecretRules.find``):

1. **A keyword sieve**: each rule's *keywords* (literal strings one of which every
   match contains, found in the rule's own regex by ``required_literals``: ``akia``,
   ``ghp_``, ``xoxb-``, ``private key``...) go into one Aho-Corasick automaton
   (``ahocorasick-rs``, the Rust ``aho-corasick`` crate), run once over the
   lower-cased text. A rule none of whose keywords is there is not run at all;
   most text has none, and costs one pass of the automaton.
2. **RE2** runs each rule the sieve let through, over the whole text.
3. **Each match is checked** as detect-secrets checks it (a JWT must decode, its
   ``is_formally_valid``), then against the allow-list: the documented example
   keys (``AKIAIOSFODNN7EXAMPLE``, the AWS documentation's secret access key, the
   jwt.io token...), detect-secrets' own "sequential string" filter, and whatever
   the operator or the caller adds (``allowed``: the masking core's placeholder
   grammar).

What RE2 cannot run is made *larger*, never smaller: a lookaround is dropped
(a match it would have refused is found), except detect-secrets' trailing
``(?!\\w)`` (GitLab tokens), checked after the match instead; ``\\d`` and ``\\w``
are ASCII (a credential is). A rule RE2 still refuses (detect-secrets' verbose
public-IP rule, no credential) is left out and listed in ``skipped``.

Which rules run by default (``DEFAULTS``): only formats that say what they are,
a provider prefix (``AKIA``, ``ghp_``, ``glpat-``, ``xox?-``, ``sk_live_``,
``SG.``, ``sq0csp-``, ``pypi-``...), a private key header, a URL with a password,
a JWT, an AWS secret access key after its label. The rest (keyword rules such as
``cloudant_password = ...``, formats with no prefix such as Telegram or Discord
bot tokens, Twilio SIDs) flag lockfile hashes, git SHAs and test vectors: a
``secrets.toml`` opts into them by name. A rule detect-secrets adds in a later
release is opt-in until it is named here.

A private key is reported from its ``-----BEGIN`` line to the end of its ``END``
line, or to the end of the text (truncated tool output), whatever detect-secrets'
rule matched (its header); a text that starts with a block's base64 lines and
its ``END`` line (the block began in the piece before) is reported from its
start to the end of that line.

Spans are Python ``str`` indices into the text given, ``[start, end)``, and
``matched_text == text[start:end]``: what the masking core checks before it
rewrites anything.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import ahocorasick_rs
import re2

from capsem_proxyd._compat import sre
from capsem_proxyd.policies.secret_denylists import (
    AWS_SECRET_KEYWORD,
    DENYLISTS,
    is_sequential_string,
    jwt_formally_valid,
)

log = logging.getLogger("capsem_proxyd.policies.secrets")



class Finding(NamedTuple):
    """One credential found: ``text[start:end] == matched_text``; ``kind`` is detect-secrets' secret type
    (``AWS Access Key``), ``rule`` this module's name for the rule (``aws-access-key-id``)."""

    start: int
    end: int
    matched_text: str
    kind: str
    rule: str


# (detect-secrets plugin class, index in its denylist) -> (rule name, on by default). A rule not listed here
# is named after its plugin and index, and is opt-in.
NAMES: dict[tuple[str, int], tuple[str, bool]] = {
    ("AWSKeyDetector", 0): ("aws-access-key-id", True),
    ("AWSKeyDetector", 1): ("aws-secret-access-key-quoted", True),
    ("GitHubTokenDetector", 0): ("github-token", True),
    ("GitLabTokenDetector", 0): ("gitlab-token", True),
    ("GitLabTokenDetector", 1): ("gitlab-runner-registration-token", True),
    ("GitLabTokenDetector", 2): ("gitlab-ci-build-token", True),
    ("GitLabTokenDetector", 3): ("gitlab-incoming-mail-token", True),
    ("GitLabTokenDetector", 4): ("gitlab-trigger-token", True),
    ("GitLabTokenDetector", 5): ("gitlab-agent-token", True),
    ("GitLabTokenDetector", 6): ("gitlab-oauth-secret", True),
    ("SlackDetector", 0): ("slack-token", True),
    ("SlackDetector", 1): ("slack-webhook-url", True),
    ("OpenAIDetector", 0): ("openai-api-key", True),
    ("StripeDetector", 0): ("stripe-live-key", True),
    ("SendGridDetector", 0): ("sendgrid-api-key", True),
    ("SquareOAuthDetector", 0): ("square-oauth-secret", True),
    ("PypiTokenDetector", 0): ("pypi-token", True),
    ("PypiTokenDetector", 1): ("pypi-test-token", True),
    ("NpmDetector", 0): ("npm-token", True),
    ("AzureStorageKeyDetector", 0): ("azure-storage-account-key", True),
    ("JwtTokenDetector", 0): ("jwt", True),
    ("BasicAuthDetector", 0): ("url-password", True),
    # Opt-in: only its suffix (`-usN`) says what it is, so in a stream every run of lower-case letters and digits
    # could be its beginning and would be held until it ends (the default set's per-character p95 went from
    # 5-16 ms to 56-133 ms in the bench's paced streams).
    ("MailchimpDetector", 0): ("mailchimp-api-key", False),
    ("ArtifactoryDetector", 0): ("artifactory-api-token", False),
    ("ArtifactoryDetector", 1): ("artifactory-password", False),
    ("TwilioKeyDetector", 0): ("twilio-account-sid", False),
    ("TwilioKeyDetector", 1): ("twilio-api-key-sid", False),
    ("DiscordBotTokenDetector", 0): ("discord-bot-token", False),
    ("TelegramBotTokenDetector", 0): ("telegram-bot-token", False),
}
# Rules whose first group is the credential, reported alone (a URL's password, not its user or host; an .npmrc
# line's token, not its registry).
_SIEVE_WINDOW = 64 * 1024  # characters the keyword sieve lowers and encodes at a time
_VALUE_GROUP = frozenset({"BasicAuthDetector", "NpmDetector"})
_PRIVATE_KEY_CLASS = "PrivateKeyDetector"  # every entry of its denylist is one rule: private-key

# The AWS secret access key after its label, as ``.env`` files, ``env`` output and ``~/.aws/credentials`` write
# it (no quotes). detect-secrets' own rule (``aws-secret-access-key-quoted``) wants the value in quotes; this is
# that rule with the quotes optional, its label words (``AWSKeyDetector.secret_keyword``) as detect-secrets
# has them, and the 40 characters ending where the key's alphabet ends.
_AWS_LABELLED = "aws-secret-access-key"

# Documented example values: never a finding (their own documentation prints them, and so do tutorials).
EXAMPLE_VALUES = frozenset({
    "AKIAIOSFODNN7EXAMPLE",  # AWS documentation: access key id
    "AKIAI44QH8DHBEXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",  # AWS documentation: secret access key
    "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
    # jwt.io's example token (HS256, "John Doe"), as detect-secrets' rule matches it and whole.
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
})
_MIN_KEYWORD = 3  # a shorter literal (``:``, ``.``) sieves nothing: the rule then always runs
_PEM_END = re.compile(r"-----END[ A-Z0-9]*-----")
_PEM_LINE = re.compile(r"[A-Za-z0-9+/=]*")  # a block's base64 line
PEM_HOLD = 16384  # a private key block still open is held this far in a stream (issue 23, item 6)


@dataclass(slots=True)
class SecretRule:
    """One rule: detect-secrets' regex (``source``, Python syntax, for the stream hold-back's DFA) and the same
    regex as RE2 runs it (``engine``)."""

    name: str
    kind: str
    plugin: str
    source: re.Pattern[str]
    engine: Any  # re2._Regexp
    keywords: tuple[str, ...]
    default: bool
    group: int = 0  # the group that is the credential (a URL's password), 0 for the whole match
    not_before_word: bool = False  # detect-secrets' trailing ``(?!\w)``, checked after the match
    check: Callable[[str], bool] | None = None
    private_key: bool = False

    def matches(self, text: str) -> Iterable[tuple[int, int]]:
        for match in self.engine.finditer(text):
            start, end = match.span(self.group)
            if start < 0 or start == end:
                continue
            if self.not_before_word and match.end() < len(text) and _is_word(text[match.end()]):
                continue
            if self.private_key:
                start, end = _pem_block(text, match.start(), match.end())
            elif self.check is not None and not self.check(text[start:end]):
                continue
            yield start, end


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _pem_block(text: str, header_start: int, header_end: int) -> tuple[int, int]:
    """From the dashes before ``BEGIN`` to the end of the ``END`` line, or to the end of the text."""
    start = header_start
    line_start = text.rfind("\n", 0, header_start) + 1
    dashes = text.rfind("-----", line_start, header_start)
    if dashes >= 0:
        start = dashes
    end = _PEM_END.search(text, header_end)
    return start, (end.end() if end is not None else len(text))


def _pem_tail(text: str) -> tuple[int, int] | None:
    """The end of a private key block whose ``BEGIN`` line is in the piece before (a tool result cut in
    parts, a prompt's pieces): from the text's first line to its ``END ... PRIVATE KEY`` line, when the
    lines before that are only the block's base64 (``(start, end)``, or None)."""
    end = _PEM_END.search(text)
    if end is None or "PRIVATE KEY" not in end[0]:
        return None
    body = text[:end.start()]
    if not body.strip() or not all(_PEM_LINE.fullmatch(line.strip()) for line in body.split("\n")):
        return None
    start = len(body) - len(body.lstrip())
    return start, end.end()


def _strip_lookarounds(pattern: str) -> tuple[str, bool]:
    """``pattern`` without its lookaround groups (a superset of its matches), and whether it ended with
    ``(?!\\w)`` (which the caller checks after the match)."""
    trailing = pattern.endswith(r"(?!\w)")
    if trailing:
        pattern = pattern[: -len(r"(?!\w)")]
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            out.append(pattern[index:index + 2])
            index += 2
            continue
        if char == "[":
            end = _class_end(pattern, index)
            out.append(pattern[index:end])
            index = end
            continue
        if pattern.startswith(("(?=", "(?!", "(?<=", "(?<!"), index):
            index = _group_end(pattern, index)
            continue
        out.append(char)
        index += 1
    return "".join(out), trailing


def _class_end(pattern: str, index: int) -> int:
    """The index after the character class that starts at ``index``."""
    at = index + 1
    if at < len(pattern) and pattern[at] == "^":
        at += 1
    if at < len(pattern) and pattern[at] == "]":
        at += 1
    while at < len(pattern) and pattern[at] != "]":
        at += 2 if pattern[at] == "\\" else 1
    return at + 1


def _group_end(pattern: str, index: int) -> int:
    """The index after the group that opens at ``index``."""
    depth = 0
    at = index
    while at < len(pattern):
        char = pattern[at]
        if char == "\\":
            at += 2
            continue
        if char == "[":
            at = _class_end(pattern, at)
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return at + 1
        at += 1
    return at


def _re2_ready(pattern: re.Pattern[str]) -> str | None:
    """``pattern`` as RE2 reads it, or None when it has what RE2 has not (a backreference, verbose mode)."""
    if pattern.flags & re.VERBOSE and re.search(r"[\s#]", pattern.pattern):
        return None  # verbose mode that changes something (RE2 has none)
    parsed = sre.parse(pattern.pattern, pattern.flags)
    if _has(parsed, {"GROUPREF", "GROUPREF_EXISTS", "ATOMIC_GROUP", "POSSESSIVE_REPEAT"}):
        return None
    return pattern.pattern


def _has(items: Any, names: set[str]) -> bool:
    for op, arg in items:
        if str(op) in names:
            return True
        for part in arg if isinstance(arg, (tuple, list)) else (arg,):
            if isinstance(part, sre.SubPattern) and _has(part, names):
                return True
            if (isinstance(part, list) and part and isinstance(part[0], sre.SubPattern)
                    and any(_has(branch, names) for branch in part)):
                return True
    return False


def required_literals(pattern: re.Pattern[str]) -> tuple[str, ...]:
    """Lower-cased literal strings one of which every match of ``pattern`` contains (empty: none found).

    Read from the stdlib's parse of the pattern (``re._parser``, which ``re.compile`` runs): the runs of
    literal characters of its top-level sequence, a small alternation (``(?:ghp|gho)``, ``[ab]``) multiplying
    a run; of all runs, the one whose shortest member is longest. Never wrong, only sometimes weaker: a
    superset sieve lets more text through to RE2.
    """
    parsed = sre.parse(pattern.pattern, pattern.flags)
    return tuple(sorted({word.lower() for word in _best(list(parsed))}))


def _runs(items: Sequence[Any]) -> Iterable[set[str]]:
    current: set[str] = {""}
    for op, arg in items:
        exact = _exact(op, arg)
        if exact is not None and len(current) * len(exact) <= 64:
            current = {head + tail for head in current for tail in exact}
            continue
        name = str(op)
        if name == "BRANCH":  # each match goes through one branch: the run so far, then a branch's beginning
            leads = set().union(*(_leading(list(branch)) for branch in arg[1]))
            if "" not in leads and len(current) * len(leads) <= 64:
                yield {head + tail for head in current for tail in leads}
        if current != {""}:
            yield current
        current = {""}
        if name == "BRANCH":  # or the union of each branch's best run
            per_branch = [_best(list(branch)) for branch in arg[1]]
            if all(per_branch):
                yield set().union(*per_branch)
        elif name == "SUBPATTERN":
            yield from _runs(list(arg[3]))
        elif name in ("MAX_REPEAT", "MIN_REPEAT") and arg[0] >= 1:
            yield from _runs(list(arg[2]))
    if current != {""}:
        yield current


def _best(items: Sequence[Any]) -> set[str]:
    """The run of ``items`` whose shortest member is longest (empty: none)."""
    best: set[str] = set()
    for run in _runs(items):
        if run and min(map(len, run)) > (min(map(len, best)) if best else 0):
            best = run
    return best


def _exact(op: Any, arg: Any) -> set[str] | None:
    """Every string the item matches, when they are few (None otherwise)."""
    name = str(op)
    if name == "LITERAL":
        return {chr(arg)}
    if name == "IN":
        chars: set[str] = set()
        for kind, value in arg:
            if str(kind) == "LITERAL":
                chars.add(chr(value))
            elif str(kind) == "RANGE" and value[1] - value[0] < 4:
                chars.update(map(chr, range(value[0], value[1] + 1)))
            else:
                return None
        return chars or None
    if name == "SUBPATTERN":
        return _exact_sequence(list(arg[3]))
    if name == "BRANCH":
        union: set[str] = set()
        for branch in arg[1]:
            strings = _exact_sequence(list(branch))
            if strings is None:
                return None
            union |= strings
        return union if len(union) <= 64 else None
    return None


def _leading(items: Sequence[Any]) -> set[str]:
    """The strings a match of ``items`` starts with: its exact items up to the first that is not."""
    strings = {""}
    for op, arg in items:
        exact = _exact(op, arg)
        if exact is None or len(strings) * len(exact) > 64:
            break
        strings = {head + tail for head in strings for tail in exact}
    return strings


def _exact_sequence(items: Sequence[Any]) -> set[str] | None:
    strings = {""}
    for op, arg in items:
        exact = _exact(op, arg)
        if exact is None or len(strings) * len(exact) > 64:
            return None
        strings = {head + tail for head in strings for tail in exact}
    return strings


def _aws_labelled() -> re.Pattern[str]:
    label = AWS_SECRET_KEYWORD
    return re.compile(rf"aws.{{0,20}}?{label}.{{0,20}}?['\"]?([0-9a-zA-Z/+]{{40}})(?:[^0-9a-zA-Z/+=]|$)", re.IGNORECASE)


def _compile(name: str, kind: str, plugin: str, pattern: re.Pattern[str], default: bool) -> SecretRule | None:
    ready = _re2_ready(pattern)
    if ready is None:
        return None
    stripped, trailing = _strip_lookarounds(ready)
    # RE2 counts to 1000: a larger bound becomes none (a superset).
    stripped = re.sub(r"\{(\d+),(\d{4,})\}", lambda m: m[0] if int(m[2]) <= 1000 else f"{{{m[1]},}}", stripped)
    flags = "(?i)" if pattern.flags & re.IGNORECASE else ""
    try:
        engine = re2.compile(flags + stripped)
    except re2.error:
        return None
    private_key = plugin == _PRIVATE_KEY_CLASS
    keywords = required_literals(pattern)
    group = 1 if engine.groups and (plugin in _VALUE_GROUP or name.startswith("aws-secret")) else 0
    return SecretRule(
        name=name, kind=kind, plugin=plugin, source=pattern, engine=engine,
        keywords=keywords if keywords and min(map(len, keywords)) >= _MIN_KEYWORD else (),
        default=default, group=group, not_before_word=trailing,
        check=jwt_formally_valid if plugin == "JwtTokenDetector" else None, private_key=private_key,
    )


@dataclass(slots=True)
class Catalogue:
    """Every rule this release of detect-secrets gives, by name, and those RE2 could not run."""

    rules: dict[str, SecretRule] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def catalogue() -> Catalogue:
    """Read detect-secrets' plugins' denylists (``secret_denylists``: each rule once, in the plugins' order)."""
    found = Catalogue()
    for kind, cls, index, flags, source in DENYLISTS:
        if cls == _PRIVATE_KEY_CLASS:
            name, default = f"private-key-{index}", True
        else:
            name, default = NAMES.get((cls, index), (f"{_slug(cls)}-{index}", False))
        if cls == "JwtTokenDetector" and source.endswith("*?"):
            source = source[:-1]  # a lazy tail matches nothing at the end of a regex: the signature would stay unmasked
        rule = _compile(name, kind, cls, re.compile(source, flags), default)
        if rule is None:
            found.skipped.append(name)
            continue
        found.rules[name] = rule
        if (cls, index) == ("AWSKeyDetector", 1):
            labelled = _compile(_AWS_LABELLED, kind, cls, _aws_labelled(), True)
            assert labelled is not None
            found.rules[_AWS_LABELLED] = labelled
    return found


def _slug(class_name: str) -> str:
    base = class_name.removesuffix("Detector")
    return re.sub(r"(?<!^)(?=[A-Z])", "-", base).lower()


def rule_group(name: str) -> str:
    """The name an operator writes for a rule family: ``private-key`` for every ``private-key-N``."""
    return "private-key" if name.startswith("private-key-") else name


class SecretRules:
    """The rules a Secrets policy runs, compiled once: ``find(text)`` answers every credential in ``text``.

    ``allowed``: values never reported (the operator's allow-list), besides ``EXAMPLE_VALUES``;
    ``allow``: a predicate on a matched value (the masking core's placeholder grammar). ``sieve = False`` runs
    every rule on every text (what the tests compare the sieve with).
    """

    def __init__(
        self,
        rules: Iterable[SecretRule],
        *,
        allowed: Iterable[str] = (),
        allow: Callable[[str], bool] | None = None,
        sieve: bool = True,
    ) -> None:
        self.rules = tuple(rules)
        self.allowed = EXAMPLE_VALUES | frozenset(allowed)
        self.allow = allow
        self._private_key = next((rule for rule in self.rules if rule.private_key), None)
        self._always = tuple(rule for rule in self.rules if not rule.keywords or not sieve)
        words = sorted({word for rule in self.rules for word in rule.keywords}) if sieve else []
        self._by_word: list[tuple[SecretRule, ...]] = [
            tuple(rule for rule in self.rules if word in rule.keywords) for word in words
        ]
        # On UTF-8 bytes: the automaton then reports byte offsets, which the sieve does not need, instead of
        # converting each to a character index (measured: several times faster on keyword-dense text).
        self._sieve = ahocorasick_rs.BytesAhoCorasick([word.encode() for word in words]) if words else None
        self._longest_word = max((len(word) for word in words), default=0)

    def keywords(self) -> tuple[str, ...] | None:
        """Every keyword of the sieve (lower-case); None when a rule runs whatever the text (it has none)."""
        if self._always:
            return None
        return tuple(sorted({word for rule in self.rules for word in rule.keywords}))

    def candidates(self, text: str) -> list[SecretRule]:
        """The rules whose keywords are in ``text`` (any case), and those without keywords."""
        chosen: dict[int, SecretRule] = {id(rule): rule for rule in self._always}
        if self._sieve is not None:
            # In windows that overlap by a keyword's length: a 20 MB reply is lowered and encoded 64 kB at a
            # time, not copied whole twice over (the per-reply memory bound: twice the reply's size).
            found: set[int] = set()
            step, overlap = _SIEVE_WINDOW, self._longest_word
            for start in range(0, len(text), step):
                lowered = text[start:start + step + overlap].lower().encode("utf-8", "surrogatepass")
                found.update(match[0] for match in self._sieve.find_matches_as_indexes(lowered, overlapping=True))
            for word in found:
                for rule in self._by_word[word]:
                    chosen[id(rule)] = rule
        return [rule for rule in self.rules if id(rule) in chosen]

    def find(self, text: str) -> list[Finding]:
        """Every credential in ``text``, by start; one inside another already found is left out, two that only
        overlap are both reported (the masking core masks the union of the spans)."""
        if not text:
            return []
        found: list[Finding] = []
        for rule in self.candidates(text):
            for start, end in rule.matches(text):
                value = text[start:end]
                if self._allowed(value):
                    continue
                found.append(Finding(start, end, value, rule.kind, rule_group(rule.name)))
        if self._private_key is not None:
            tail = _pem_tail(text)
            if tail is not None and not self._allowed(text[tail[0]:tail[1]]):
                found.append(Finding(tail[0], tail[1], text[tail[0]:tail[1]], self._private_key.kind, "private-key"))
        found.sort(key=lambda finding: (finding.start, -finding.end))
        kept: list[Finding] = []
        reach = 0
        for finding in found:
            if finding.end <= reach:
                continue  # inside one already kept (a key id inside a private key block, two AWS label rules)
            kept.append(finding)
            reach = finding.end
        return kept

    def _allowed(self, value: str) -> bool:
        if value in self.allowed or is_sequential_string(value):
            return True
        return self.allow is not None and self.allow(value)

    def holdback_patterns(self) -> list[re.Pattern[str]]:
        """Each rule's regex as the stream hold-back's DFA reads it (``pattern_holdback.PatternDFA``): a private
        key is pending from its header to its ``END`` line, at most ``PEM_HOLD`` characters."""
        patterns: list[re.Pattern[str]] = []
        for rule in self.rules:
            if rule.private_key:
                body = rf"(?:-----)?[^-]{{0,{PEM_HOLD}}}-----END"  # the header's dashes, a body without any, its END
                patterns.append(re.compile(f"(?:{rule.source.pattern}){body}", rule.source.flags))
            else:
                patterns.append(rule.source)
        return patterns
