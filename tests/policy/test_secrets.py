"""The Secrets policy (secrets.toml): detect-secrets' rules on RE2 behind a keyword sieve (issue 23, item 8).

Every default rule finds a generated example of its format (from the rule's own
regex, or a format-aware strategy where the rule checks more than its regex);
the documented example keys are not findings; the sieve never loses a finding;
on a corpus nobody here wrote (CPython's standard library as installed, its
tests apart) the default rules find at most one credential per MB; and through
the real daemon and the OpenAI SDK a request carrying an AWS key pair, a GitHub
token and a private key is refused before the provider sees anything.
"""

from __future__ import annotations

import base64
import json
import re
import sysconfig
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from capsem.models import Verdict
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from capsem_proxyd.config import Settings
from capsem_proxyd.enforcement.loader import PolicyConfigError, load_policy_set
from capsem_proxyd.policies.secret_rules import SecretRules, catalogue, rule_group
from capsem_proxyd.policies.secrets import SecretsPolicy
from tests.e2e.test_incremental_streams import reaches_the_sdk_before_the_upstream_ends
from tests.support.daemon import Daemon, upstream_args
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import OPENAI_KEY, in_thread
from tests.support.sdk import policy_proxy

CATALOGUE = catalogue()
DEFAULT = SecretsPolicy(rules=CATALOGUE)
ASCII_TEXT = st.characters(min_codepoint=0x20, max_codepoint=0x7E)

# Fake, well-formed credentials (no provider ever issued them).
AWS_KEY_ID = "AKIAQ3EGRVX5KZTW7Y2M"
AWS_SECRET = "Zk3vQ9tR2xLw8NpB5mYc7HdF1sGj4KaE6uVo0iXq"
GITHUB_TOKEN = "ghp_R8vK2mQ9xT4wL7nB3pY6cZ1hF5jD0sGa2eUq"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----"
)
VALUES = (AWS_KEY_ID, AWS_SECRET, GITHUB_TOKEN, PEM)


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def jwts() -> st.SearchStrategy[str]:
    """A JWT: two base64url JSON objects and a signature (the rule decodes the first two, as detect-secrets does)."""
    claims = st.dictionaries(st.text(st.sampled_from("abcdefgh"), min_size=1, max_size=6),
                             st.integers(0, 10**9) | st.text(ASCII_TEXT, max_size=12), max_size=4)
    return st.builds(
        lambda alg, body, signature: f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64(body)}.{_b64(signature)}",
        st.sampled_from(["HS256", "RS256", "ES256"]), claims, st.binary(min_size=16, max_size=64),
    )


def private_keys(header: str) -> st.SearchStrategy[tuple[str, str]]:
    """(the block, its END line or '' when the text is cut before it)."""
    body = st.lists(st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"),
                            min_size=1, max_size=64), min_size=1, max_size=5).map("\n".join)
    kind = header.removeprefix("BEGIN ")
    return st.tuples(body, st.booleans()).map(
        lambda parts: (f"-----{header}-----\n{parts[0]}\n" + (f"-----END {kind}-----" if parts[1] else ""),
                       f"-----END {kind}-----" if parts[1] else "")
    )


def example_of(name: str) -> st.SearchStrategy[str]:
    """A value in the format of rule ``name``: from its own regex (ASCII, as credentials are), or format-aware."""
    rule = CATALOGUE.rules[name]
    if rule.plugin == "JwtTokenDetector":
        return jwts()
    if rule.private_key:
        return private_keys(rule.source.pattern).map(lambda block: block[0]) if "BEGIN" in rule.source.pattern else (
            st.just("PuTTY-User-Key-File-2: ssh-rsa\nEncryption: none\n"))
    return st.from_regex(rule.source, fullmatch=True, alphabet=ASCII_TEXT)


DEFAULT_RULES = sorted(name for name, rule in CATALOGUE.rules.items() if rule.default)
EVERY_RULE = SecretsPolicy(rules=CATALOGUE, enable=sorted({rule_group(name) for name in CATALOGUE.rules}))


