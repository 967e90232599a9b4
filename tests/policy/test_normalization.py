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
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsem_proxyd.config import Settings
from capsem_proxyd.policies.holdback import Term
from capsem_proxyd.policies.normalize import (
    LOW_LINE,
    SPACED,
    fold,
    fold_with_offsets,
    readings,
    reads_at_least,
    reads_at_least_in,
    seen_length,
    visible,
    visible_with_places,
    visual_order,
)
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
# Latin letters with a stroke, hook or bar (no decomposition, and TR39 lists none of them as the letter).
STROKED = {
    "a": "ⱥȺ", "b": "ƀɓɃƁ", "c": "ȼƈȻƇ", "d": "đɗĐƊ", "e": "ɇɆ", "g": "ǥɠǤƓ", "h": "ħɦĦ", "i": "ɨƗ", "j": "ɉɈ",
    "k": "ƙꝁƘ", "l": "łƚŁȽ", "m": "ɱ", "n": "ɲƝ", "o": "øɵØƟǿ", "p": "ᵽƥⱣƤ", "r": "ɍɌ", "s": "ʂ", "t": "ŧƭŦƬ",
    "u": "ʉɄ", "y": "ɏƴɎƳ", "z": "ƶȥƵȤ",
}
UNDERSCORES = ["\u02cd", "\u2017", "\uff3f", "\ufe4d", "\ufe4e", "\ufe4f"]


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
        forms = [char, fullwidth(char), math_bold(char), *enclosed(char)]
        forms += list(LOWER_LOOKALIKES.get(char, "")) + list(UPPER_LOOKALIKES.get(char, ""))
        if not keep_case:
            forms += list(STROKED.get(char.lower(), ""))
        if char == "_":
            forms += UNDERSCORES
        char = draw(st.sampled_from(forms))
        if char.isalpha():
            char += "".join(draw(st.lists(st.sampled_from(COMBINING), max_size=2)))
        out.append(char + "".join(draw(st.lists(st.sampled_from(INVISIBLE), max_size=3))))
    return "".join(out)


def enclosed(char: str) -> list[str]:
    """Negative squared, parenthesized and circled forms of a Latin letter (case as the form has it)."""
    if "a" <= char <= "z":
        return [chr(0x249C + ord(char) - ord("a")), chr(0x24D0 + ord(char) - ord("a"))]
    if "A" <= char <= "Z":
        return [chr(0x1F170 + ord(char) - ord("A")), chr(0x24B6 + ord(char) - ord("A"))]
    return []


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


@pytest.mark.parametrize(
    "text",
    [
        "capsem_błock", "capsem_bløck", "CAPSEM_BLØCK", "ȼapsem_block", "capsɇm_block", "ƈapsem_ɓƚoƈƙ",  # stroke, hook, bar
        "capsem\u02cdblock", "capsem\u2017block",  # underscore lookalikes
        "🅲🅰🅿🆂🅴🅼_🅱🅻🅾🅲🅺", "⒞⒜⒫⒮⒠⒨_⒝⒧⒪⒞⒦", "🅒🅐🅟🅢🅔🅜_🅑🅛🅞🅒🅚",  # negative squared, parenthesized, circled
    ],
)
def test_each_class_12_spelling_folds_to_the_marker(text: str) -> None:
    assert fold(text) == "capsem_block"


@pytest.mark.parametrize(
    ("text", "second"),
    [
        ("capsem\u0332block", "capsem_block"),  # a combining low line under the m reads as _
        ("\u202ekcolb_mespac\u202c", "capsem_block"),  # displayed right to left
        ("x \u202e_mespac\u202cblock", "x capsem_block"),
        ("\u2067\u202ekcolb_mespac\u202c\u2069", "capsem_block"),
        ("block\u200f\u202c_capsem", "capsem_block"),  # in a right-to-left paragraph (a display's choice)
        ("block\u200f_capsem", "capsem_block"),  # a right-to-left mark alone does it
    ],
)
def test_a_second_reading_shows_the_marker(text: str, second: str) -> None:
    assert "capsem_block" not in fold(text)
    assert second in readings(text)


def test_an_underlined_word_reads_as_the_word() -> None:
    underlined = "".join(char + "\u0332" for char in "capsem_block")
    assert fold(underlined) == "capsem_block" and readings(underlined)[0] == "capsem_block"


@settings(max_examples=400)
@given(term_in_text())
def test_no_disguise_hides_a_term(case: tuple[str, str]) -> None:
    term, text = case
    assert any(fold(term) in reading for reading in readings(text))


