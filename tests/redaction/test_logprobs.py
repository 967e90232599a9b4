"""A masked reply's logprobs: whatever tokens the key is cut into, they spell the placeholder instead.

Hypothesis cuts a text holding the key into tokens at any points; after ``mask_logprobs`` the tokens spell
the text with the placeholder where the key was, each changed token's bytes are its UTF-8, its alternatives
are gone, and the raw text is the original outside the changed tokens' values.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.redaction.logprobs import mask_logprobs

KEY = "AKIAIOSFODNN7EXAMPLE"
PLACEHOLDER = "CAPSEM-MASKED-AWSKEYID-ABCDEFGHIJKLMNOPQRST"
TEXT = f"é key: {KEY} \U0001f600 done"


@given(st.sets(st.integers(1, len(TEXT) - 1), max_size=8), st.booleans())
def test_the_tokens_spell_the_placeholder_wherever_the_key_is_cut(cuts: set[int], ascii_only: bool) -> None:
    edges = [0, *sorted(cuts), len(TEXT)]
    tokens = [TEXT[start:end] for start, end in zip(edges, edges[1:])]
    entries = [{"token": token, "logprob": -1.5e0, "bytes": list(token.encode()),
                "top_logprobs": [{"token": token, "logprob": -1.5, "bytes": list(token.encode())}]} for token in tokens]
    raw = json.dumps({"choices": [{"logprobs": {"content": entries}}]}, ensure_ascii=ascii_only)
    masked = mask_logprobs(raw, json.loads(raw), {KEY: PLACEHOLDER})
    got = json.loads(masked)["choices"][0]["logprobs"]["content"]
    assert "".join(entry["token"] for entry in got) == TEXT.replace(KEY, PLACEHOLDER)
    for before, after in zip(entries, got):
        if before["token"] == after["token"]:
            assert after == before
        else:
            assert after["bytes"] == list(after["token"].encode()) and after["top_logprobs"] == []
            assert after["logprob"] == before["logprob"]
