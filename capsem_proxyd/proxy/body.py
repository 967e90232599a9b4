"""One interpretation of a request body: the JSON we check is the JSON the provider reads.

The body is forwarded as the client's bytes, so those bytes must have exactly
one reading. Refused with a 400 naming the problem, before any policy runs:

* a charset other than UTF-8 (the provider decodes UTF-8; a check of another
  decoding would check other text), and bytes that are not UTF-8;
* the same key twice in one object, at any depth: parsers disagree on which
  one counts (orjson and most others keep the last, some the first), so the
  value a policy saw may not be the one the model reads;
* ``NaN``/``Infinity`` (not JSON) and unpaired UTF-16 surrogate escapes
  (``"\\ud800"``: text no UTF-8 reader can represent the same way).

Python's json module parses here, not orjson: it reports every object's pairs
before they become a dict, which is where duplicates show. Measured on a 224 kB
agent-session body: 0.39 ms, against orjson's 0.09 ms without the check.
"""

from __future__ import annotations

import json
import re
from typing import Any

from capsem_proxyd.errors import ErrorCode, ProxyError, bad_request

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class _Refused(Exception):
    def __init__(self, error: ProxyError) -> None:
        self.error = error


def parse_request_body(raw: bytes, content_type: str | None) -> dict[str, Any]:
    """The body's one reading as a JSON object; ProxyError(400) for anything ambiguous."""
    _check_charset(content_type)
    if not raw:
        raise bad_request("The request body is empty; expected a JSON object.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise bad_request(f"The request body is not UTF-8 (byte {error.start}).", ErrorCode.INVALID_ENCODING) from None
    if text.startswith("\ufeff"):
        raise bad_request("The request body starts with a byte-order mark; send plain UTF-8 JSON.", ErrorCode.INVALID_ENCODING)
    try:
        body = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constants)
    except _Refused as refused:
        raise refused.error from None
    except json.JSONDecodeError as error:
        raise bad_request(f"The request body is not valid JSON: {error}.") from None
    except RecursionError:
        raise bad_request("The request body nests JSON too deeply.") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    if _SURROGATE_ESCAPE.search(raw):
        _refuse_lone_surrogates(body)
    return body


def _check_charset(content_type: str | None) -> None:
    if not content_type:
        return
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise bad_request(
                f"The request body's charset is {value.strip()!r}; capsem-proxyd reads (and providers expect) UTF-8.",
                ErrorCode.UNSUPPORTED_CHARSET,
            )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    body = dict(pairs)
    if len(body) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise _Refused(bad_request(
            f"The request body gives the key {duplicate[:64]!r} twice in one object; send each key once.",
            ErrorCode.DUPLICATE_KEY,
        ))
    return body


def _no_constants(name: str) -> Any:
    raise _Refused(bad_request(f"The request body contains {name}, which is not JSON."))


def _refuse_lone_surrogates(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings = [item]
        elif isinstance(item, dict):
            strings = list(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for string in strings:
            try:
                string.encode("utf-8")
            except UnicodeEncodeError:
                raise bad_request("The request body has an unpaired UTF-16 surrogate escape.", ErrorCode.INVALID_ENCODING) from None
