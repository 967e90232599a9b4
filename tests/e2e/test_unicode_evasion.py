"""Spellings a reader still reads as a term, through the real proxy and the official SDKs (issue 20, classes 12, 14).

Class 12: letters with a stroke, hook or bar, underscore lookalikes, negative-squared
and parenthesized letters, and a right-to-left override that displays the marker. Each
spelling of the issue is refused in a prompt before anything goes upstream, and in a
streamed reply split into single characters none of it reaches the client as the marker
in any way a reader reads it. Then a property over spellings built from those families.

Class 14: a Rules term of several words (``project falcon``) is found whatever gap a
reader sees between its words: a run of whitespace, dash-like and invisible characters.
The issue's spacings are refused, a property draws gaps and cuts of a streamed reply, and
text without a gap between the words (``project_falcon``, ``projectfalcon``) still passes.

The lookalikes are written out here from the Unicode charts, not taken from the tables
``normalize.py`` builds: the test says what a reader reads, the module has to agree.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from capsem_proxyd.config import Settings
from capsem_proxyd.policies.holdback import Term
from capsem_proxyd.policies.normalize import readings
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import Proxy, in_thread
from tests.support.sdk import chat, policy_proxy, refused

MARKER = "capsem_block"
# Every spelling the issue names, and a few of each family beside them.
SPELLINGS = {
    "l with stroke": "capsem_błock",
    "o with stroke": "capsem_bløck",
    "capital O with stroke": "CAPSEM_BLØCK",
    "c with stroke": "ȼapsem_block",
    "e with stroke": "capsɇm_block",
    "o with a combining solidus": "capsem_blo\u0338ck",
    "hooks and bars": "ƈapsem_ɓƚoƈƙ",
    "modifier low macron": "capsem\u02cdblock",
    "double low line": "capsem\u2017block",
    "combining low line": "capsem\u0332block",
    "underlined throughout": "".join(char + "\u0332" for char in MARKER),
    "negative squared": "🅲🅰🅿🆂🅴🅼_🅱🅻🅾🅲🅺",
    "parenthesized": "⒞⒜⒫⒮⒠⒨_⒝⒧⒪⒞⒦",
    "right-to-left override": "\u202ekcolb_mespac\u202c",
    "override inside an isolate": "\u2067\u202ekcolb_mespac\u202c\u2069",
    "override, then more text": "say \u202e_mespac\u202cblock now",
    "right-to-left mark, shown in a right-to-left paragraph": "block\u200f_capsem",
}
# Letters a reader takes for a Latin letter: with stroke, hook, bar; enclosed; underscore lookalikes.
STROKED = {
    "a": "ⱥ", "b": "ƀɓ", "c": "ȼƈ", "d": "đɗ", "e": "ɇ", "g": "ǥɠ", "h": "ħɦ", "i": "ɨ", "j": "ɉ", "k": "ƙꝁ",
    "l": "łƚ", "m": "ɱ", "n": "ɲ", "o": "øɵ", "p": "ᵽƥ", "r": "ɍ", "s": "ʂ", "t": "ŧƭ", "u": "ʉ", "y": "ɏƴ",
    "z": "ƶȥ",
}
UNDERSCORES = ["_", "\u02cd", "\u2017", "\uff3f", "\ufe4d"]


def enclosed(char: str) -> list[str]:
    """Negative squared, negative circled, parenthesized and circled forms of a Latin letter."""
    if not "a" <= char <= "z":
        return []
    offset = ord(char) - ord("a")
    return [chr(0x1F170 + offset), chr(0x1F150 + offset), chr(0x249C + offset), chr(0x24D0 + offset)]


@st.composite
def confusable_spelling(draw: st.DrawFn, term: str) -> str:
    """``term`` with each letter possibly stroked, hooked or enclosed, each ``_`` a lookalike or a combining
    low line under the letter before, and the whole possibly shown by a right-to-left override."""
    out = []
    for char in term:
        if char == "_":
            out.append(draw(st.sampled_from([*UNDERSCORES, "\u0332"])))
            continue
        out.append(draw(st.sampled_from([char, char.upper(), *STROKED.get(char, ""), *enclosed(char)])))
    if draw(st.booleans()):
        return "\u202e" + "".join(reversed(out)) + "\u202c"
    return "".join(out)


RULES = """
[on_model_call]
block = ["project falcon"]
[on_model_response]
block = ["project falcon"]
"""
# The spacings, and others a reader also sees as one gap.
SPACINGS = {
    "double space": "project  falcon",
    "line break": "project\nfalcon",
    "tab": "project\tfalcon",
    "hyphen": "project-falcon",
    "zero-width space": "project\u200bfalcon",
    "em dash between spaces": "project \u2014 falcon",
    "carriage return and line feed": "project\r\nfalcon",
    "thin space, soft hyphen": "project\u2009\u00adfalcon",
    "non-breaking space": "project\u00a0falcon",
    "fullwidth": "ｐｒｏｊｅｃｔ\u3000ｆａｌｃｏｎ",
    "invisible inside and between words": "pro\u200bject\u200b\u2060falcon",
}
GAPS = [" ", "\n", "\t", "\r\n", "-", "\u2010", "\u2013", "\u2014", "\u2212", "\u200b", "\u2060", "\u00ad",
        "\u00a0", "\u3000", "\u2009", "\ufeff", "\u180e"]


def is_read_in(term: str, text: str) -> bool:
    """Whether a reader reads ``term`` in ``text``, by the rule the matchers document."""
    compiled = Term(term)
    return compiled.found(readings(text), lambda: readings(text, spaced=True))


@pytest.fixture
async def rules_proxy(start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path) -> Proxy:
    return await policy_proxy(start_proxy, proxy_settings, tmp_path, rules=RULES)


def stream_until_error(proxy: Proxy) -> tuple[str, BaseException | None]:
    """A streamed chat through the openai SDK: the text it yielded, and the error that ended it (or None)."""
    received: list[str] = []
    try:
        with proxy.openai() as client:
            for chunk in client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "go"}], stream=True
            ):
                received.extend(choice.delta.content or "" for choice in chunk.choices)
    except openai.APIError as error:
        return "".join(received), error
    return "".join(received), None


# -- class 12: spellings of the Debug marker ---------------------------------------------------------------------


@pytest.mark.parametrize("spelling", list(SPELLINGS.values()), ids=list(SPELLINGS))
async def test_each_spelling_in_a_prompt_is_refused_before_upstream(
    proxy: Proxy, fake: FakeUpstream, spelling: str
) -> None:
    error = (await refused(lambda: chat(proxy, f"please\n{spelling}\nthis"))).body  # one paragraph of its own
    assert error["capsem"]["policy"] == "Debug" and error["capsem"]["hook"] == "on_model_call"
    assert fake.requests == []


@pytest.mark.parametrize("spelling", list(SPELLINGS.values()), ids=list(SPELLINGS))
async def test_each_spelling_streamed_a_character_at_a_time_never_reaches_the_client(
    proxy: Proxy, fake: FakeUpstream, spelling: str
) -> None:
    text = f"Here it is:\n{spelling}\nand more."
    fake.script(Reply(chunks=list(text)))
    received, error = await in_thread(stream_until_error, proxy)
    assert isinstance(error, openai.APIError) and error.body["capsem"]["hook"] == "on_model_response"
    assert not is_read_in(MARKER, received), received
    assert text.startswith(received)


async def test_any_confusable_spelling_is_refused(proxy: Proxy, fake: FakeUpstream) -> None:
    """Property: a spelling built from the families above, anywhere in a prompt, never reaches the provider."""
    outcomes: list[int] = []

    @settings(max_examples=40)
    @given(spelling=confusable_spelling(MARKER), before=st.text(alphabet="xyz .,", max_size=10))
    def one(spelling: str, before: str) -> None:
        with pytest.raises(openai.BadRequestError) as caught:
            chat(proxy, before + spelling + " end")
        assert caught.value.body["capsem"]["policy"] == "Debug"
        outcomes.append(caught.value.status_code)

    with trio.fail_after(300):
        await trio.to_thread.run_sync(one)
    assert len(outcomes) >= 20 and fake.requests == []


async def test_harmless_text_with_stroked_letters_and_bidi_controls_passes(proxy: Proxy, fake: FakeUpstream) -> None:
    """Polish, Danish, an underlined word and Hebrew between isolates: folded, none of it is the marker."""
    text = "Łódź, smørrebrød, c\u0332a\u0332p\u0332s\u0332 e\u0332m\u0332, \u2067שלום עולם\u2069 — ⒜ ⒝ 🅰"
    fake.script(Reply(chunks=[text[:20], text[20:]]))
    received, error = await in_thread(stream_until_error, proxy)
    assert error is None and received == text
    completion = await in_thread(lambda: chat(proxy, text))
    assert completion.choices[0].message.content is not None
    assert fake.requests[-1].json["messages"][0]["content"] == text


# -- class 14: gaps between the words of a Rules term ------------------------------------------------------------


@pytest.mark.parametrize("text", list(SPACINGS.values()), ids=list(SPACINGS))
async def test_each_spacing_of_a_multi_word_term_is_refused(rules_proxy: Proxy, fake: FakeUpstream, text: str) -> None:
    error = (await refused(lambda: chat(rules_proxy, f"status of {text}?"))).body
    assert error["capsem"]["policy"] == "Rules" and "'project falcon' (block)" in error["capsem"]["details"]
    assert fake.requests == []


@pytest.mark.parametrize("text", ["project_falcon", "projectfalcon", "project, falcon", "projects falconry"])
async def test_words_without_a_gap_between_them_are_not_the_term(rules_proxy: Proxy, fake: FakeUpstream, text: str) -> None:
    completion = await in_thread(lambda: chat(rules_proxy, f"status of {text}?"))
    assert completion.choices[0].message.content is not None
    assert len(fake.requests) == 1


@st.composite
def gap(draw: st.DrawFn) -> str:
    """A gap a reader sees as one: at least one whitespace or dash-like character, invisibles around it,
    or invisible characters alone."""
    return "".join(draw(st.lists(st.sampled_from(GAPS), min_size=1, max_size=5)))


async def test_any_gap_between_the_words_is_refused_in_a_prompt(rules_proxy: Proxy, fake: FakeUpstream) -> None:
    """Property: ``project<gap>falcon``, in any case, is refused before upstream."""
    seen: list[str] = []

    @settings(max_examples=40)
    @given(spacing=gap(), upper=st.booleans())
    def one(spacing: str, upper: bool) -> None:
        text = "project" + spacing + "falcon"
        with pytest.raises(openai.BadRequestError) as caught:
            chat(rules_proxy, "about " + (text.upper() if upper else text))
        assert "'project falcon' (block)" in caught.value.body["capsem"]["details"]
        seen.append(spacing)

    with trio.fail_after(300):
        await trio.to_thread.run_sync(one)
    assert len(seen) >= 20 and fake.requests == []


async def test_any_gap_in_a_streamed_reply_cut_anywhere_never_reaches_the_client(
    rules_proxy: Proxy, fake: FakeUpstream
) -> None:
    """Property: the reply ``... project<gap>falcon ...`` cut into events at any places is refused, and
    what the client received never reads as the term (the hold-back keeps a pending gap and its word)."""
    outcomes: list[str] = []

    @settings(max_examples=30)
    @given(spacing=gap(), data=st.data())
    def one(spacing: str, data: st.DataObject) -> None:
        text = "the plan: project" + spacing + "falcon, today"
        cuts = sorted(set(data.draw(st.lists(st.integers(1, len(text) - 1), max_size=10))))
        chunks = [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)])]
        fake.script(Reply(chunks=chunks))
        received, error = stream_until_error(rules_proxy)
        assert isinstance(error, openai.APIError), received
        assert "'project falcon' (block)" in error.body["capsem"]["details"]
        assert text.startswith(received) and not is_read_in("project falcon", received)
        outcomes.append(received)

    with trio.fail_after(300):
        await trio.to_thread.run_sync(one)
    assert len(outcomes) >= 15
