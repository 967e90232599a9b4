"""The Rules policy (rules.toml) across every hook, through the real proxy and the official SDKs."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from capsem.models import Verdict
from google.genai import errors as genai_errors

from capsem_proxyd.config import Settings
from capsem_proxyd.enforcement.loader import PolicyConfigError, load_policy_set
from capsem_proxyd.policies.rules import GlobList, RulesPolicy
from capsem_proxyd.redaction.findings import MaskingDecision, hook_text
from tests.support.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.support.proxy import Proxy, in_thread
from tests.support.sdk import chat, policy_proxy, refused

RULES = r"""
max_prompt_chars = 2000

[on_model_call]
block = ["Project Falcon", { name = "aws-key", regex = 'AKIA[0-9A-Z]{16}' }]
confirm = [{ name = "wire-transfer", term = "wire transfer" }]
log = ["password"]

[on_tool_call]
block = [{ name = "rm-rf", regex = 'rm\s+-rf' }]

[on_tool_response]
block = [{ name = "internal-host", regex = '\bcorp\.internal\b' }]

[on_model_response]
block = [{ name = "launch-code", term = "LAUNCH-CODE", case_sensitive = true }]

[tools]
deny = ["*shell*"]

[models]
allow = ["gpt-4o*", "gemini-2.*"]
"""


@pytest.fixture
async def rules_proxy(start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path) -> Proxy:
    # Rules alone: Secrets (on by default, asked first) would mask the AWS key id before Rules reads it.
    return await policy_proxy(start_proxy, proxy_settings, tmp_path, rules=RULES, secrets="enabled = false\n")


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize(
    ("messages", "model", "rule", "hook"),
    [
        (user("status of project falcon?"), "gpt-4o-mini", "'Project Falcon' (block)", "on_model_call"),
        ([{"role": "system", "content": "key AKIAABCDEFGHIJKLMNOP"}, *user("hi")], "gpt-4o-mini", "'aws-key' (block)",
         "on_model_call"),
        (user("hello"), "o1-preview", "rule 'models.allow' matched: model 'o1-preview' refused (not in allow list)",
         "on_model_call"),
        (user("x" * 2001), "gpt-4o-mini", "rule 'max_prompt_chars' matched", "on_model_call"),
    ],
    ids=["literal-any-case", "regex-in-system", "model-allow-list", "max-prompt-size"],
)
async def test_request_rules_block_before_upstream(
    rules_proxy: Proxy, fake: FakeUpstream, messages: list[dict], model: str, rule: str, hook: str
) -> None:
    error = (await refused(lambda: chat(rules_proxy, messages, model=model))).body
    assert error["code"] == "capsem_blocked"
    assert error["capsem"]["policy"] == "Rules" and error["capsem"]["hook"] == hook
    assert rule in error["capsem"]["details"]
    assert fake.requests == []


async def test_confirm_rule_needs_confirmation(rules_proxy: Proxy, fake: FakeUpstream) -> None:
    error = (await refused(lambda: chat(rules_proxy, user("make a Wire Transfer now")))).body
    assert error["code"] == "capsem_confirmation_required"
    assert "'wire-transfer' (confirm)" in error["capsem"]["details"]


async def test_log_rule_allows_and_is_reported(rules_proxy: Proxy, fake: FakeUpstream) -> None:
    raw = await in_thread(lambda: rules_proxy.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=user("I forgot my password")))
    assert raw.status_code == 200
    assert raw.headers["x-capsem-decision"] == "log"
    assert len(fake.requests) == 1


async def test_strictest_match_wins_and_every_match_is_named(rules_proxy: Proxy, fake: FakeUpstream) -> None:
    error = (await refused(lambda: chat(rules_proxy, user("password for project falcon via wire transfer")))).body
    assert error["code"] == "capsem_blocked"
    details = error["capsem"]["details"]
    assert "'Project Falcon' (block)" in details and "'wire-transfer' (confirm)" in details and "'password' (log)" in details


async def test_denied_tool_definition_is_blocked(rules_proxy: Proxy, fake: FakeUpstream) -> None:
    tools = [{"type": "function", "function": {"name": "run_shell_command", "parameters": {"type": "object"}}}]
    error = (await refused(lambda: chat(rules_proxy, user("list files"), tools=tools))).body
    assert error["capsem"]["hook"] == "on_tool_call"
    assert "rule 'tools.deny' matched: tool 'run_shell_command' refused (deny '*shell*')" in error["capsem"]["details"]
    assert fake.requests == []


async def test_tool_result_rule(rules_proxy: Proxy, fake: FakeUpstream) -> None:
    messages = [
        *user("where is the db?"),
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": json.dumps({"host": "db1.corp.internal"})},
    ]
    error = (await refused(lambda: chat(rules_proxy, messages))).body
    assert error["capsem"]["hook"] == "on_tool_response" and "'internal-host' (block)" in error["capsem"]["details"]


async def test_model_tool_call_arguments_and_denied_name(rules_proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(tool_calls=[ToolCall("run", {"cmd": "rm  -rf /"})]), Reply(tool_calls=[ToolCall("my_shell", {})]))
    args_error = (await refused(lambda: chat(rules_proxy, user("clean up")))).body
    assert args_error["capsem"]["hook"] == "on_tool_call" and "'rm-rf' (block)" in args_error["capsem"]["details"]
    name_error = (await refused(lambda: chat(rules_proxy, user("open a shell")))).body
    assert "tool 'my_shell' refused" in name_error["capsem"]["details"]


async def test_case_sensitive_response_rule(rules_proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(text="the launch-code is 1234"), Reply(text="the LAUNCH-CODE is 1234"))
    allowed = await in_thread(lambda: chat(rules_proxy, user("q")))
    assert allowed.choices[0].message.content == "the launch-code is 1234"
    error = (await refused(lambda: chat(rules_proxy, user("q")))).body
    assert error["capsem"]["hook"] == "on_model_response" and "'launch-code' (block)" in error["capsem"]["details"]


async def test_rules_apply_to_gemini_and_streams(rules_proxy: Proxy, fake: FakeUpstream) -> None:
    client = rules_proxy.gemini()
    with pytest.raises(genai_errors.ClientError) as caught:
        await in_thread(lambda: client.models.generate_content(model="gemini-2.0-flash", contents="about Project FALCON"))
    assert caught.value.code == 400
    with pytest.raises(genai_errors.ClientError):
        await in_thread(lambda: client.models.generate_content(model="gemini-1.5-pro", contents="hello"))
    fake.script(Reply(chunks=["all clear, ", "the LAUNCH-", "CODE is 42"]))
    received: list[str] = []

    def consume() -> None:
        for chunk in chat(rules_proxy, user("status?"), stream=True):
            received.extend(choice.delta.content or "" for choice in chunk.choices)

    with pytest.raises(openai.APIError):
        await in_thread(consume)
    assert "LAUNCH-CODE" not in "".join(received)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[on_model_call]\nblock = 'x'\n", "block must be a list"),
        ("[on_model_call]\nstop = ['x']\n", "unknown key(s) stop"),
        ("[on_prompt]\nblock = ['x']\n", "unknown key(s) on_prompt"),
        ("[on_model_call]\nblock = [{ term = 'a', regex = 'b' }]\n", "needs exactly one of term"),
        ("[on_model_call]\nblock = ['']\n", "empty term"),
        ("[tools]\nallow = 'get_*'\n", "allow must be a list of glob strings"),
        ("max_prompt_chars = 0\n", "max_prompt_chars must be a whole number"),
        ("[on_model_response]\nredact = 'x'\n", "redact must be a list"),
        ("[on_tool_response]\nredact = [{ regex = 'key=(?P<v>\\\\w+)', group = 'value' }]\n", "names no"),
    ],
)
def test_invalid_rules_are_config_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "rules.toml").write_text(text)
    with pytest.raises(PolicyConfigError) as caught:
        load_policy_set(tmp_path)
    assert "rules.toml" in str(caught.value) and message in str(caught.value)


def test_bad_regex_error_names_line_and_rule(tmp_path: Path) -> None:
    (tmp_path / "rules.toml").write_text('\n[on_tool_response]\nlog = [\n  { name = "stars", regex = "**" },\n]\n')
    with pytest.raises(PolicyConfigError) as caught:
        load_policy_set(tmp_path)
    assert "rules.toml: line 4: rule 'stars' (on_tool_response.log[0]): invalid regular expression" in str(caught.value)


# -- what each kind of rule sees (policy/normalize.py; the literal-evasion tests through the proxy are in
# test_normalization.py) ---------------------------------------------------------------------------------------


def rules_policy(text: str) -> RulesPolicy:
    policy = RulesPolicy.from_config(tomllib.loads(text))
    assert policy is not None
    return policy


async def prompt_verdict(policy: RulesPolicy, prompt: str) -> Verdict:
    decision = await policy.on_model_call("invocation", None, "gpt-4o-mini", "", prompt, [])
    return decision.verdict


@pytest.mark.parametrize(
    ("prompt", "verdict"),
    [
        ("ｐｒｏｊｅｃｔ\u200b ＦＡＬＣＯＮ", Verdict.BLOCK),
        ("рrојесt fаlсоn", Verdict.BLOCK),  # Cyrillic
        ("the Hauptstraße office", Verdict.CONFIRM),  # ß reads as ss, both ways
        ("project falconry is a hobby", Verdict.BLOCK),  # literals are substrings, as before
        ("projects and falcons", Verdict.ALLOW),
    ],
)
async def test_literal_terms_match_the_text_as_read(prompt: str, verdict: Verdict) -> None:
    policy = rules_policy('[on_model_call]\nblock = ["Project Falcon"]\nconfirm = ["hauptstrasse"]\n')
    assert await prompt_verdict(policy, prompt) == verdict


@pytest.mark.parametrize(
    ("prompt", "verdict"),
    [
        ("LAUNCH-CODE", Verdict.BLOCK),
        ("ＬＡＵＮＣＨ-ＣＯＤＥ", Verdict.BLOCK),
        ("LАUNCH-\u200bСODE", Verdict.BLOCK),  # Cyrillic capitals А and С, a zero-width space
        ("launch-code", Verdict.ALLOW),
        ("ｌａｕｎｃｈ-ｃｏｄｅ", Verdict.ALLOW),
    ],
)
async def test_case_sensitive_terms_fold_everything_but_case(prompt: str, verdict: Verdict) -> None:
    policy = rules_policy('[on_model_call]\nblock = [{ term = "LAUNCH-CODE", case_sensitive = true }]\n')
    assert await prompt_verdict(policy, prompt) == verdict


@pytest.mark.parametrize(
    ("prompt", "verdict"),
    [
        ("key AKIAABCDEFGHIJKLMNOP", Verdict.BLOCK),
        ("key ＡＫＩＡ\u00adABCDEFGHIJKLMNOP", Verdict.BLOCK),  # NFKC, invisibles removed
        ("key akiaabcdefghijklmnop", Verdict.BLOCK),  # the regex's own IGNORECASE
        ("key AKIA\u0410BCDEFGHIJKLMNOP", Verdict.ALLOW),  # a Cyrillic А is not in [0-9A-Z]: lookalikes are for terms
    ],
)
async def test_regexes_see_visible_nfkc_text(prompt: str, verdict: Verdict) -> None:
    policy = rules_policy("[on_model_call]\nblock = [{ name = 'aws-key', regex = 'AKIA[0-9A-Z]{16}' }]\n")
    assert await prompt_verdict(policy, prompt) == verdict


async def test_case_sensitive_regex_keeps_case() -> None:
    policy = rules_policy("[on_model_call]\nblock = [{ regex = 'AKIA[0-9A-Z]{16}', case_sensitive = true }]\n")
    assert await prompt_verdict(policy, "ＡＫＩＡABCDEFGHIJKLMNOP") == Verdict.BLOCK
    assert await prompt_verdict(policy, "akiaabcdefghijklmnop") == Verdict.ALLOW


def test_a_term_with_nothing_visible_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "rules.toml").write_text('[on_model_call]\nblock = ["\\u200b\\u00ad"]\n')
    with pytest.raises(PolicyConfigError) as caught:
        load_policy_set(tmp_path)
    assert "the term has no visible characters" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "refusal"),
    [
        ("search", None),
        ("SEARCH", None),
        ("ѕearch", "allow"),  # a Cyrillic ѕ: looks allowed, is another tool
        ("run_shell", "deny"),
        ("run_ѕhеll", "deny"),  # Cyrillic ѕ and е
        ("run_sh\u200bell", "deny"),
        ("ＲＵＮ＿ＳＨＥＬＬ", "deny"),
    ],
)
def test_deny_globs_see_names_as_read_and_allow_globs_as_written(name: str, refusal: str | None) -> None:
    tools = GlobList(allow=("search", "run_*"), deny=("*shell*",))
    result = tools.refusal(name)
    assert (result[0] if result else None) == refusal


# -- redact rules (issue 23): findings are places in the text as written ---------------------------------------

MASKING = r"""
[on_model_call]
redact = [{ name = "password", regex = 'password=(?P<value>\S+)', group = "value" }, "hunter2"]
"""


async def test_a_redact_rule_reports_the_group_it_names_as_a_place_in_the_text() -> None:
    policy = rules_policy(MASKING)
    prompt = "log in with password=s3cr3t! then say HUNTER2"
    decision = await policy.on_model_call("invocation", None, "gpt-4o-mini", "system", prompt, [])
    assert isinstance(decision, MaskingDecision) and decision.verdict == Verdict.LOG
    text = hook_text("on_model_call", ("invocation", None, "gpt-4o-mini", "system", prompt, []))
    assert [(text[start:end], kind) for start, end, _, kind in decision.findings] == [
        ("s3cr3t!", "password"), ("HUNTER2", "hunter2")]
    assert all(text[start:end] == matched for start, end, matched, _ in decision.findings)
    assert "s3cr3t" not in decision.details and "HUNTER2" not in decision.details


async def test_a_redact_match_on_the_text_as_read_is_widened_to_whole_written_characters() -> None:
    """A zero-width space inside the value, fullwidth letters, a combining mark after its last letter: the
    regex finds the value once the text is read (invisibles removed, NFKC), and the finding is the whole
    characters it was read from, the invisible character and the trailing mark included."""
    policy = rules_policy('[on_model_call]\nredact = [{ regex = \'AKIA[0-9A-Z]{16}\' }]\n')
    for written in ("AKIA\u200bIOSFODNN7EXAMPLE", "ＡＫＩＡIOSFODNN7EXAMPL\u00adE\u0353"):
        prompt = f"key {written} end"
        decision = await policy.on_model_call("i", None, "m", "", prompt, [])
        assert isinstance(decision, MaskingDecision) and decision.verdict == Verdict.LOG, decision
        text = hook_text("on_model_call", ("i", None, "m", "", prompt, []))
        assert [(matched, text[start:end]) for start, end, matched, _ in decision.findings] == [(written, written)]


async def test_a_redact_match_the_text_as_read_cannot_place_is_refused() -> None:
    """Hangul jamo that NFKC joins into a syllable: the text as read has no character-by-character map
    back to the text as written; a match only it has is refused rather than guessed at."""
    policy = rules_policy("[on_model_call]\nredact = [{ regex = '\uac01' }]\n")
    decision = await policy.on_model_call("i", None, "m", "", "key \u1100\u1161\u11a8 end", [])
    assert decision.verdict == Verdict.BLOCK and "cannot be masked exactly" in decision.details
