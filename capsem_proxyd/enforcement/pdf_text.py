"""A PDF's text as a model reads it, within page, byte, size and CPU-time limits (run in a worker process).

Providers give the model a PDF document's text (with page images beside it):
a policy that saw only media passed any text in a PDF. ``pypdf`` (pure
Python, maintained, no native code to crash the worker) extracts each
page's text, and the document information a reader is shown (title,
subject, keywords, author).

Limits, because a PDF is the client's and a parser's cost follows its
structure, not its size: at most ``max_bytes`` bytes and ``max_pages``
pages, at most ``max_chars`` characters of text, and ``cpu_seconds`` of the
worker's CPU time (``PdfLimits``). CPU time, not wall-clock time: a loaded machine stretches
the wall clock, never the work a document needs, so the same PDF gets the
same answer under load. A document beyond a limit, encrypted, or that the
parser cannot read gives None: it is checked as media only (the README says
so). No partial text: a prefix would read as the whole.

This module imports nothing of the proxy's and ``pypdf`` only when called,
so the proxy's own process never loads the parser.
"""

from __future__ import annotations

import io
import signal
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PdfLimits:
    """How much of a PDF is read (beyond any of these: no text, media only)."""

    max_bytes: int = 32 * 1024 * 1024
    max_pages: int = 500
    max_chars: int = 4_000_000
    cpu_seconds: float = 10.0


class _OutOfTime(BaseException):
    """The CPU-time limit's signal: a BaseException, so that no ``except Exception`` in the parser keeps it."""


_armed = False  # the timer's signal raises only while an extraction runs
_AGAIN = 0.05  # CPU seconds between signals once the limit is reached: one raised in a finaliser is swallowed


def pdf_text(data: bytes, limits: PdfLimits) -> str | None:
    """The text of the PDF ``data`` (pages, then document information), or None beyond ``limits`` or unreadable.

    Meant for a worker process's main thread: the CPU-time limit is a
    ``SIGPROF`` timer of the calling process, disarmed before it returns.
    Once the limit is reached the signal comes again every ``_AGAIN`` CPU
    seconds until the extraction has stopped: Python swallows an exception
    raised while a finaliser runs, so one signal could be lost.
    """
    if len(data) > limits.max_bytes or limits.cpu_seconds <= 0:  # a timer of 0 s is no timer
        return None
    previous = signal.signal(signal.SIGPROF, _out_of_time)
    try:
        try:
            return _limited(data, limits)
        except _OutOfTime:  # a signal that came as the timer was being disarmed
            return None
        finally:
            _disarm()
    except _OutOfTime:  # one more, before the disarming above took effect
        _disarm()
        return None
    finally:
        signal.signal(signal.SIGPROF, previous)


def timed_pdf_text(data: bytes, limits: PdfLimits) -> tuple[str | None, float]:
    """``pdf_text`` and the CPU seconds it took (what a request's budget of them is charged)."""
    started = time.process_time()
    text = pdf_text(data, limits)
    return text, time.process_time() - started


def _limited(data: bytes, limits: PdfLimits) -> str | None:
    global _armed
    _armed = True
    signal.setitimer(signal.ITIMER_PROF, limits.cpu_seconds, _AGAIN)
    try:
        return _extract(data, limits)
    except _OutOfTime:
        return None
    except Exception:  # noqa: BLE001 - whatever the parser trips on, the document has no text we can check
        return None
    finally:
        _disarm()


def _disarm() -> None:
    global _armed
    _armed = False
    signal.setitimer(signal.ITIMER_PROF, 0)


def _out_of_time(signum: int, frame: Any) -> None:
    if _armed:
        raise _OutOfTime


def _extract(data: bytes, limits: PdfLimits) -> str | None:
    import logging

    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # a malformed PDF's warnings are no news here
    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted and not reader.decrypt(""):
        return None  # a password the proxy does not have; the provider cannot read it either
    if len(reader.pages) > limits.max_pages:
        return None
    texts: list[str] = []
    size = 0
    for page in reader.pages:
        text = page.extract_text() or ""
        size += len(text)
        if size > limits.max_chars:
            return None
        texts.append(text)
    info: Any = reader.metadata or {}
    for key in ("/Title", "/Subject", "/Keywords", "/Author"):
        value = info.get(key)
        if isinstance(value, str) and value:
            texts.append(value)
    return "\n".join(text for text in texts if text)
