"""httpx's transport, its connections made by a network backend of ours (``proxy/coalescing.py``).

``httpx.AsyncHTTPTransport`` takes no network backend; the httpcore pool it
builds does, and keeps it in a private attribute. ``wrap_network_backend``
replaces that backend, once per transport at start-up, by what ``wrap`` makes
of it; everything else of the pool (TLS, limits, keep-alive, retries, socket
options) stays as httpx built it. It reads the transport's private ``_pool``
(an ``httpcore.AsyncConnectionPool``) and reads and sets that pool's private
``_network_backend``: httpx and httpcore are pinned below their next minor
release in pyproject.toml, and ``tests/_compat/test_httpx.py`` fails first if a
release renames or reshapes either. The shim can go when httpx lets a
transport be given a network backend.
"""

from __future__ import annotations

from collections.abc import Callable

import httpcore
import httpx


def wrap_network_backend(
    transport: httpx.AsyncHTTPTransport, wrap: Callable[[httpcore.AsyncNetworkBackend], httpcore.AsyncNetworkBackend],
) -> None:
    """Make ``transport``'s connections through ``wrap(its backend)``; before it has connected."""
    pool = transport._pool
    if not isinstance(pool, httpcore.AsyncConnectionPool):  # a proxy's pool: httpx built another kind
        raise TypeError(f"httpx built a {type(pool).__name__}, not an httpcore.AsyncConnectionPool")
    pool._network_backend = wrap(pool._network_backend)
