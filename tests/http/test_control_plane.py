"""Health endpoint and CORS behaviour of the app on a real socket."""

from __future__ import annotations

import httpx

from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import OPENAI_KEY, Proxy

PREFLIGHT = {
    "Origin": "https://app.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, x-goog-api-key",
}


async def test_health_reports_version_providers_and_policies(proxy: Proxy, fake: FakeUpstream) -> None:
    async with httpx.AsyncClient() as client:
        health = (await client.get(proxy.url + "/health")).json()
    assert health["status"] == "ok" and health["version"] == "0.1.0"
    assert health["providers"]["openai"] == fake.url + "/v1"
    assert health["policies"] == ["Secrets", "Debug"]


async def test_preflight_is_answered_on_every_proxied_path_without_credentials(proxy: Proxy, fake: FakeUpstream) -> None:
    async with httpx.AsyncClient() as client:
        for path in ("/v1/chat/completions", "/v1/responses", "/v1beta/models/gemini-2.0-flash:streamGenerateContent"):
            response = await client.options(proxy.url + path, headers=PREFLIGHT)
            assert response.status_code == 204, path
            assert response.headers["access-control-allow-origin"] == "*"
            assert "POST" in response.headers["access-control-allow-methods"]
            assert response.headers["access-control-allow-headers"] == PREFLIGHT["Access-Control-Request-Headers"]
            assert "access-control-allow-credentials" not in response.headers
    assert fake.requests == []


async def test_actual_request_gets_cors_headers(proxy: Proxy, fake: FakeUpstream) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            proxy.url + "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {OPENAI_KEY}", "origin": "https://app.example"},
        )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers
    assert "origin" not in fake.requests[0].headers


async def test_cors_origin_restricts(start_proxy, proxy_settings) -> None:
    proxy = await start_proxy(proxy_settings, cors_origins=("https://good.example",))
    async with httpx.AsyncClient() as client:
        good = await client.options(proxy.url + "/v1/chat/completions", headers={**PREFLIGHT, "Origin": "https://good.example"})
        bad = await client.options(proxy.url + "/v1/chat/completions", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert good.status_code == 204 and good.headers["access-control-allow-origin"] == "https://good.example"
    assert "access-control-allow-origin" not in bad.headers


async def test_no_cors_turns_it_off(start_proxy, proxy_settings) -> None:
    proxy = await start_proxy(proxy_settings, cors=False)
    async with httpx.AsyncClient() as client:
        response = await client.options(proxy.url + "/v1/chat/completions", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in response.headers
    assert response.status_code in (404, 405)
