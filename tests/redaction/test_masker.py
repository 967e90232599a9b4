"""The tenants' memory of masked values, read from a body's raw bytes (issue 23).

``Masker.recalled_in`` lets the pipeline skip the walk of every string of a turn
for a tenant's remembered values when the raw bytes hold none of them. It may say
True when unsure, never False where ``mask_body`` would mask a remembered value:
a property over bodies written with random escapes (``\\uXXXX``, ``\\/``, ``\\n``
right before the value, an escaped backslash), with the value bare in a message
and in JSON inside a string (a tool call's arguments).
"""

from __future__ import annotations

import json
import random

from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.redaction.masker import Masker
from tests.redaction.test_rewrite import characters, serialised

TOKEN_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_.~-"
# What may stand right before or after a value: a character no token holds (some escaped in JSON), or none.
SEPARATORS = ["", " ", "\n", "\t", "\r", "\b", "\f", '"', "\\", ":", "é", "\\n", "\x01"]
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"


def remembering(secret: str) -> Masker:
    """A masker that masked ``secret`` once for tenant ``t``, with its label (the context that found it)."""
    masker = Masker(b"k" * 32, "id")
    first = json.dumps({"content": "AWS_SECRET_ACCESS_KEY=" + secret})
    masker.mask("t", first, json.loads(first), {secret: "aws-secret-access-key"})
    return masker


@given(
    st.text(st.sampled_from(TOKEN_CHARACTERS), min_size=12, max_size=44), st.text(characters, max_size=5),
    st.sampled_from(SEPARATORS), st.sampled_from(SEPARATORS), st.integers(), st.booleans(),
)
def test_a_body_where_masking_finds_a_remembered_value_is_always_recalled(
    secret: str, words: str, before: str, after: str, seed: int, ascii_only: bool,
) -> None:
    masker = remembering(secret)
    text = words + before + secret + after + words
    arguments = json.dumps({"cmd": text, "n": 1}, ensure_ascii=ascii_only)
    value = {"model": "m", "messages": [{"role": "user", "content": text},
                                         {"role": "assistant", "tool_calls": [{"function": {"arguments": arguments}}]}]}
    for raw in (serialised(value, random.Random(seed)), json.dumps(value, ensure_ascii=ascii_only),
                json.dumps(value, ensure_ascii=False).replace("/", "\\/")):
        masked, _ = masker.mask("t", raw, json.loads(raw), {})
        recalled = masker.recalled_in("t", raw.encode())
        if masked.counts:
            assert recalled is None or secret in recalled
        # reading only the strings that hold a value the raw bytes recalled masks exactly the same
        assert masker.mask("t", raw, json.loads(raw), {}, present=recalled)[0] == masked


def test_a_body_without_the_tenants_values_is_not_walked_for_them() -> None:
    masker = remembering(AWS_SECRET)
    other = json.dumps({"messages": [{"content": "line one\nwJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEZ and more"}]})
    assert masker.recalled_in("t", other.encode()) == frozenset()
    assert masker.recalled_in("another tenant", json.dumps({"content": AWS_SECRET}).encode()) == frozenset()
    quoted = json.dumps({"messages": [{"content": f"the key was\n{AWS_SECRET}, rotate it"}]})
    assert masker.recalled_in("t", quoted.encode()) == {AWS_SECRET}
    assert masker.recalled_in("t", quoted.replace("/", "\\/").encode()) is None  # the raw bytes cannot tell
    masked, _ = masker.mask("t", quoted, json.loads(quoted), {})
    assert AWS_SECRET not in masked.text and masked.counts
