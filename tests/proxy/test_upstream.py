"""The one pooled upstream client, seen through the proxy: keep-alive reuse, cut streams
not reused, and the client's address forwarded only on request."""

from __future__ import annotations

import httpx
import trio

from tests.support.bodies import chat_body
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import OPENAI_AUTH


async def test_sequential_requests_through_the_proxy_reuse_one_upstream_connection(proxy, fake: FakeUpstream) -> None:
    async with httpx.AsyncClient(base_url=proxy.url, headers=OPENAI_AUTH) as client:
        for _ in range(3):
            reply = await client.post("/v1/chat/completions", json=chat_body())
            assert reply.status_code == 200
    assert len(fake.requests) == 3
    assert fake.total_connections == 1


async def test_a_stream_cut_short_closes_its_upstream_connection_and_the_next_request_gets_a_fresh_one(
    proxy, fake: FakeUpstream
) -> None:
    fake.script(Reply(chunks=["word "] * 400, chunk_delay=0.01))
    body = chat_body(stream=True)
    async with httpx.AsyncClient(base_url=proxy.url, headers=OPENAI_AUTH) as client:
        async with client.stream("POST", "/v1/chat/completions", json=body) as streamed:
            async for _ in streamed.aiter_bytes():
                break  # leave mid-stream
    with trio.fail_after(10):
        await fake.wait_for_open_connections(0)  # the half-read upstream response was not kept
    async with httpx.AsyncClient(base_url=proxy.url, headers=OPENAI_AUTH) as client:
        reply = await client.post("/v1/chat/completions", json={**body, "stream": False})
    assert reply.status_code == 200
    assert fake.total_connections == 2


async def test_the_client_address_reaches_the_upstream_only_when_the_operator_forwards_it(
    start_proxy, proxy_settings, fake: FakeUpstream
) -> None:
    body = chat_body()
    for forward in (False, True):
        proxy = await start_proxy(proxy_settings, forward_client_ip=forward)
        async with httpx.AsyncClient(base_url=proxy.url, headers=OPENAI_AUTH) as client:
            assert (await client.post("/v1/chat/completions", json=body, headers={"remote-addr": "10.9.8.7"})).status_code == 200
        seen = fake.requests[-1].headers
        assert "remote-addr" not in seen  # Quart's own header, and a client's forged one
        assert ("127.0.0.1" in seen.get("x-forwarded-for", "")) is forward
