"""The masking core without a server: the scanner reads the parse's strings, and a masked body is the
client's byte for byte outside the masked values (issue 23).

Properties: over the dialects' fuzz corpus the scanner's strings are the one
parse's, in order (a differential test: should they ever differ, a body would
be rewritten at the wrong place, so ``mask_body`` refuses instead); and over
bodies whose strings escape characters at random (``\\uXXXX``, surrogate
pairs, ``\\/``) and carry JSON inside a string, every character outside the
masked occurrences is kept and each masked stretch decodes to exactly the
value (a span off by one would leave or eat a character).
"""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from capsem_proxyd.redaction.masker import Masker
from capsem_proxyd.redaction.placeholder import PLACEHOLDER
from capsem_proxyd.redaction.rewrite import Unmaskable, mask_body
from capsem_proxyd.redaction.scanner import agrees, scan, strings_of
from tests.support.fuzzing import REQUEST_SEEDS, json_values, mutations

P = "CAPSEM-MASKED-KEY-ABCDEFGHIJKLMNOPQRST"
characters = st.characters(codec="utf-8", exclude_categories=("Cs",))


@given(json_values(), st.booleans(), st.booleans())
def test_the_scanner_reads_exactly_the_strings_of_the_one_parse(value: Any, ascii_only: bool, compact: bool) -> None:
    for raw in (
        json.dumps(value, ensure_ascii=ascii_only, separators=(",", ":") if compact else None),
        orjson.dumps(value).decode(),
    ):
        assert [token.text for token in scan(raw)] == list(strings_of(json.loads(raw)))
        assert agrees(raw, json.loads(raw))


@given(st.sampled_from(sorted(REQUEST_SEEDS)).flatmap(lambda name: mutations(REQUEST_SEEDS[name])), st.integers())
def test_the_scanner_reads_the_strings_of_every_dialects_requests_however_escaped(value: Any, seed: int) -> None:
    """The dialects' request corpus, mutated, written with random escapes and spacing."""
    raw = serialised(value, random.Random(seed))
    assert [token.text for token in scan(raw)] == list(strings_of(json.loads(raw)))


def encoded(text: str, rng: random.Random) -> str:
    """``text`` as the raw contents of a JSON string, each character escaped or not at random."""
    out = []
    for char in text:
        code = ord(char)
        escape = char in '"\\' or code < 0x20 or rng.random() < 0.3
        if not escape:
            out.append(char)
        elif char == "/" and rng.random() < 0.5:
            out.append("\\/")
        elif char in '"\\' and rng.random() < 0.5:
            out.append("\\" + char)
        elif code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04X}")
        else:
            out.append(f"\\u{code:04x}")
    return '"' + "".join(out) + '"'


def serialised(value: Any, rng: random.Random) -> str:
    """``value`` as JSON with random spacing and random escapes."""
    space = rng.choice(["", " ", "\n  "])
    if isinstance(value, str):
        return encoded(value, rng)
    if isinstance(value, dict):
        members = [f"{encoded(key, rng)}{space}:{space}{serialised(item, rng)}" for key, item in value.items()]
        return "{" + space + f",{space}".join(members) + space + "}"
    if isinstance(value, list):
        return "[" + f",{space}".join(serialised(item, rng) for item in value) + "]"
    return json.dumps(value)


def replaced(value: Any, secret: str) -> Any:
    """What the provider must read: every occurrence of ``secret`` in every string value replaced,
    in JSON inside a string too."""
    if isinstance(value, str):
        direct = value.replace(secret, P)
        if value.lstrip()[:1] not in ("{", "["):
            return direct
        try:
            inner = json.loads(value)
        except ValueError:  # not JSON: masked as plain text
            return direct
        return ("inner", replaced(inner, secret))
    if isinstance(value, dict):
        return {key: replaced(item, secret) for key, item in value.items()}
    if isinstance(value, list):
        return [replaced(item, secret) for item in value]
    return value