@settings(max_examples=300)
@given(term_in_text(keep_case=True))
def test_no_disguise_hides_a_case_sensitive_term(case: tuple[str, str]) -> None:
    term, text = case
    assert any(fold(term, keep_case=True) in reading for reading in readings(text, keep_case=True))


@settings(max_examples=200)
@given(term=st.sampled_from(TERMS), before=st.text(max_size=20), after=st.text(max_size=20), data=st.data())
def test_a_term_shown_by_a_right_to_left_override_is_read(term: str, before: str, after: str, data: st.DataObject) -> None:
    """The term stored backwards under RLO ... PDF (or RLO alone, to the paragraph's end) displays as the term."""
    before, after = (side.translate(_NO_PARAGRAPH_OR_BIDI) for side in (before, after))
    close = data.draw(st.sampled_from(["\u202c", ""]))
    text = before + "\u202e" + term[::-1] + close + (after if close else "")
    assert any(term in reading for reading in readings(text))


_NO_PARAGRAPH_OR_BIDI = {code: None for code in [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x0A, 0x0D, 0x1C, 0x1D,
                                                   0x1E, 0x85, 0x2029]}


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text", "plain text"),
        ("\u202eabc\u202c def", "cba def"),
        ("\u202eab\u202dcd\u202cef\u202c", "fecdba"),  # an LRO inside an RLO keeps its own order
        ("\u202eab\ncd", "ba\ncd"),  # a paragraph separator ends every embedding
        ("\u202bblock capsem\u202c", "block capsem"),  # Latin letters in an RTL embedding stay in order
        ("\u202b12 34\u202c", "34 12"),  # numbers in an RTL embedding do not
        ("\u202babc 12\u202c", "abc 12"),  # ... unless a Latin letter precedes them (W7)
        ("\u2067abc\u2069\u202edef", "abcfed"),  # PDI ends the isolate
        ("\u202cx\u2069y", "xy"),  # closing what was never opened does nothing
    ],
)
def test_visual_order(text: str, shown: str) -> None:
    assert fold(visual_order(text)) == shown


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("abc\u200f\u202cdef", "defabc"),  # two Latin runs a right-to-left mark parts: ordered from the right
        ("abc\u202edef\u202c", "abcfed"),  # the override is a level deeper (3) than the Latin letters (2)
        ("x \u202b12 34\u202c y", "y 34 12 x"),
    ],
)
def test_visual_order_in_a_right_to_left_paragraph(text: str, shown: str) -> None:
    assert fold(visual_order(text, rtl=True)) == shown


def test_deep_nesting_stops_at_the_limit() -> None:
    text = "\u202e" * 200 + "abc" + "\u202c" * 200 + "d"
    assert visual_order(text) in ("cbad", "abcd")


# -- gaps: multi-word terms --------------------------------------------------------------------------------------

GAPS = [" ", "  ", "\n", "\t", "\r\n", "-", "\u2010", "\u2013", "\u2014", "\u2212", "\u200b", "\u2060", "\u00ad",
        "\u00a0", "\u3000", "\u2009", "\ufeff", " - ", "\n\n"]


def found(term: str, text: str, keep_case: bool = False) -> bool:
    compiled = Term(term, keep_case=keep_case)
    return compiled.found(readings(text, keep_case=keep_case), lambda: readings(text, keep_case=keep_case, spaced=True))


@settings(max_examples=300)
@given(term=st.sampled_from(["project falcon", "wire transfer", "rm -rf", "launch-code"]), data=st.data())
def test_any_gap_between_the_words_matches(term: str, data: st.DataObject) -> None:
    words = term.replace("-", " ").split(" ")
    spaced = words[0]
    for word in words[1:]:
        spaced += "".join(data.draw(st.lists(st.sampled_from(GAPS), min_size=1, max_size=4))) + word
    disguised_text = "".join(data.draw(disguised(part)) if part.isalpha() else part for part in re.split(r"([a-z]+)", spaced))
    around = st.text(alphabet="xyz .,\n", max_size=10)
    assert found(term, data.draw(around) + disguised_text + data.draw(around))


@pytest.mark.parametrize("text", ["projectfalcon", "project_falcon", "project, falcon", "project.falcon", "projects falcon"])
def test_words_without_a_gap_are_not_the_term(text: str) -> None:
    assert not found("project falcon", text)


def test_a_separator_at_either_end_of_a_term_is_literal() -> None:
    assert Term("-rf").words is None and found("-rf", "rm -rf /") and not found("-rf", "rm rf /")
    assert Term(" a ").words is None


def test_gap_lengths() -> None:
    assert Term("project  \t falcon").length == 14 and Term("project falcon").text == "project falcon"
    assert seen_length("a \u200b\n- b") == 3 and seen_length("pro\u200bject") == 7
    assert not reads_at_least("x" + " " * 40, 10) and reads_at_least("a b c d e f", 10)