@pytest.mark.parametrize("name", sorted(CATALOGUE.rules))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_a_generated_example_of_every_rule_is_found_when_it_is_enabled(name: str, data: st.DataObject) -> None:
    """Default rules by the default policy; opt-in rules by one that enables every rule."""
    value = data.draw(example_of(name), label="value")
    rule = CATALOGUE.rules[name]
    policy = DEFAULT if rule.default else EVERY_RULE
    match = rule.source.search(value)
    reported = match.group(rule.group) if match is not None and not rule.private_key else value
    assume(not policy.rules._allowed(reported))  # a documented example, or sequential (detect-secrets' filter)
    before = data.draw(st.sampled_from(["", "key: ", "export X=", "see\n"]), label="before")
    text = f"{before}{value} \nmore text"
    start, end = len(before), len(before) + len(value)
    findings = policy.find(text)
    for finding in findings:
        assert text[finding.start:finding.end] == finding.matched_text
    # found where the value is (a rule that reports a group, a URL's password, reports part of it)
    assert any(finding.start < end and start < finding.end for finding in findings), (name, value, findings)
    if CATALOGUE.rules[name].group == 0 and not CATALOGUE.rules[name].private_key:
        assert any(finding.start <= start and end <= finding.end for finding in findings), (name, value, findings)


@given(st.sampled_from([f"BEGIN {kind} PRIVATE KEY" for kind in ("RSA", "EC", "DSA", "OPENSSH")] + ["BEGIN PRIVATE KEY"])
       .flatmap(private_keys), st.text(ASCII_TEXT, max_size=20))
@settings(max_examples=50, deadline=None)
def test_a_private_key_is_one_finding_from_its_dashes_to_its_end_line_or_the_end_of_the_text(
    block: tuple[str, str], after: str
) -> None:
    text, end_line = block
    text = f"cat id_rsa\n{text}" + (f"\n{after}" if end_line else after)
    findings = [finding for finding in DEFAULT.find(text) if finding.rule == "private-key"]
    assert len(findings) == 1
    (finding,) = findings
    assert text[finding.start:].startswith("-----BEGIN")
    if end_line:
        assert finding.matched_text.endswith(end_line)
    else:
        assert finding.end == len(text)


def test_the_aws_secret_access_key_is_found_after_its_label_with_or_without_quotes() -> None:
    for line in (f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", f"aws_secret_access_key = {AWS_SECRET}",
                 f'"aws_secret_access_key": "{AWS_SECRET}"', f"export AWS_SECRET_ACCESS_KEY='{AWS_SECRET}'\n"):
        assert [finding.matched_text for finding in DEFAULT.find(line)] == [AWS_SECRET], line
    assert DEFAULT.find(AWS_SECRET) == []  # bare, it is 40 characters like any other (item 3 remembers it)


@pytest.mark.parametrize("text", [
    "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0"
    "IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "the commit is 3f786850e387550fdab836ed7e6dc881de23001b and lockfile sha512-abcdef0123456789abcdef",
    "postgres://app:12345678@db/x",  # a sequential password: detect-secrets' own filter
])
def test_documented_examples_and_what_is_no_credential_are_not_found(text: str) -> None:
    assert DEFAULT.find(text) == []


def test_the_operators_allow_list_and_log_rules() -> None:
    policy = SecretsPolicy.from_config({"allow": [GITHUB_TOKEN], "log": ["url-password"], "enable": ["telegram-bot-token"]})
    assert policy is not None
    assert policy.find(f"t={GITHUB_TOKEN}") == []
    (finding,) = policy.find("postgres://app:hunter2secret@db:5432/x")
    assert finding.matched_text == "hunter2secret" and policy.enforced([finding]) == []
    assert [f.rule for f in policy.find("bot 123456789:AAH3kLmN0pQrStUvWxYz0123456789abcdEf")] == ["telegram-bot-token"]
    assert DEFAULT.find("bot 123456789:AAH3kLmN0pQrStUvWxYz0123456789abcdEf") == []  # opt-in


@given(st.lists(st.sampled_from(["AKIA", "ghp_", "xoxb-", "eyJ", "sk_live_", "-----BEGIN ", "PRIVATE KEY", "://",
                                 "aws_secret", "=", " ", "\n", "glpat-", "SG.", "T3BlbkFJ", "-us1", "@", ":"])
                | st.text(ASCII_TEXT, max_size=12), max_size=40).map("".join),
       st.lists(st.sampled_from(VALUES), max_size=3))
