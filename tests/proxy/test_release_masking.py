"""Masking in a stream's release core: the value's pieces, held back, go out as the placeholder.

Played by hand as in ``test_release.py``: a Rules redact rule's hold-back, events
carrying an AWS key id cut at every point, and a "policy" that asks to mask the
key once the text holds it. What goes out spells the text with the placeholder
where the key was, and each event is the provider's byte for byte outside its
text field's string.
"""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.enforcement.holdbacks import channel_matchers
from capsem_proxyd.policies.rules import RulesPolicy
from capsem_proxyd.proxy.release import Check, CheckSchedule, StreamRelease, TextCheck
from capsem_proxyd.views import StreamView

KEY = "AKIAIOSFODNN7EXAMPLE"
PLACEHOLDER = "CAPSEM-MASKED-AWSKEYID-ABCDEFGHIJKLMNOPQRST"
TEXT = f"The key: {KEY}, in eu-west-1."
POLICY = RulesPolicy.from_config({"on_model_response": {"redact": [
    {"name": "aws-key-id", "regex": "AKIA[0-9A-Z]{16}", "case_sensitive": True}]}})
assert POLICY is not None


def event(piece: str, number: int) -> bytes:
    chunk = {"id": f"chatcmpl-{number}", "choices": [{"index": 0, "delta": {"content": piece}, "logprobs": None}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


@given(st.sets(st.integers(1, len(TEXT) - 1), max_size=6))
def test_a_key_cut_anywhere_goes_out_as_its_placeholder_every_other_byte_kept(cuts: set[int]) -> None:
    edges = [0, *sorted(cuts), len(TEXT)]
    pieces = [TEXT[start:end] for start, end in zip(edges, edges[1:])]
    core = StreamRelease(CheckSchedule(), channel_matchers([("Rules", POLICY.stream_holdback)]))
    written: list[bytes] = []

    def answer(checks: list[Check]) -> None:  # the policy: mask the key once the checked text holds it
        for check in checks:
            if isinstance(check, TextCheck) and KEY in check.text:
                core.mask({KEY: PLACEHOLDER})
            core.checked(check)
        release = core.release()
        if release is not None:
            written.append(release.data())

    for number, piece in enumerate(pieces):
        answer(core.accept(StreamView(text=[(0, piece)]), event(piece, number), 0.0))
        answer(core.read_over())
    answer(core.finish())
    out = b"".join(written)
    events = [line[6:] for line in out.split(b"\n\n") if line]
    assert len(events) == len(pieces)
    text = ""
    for number, (raw, piece) in enumerate(zip(events, pieces)):
        sent = json.loads(raw)["choices"][0]["delta"]["content"]
        text += sent
        # outside its text field's string, the event is the provider's byte for byte
        assert re.sub(rb'"content": "[^"]*"', b"", raw) == re.sub(rb'"content": "[^"]*"', b"", event(piece, number)[6:-2])
    assert text == TEXT.replace(KEY, PLACEHOLDER)
