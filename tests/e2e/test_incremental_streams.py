"""A short streamed answer reaches the client as it is written, not all at once at the end.

With the default configuration (the Debug policy, which holds only an end of
text that could still become its marker), a few dozen characters sent in
five chunks 0.4 s apart must reach the SDK piece by piece: when the first
text reaches the SDK, the upstream has not yet sent all of its events. With
the old fixed 64-character hold-back, an answer this short arrived whole at
the end, after the upstream's last event. The property is read off the fake
provider's own count of events sent, not a clock: a loaded machine that
slows the proxy down shifts both ends alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.genai import types as genai_types

from capsem_proxyd.config import Settings
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.metrics import scrape
from tests.support.proxy import GEMINI_KEY, Proxy, in_thread
from tests.support.sdk import policy_proxy

CHUNKS = ["Sure, ", "here is ", "a short ", "and friendly ", "answer."]
DELAY = 0.4


def _openai_chat(proxy: Proxy) -> Iterator[str]:
    with proxy.openai() as client:
        for chunk in client.chat.completions.create(
            model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "hi"}]
        ):
            yield "".join(choice.delta.content or "" for choice in chunk.choices)


def _openai_responses(proxy: Proxy) -> Iterator[str]:
    with proxy.openai() as client:
        for event in client.responses.create(model="gpt-4o-mini", input="hi", stream=True):
            yield event.delta if event.type == "response.output_text.delta" else ""


def _anthropic(proxy: Proxy) -> Iterator[str]:
    with proxy.anthropic() as client, client.messages.stream(
        model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        yield from stream.text_stream


def _gemini_sse(proxy: Proxy) -> Iterator[str]:
    with proxy.gemini() as client:
        for chunk in client.models.generate_content_stream(
            model="gemini-2.5-flash", contents="hi", config=genai_types.GenerateContentConfig()
        ):
            yield chunk.text or ""


def _gemini_json_array(proxy: Proxy) -> Iterator[str]:
    """The streamed JSON array (no ``alt=sse``), read as its bytes arrive."""
    with httpx.Client(base_url=proxy.url, timeout=30) as client, client.stream(
        "POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, headers={"x-goog-api-key": GEMINI_KEY},
    ) as response:
        for piece in response.iter_bytes():
            yield piece.decode() if b'"text"' in piece else ""


SHAPES: dict[str, Callable[[Proxy], Iterator[str]]] = {
    "chat completions": _openai_chat,
    "responses": _openai_responses,
    "anthropic messages": _anthropic,
    "gemini sse": _gemini_sse,
    "gemini json array": _gemini_json_array,
}


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_short_answer_streams_incrementally(shape: str, proxy: Proxy, fake: FakeUpstream) -> None:
    # Gemini's JSON array is read by the SDK element by element; its text is not compared whole here.
    await reaches_the_sdk_before_the_upstream_ends(shape, proxy, fake, whole=shape != "gemini json array")


MULTI_WORD_RULES = """
[on_model_response]
block = ["short and sweet", "friendly  question", "here-is-not"]
"""


async def test_multi_word_terms_hold_only_while_a_gap_may_still_complete_them(
    start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path, fake: FakeUpstream
) -> None:
    """Terms whose words a gap separates (issue 20, class 14) hold ``a short `` and ``and friendly `` while the next
    word may complete a term, and nothing more: the answer still reaches the client before the upstream ends."""
    rules_proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path, rules=MULTI_WORD_RULES)
    await reaches_the_sdk_before_the_upstream_ends("chat completions", rules_proxy, fake)


UNBOUNDED_REGEX_RULES = """
[on_model_response]
block = [{ regex = 'secret-[a-z]+' }, { regex = '[a-z0-9.]+@[a-z]+\\.com' }]
"""


@pytest.mark.parametrize("shape", ["chat completions", "anthropic messages"])
async def test_regexes_of_unbounded_width_hold_only_while_a_match_is_pending(
    shape: str, start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path, fake: FakeUpstream
) -> None:
    """Issue 22: a regex with ``+`` no longer holds the 64-character cap (this answer is shorter: it arrived
    whole at the end), only what may still become a match: the answer reaches the SDK before the upstream ends."""
    rules_proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path, rules=UNBOUNDED_REGEX_RULES)
    await reaches_the_sdk_before_the_upstream_ends(shape, rules_proxy, fake)


PII_PATTERNS = """
ner = false
check_responses = true
[entity_decisions]
EMAIL_ADDRESS = "BLOCK"
CREDIT_CARD = "BLOCK"
US_SSN = "BLOCK"
IBAN_CODE = "BLOCK"
CRYPTO = "BLOCK"
PHONE_NUMBER = "LOG"
IP_ADDRESS = "LOG"
US_BANK_NUMBER = "LOG"
"""


@pytest.mark.parametrize("shape", ["chat completions", "anthropic messages"])
async def test_a_reply_checked_by_pii_streams_incrementally(
    shape: str, start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path, fake: FakeUpstream
) -> None:
    """Issue 22: PII's pattern entities (its unbounded e-mail pattern, phone numbers found by a matcher)
    held the 64-character cap on every streamed reply, so this answer arrived whole at the end; now only what
    may still become an entity is held, and the answer reaches the SDK before the upstream ends."""
    pytest.importorskip("presidio_analyzer")
    pii_proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path, pii=PII_PATTERNS)
    await reaches_the_sdk_before_the_upstream_ends(shape, pii_proxy, fake)


async def test_a_reply_checked_by_pii_asks_pii_only_at_its_end(
    start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path, fake: FakeUpstream
) -> None:
    """Issue 22: PII's reply screen (``policies/pattern_screen.py``), handed over from the worker process that
    describes the policy: a reply in which none of its recognizers can find anything is decided once, on the
    whole reply, before its end goes. Before, every check of the stream asked PII (a worker round trip and
    Presidio over the whole reply so far): checks cost milliseconds, fell back to one per 50 ms, and every
    character waited for them."""
    pytest.importorskip("presidio_analyzer")
    pii_proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path, pii=PII_PATTERNS)
    await reaches_the_sdk_before_the_upstream_ends("chat completions", pii_proxy, fake)
    metrics = await scrape(pii_proxy.url)
    decisions = "capsem_proxyd_policy_decisions_total"
    (pii,) = {policy for policy in metrics.label_values(decisions, "policy") if "PII" in policy}
    assert metrics(decisions, hook="on_model_response", verdict="ALLOW", policy=pii) == 1


async def reaches_the_sdk_before_the_upstream_ends(
    shape: str, proxy: Any, fake: FakeUpstream, whole: bool = True
) -> None:
    """A paced answer read through ``proxy`` in ``shape``: whole (``whole``), and its first text in the SDK's
    hands while the upstream still had more than one event to send (counted by the fake, not timed: a proxy
    that held everything until the last text event fails too)."""
    fake.script(Reply(chunks=CHUNKS, chunk_delay=DELAY))

    def read() -> tuple[int, str]:
        sent_at_first_text: int | None = None
        texts = []
        for text in SHAPES[shape](proxy):
            if text and sent_at_first_text is None:
                sent_at_first_text = fake.streams[-1].events_sent
            texts.append(text)
        assert sent_at_first_text is not None, "no text arrived"
        return sent_at_first_text, "".join(texts)

    sent_at_first_text, text = await in_thread(read)
    if whole:
        assert text == "".join(CHUNKS)
    record = fake.streams[-1]
    assert record.completed and sent_at_first_text < record.events_sent - 1, (sent_at_first_text, record.events_sent)