@settings(max_examples=200, deadline=None)
def test_the_keyword_sieve_never_loses_a_finding(noise: str, values: list[str]) -> None:
    text = noise + " ".join(["", *values, noise])
    unsieved = SecretRules(DEFAULT.rules.rules, sieve=False)
    assert DEFAULT.find(text) == unsieved.find(text)


def test_the_sieve_runs_no_regex_on_text_without_keywords() -> None:
    assert DEFAULT.rules.candidates("an ordinary paragraph about keys, tokens and passwords = 42") == []


def stdlib_texts() -> list[tuple[str, str]]:
    """Every text file of the standard library as installed, ``Lib/test`` and ``site-packages`` apart."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts: list[tuple[str, str]] = []
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if not path.is_file() or parts[0] in ("test", "site-packages") or path.suffix in (".pyc", ".so", ".whl"):
            continue
        try:
            texts.append((str(path.relative_to(root)), path.read_bytes().decode("utf-8")))
        except UnicodeDecodeError:
            continue
    return texts


def test_at_most_one_finding_per_megabyte_of_the_standard_library() -> None:
    texts = stdlib_texts()
    megabytes = sum(len(text.encode()) for _, text in texts) / 1e6
    assert megabytes > 5, "the standard library is where sysconfig says"
    per_rule: Counter[str] = Counter()
    for _name, text in texts:
        per_rule.update(finding.rule for finding in DEFAULT.find(text))
    assert sum(per_rule.values()) <= megabytes, (megabytes, per_rule)


def test_secrets_runs_by_default_unless_its_own_file_turns_it_off(tmp_path: Path) -> None:
    """Issue 23, item 9: no folder, Debug and Secrets; a folder, Secrets too unless its secrets.toml says
    ``enabled = false``; a shadow folder gets nothing it did not name; ``--no-policies`` still means none."""
    from capsem_proxyd.enforcement.tenants import load_policy_config

    assert load_policy_set(None).names == ["Debug", "Secrets"]
    (tmp_path / "rules.toml").write_text('[on_model_call]\nblock = ["x"]\n')
    folder = load_policy_set(tmp_path)
    assert folder.names == ["Rules", "Secrets"] and folder.described_names() == "Rules, Secrets (by default)"
    assert folder.mode_of("Secrets") == "enforce"
    assert load_policy_set(tmp_path, secrets_by_default=False).names == ["Rules"]
    (tmp_path / "debug.toml").write_text("enabled = false\n")
    (tmp_path / "rules.toml").write_text("enabled = false\n")
    assert load_policy_set(tmp_path).names == ["Secrets"]  # not "no policy is active"
    (tmp_path / "secrets.toml").write_text("enabled = false\n")
    off = load_policy_set(tmp_path)
    assert off.names == [] and off.warnings  # every policy off, said so
    (tmp_path / "secrets.toml").write_text('mode = "monitor"\n')
    assert load_policy_set(tmp_path).described_names() == "Secrets"  # named by the folder: not "by default"
    assert load_policy_config(Settings(policies=False)).main.names == []
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "debug.toml").write_text("enabled = true\n")
    assert load_policy_config(Settings(shadow_policy_dir=str(shadow))).shadow.names == ["Debug"]  # type: ignore[union-attr]


async def test_with_no_policy_folder_a_credential_is_masked_before_the_provider_sees_it(
    fake: FakeUpstream, daemons: Callable[..., Daemon]
) -> None:
    daemon = daemons(*upstream_args(fake.url))
    # Masking policies are asked first, and listed first.
    assert (await daemon.wait_ready(timeout=60))["policies"] == ["Secrets", "Debug"]
    assert "policies: Debug, Secrets [built-in default (Debug, Secrets)]" in daemon.log

    def ask(text: str) -> Any:
        with openai.OpenAI(base_url=daemon.url + "/v1", api_key=OPENAI_KEY, max_retries=0, timeout=20) as client:
            return client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": text}])

    raw = await in_thread(lambda: ask(f"deploy with {GITHUB_TOKEN} please"))
    assert raw.headers["x-capsem-decision"] == "redact"
    (sent,) = [request.body.decode() for request in fake.requests]
    assert GITHUB_TOKEN not in sent and "CAPSEM-MASKED-GITHUBTOKEN-" in sent
    assert GITHUB_TOKEN not in daemon.log
    assert await daemon.stop() == 0


def test_secrets_toml_is_a_known_policy_file(tmp_path: Path) -> None:
    (tmp_path / "secrets.toml").write_text('enable = ["discord-bot-token"]\n')
    assert load_policy_set(tmp_path).names == ["Secrets"]
    (tmp_path / "secrets.toml").write_text("enabled = false\n")
    assert load_policy_set(tmp_path).names == []
    (tmp_path / "secrets.toml").write_text('enable = ["no-such-rule"]\n')
    with pytest.raises(PolicyConfigError, match="unknown rule"):
        load_policy_set(tmp_path)
    (tmp_path / "secrets.toml").write_text('block = ["x"]\n')
    with pytest.raises(PolicyConfigError, match="block: unknown rule"):
        load_policy_set(tmp_path)
    (tmp_path / "secrets.toml").write_text('block = ["jwt"]\nlog = ["jwt"]\n')
    with pytest.raises(PolicyConfigError, match="both in log and block: jwt"):
        load_policy_set(tmp_path)
    (tmp_path / "secrets.toml").write_text('mask = ["x"]\n')
    with pytest.raises(PolicyConfigError, match="unknown key"):
        load_policy_set(tmp_path)


async def test_every_hook_masks_a_credential_without_naming_the_value() -> None:
    from capsem.models import Agent
    from capsem.tools import Tool

    from capsem_proxyd.redaction.findings import MaskingDecision, hook_text

    agent = Agent(name="a", instructions="")
    tool = Tool(name="shell", description="runs commands", parameters={})
    calls = [
        ("on_model_call", ("i", agent, "m", "", f"key {AWS_KEY_ID}", [])),
        ("on_tool_call", ("i", agent, tool, {"cmd": f"curl -H 'Authorization: token {GITHUB_TOKEN}'", "key": PEM})),
        ("on_tool_response", ("i", agent, tool, {"content": f"{PEM}\n"})),
    ]
    for hook, args in calls:
        decision = await getattr(DEFAULT, hook)(*args)
        assert isinstance(decision, MaskingDecision) and decision.verdict == Verdict.LOG, hook
        assert decision.policy == "Secrets" and decision.findings
        text = hook_text(hook, args)
        for start, end, value, _kind in decision.findings:
            assert value in (AWS_KEY_ID, GITHUB_TOKEN, PEM)  # the value itself, not its JSON spelling
            assert text[start:end] in (value, json.dumps(value)[1:-1])
        assert not any(value in decision.details or value[:12] in decision.details for value in VALUES)
    masked_call = await DEFAULT.on_tool_call(*calls[1][1])
    assert {finding.matched_text for finding in masked_call.findings} == {GITHUB_TOKEN, PEM}
    assert "GitHub Token (github-token, masked)" in masked_call.details
    reply = await DEFAULT.on_model_response("i", agent, "fine", f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", [])
    assert isinstance(reply, MaskingDecision) and reply.verdict == Verdict.LOG  # replies are masked too
    assert {finding.matched_text for finding in reply.findings} == {AWS_SECRET}
    assert AWS_SECRET not in reply.details
    blocking = SecretsPolicy(rules=CATALOGUE, block=["github-token"], log_only=["private-key"])
    refused = await blocking.on_tool_call(*calls[1][1])
    assert refused.verdict == Verdict.BLOCK and "github-token, block" in refused.details
    logged = await blocking.on_tool_response(*calls[2][1])
    assert logged.verdict == Verdict.LOG and not isinstance(logged, MaskingDecision)
    assert (await DEFAULT.on_model_call("i", agent, "m", "", "nothing here", [])).verdict == Verdict.ALLOW
    placeholder = "CAPSEM-MASKED-GITHUBTOKEN-ABCDEFGHIJKLMNOPQRST"
    assert (await DEFAULT.on_model_call("i", agent, "m", "", f"https://u:{placeholder}@h.example/", [])).verdict \
        == Verdict.ALLOW  # a placeholder (here, a masked URL password) is never found again


def test_streams_hold_back_only_while_a_credential_may_be_pending() -> None:
    tracker = DEFAULT.stream_holdback.parts[0].tracker()
    assert tracker.feed("Here is the plan. ") == 0
    assert tracker.feed("The key is AKIA") == len("AKIA")
    assert tracker.feed(AWS_KEY_ID[4:8]) == 8  # still pending: the whole beginning is held
    assert tracker.feed(AWS_KEY_ID[8:]) > 0  # complete, or still growing: the check decides
    assert tracker.feed(" and the rest.\n") == 0
    held = tracker.feed("-----BEGIN RSA PRIVATE KEY-----\nMIIEow")
    assert held == len("-----BEGIN RSA PRIVATE KEY-----\nMIIEow") - len("-----")
    assert tracker.feed("Ab\n-----END RSA PRIVATE KEY-----\nbye.") == 0


@given(st.lists(st.sampled_from(["AKIA", "ghp_", "-----BEGIN ", "RSA PRIVATE KEY", "-----", "eyJ", "://u:", "p4ss@h",
                                 "İ", "Σ", "e\u0301", "Ｋ", " ", "\n", *VALUES])
                | st.text(ASCII_TEXT, max_size=12), max_size=12).map("".join),
       st.lists(st.integers(0, 400), max_size=10), st.booleans())
@settings(max_examples=300, deadline=None)
def test_the_reply_screen_flags_every_piece_after_which_the_policy_first_decides_otherwise_than_allow(
    text: str, cuts: list[int], thoughts: bool
) -> None:
    """A stream check whose new piece the screen flags nothing in is not asked of the policy: that is safe
    only if the policy's answer could not have changed (Debug's marker screen makes the same promise)."""
    from capsem.models import Agent

    make = DEFAULT.reply_screen()
    assert make is not None
    screen = make()
    agent = Agent(name="a", instructions="")
    bounds = sorted({cut for cut in cuts if 0 < cut < len(text)})
    pieces = [text[start:end] for start, end in zip([0, *bounds], [*bounds, len(text)], strict=True)]
    so_far, decided_before = "", False
    for piece in pieces:
        so_far += piece
        flagged = screen.feed(piece)
        args = ("", so_far) if thoughts else (so_far, "")
        import trio

        decision = trio.run(DEFAULT.on_model_response, "i", agent, *args, [])
        decided = decision.verdict != Verdict.ALLOW
        if decided and not decided_before:
            assert flagged, (so_far, piece)
        decided_before = decided


# -- through the real daemon and the OpenAI SDK ---------------------------------------------------------------


def agent_turn() -> list[dict[str, Any]]:
    """An agent that ran ``cat ~/.aws/credentials ~/.config/gh/hosts.yml ~/.ssh/id_rsa``: the result is sent back."""
    result = (f"[default]\naws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key = {AWS_SECRET}\n"
              f"github.com:\n    oauth_token: {GITHUB_TOKEN}\n{PEM}\n")
    return [
        {"role": "user", "content": "why does my deploy fail?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "shell", "arguments": json.dumps({"cmd": "cat ~/.aws/credentials ~/.config/gh/hosts.yml ~/.ssh/id_rsa"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": result},
    ]


async def test_a_request_carrying_credentials_of_block_rules_is_refused_before_the_provider_sees_it(
    tmp_path: Path, fake: FakeUpstream, daemons: Callable[..., Daemon]
) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "secrets.toml").write_text(
        '# refused, not masked\nblock = ["aws-access-key-id", "aws-secret-access-key", "github-token", "private-key"]\n')
    daemon = daemons("--policy-dir", str(folder), *upstream_args(fake.url))
    health = await daemon.wait_ready(timeout=60)
    assert health["policies"] == ["Secrets"]

    def ask(messages: list[dict[str, Any]]) -> Any:
        with openai.OpenAI(base_url=daemon.url + "/v1", api_key=OPENAI_KEY, max_retries=0, timeout=20) as client:
            return client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]

    with pytest.raises(openai.BadRequestError) as caught:
        await in_thread(lambda: ask(agent_turn()))
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "capsem_blocked"
    assert error["capsem"]["policy"] == "Secrets" and error["capsem"]["hook"] == "on_tool_response"
    for kind in ("AWS Access Key", "GitHub Token", "Private Key"):
        assert kind in error["capsem"]["details"]
    assert fake.requests == []  # the provider received nothing
    shown = json.dumps(error) + daemon.log
    assert not any(value in shown for value in (AWS_KEY_ID, AWS_SECRET, GITHUB_TOKEN, PEM.splitlines()[1]))

    fake.script(Reply(text="no credential here"))
    reply = await in_thread(lambda: ask([{"role": "user", "content": "what is an AKIA prefix?"}]))
    assert reply.choices[0].message.content == "no credential here"
    assert len(fake.requests) == 1
    assert await daemon.stop() == 0


# -- replies, streamed through the real proxy -----------------------------------------------------------------


@pytest.mark.parametrize("shape", ["chat completions", "anthropic messages"])
async def test_a_reply_checked_by_secrets_streams_incrementally(
    shape: str, start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path, fake: FakeUpstream
) -> None:
    """The rules' DFAs hold only from the start of a credential still pending: a short answer without one
    reaches the SDK before the upstream ends (the cap, 64 characters, would have held it whole)."""
    secrets_proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path, secrets="")
    await reaches_the_sdk_before_the_upstream_ends(shape, secrets_proxy, fake)


async def test_a_token_the_model_streams_in_pieces_reaches_the_client_masked(
    start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path, fake: FakeUpstream
) -> None:
    secrets_proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path, secrets="")
    fake.script(Reply(chunks=["Use this token: ", GITHUB_TOKEN[:6], GITHUB_TOKEN[6:25], GITHUB_TOKEN[25:], " ok?"]))
    received: list[str] = []

    def consume() -> None:
        stream = secrets_proxy.openai().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "a token please"}], stream=True)
        for chunk in stream:
            received.extend(choice.delta.content or "" for choice in chunk.choices)

    await in_thread(consume)  # masked in the stream, not refused: the answer goes on
    shown = "".join(received)
    assert GITHUB_TOKEN[:6] not in shown
    assert re.fullmatch(r"Use this token: CAPSEM-MASKED-GITHUBTOKEN-[A-Z2-7]{20} ok\?", shown), shown


# What each named rule must still look for: NAMES maps (plugin, index in its denylist) to a name, so a
# detect-secrets release that reorders a denylist would otherwise misname (and mis-default) a rule.
PREFIXES = {
    "aws-access-key-id": "akia", "aws-secret-access-key-quoted": "aws", "aws-secret-access-key": "aws",
    "github-token": "ghp_", "gitlab-token": "glpat-", "gitlab-runner-registration-token": "gr1348941",
    "gitlab-ci-build-token": "glcbt-", "gitlab-incoming-mail-token": "glimt-", "gitlab-trigger-token": "glptt-",
    "gitlab-agent-token": "glagent-", "gitlab-oauth-secret": "gloas-", "slack-token": "xoxb-",
    "slack-webhook-url": "https://hooks.slack.com/services/t", "openai-api-key": "t3blbkfj",
    "stripe-live-key": "sk_live_", "sendgrid-api-key": "sg.", "square-oauth-secret": "sq0csp-",
    "pypi-token": "pypi-ageichlwas5vcmc", "pypi-test-token": "pypi-agendgvzdc5wexbplm9yzw",
    "npm-token": "/:_authtoken=", "azure-storage-account-key": "accountkey=", "jwt": "eyj", "url-password": "://",
    "mailchimp-api-key": "-us", "artifactory-api-token": "akc",
}


def test_every_named_rule_is_the_rule_its_name_says() -> None:
    assert CATALOGUE.skipped == ["i-p-public-0"]  # verbose mode; not a credential
    for name, literal in PREFIXES.items():
        assert literal in CATALOGUE.rules[name].keywords, (name, CATALOGUE.rules[name].keywords)
    assert sorted(DEFAULT.rule_names) == sorted({*PREFIXES, "private-key"} - {"artifactory-api-token", "mailchimp-api-key"})
    assert all("private key" in rule.source.pattern.lower() or "PuTTY" in rule.source.pattern
               for name, rule in CATALOGUE.rules.items() if name.startswith("private-key"))
