"""Canary for ``capsem_proxyd/_compat/httpx.py``: an httpx transport's pool and its network backend.

``wrap_network_backend`` reads ``httpx.AsyncHTTPTransport``'s private ``_pool``
and reads and sets that ``httpcore.AsyncConnectionPool``'s private
``_network_backend``. A release of httpx or httpcore that renames or reshapes
either must fail here first: the pool must still connect through the backend
set there. What the wrapping is for is tested by behaviour in
``tests/proxy/test_coalescing.py``.
"""

from __future__ import annotations

import inspect

import httpcore
import httpx

from capsem_proxyd._compat.httpx import wrap_network_backend
from tests._compat.pins import assert_below_next_minor
from tests.support.fake_upstream import FakeUpstream

READ = ("_pool",)  # httpx.AsyncHTTPTransport's httpcore pool
READ_AND_SET = ("_network_backend",)  # the pool's network backend, through which it connects


def test_httpx_and_httpcore_are_pinned_below_their_next_minor_release() -> None:
    assert_below_next_minor("httpx")
    assert_below_next_minor("httpcore")


def test_the_transport_keeps_its_pool_and_the_pool_its_backend_where_the_shim_reads_them() -> None:
    transport = httpx.AsyncHTTPTransport()
    assert isinstance(getattr(transport, READ[0]), httpcore.AsyncConnectionPool)
    assert isinstance(getattr(transport._pool, READ_AND_SET[0]), httpcore.AsyncNetworkBackend)
    assert "network_backend" in inspect.signature(httpcore.AsyncConnectionPool).parameters


class _Counting(httpcore.AsyncNetworkBackend):
    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        self.backend, self.connects = backend, 0

    async def connect_tcp(self, *args, **kwargs) -> httpcore.AsyncNetworkStream:  # type: ignore[no-untyped-def]
        self.connects += 1
        return await self.backend.connect_tcp(*args, **kwargs)

    async def sleep(self, seconds: float) -> None:
        await self.backend.sleep(seconds)


async def test_the_pool_connects_through_the_backend_the_shim_sets(fake: FakeUpstream) -> None:
    transport = httpx.AsyncHTTPTransport()
    backends: list[_Counting] = []
    wrap_network_backend(transport, lambda backend: backends.append(_Counting(backend)) or backends[-1])
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(fake.url + "/v1/models", headers={"authorization": "Bearer sk-test"})).status_code
    assert backends[0].connects == 1
