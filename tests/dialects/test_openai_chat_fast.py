"""The Chat Completions dialect's fast read of the common stream chunk gives the general walk's view.

``one_delta_view`` reads a one-choice text chunk without the ``Sorter`` walk
(per streamed event, that walk was a tenth of the proxy's own CPU). It must
find exactly what the walk finds: hypothesis builds chunks around the
common shape (declared fields with fitting and misfitting values, unknown
keys, nulls, nested objects, several choices, errors) and compares the two
views wherever the fast read answers; the common shapes must be answered.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from capsem_proxyd.dialects.openai_chat import one_delta_view, walked_view
from capsem_proxyd.views import StreamView, TokenView

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 3), st.sampled_from([
        "", "chatcmpl-abc123", "gpt-4o-mini", "chat.completion.chunk", "chat.completion", "stop", "length",
        "assistant", "user", "default", "fp_44709d6fcb", "capsem_block", "hello world", "tool_calls", "abc",
    ]) | st.text(max_size=6),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=2) | st.dictionaries(
    st.sampled_from(["content", "x", "role", "type"]), inner, max_size=2), max_leaves=4)
top_keys = st.sampled_from(["id", "object", "created", "model", "system_fingerprint", "service_tier", "obfuscation",
                            "usage", "error", "note", "content"])
choice_keys = st.sampled_from(["index", "finish_reason", "logprobs", "message", "note", "content"])
delta_keys = st.sampled_from(["content", "role", "refusal", "reasoning_content", "tool_calls", "audio", "note"])


@st.composite
def chunks(draw: st.DrawFn) -> dict[str, Any]:
    chunk = {key: draw(scalars | values) for key in draw(st.lists(top_keys, max_size=5, unique=True))}
    choices = []
    for _ in range(draw(st.integers(0, 2))):
        choice: dict[str, Any] = {key: draw(scalars) for key in draw(st.lists(choice_keys, max_size=3, unique=True))}
        delta = {key: draw(scalars | values) for key in draw(st.lists(delta_keys, max_size=3, unique=True))}
        choice["delta"] = draw(st.sampled_from([delta, None, "text", [delta]]))
        choices.append(choice)
    chunk["choices"] = draw(st.sampled_from([choices, choices[:1], None, {"0": choices}]))
    return chunk


@settings(max_examples=2000)
@given(chunk=chunks())
def test_the_fast_read_gives_the_walks_view(chunk: dict[str, Any]) -> None:
    fast = one_delta_view(chunk)
    if fast is not None:
        assert fast == walked_view(chunk)


@given(text=st.text(max_size=20), index=st.integers(0, 3), finish=st.sampled_from([None, "stop", "length"]),
       role=st.sampled_from([{}, {"role": "assistant"}]), model=st.sampled_from(["gpt-4o-mini", "gpt-5"]),
       extra=st.sampled_from([{}, {"system_fingerprint": "fp_44709d6fcb"}, {"service_tier": "default"}]))
def test_the_common_chunks_are_read_fast(text: str, index: int, finish: str | None, role: dict, model: str,
                                         extra: dict) -> None:
    chunk = {"id": "chatcmpl-Bx1", "object": "chat.completion.chunk", "created": 1760000000, "model": model, **extra,
             "choices": [{"index": index, "delta": {**role, "content": text}, "logprobs": None,
                          "finish_reason": finish}]}
    fast = one_delta_view(chunk)
    assert fast is not None
    assert fast == walked_view(chunk)
    assert fast.text == ([(index, text)] if text else [])
    # A token's chunk is a ``TokenView`` (no list but its text), read by the core without testing each field.
    assert (type(fast) is TokenView) == bool(text and not finish)


def _equal_but_other_type(value: Any) -> Any:
    """A value ``==`` to ``value`` of another type where one exists (``1`` for ``True``, ``1.0`` for ``1``)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return float(value)
    return value


@settings(max_examples=1000)
@given(first=chunks(), second=chunks(), retyped=st.booleans())
def test_a_chunk_read_after_another_gives_the_walks_view(first: dict[str, Any], second: dict[str, Any],
                                                          retyped: bool) -> None:
    """The fast read remembers the fields around the text of the last chunk it found declared: a next
    chunk with equal fields there (even equal values of other types) or other ones reads as the walk does."""
    one_delta_view(first)
    if retyped:  # the same fields as the first, each an equal value of another type where one exists
        second = {**{key: _equal_but_other_type(value) for key, value in first.items()}, "choices": second["choices"]}
    fast = one_delta_view(second)
    if fast is not None:
        assert fast == walked_view(second)


@given(text=st.text(min_size=1, max_size=8), index=st.integers(0, 3),
       other=st.sampled_from(["thoughts", "content", "tool_closes", "finished", "error", "stored_id", "stored_final",
                              "stored_items", "text", None]))
def test_a_token_view_equals_exactly_the_view_that_says_the_same(text: str, index: int, other: str | None) -> None:
    """``TokenView`` compares as a ``StreamView`` (the tests above compare the fast read to the walk): equal to
    the view of its one delta, unequal to one that says anything more, or other text."""
    same = StreamView(text=[(index, text)])
    if other is not None:
        setattr(same, other, {"thoughts": [(index, "t")], "content": ["c"], "tool_closes": [0], "finished": [index],
                              "error": "boom", "stored_id": "resp_1", "stored_final": True, "stored_items": ((),),
                              "text": [(index, text + "x")]}[other])
    token = TokenView(index, text)
    assert (token == same) == (other is None)
    assert (same == token) == (other is None)
    assert not hasattr(token.thoughts, "append")  # its empties are shared: nothing can add to them
