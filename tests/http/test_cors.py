"""The CORS policy on its own, no socket: which origins a browser may call from, and what the preflight
and the replies tell it. ``tests/http/test_control_plane.py`` shows the headers on a running proxy."""

from __future__ import annotations

import pytest

from capsem_proxyd.http.cors import Cors

APP = "https://app.example"


def named(headers: list[tuple[str, str]]) -> dict[str, str]:
    assert len({name for name, _ in headers}) == len(headers), f"a header given twice: {headers}"
    return dict(headers)


def test_with_no_origins_configured_any_origin_is_answered_with_a_star_and_no_vary() -> None:
    headers = named(Cors(()).reply_headers("https://anyone.example"))
    assert headers["access-control-allow-origin"] == "*"
    assert "x-capsem-decision" in headers["access-control-expose-headers"]
    assert "vary" not in headers


def test_with_origins_configured_only_those_are_answered_by_name_with_vary() -> None:
    cors = Cors((APP,))
    headers = named(cors.reply_headers(APP))
    assert headers["access-control-allow-origin"] == APP and headers["vary"] == "Origin"
    assert cors.reply_headers("https://evil.example") == []


@pytest.mark.parametrize("origins", [(), (APP,)])
def test_a_request_without_an_origin_gets_no_cors_headers(origins: tuple[str, ...]) -> None:
    assert Cors(origins).reply_headers(None) == [] and Cors(origins).reply_headers("") == []


def test_no_answer_ever_lends_credentials() -> None:
    for cors in (Cors(()), Cors((APP,))):
        answers = [cors.reply_headers(APP), cors.preflight({"origin": APP, "access-control-request-headers": "x"})[1]]
        assert all(name != "access-control-allow-credentials" for headers in answers for name, _ in headers)


def test_a_preflight_from_an_allowed_origin_is_204_with_what_it_asked_for() -> None:
    status, headers = Cors((APP,)).preflight({
        "origin": APP, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    })
    answer = named(headers)
    assert status == 204
    assert answer["access-control-allow-origin"] == APP and answer["vary"] == "Origin"
    assert answer["access-control-allow-methods"] == "POST"
    assert answer["access-control-allow-headers"] == "authorization, content-type"
    assert int(answer["access-control-max-age"]) > 0


def test_a_preflight_that_asks_nothing_gets_the_methods_the_proxy_serves() -> None:
    status, headers = Cors(()).preflight({"origin": APP})
    answer = named(headers)
    assert status == 204 and answer["access-control-allow-origin"] == "*"
    assert set(answer["access-control-allow-methods"].split(", ")) == {"GET", "POST", "OPTIONS"}
    assert "access-control-allow-headers" not in answer


@pytest.mark.parametrize("origin", ["https://evil.example", "", "https://app.example.evil.example"])
def test_a_preflight_from_another_origin_is_403_with_no_cors_headers(origin: str) -> None:
    assert Cors((APP,)).preflight({"origin": origin}) == (403, [])