@settings(max_examples=300)
@given(st.text() | term_in_text().map(lambda case: case[1]))
def test_the_spaced_readings_are_the_folded_ones_with_marks_where_invisibles_were(text: str) -> None:
    """What lets the Rules policy fold once for both kinds of term."""
    for keep_case in (False, True):
        spaced = readings(text, keep_case=keep_case, spaced=True)
        assert {reading.replace("\u200b", "") for reading in spaced} == set(readings(text, keep_case=keep_case))


@settings(max_examples=300)
@given(st.text(), st.text())
def test_every_reading_is_a_per_character_map(left: str, right: str) -> None:
    for mode in (LOW_LINE, SPACED, LOW_LINE | SPACED):
        whole, _ = fold_with_offsets(left + right, mode=mode)
        assert whole == fold_with_offsets(left, mode=mode)[0] + fold_with_offsets(right, mode=mode)[0]
        assert fold_with_offsets(whole, mode=mode)[0] == whole


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


def test_a_deny_glob_sees_every_reading_of_a_name() -> None:
    from capsem_proxyd.policies.rules import GlobList

    globs = GlobList(deny=("*shell*",), allow=("run_*",))
    assert globs.refusal("\u202ellehs_nur") == ("deny", "deny '*shell*'")  # shown right to left as run_shell
    assert globs.refusal("run_ѕħell") == ("deny", "deny '*shell*'")  # Cyrillic ѕ, h with stroke
    assert globs.refusal("run_tests") is None
    assert globs.refusal("ruո_tests") == ("allow", "not in allow list")  # a lookalike of an allowed name


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=60), st.integers(1, 60))
def test_reads_at_least_takes_a_shortcut_on_ascii_that_agrees_with_its_definition(text: str, width: int) -> None:
    """Seams ask this for every window of every resent conversation: ASCII skips the fold, same answer."""
    assert reads_at_least(text, width) == (len(text) >= width and seen_length(fold(text)) >= width)


@given(st.text(alphabet=st.sampled_from("ab -\u2010\u200b\t\n\u00e9"), max_size=40), st.data(), st.integers(1, 30))
def test_reads_at_least_in_a_stretch_agrees_with_reading_the_stretch_alone(text: str, data: st.DataObject,
                                                                          width: int) -> None:
    """The seams read stretches of a whole prompt in place, uncopied when it is ASCII: the same answer."""
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, len(text)))
    assert reads_at_least_in(text, start, end, width, text.isascii()) == reads_at_least(text[start:end], width)


@pytest.mark.parametrize("at", [0, (1 << 18) - 6, (1 << 18) - 11, 1 << 18, 3 * (1 << 18) - 1])
def test_a_long_ascii_text_finds_the_marker_across_the_windows_it_is_lowered_in(at: int) -> None:
    """Long ASCII text is lowered a window at a time (no lowered copy of a whole reply): a marker
    across a window's edge, in any case, is found all the same."""
    from capsem_proxyd.policies.debug import _contains_marker

    text = "x" * at + "CapSem_Block" + "y" * (3 << 18)
    assert _contains_marker(text)
    assert not _contains_marker(text.replace("CapSem_Block", "CapSem_Blok"))


# -- the text as read, mapped back to whole written characters (issue 23: masking what a regex read) ----

_PIECES = st.sampled_from(["a", "K", "7", "/", " ", "\u200b", "\u00ad", "\u0301", "\u0308", "Ａ", "ﬁ", "é", "e\u0301",
                           "\u2060", "\ufeff", "½", "\u1100", "\u1161", "x\u034f"])


@given(st.lists(_PIECES, max_size=30))
def test_every_span_of_the_text_as_read_widens_to_whole_written_characters(pieces: list[str]) -> None:
    text = "".join(pieces)
    places = visible_with_places(text)
    if places is None:  # NFKC joined units (Hangul jamo): the caller refuses
        assert any(char in text for char in "\u1100\u1161")
        return
    read, starts, ends = places
    assert read == visible(text) and len(starts) == len(ends) == len(read)
    for low in range(len(read)):
        for high in range(low + 1, len(read) + 1):
            start, end = starts[low], ends[high - 1]
            assert read[low:high] in visible(text[start:end])  # nothing read in the span is left out
            # whole characters: the widened span never ends before a mark or an invisible character
            assert end == len(text) or visible_with_places(text[end]) is None or (
                text[end] not in "\u200b\u00ad\u0301\u0308\u2060\ufeff\u034f")
            assert start == 0 or text[start] not in "\u200b\u00ad\u0301\u0308\u2060\ufeff\u034f"
