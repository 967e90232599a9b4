"""ShardedTransport: one request at a time stays on one pool and its connection;
concurrent requests spread over the pools; limits are divided among them."""

from __future__ import annotations

import httpx
import pytest
import trio

from capsem_proxyd.proxy.sharded_transport import ShardedTransport
from tests.support.bodies import chat_body
from tests.support.daemon import free_port
from tests.support.fake_upstream import FakeUpstream, Reply


def _connections(transport: ShardedTransport) -> list[int]:
    return [len(inner._pool.connections) for inner in transport.transports]


async def _post(transport: ShardedTransport, url: str) -> int:
    request = httpx.Request("POST", url + "/v1/chat/completions", json=chat_body(model="m"),
                            headers={"authorization": "Bearer sk-test"})
    response = await transport.handle_async_request(request)
    try:
        await response.aread()
    finally:
        await response.aclose()
    return response.status_code


async def test_sequential_requests_stay_on_one_pool_and_one_connection(fake: FakeUpstream) -> None:
    transport = ShardedTransport(4, httpx.Limits(max_connections=40, max_keepalive_connections=8))
    for _ in range(5):
        assert await _post(transport, fake.url) == 200
    assert _connections(transport) == [1, 0, 0, 0]
    assert fake.total_connections == 1
    await transport.aclose()


async def test_concurrent_requests_spread_over_the_pools(fake: FakeUpstream) -> None:
    transport = ShardedTransport(4, httpx.Limits(max_connections=40, max_keepalive_connections=8))
    for _ in range(12):
        fake.script(Reply(text="slow", delay=0.2))
    statuses: list[int] = []

    async def one() -> None:
        statuses.append(await _post(transport, fake.url))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(12):
                nursery.start_soon(one)
    assert statuses == [200] * 12
    assert _connections(transport) == [2, 2, 2, 2]  # 12 at once: 3 per pool, 2 kept alive by each (8 / 4)
    await transport.aclose()


async def test_open_streams_count_until_closed_so_sequential_streams_spread(fake: FakeUpstream) -> None:
    """A stream whose head has arrived still holds its connection: the next request goes elsewhere."""
    transport = ShardedTransport(4, httpx.Limits(max_connections=40, max_keepalive_connections=8))
    responses = []
    for _ in range(4):
        request = httpx.Request("POST", fake.url + "/v1/chat/completions",
                                json=chat_body(model="m", stream=True),
                                headers={"authorization": "Bearer sk-test"})
        responses.append(await transport.handle_async_request(request))  # heads in, bodies unread
    assert transport.in_flight == [1, 1, 1, 1]
    assert _connections(transport) == [1, 1, 1, 1]
    for response in responses:
        await response.aread()
        await response.aclose()
        await response.aclose()  # a second close does not count twice
    assert transport.in_flight == [0, 0, 0, 0]
    await transport.aclose()


async def test_a_failed_send_does_not_stay_counted() -> None:
    transport = ShardedTransport(2, httpx.Limits(max_connections=4))
    port = free_port()  # nothing listens there
    for _ in range(3):
        with pytest.raises(httpx.ConnectError):
            await transport.handle_async_request(httpx.Request("GET", f"http://127.0.0.1:{port}/"))
    assert transport.in_flight == [0, 0]
    await transport.aclose()


def test_the_pools_share_one_tls_context() -> None:
    transport = ShardedTransport(8, httpx.Limits(max_connections=80))
    contexts = {id(inner._pool._ssl_context) for inner in transport.transports}
    assert len(contexts) == 1
