"""Literal-match evasion: ``normalize.fold`` and the policies that match on it.

Property tests on the functions (no server), then the real proxy with the
official SDKs: each evasion class is refused before anything goes upstream,
by the Debug policy and by a Rules literal, and harmless non-ASCII text still
passes and reaches the provider byte for byte.

The lookalikes the tests use are written out here, from the Unicode charts,
not taken from the table the module builds: the test says which characters a
reader takes for Latin letters, the module has to agree.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsem_proxyd.config import Settings
from capsem_proxyd.policies.normalize import fold, fold_with_offsets, visible
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import OPENAI_KEY, Proxy, in_thread
from tests.support.sdk import chat, policy_proxy, refused

TERMS = ["capsem_block", "project falcon", "wire transfer", "password", "launch-code", "rm -rf", "akia", "exfiltrate"]

# Format characters and other default-ignorables: nothing on screen.
INVISIBLE = [
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u180e", "\u034f", "\ufe0f", "\u3164",
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\U000e0041",
]
# Cyrillic and Greek letters a reader takes for a Latin one; lower case for lower, capitals for capitals.
LOWER_LOOKALIKES = {
    "a": "аα", "b": "в", "c": "сϲ", "d": "ԁ", "e": "е", "h": "һн", "i": "іι", "j": "јϳ", "k": "кκ", "l": "ⅼǀ",
    "m": "м", "o": "оοσ", "p": "рρ", "q": "ԛ", "r": "г", "s": "ѕ", "t": "тτ", "u": "υ", "v": "νѵ", "w": "ԝѡ",
    "x": "х", "y": "уγ",
}
UPPER_LOOKALIKES = {
    "A": "АΑ", "B": "ВΒ", "C": "СϹ", "E": "ЕΕ", "H": "НΗ", "I": "ІΙӀ", "J": "Ј", "K": "КΚ", "M": "МΜ", "N": "Ν",
    "O": "ОΟ", "P": "РΡ", "S": "Ѕ", "T": "ТΤ", "X": "ХΧ", "Y": "ҮΥ", "Z": "Ζ",
}
COMBINING = [chr(code) for code in range(0x0300, 0x0370)] + ["\u20dd", "\u20de", "\u20df", "\u20e0"]  # Mn, Me


def fullwidth(char: str) -> str:
    if char == " ":
        return "\u3000"
    return chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char


def math_bold(char: str) -> str:
    if "a" <= char <= "z":
        return chr(0x1D41A + ord(char) - ord("a"))
    if "A" <= char <= "Z":
        return chr(0x1D400 + ord(char) - ord("A"))
    return char


@st.composite
def disguised(draw: st.DrawFn, term: str, keep_case: bool = False) -> str:
    """``term`` with every character possibly re-cased, replaced by a lookalike, marked, and followed by invisibles."""
    out = []
    for char in term:
        if not keep_case and char.isalpha():
            char = draw(st.sampled_from([char.lower(), char.upper()]))
        forms = [char, fullwidth(char), math_bold(char)]
        forms += list(LOWER_LOOKALIKES.get(char, "")) + list(UPPER_LOOKALIKES.get(char, ""))
        char = draw(st.sampled_from(forms))
        if char.isalpha():
            char += "".join(draw(st.lists(st.sampled_from(COMBINING), max_size=2)))
        out.append(char + "".join(draw(st.lists(st.sampled_from(INVISIBLE), max_size=3))))
    return "".join(out)


@st.composite
def term_in_text(draw: st.DrawFn, keep_case: bool = False) -> tuple[str, str]:
    term = draw(st.sampled_from(TERMS))
    if keep_case:
        term = draw(st.sampled_from([term, term.upper()]))
    around = st.text(max_size=30)
    return term, draw(around) + draw(disguised(term, keep_case)) + draw(around)


# -- fold: what a reader sees ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "ｃａｐｓｅｍ＿ｂｌｏｃｋ",  # fullwidth
        "capsem\u200b_block", "caps\u00adem_block", "c\u2060a\ufeffpsem_blo\u200dck",  # zero-width, soft hyphen
        "c\u0301apsem_blo\u0308ck", "ĉàpşēm_blöck",  # combining marks, precomposed letters
        "саpsem_block", "сарѕем_вⅼосκ", "САРЅЕМ_ВLОСК", "ϹΑΡSΕΜ_ΒLΟCΚ", "ϲαρѕем_вlοсκ",  # Cyrillic, Greek
        "\U0001d41c\U0001d41a\U0001d429\U0001d42c\U0001d41e\U0001d426_block",  # mathematical bold
        "CAPSEM\u202e_BLOCK",  # a bidi override
    ],
)
def test_each_evasion_class_folds_to_the_marker(text: str) -> None:
    assert "capsem_block" in fold(text)


@settings(max_examples=400)
@given(term_in_text())
def test_no_disguise_hides_a_term(case: tuple[str, str]) -> None:
    term, text = case
    assert fold(term) in fold(text)


@settings(max_examples=300)
@given(term_in_text(keep_case=True))
def test_no_disguise_hides_a_case_sensitive_term(case: tuple[str, str]) -> None:
    term, text = case
    assert fold(term, keep_case=True) in fold(text, keep_case=True)


def test_case_sensitive_folding_keeps_case() -> None:
    assert fold("ＬＡＵＮＣＨ-ＣＯＤＥ", keep_case=True) == "LAUNCH-CODE"
    assert fold("LАUNCH-СODE", keep_case=True) == "LAUNCH-CODE"  # Cyrillic capitals А, С
    assert fold("launch-code", keep_case=True) == "launch-code"
    assert fold("Straße", keep_case=True) == "Straße"


@pytest.mark.parametrize(
    ("text", "read_as"),
    [
        ("Іnternal", "internal"),  # a capital lookalike of I reads as I, though TR39's prototype is l
        ("Ӏ", "i"), ("ӏ", "i"), ("١", "1"), ("०", "0"), ("∣", "|"), ("ϲ", "c"), ("ſ", "s"), ("﹘", "-"),
        ("Straße", "strasse"), ("İstanbul", "istanbul"), ("ﬁle", "file"), ("Ⅸ", "ix"), ("вн тк м", "bh tk m"),
        ("“quoted”", '"quoted"'), ("café", "cafe"), ("naïve", "naive"),
    ],
)
def test_readings(text: str, read_as: str) -> None:
    assert fold(text) == read_as


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("emoji 🎉👍🏽 中文", "emoji 🎉👍🏽 中文"),
        # Marks go everywhere, also a kana's voicing mark: で reads as て (documented, consistent for terms too).
        ("日本語のテキストです。", "日本語のテキストてす。"),
        ("한국어", unicodedata.normalize("NFD", "한국어")),  # Hangul compares as its jamo
    ],
)
def test_no_transliteration_of_other_scripts(text: str, folded: str) -> None:
    assert fold(text) == folded


@settings(max_examples=400)
@given(st.text(), st.text())
def test_fold_is_a_per_character_map(left: str, right: str) -> None:
    """What makes ``fold(term) in fold(text)`` the rule: no context, so a term folds alike anywhere."""
    for keep_case in (False, True):
        assert fold(left + right, keep_case=keep_case) == fold(left, keep_case=keep_case) + fold(right, keep_case=keep_case)
        once = fold(left, keep_case=keep_case)
        assert fold(once, keep_case=keep_case) == once


@settings(max_examples=200)
@given(st.text(alphabet=st.characters(max_codepoint=0x7F)))
def test_ascii_is_lowered_and_nothing_else(text: str) -> None:
    assert fold(text) == text.lower()
    assert fold(text, keep_case=True) == text
    assert fold_with_offsets(text) == (text.lower(), None)


def test_every_format_character_is_invisible() -> None:
    format_characters = [chr(code) for code in range(0x110000) if unicodedata.category(chr(code)) == "Cf"]
    assert len(format_characters) > 150
    for char in format_characters:
        assert fold(f"a{char}b") == "ab", hex(ord(char))
        assert visible(f"a{char}b") == "ab", hex(ord(char))


# -- fold_with_offsets: where each folded character came from ---------------------------------------------------


def expected_offsets(text: str, keep_case: bool) -> list[int]:
    """The promise, spelled out: folded[i] came from text[offsets[i]], fold being per character."""
    return [index for index, char in enumerate(text) for _ in fold(char, keep_case=keep_case)]


@settings(max_examples=400)
@given(st.text() | term_in_text().map(lambda case: case[1]))
def test_offsets_name_the_raw_character_each_folded_one_came_from(text: str) -> None:
    for keep_case in (False, True):
        folded, offsets = fold_with_offsets(text, keep_case=keep_case)
        assert folded == fold(text, keep_case=keep_case)
        expected = expected_offsets(text, keep_case)
        if offsets is None:
            assert expected == list(range(len(text)))
            continue
        assert offsets == expected and expected != list(range(len(text)))
        assert all(a <= b for a, b in zip(offsets, offsets[1:]))
        for i in range(len(folded)):
            # a term found from folded[i] on is found again in the raw text from offsets[i] on
            assert fold(text[offsets[i]:], keep_case=keep_case).endswith(folded[i:])
            assert fold(text[: offsets[i] + 1], keep_case=keep_case).startswith(folded[: i + 1])


def test_a_term_spread_thin_maps_back_to_where_it_starts() -> None:
    spread = "".join(letter + "\u200b" * 100 for letter in "capsem_block")
    text = "intro " + spread + " outro"
    folded, offsets = fold_with_offsets(text)
    assert offsets is not None
    start = folded.index("capsem_block")
    assert offsets[start] == len("intro ")
    assert offsets[start + len("capsem_block") - 1] == len("intro ") + 11 * 101


def test_one_to_one_non_ascii_text_needs_no_offsets() -> None:
    assert fold_with_offsets("café ＡＢＣ саpsem")[1] is None
    assert fold_with_offsets("Straße")[1] == [0, 1, 2, 3, 4, 4, 5]


# -- visible: what regexes see ----------------------------------------------------------------------------------


def test_visible_removes_invisibles_and_applies_nfkc_but_keeps_case_and_lookalikes() -> None:
    assert visible("ＡＫＩＡ\u200bABCD") == "AKIAABCD"
    assert visible("e\u0301") == "é"
    assert visible("саpsem") == "саpsem"  # lookalikes are the literal terms' business
    text = "plain ASCII stays the same object"
    assert visible(text) is text


# -- through the proxy ------------------------------------------------------------------------------------------

EVASIONS = {
    "fullwidth": "please ｃａｐｓｅｍ＿ｂｌｏｃｋ this",
    "zero-width": "please capsem\u200b_block this",
    "soft-hyphen": "please caps\u00adem_block this",
    "combining-mark": "please c\u0301apsem_block this",
    "cyrillic": "please саpsem_block this",
    "greek": "please ϹΑΡSΕΜ_ΒLΟCΚ this",
    "spread-thin": "please " + "".join(letter + "\u200b" * 100 for letter in "capsem_block"),
}
HARMLESS = "Bonjour, ça va ? Grüße aus der Straße. 日本語のテキストです。 Emoji: 🎉👍🏽 — “quotes” …"


@pytest.mark.parametrize("text", list(EVASIONS.values()), ids=list(EVASIONS))
async def test_debug_policy_refuses_each_evasion_before_upstream(proxy: Proxy, fake: FakeUpstream, text: str) -> None:
    error = (await refused(lambda: chat(proxy, text))).body
    assert error["code"] == "capsem_blocked" and error["capsem"]["policy"] == "Debug"
    assert error["capsem"]["details"] == "Detected 'capsem_block' in prompt"  # never the text it matched
    assert fake.requests == []


async def test_debug_policy_refuses_a_disguised_marker_in_the_reply(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(text="sure: ｃａｐｓｅｍ＿ｂｌｏｃｋ"))
    error = (await refused(lambda: chat(proxy, "go"))).body
    assert error["capsem"]["hook"] == "on_model_response"


RULES = """
[on_model_call]
block = ["project falcon", { name = "aws-key", regex = 'AKIA[0-9A-Z]{16}' }]
[tools]
deny = ["*shell*"]
"""
RULE_EVASIONS = {
    "fullwidth": "status of ｐｒｏｊｅｃｔ ｆａｌｃｏｎ?",
    "zero-width": "status of proj\u200bect fal\u200ccon?",
    "soft-hyphen": "status of pro\u00adject fal\u00adcon?",
    "combining-mark": "status of pröject fálcon?",
    "cyrillic": "status of рrојесt fаlсоn?",
    "greek": "status of ΡROJΕCΤ FΑLCΟΝ?",
    "case-and-ideographic-space": "status of PROJECT\u3000FALCON?",
}


@pytest.fixture
async def rules_proxy(start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path) -> Proxy:
    return await policy_proxy(start_proxy, proxy_settings, tmp_path, rules=RULES)


@pytest.mark.parametrize("text", list(RULE_EVASIONS.values()), ids=list(RULE_EVASIONS))
async def test_rules_literal_is_not_evaded(rules_proxy: Proxy, fake: FakeUpstream, text: str) -> None:
    error = (await refused(lambda: chat(rules_proxy, text))).body
    assert error["capsem"]["policy"] == "Rules" and "'project falcon' (block)" in error["capsem"]["details"]
    assert fake.requests == []


async def test_rules_regex_sees_through_invisibles_and_fullwidth(rules_proxy: Proxy, fake: FakeUpstream) -> None:
    error = (await refused(lambda: chat(rules_proxy, "key ＡＫＩＡ\u200bABCDEFGHIJKLMNOP"))).body
    assert "'aws-key' (block)" in error["capsem"]["details"]
    assert fake.requests == []


async def test_rules_deny_glob_sees_a_lookalike_tool_name(rules_proxy: Proxy, fake: FakeUpstream) -> None:
    tools = [{"type": "function", "function": {"name": "run_ѕhеll", "parameters": {"type": "object"}}}]
    error = (await refused(lambda: chat(rules_proxy, "list files", tools=tools))).body
    assert error["capsem"]["hook"] == "on_tool_call" and "deny '*shell*'" in error["capsem"]["details"]
    assert fake.requests == []


@pytest.mark.parametrize("which", ["debug", "rules"])
async def test_harmless_non_ascii_reaches_upstream_byte_for_byte(
    which: str, proxy: Proxy, rules_proxy: Proxy, fake: FakeUpstream
) -> None:
    target = proxy if which == "debug" else rules_proxy
    body = json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": HARMLESS}]}, ensure_ascii=False
    ).encode("utf-8")
    async with httpx.AsyncClient() as client:
        response = await client.post(
            target.url + "/v1/chat/completions",
            content=body,
            headers={"authorization": f"Bearer {OPENAI_KEY}", "content-type": "application/json"},
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-capsem-decision"] == "allow"
    (received,) = fake.requests
    assert received.body == body


async def test_harmless_non_ascii_through_the_sdk_and_back(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(text=HARMLESS))
    completion = await in_thread(lambda: chat(proxy, HARMLESS))
    assert completion.choices[0].message.content == HARMLESS
    (received,) = fake.requests
    assert received.json["messages"][0]["content"] == HARMLESS
