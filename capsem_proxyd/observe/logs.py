"""Logging set-up: one stream, quiet libraries, and a last-line redaction filter.

Our own log lines never carry keys; the filter is defence in depth for lines
written by libraries (a URL with ``?key=``, an ``Authorization`` header echoed
in an exception).

A line about a request is an event and its fields (``log_event``): the text
format writes them ``key=value`` after the event, the JSON format
(``--log-format json``) as fields of the line's object, so a log shipper
reads ``status`` or ``decision`` without parsing a message.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping

_SECRET_PATTERNS = [
    (re.compile(r"([?&](?:key|api_key|access_token)=)[^&\s\"']+", re.IGNORECASE), r"\1[REDACTED]"),
    (re.compile(r"(bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\1[REDACTED]"),
    (re.compile(r"((?:x-goog-api-key|x-api-key|authorization)['\"]?\s*[:=,]\s*['\"]?)[^'\"\s,}]+", re.IGNORECASE), r"\1[REDACTED]"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "[REDACTED]"),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{20,}"), "[REDACTED]"),
]


# Characters that would end or rewrite a log line (newlines, ANSI escapes, Unicode line breaks).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``\n`` → ``\\n`` and the like: a client-chosen value can never start a forged log line."""
    if text.isascii() and text.isprintable():
        return text  # the common case: no regex pass
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def redact(text: str) -> str:
    if _cannot_hold_secret(text):
        return text  # the common case, 1 us instead of 5 regex passes (~15 us)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _cannot_hold_secret(text: str) -> bool:
    """A cheap pre-check that never says no to a line a pattern would match: each
    pattern needs one of these words (any case) or its exact prefix (``sk-``, ``AIza``).

    Only for ASCII lines: case-insensitive matching of non-ASCII text knows
    more case pairs (``ı``/``i``, ``K``/``k``) than ``str.lower`` folds.
    """
    if not text.isascii():
        return False
    lowered = text.lower()
    return (
        "key" not in lowered
        and "token" not in lowered
        and "bearer" not in lowered
        and "authorization" not in lowered
        and "sk-" not in text
        and "AIza" not in text
    )


# A value written bare in ``key=value`` text: anything else (a space, a quote, an ``=``...) is quoted.
_BARE = re.compile(r"[^\s\"'=]*")


def text_value(value: object) -> str:
    """One field's value as ``key=value`` text writes it: bare when that reads back unambiguously,
    else JSON-quoted, so a client-chosen value (a model name with ``status=200`` in it) cannot add a field."""
    if not isinstance(value, str):
        if isinstance(value, (int, float)):
            return str(value)  # a status, a duration: nothing to quote
        value = str(value)
    escaped = escape_controls(value)  # a line break is written \n: it cannot end the line
    if escaped and _BARE.fullmatch(escaped):
        return escaped
    return escape_controls(json.dumps(value, ensure_ascii=False))


class Fields:
    """A line's fields, rendered ``key=value`` only if a text handler formats the line (never when the
    level is off); the JSON formatter reads the mapping itself (``record.fields``)."""

    __slots__ = ("fields",)

    def __init__(self, fields: Mapping[str, object]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        return " ".join(f"{key}={text_value(value)}" for key, value in self.fields.items())


def log_event(logger: logging.Logger, level: int, event: str, fields: Mapping[str, object]) -> None:
    """One line: ``event`` then its fields. ``event`` may be empty (the request line is all fields).

    Values are whatever JSON can hold (str, int, float, bool, None); client-chosen text is escaped by
    the formatters, not here."""
    if not logger.isEnabledFor(level):
        return
    rendered = Fields(fields)
    if event:
        logger.log(level, "%s %s", event, rendered, extra={"event": event, "fields": fields})
    else:
        logger.log(level, "%s", rendered, extra={"event": "", "fields": fields})


class RedactingFormatter(logging.Formatter):
    """Formats, then scrubs anything that looks like a credential.

    The message itself is kept to one line (control characters escaped); a
    traceback, which the formatter appends after it, keeps its line breaks.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


# Line breaks json.dumps leaves as they are with ensure_ascii=False; a reader splitting lines
# on them (Python's str.splitlines does) would cut an entry in two.
_JSON_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def utc_timestamp(created: float) -> str:
    """``2026-12-06T19:40:01.123Z``: UTC, to the millisecond, as log shippers parse without a hint."""
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".%03dZ" % int((created - seconds) * 1000)


class JSONFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (``--log-format json``).

    ``time`` (UTC, milliseconds), ``level``, ``logger``, ``pid``, ``message``;
    a line written by ``log_event`` has its fields as fields of the object
    (``message`` is then the event alone, ``request`` for the request line),
    never as ``key=value`` text inside ``message``. A field never replaces one
    of the five.
    """

    def format(self, record: logging.LogRecord) -> str:
        fields: Mapping[str, object] | None = getattr(record, "fields", None)
        event: str | None = getattr(record, "event", None)
        entry: dict[str, object] = {
            "time": utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage() if fields is None else (event or "request"),
        }
        if fields is not None:
            for key, value in fields.items():
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, ensure_ascii=False, default=str).translate(_JSON_BREAKS))


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # One line per request goes through here: skip the record fields no format uses
    # (caller's file and line, thread and process names; the logging HOWTO's advice).
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO (a Gemini ?key= would land in the log).
    for noisy in ("httpx", "httpcore", "hpack", "hypercorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
