"""A request's PDF documents read before its hooks run: their text joins the prompt or tool result that carries them.

Extraction (``pdf_text.py``) runs in a worker process of its own
(``trio-parallel``'s default pool, spawned on first use, one process per
core at most), never on the event loop: ``pypdf`` is pure Python, and a
thread would still hold the interpreter lock while a 300-page document is
parsed, stalling every other request. The worker enforces the CPU-time
limit itself; a worker that outlives ``WALL_SECONDS`` (a backstop far above
it, spawning included) is killed, and one that dies is replaced on demand.
Either way, and for a document beyond the limits, the text is None and the
document is checked as media only. The first document after a start waits for
its worker to spawn (about a second); an idle worker exits after ten minutes.

Why not the CPU-heavy policies' pool (``workers.py``): that pool exists only
where such a policy is configured (the default Debug policy has none), its
workers are warmed with a built policy (seconds to replace), and a document
that runs to its limit, or whose worker has to be killed, would hold or cost
one of them while PII checks of other requests wait. A pool of its own keeps a
client's document from slowing anyone's policy checks. Memory per stream is
bounded by pypdf's own decompression limits (75 MB of output each).

Agents resend the same document every turn: an extraction is remembered by
the document's digest and the tenant (``CACHE_SIZE`` of them, least recently
used first out), so a document is parsed once; its text is then a piece the
engine's verdict cache knows (``pieces.py``), decided once per tenant as well.
The tenant is in the key so that no tenant's timing says whether another sent
the same document.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import replace

import trio

from capsem_proxyd.enforcement.pdf_text import PdfLimits, timed_pdf_text
from capsem_proxyd.views import RequestView

log = logging.getLogger("capsem_proxyd.enforcement.documents")

LIMITS = PdfLimits()
REQUEST_CPU_SECONDS = 30.0  # for all the documents of one request that are not remembered
WALL_SECONDS = 120.0
CACHE_SIZE = 64

_extracted: OrderedDict[bytes, str | None] = OrderedDict()


async def read_documents(view: RequestView, tenant: str, limits: PdfLimits | None = None) -> None:
    """Each of ``view.documents``' text (when it has one within ``limits``, default ``LIMITS``) joined to the
    text of its reader.

    One request's documents share ``REQUEST_CPU_SECONDS`` of extraction (a remembered one costs nothing):
    a thousand small PDFs each built to take its whole CPU limit would hold a worker for hours. A document
    the budget does not reach is media only, like one beyond the limits.
    """
    limits = limits or LIMITS
    budget = REQUEST_CPU_SECONDS
    for document in view.documents:
        text, used = await document_text(document.media.data, tenant, limits, cpu_seconds=max(budget, 0.0))
        budget -= used
        if text:
            view.add_text(document.reader, text)
    if budget <= 0:
        log.warning("a request's PDFs used up their %s s of extraction: the rest were checked as media only",
                    REQUEST_CPU_SECONDS)


async def document_text(
    data: bytes, tenant: str, limits: PdfLimits, cpu_seconds: float | None = None
) -> tuple[str | None, float]:
    """The text of the PDF ``data`` (None: media only) and the CPU seconds it cost, from the cache (none) or a
    worker. ``cpu_seconds``: what is left of the request's budget, when less than the limit (an answer under
    a smaller limit than usual is not remembered)."""
    if len(data) > limits.max_bytes:
        return None, 0.0
    digest = hashlib.blake2b(repr(limits).encode(), digest_size=32, person=b"capsem-pdf-text", key=tenant.encode()[:64])
    digest.update(data)
    key = digest.digest()
    if key in _extracted:
        _extracted.move_to_end(key)
        return _extracted[key], 0.0
    allowed = limits if cpu_seconds is None or cpu_seconds >= limits.cpu_seconds else replace(
        limits, cpu_seconds=cpu_seconds)
    if allowed.cpu_seconds <= 0:
        return None, 0.0  # no time left (a timer of 0 s would never fire: no extraction at all)
    reduced = allowed is not limits
    text, used, final = await _in_worker(data, allowed)
    if final and not reduced:  # a worker that died or outlived its time may have been the machine's fault
        _extracted[key] = text
        while len(_extracted) > CACHE_SIZE:
            _extracted.popitem(last=False)
    return text, used


async def _in_worker(data: bytes, limits: PdfLimits) -> tuple[str | None, float, bool]:
    """The text, the CPU seconds it took, and whether it is the document's own answer (not a worker's death
    or the backstop's: those are charged the whole limit)."""
    import trio_parallel  # the proxy's process imports the pool only where a document comes

    with trio.move_on_after(WALL_SECONDS):
        try:
            text, used = await trio_parallel.run_sync(timed_pdf_text, data, limits, kill_on_cancel=True)
        except trio_parallel.BrokenWorkerError:
            log.warning("a PDF's text extraction killed its worker: the document is checked as media only")
            return None, limits.cpu_seconds, False
        except Exception as error:  # noqa: BLE001 - no worker could be had (spawning refused...): media only
            log.warning("no worker for a PDF's text extraction (%s): the document is checked as media only",
                        type(error).__name__)
            return None, 0.0, False
        return text, used, True
    log.warning("a PDF's text extraction outlived %s s: the document is checked as media only", WALL_SECONDS)
    return None, limits.cpu_seconds, False
