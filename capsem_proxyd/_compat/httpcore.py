"""Upstream reads with no deadline of httpcore's, for a streamed body the stream pump watches itself.

httpcore's trio backend (``httpcore._backends.trio.TrioStream``) wraps each read
in ``trio.fail_after(timeout)`` and ``map_exceptions``, even when there is no
timeout (a deadline of infinity): measured on a socketpair, 26 µs per read
against 17.5 µs for the trio stream's own ``receive_some``. A provider that
streams its events one write each makes that once per event, about a third of
the proxy's upstream-reading CPU per event. The stream pump
(``proxy/streaming.py``) keeps the upstream timeout of a streamed body itself,
as an idle watch; httpcore's per-read deadline there is redundant.

Two things of httpcore's this relies on, both read here only:

* ``trio_stream``: the trio stream a ``TrioStream`` reads from is its private
  ``_stream`` (``TrioStream`` itself lives in the private module
  ``httpcore._backends.trio``);
* ``without_read_timeout``: httpcore's HTTP/1.1 connection reads the read
  timeout from ``request.extensions["timeout"]`` when the body's first read
  starts (``_receive_response_body``), not when the request is sent, and httpx
  hands httpcore the request's own ``extensions`` dict; so a timeout replaced
  there once the head is in and before the body is read applies to the body.

httpx and httpcore are pinned below their next minor release in pyproject.toml,
and ``tests/_compat/test_httpcore.py`` fails first if a release changes either.
"""

from __future__ import annotations

import httpcore
import httpx
import trio
from httpcore._backends.trio import TrioStream


def trio_stream(stream: httpcore.AsyncNetworkStream) -> trio.abc.Stream | None:
    """The trio stream httpcore's trio backend reads ``stream`` from; None for another backend's stream."""
    if type(stream) is TrioStream:
        inner = stream._stream
        if isinstance(inner, trio.abc.Stream):
            return inner
    return None


def without_read_timeout(response: httpx.Response) -> None:
    """Read ``response``'s body (not yet begun) with no per-read timeout; call it before the first read.

    The request's timeouts are replaced, not changed in place: the dict may be
    shared by every request of a client (``proxy/upstream.py`` shares one).
    """
    try:
        extensions = response.request.extensions
    except RuntimeError:  # a response made, not received (httpx raises for its missing request): nothing to change
        return
    timeouts = extensions.get("timeout")
    if isinstance(timeouts, dict):
        extensions["timeout"] = {**timeouts, "read": None}
