"""Logging set-up: one stream, quiet libraries, and a last-line redaction filter.

Our own log lines never carry keys; the filter is defence in depth for lines
written by libraries (a URL with ``?key=``, an ``Authorization`` header echoed
in an exception).
"""

from __future__ import annotations

import json
import logging
import re
import sys

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


class JSONFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (``--log-format json``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, ensure_ascii=False))


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