def read_back(value: Any) -> Any:
    """The forwarded body as ``replaced`` shapes it (JSON inside a string parsed where it was)."""
    if isinstance(value, str):
        if value.lstrip()[:1] in ("{", "["):
            try:
                return ("inner", read_back(json.loads(value)))
            except ValueError:
                return value
        return value
    if isinstance(value, dict):
        return {key: read_back(item) for key, item in value.items()}
    if isinstance(value, list):
        return [read_back(item) for item in value]
    return value


def decodes_to(stretch: str, secret: str) -> bool:
    try:
        once = json.loads('"' + stretch + '"')
        return once == secret or json.loads('"' + once + '"') == secret
    except ValueError:
        return False


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, str]:
    secret = draw(st.text(characters, min_size=3, max_size=8).filter(lambda text: text.strip() == text and text))
    words = st.text(characters, max_size=6)

    def carrying() -> str:
        parts = draw(st.lists(words, min_size=1, max_size=4))
        return secret.join(parts) if len(parts) > 1 else parts[0] + secret

    arguments = json.dumps({"cmd": carrying(), "n": 1}, ensure_ascii=draw(st.booleans()))
    value = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "user", "content": carrying()},
            {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "shell", "arguments": arguments}}]},
            {"role": "tool", "content": [{"type": "text", "text": carrying()}, {"type": "text", "text": draw(words)}]},
        ],
        "temperature": 0.5,
    }
    return serialised(value, random.Random(draw(st.integers()))), secret


@given(bodies())
def test_a_masked_body_is_the_clients_byte_for_byte_outside_the_values(body: tuple[str, str]) -> None:
    raw, secret = body
    parsed = json.loads(raw)
    try:
        masked = mask_body(raw, parsed, {secret: P})
    except Unmaskable:  # only where the value is in a key or spans the syntax of the JSON in a string
        arguments = parsed["messages"][1]["tool_calls"][0]["function"]["arguments"]
        inner = json.loads(arguments)
        keys = [key for key in strings_of(parsed) if isinstance(key, str)]
        assert any(secret in key for key in keys) or any(secret in key for key in inner) or not any(
            secret in text for text in strings_of(inner))
        return
    forwarded = json.loads(masked.text)
    assert read_back(forwarded) == replaced(parsed, secret)
    # Outside the masked stretches every character is the client's; each stretch decodes to the value exactly.
    pieces = masked.text.split(P)
    position = 0
    for number, piece in enumerate(pieces):
        assert raw.startswith(piece, position)
        position += len(piece)
        if number == len(pieces) - 1:
            break
        following = pieces[number + 1]
        ends = [end for end in range(position + 1, len(raw) + 1)
                if raw.startswith(following, end) and decodes_to(raw[position:end], secret)]
        assert ends, "a masked stretch does not decode to the value"
        position = ends[0]
    assert position == len(raw)


def test_a_value_in_an_object_key_is_refused_and_one_found_nowhere_too() -> None:
    raw = '{"messages": {"AKIAIOSFODNN7EXAMPLE": "x"}}'
    with pytest.raises(Unmaskable, match="object key"):
        mask_body(raw, json.loads(raw), {"AKIAIOSFODNN7EXAMPLE": P})
    with pytest.raises(Unmaskable, match="could not be located"):
        mask_body(raw, json.loads(raw), {"nowhere-to-be-seen": P})


def test_a_value_across_two_strings_is_masked_on_both_sides_of_the_seam() -> None:
    raw = '{"messages": [{"content": "key: AKIAIOSF"}, {"content": "ODNN7EXAMPLE and more"}]}'
    masked = mask_body(raw, json.loads(raw), {"AKIAIOSF\nODNN7EXAMPLE": P})
    assert masked.text == f'{{"messages": [{{"content": "key: {P}"}}, {{"content": "{P} and more"}}]}}'


