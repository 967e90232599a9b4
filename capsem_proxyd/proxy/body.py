"""One interpretation of a request body: the JSON we check is the JSON the provider reads.

The body is forwarded as the client's bytes, so those bytes must have exactly
one reading. Refused with a 400 naming the problem, before any policy runs:

* a content type other than ``application/json`` (a form, multipart or text
  body is read by a provider as that, or refused), a parameter other than one
  ``charset`` (``charset*=``, RFC 2231, is not one), a charset other than UTF-8
  (the provider decodes UTF-8; a check of another decoding would check other
  text), and bytes that are not UTF-8;
* the same key twice in one object, at any depth: parsers disagree on which
  one counts (orjson and most others keep the last, some the first), so the
  value a policy saw may not be the one the model reads;
* ``NaN``/``Infinity`` (not JSON) and unpaired UTF-16 surrogate escapes
  (``"\\ud800"``: text no UTF-8 reader can represent the same way);
* for an API that reads a field under two spellings (Gemini's camelCase and
  snake_case, ``Dialect.double_spellings``), an object giving one field both
  ways: which one the provider reads is its choice. Refused here, object by
  object as the parse builds them, rather than by a walk of the parsed body:
  on the last turn of ``bench/agent.py``'s Gemini session (230 kB, timed in
  process) the walk cost 120-170 us, the parse with the test about what it
  costs without (555 against 553 us).

Python's json module parses here, not orjson: it reports every object's pairs
before they become a dict, which is where duplicates show. Measured on a 224 kB
agent-session body: 0.39 ms, against orjson's 0.09 ms without the check.

A non-streamed reply is read here too (``reply_text``, ``parse_reply``), with
the same refusals as orjson made of it (a 502: the provider's fault), by
Python's json module from the reply's text, for memory: the text is what the
proxy keeps and sends (encoded again as it goes, the provider's exact bytes),
and json builds the reply from it with no copy of its own, where orjson
copies its input whole before parsing (a 20 MiB reply: 40 MiB of peak
resident memory for orjson on bytes or text, 20 MiB for json on text). Each
reply peaks at about twice its size: bytes and text while it is decoded, text
and the parsed reply while it is checked. Parsing costs more (a 3 kB chat
reply: 9 us against orjson's 3 us).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from capsem_proxyd.dialects.content import refuse_spelled_twice
from capsem_proxyd.errors import ErrorCode, ProxyError, bad_request, upstream_unavailable

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_TEXT = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")  # a code point no UTF-8 can carry: an unpaired escape's
# One content-type parameter (RFC 9110 8.3.1): a token, "=", a token or a quoted string without escapes.
# An RFC 2231 name (charset*) is a token of its own, so it is no charset here, nor is it read as one.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAMETER = re.compile(rf'\s*({_TOKEN})=({_TOKEN}|"[^"\\]*")\s*')
_TAKES = "a JSON endpoint takes application/json, optionally with charset=utf-8"


class _Refused(Exception):
    def __init__(self, error: ProxyError) -> None:
        self.error = error


def parse_request_body(raw: bytes, content_type: str | None,
                       double_spellings: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The body's one reading as a JSON object; ProxyError(400) for anything ambiguous.

    ``double_spellings``: the API's snake_case field names and their camelCase twins
    (``Dialect.double_spellings``); an object giving one field both ways is refused too."""
    _check_content_type(content_type)
    if not raw:
        raise bad_request("The request body is empty; expected a JSON object.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise bad_request(f"The request body is not UTF-8 (byte {error.start}).", ErrorCode.INVALID_ENCODING) from None
    if text.startswith("\ufeff"):
        raise bad_request("The request body starts with a byte-order mark; send plain UTF-8 JSON.", ErrorCode.INVALID_ENCODING)
    try:
        hook = _unique_spellings(double_spellings) if double_spellings else _unique_keys
        body = json.loads(text, object_pairs_hook=hook, parse_constant=_no_constants)
    except _Refused as refused:
        raise refused.error from None
    except json.JSONDecodeError as error:
        raise bad_request(f"The request body is not valid JSON: {error}.") from None
    except RecursionError:
        raise bad_request("The request body nests JSON too deeply.") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(body):
        raise bad_request("The request body has an unpaired UTF-16 surrogate escape.", ErrorCode.INVALID_ENCODING)
    return body


def reply_text(raw: bytes | bytearray) -> str:
    """A reply body's text (ProxyError 502 when it is not UTF-8). Encoded again it is ``raw`` exactly."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise upstream_unavailable("The upstream provider answered with a body that is not valid JSON.") from None


def parse_reply(text: str) -> Any:
    """A reply's one reading (ProxyError 502 for what is not JSON, as orjson refused it: NaN and
    Infinity, unpaired surrogate escapes, nesting beyond the parser's reach)."""
    try:
        body = json.loads(text, parse_constant=_not_json_in_reply)
    except (json.JSONDecodeError, _Refused):
        raise upstream_unavailable("The upstream provider answered with a body that is not valid JSON.") from None
    except RecursionError:
        raise upstream_unavailable("The upstream reply nests JSON too deeply to be checked.") from None
    if _SURROGATE_ESCAPE_TEXT.search(text) and _has_lone_surrogate(body):
        raise upstream_unavailable("The upstream provider answered with a body that is not valid JSON.")
    return body


def _not_json_in_reply(name: str) -> Any:
    raise _Refused(upstream_unavailable("The upstream provider answered with a body that is not valid JSON."))


def _check_content_type(content_type: str | None) -> None:
    """``application/json``, at most one ``charset`` parameter and only UTF-8 (any case, quoted or not), or no type.

    A body under another type (text/plain, a form, multipart) is read by a provider
    as that type, or refused, never certainly as the JSON checked here. No type: JSON
    is the only reading a provider has for it.
    """
    if content_type is None or not content_type.strip():
        return
    media_type, *parameters = content_type.split(";")
    if media_type.strip().lower() != "application/json":
        raise bad_request(
            f"The request body's content type is {content_type.strip()[:80]!r}; {_TAKES}.",
            ErrorCode.UNSUPPORTED_CONTENT_TYPE,
        )
    parameters = [parameter for parameter in parameters if parameter.strip()]  # "a;;b": empty ones are allowed
    for parameter in parameters:
        match = _PARAMETER.fullmatch(parameter)
        if match is None or match.group(1).lower() != "charset":
            name = match.group(1) if match else parameter.strip()
            raise bad_request(
                f"The request's content type has a parameter {name[:40]!r} capsem-proxyd does not read; {_TAKES}.",
                ErrorCode.UNSUPPORTED_CONTENT_TYPE,
            )
        value = match.group(2)
        if value.strip('"').lower() not in ("utf-8", "utf8"):
            raise bad_request(
                f"The request body's charset is {value[:40]!r}; capsem-proxyd reads (and providers expect) UTF-8.",
                ErrorCode.UNSUPPORTED_CHARSET,
            )
    if len(parameters) > 1:
        raise bad_request(f"The request's content type gives its charset twice; {_TAKES}.",
                          ErrorCode.UNSUPPORTED_CONTENT_TYPE)


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


def _unique_spellings(camel: Mapping[str, str]) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """``_unique_keys`` that also refuses an object giving a field under both its spellings."""
    snake = camel.keys()

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        body = dict(pairs)
        if len(body) != len(pairs):
            return _unique_keys(pairs)  # refuses the duplicate
        if not snake.isdisjoint(body):  # in C: most objects hold no snake_case name of the API at all
            try:
                refuse_spelled_twice(body, camel)
            except ProxyError as error:
                raise _Refused(error) from None
        return body

    return unique


def _no_constants(name: str) -> Any:
    raise _Refused(bad_request(f"The request body contains {name}, which is not JSON."))


def _has_lone_surrogate(value: Any) -> bool:
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
        if any(_SURROGATE.search(string) for string in strings):  # no copy of a long string, as encoding made
            return True
    return False