def test_placeholders_are_stable_per_tenant_collision_free_and_unescaped() -> None:
    masker = Masker(b"k" * 32, "0123456789abcdef")
    first = masker.placeholder("tenant-a", "AKIAIOSFODNN7EXAMPLE", "aws-key-id")
    assert first == masker.placeholder("tenant-a", "AKIAIOSFODNN7EXAMPLE", "aws-key-id")
    assert first != masker.placeholder("tenant-b", "AKIAIOSFODNN7EXAMPLE", "aws-key-id")
    assert PLACEHOLDER.fullmatch(first) and first.startswith("CAPSEM-MASKED-AWSKEYID-")
    assert json.dumps(first) == f'"{first}"' and not set(first) & set("<>&\"'_* ")
    raw = '{"a": "AKIAIOSFODNN7EXAMPLE"}'
    Masker(b"k" * 32, "id").mask("t", raw, json.loads(raw), {"AKIAIOSFODNN7EXAMPLE": "k"})


@given(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=2, max_size=40),
    st.data(), st.booleans(), st.integers(),
)
def test_a_value_split_across_adjacent_parts_is_masked_in_each_and_nothing_else_changes(
    secret: str, data: st.DataObject, line_break: bool, seed: int,
) -> None:
    """Adjacent text parts read side by side (or two pieces a line apart): the value's head ends one
    string, its tail starts a later one, with a part's ``"type"`` between; each written with random
    escapes. Both stretches are masked; every other raw character is the client's."""
    cut = data.draw(st.integers(1, len(secret) - 1))
    before, after = data.draw(st.text(characters, max_size=6)), data.draw(st.text(characters, max_size=6))
    assume(secret not in before + secret[:cut] and secret not in secret[cut:] + after)
    rng = random.Random(seed)
    first, second = before + secret[:cut], secret[cut:] + after
    raw_first, raw_second = encoded(first, rng), encoded(second, rng)
    raw = f'{{"content": [{{"type": "text", "text": {raw_first}}}, {{"type": "text", "text": {raw_second}}}]}}'
    value = secret[:cut] + ("\n" if line_break else "") + secret[cut:]
    masked = mask_body(raw, json.loads(raw), {value: P}).text
    expected = (f'{{"content": [{{"type": "text", "text": {encoded_kept(raw_first, before)}{P}"}}, '
                f'{{"type": "text", "text": "{P}{encoded_tail(raw_second, after)}}}]}}')
    assert masked == expected


def encoded_kept(raw: str, kept: str) -> str:
    """The raw string ``raw`` (quotes included) cut after the raw characters of its first ``len(kept)``
    decoded ones (without the closing quote)."""
    (token,) = scan(raw)
    return raw[:token.raw_index(len(kept))]


def encoded_tail(raw: str, kept: str) -> str:
    """The raw string ``raw`` from the raw characters of its last ``len(kept)`` decoded ones (closing quote
    included)."""
    (token,) = scan(raw)
    return raw[token.raw_index(len(token.text) - len(kept)):]


def test_a_value_across_thousands_of_tiny_parts_is_refused_not_searched_without_end() -> None:
    """One-character parts that each begin the rest of a value: the search is bounded (and its recursion
    too): refused, never a RecursionError or a search of every way to combine them."""
    parts = [{"type": "text", "text": "A"} for _ in range(3000)] + [{"type": "text", "text": "Bx"}]
    raw = json.dumps({"content": parts})
    with pytest.raises(Unmaskable, match="within bounds"):
        mask_body(raw, json.loads(raw), {"A" * 1500 + "B": P})
    few = json.dumps({"content": parts[-40:]})
    masked = json.loads(mask_body(few, json.loads(few), {"A" * 20 + "B": P}).text)
    texts = [part["text"] for part in masked["content"]]
    assert texts[-1] == P + "x" and texts[-21:-1] == [P] * 20  # the value's parts (and nothing else but "A"s)
    assert set(texts[:-21]) <= {"A", P}
