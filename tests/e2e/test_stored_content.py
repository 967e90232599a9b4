"""--stored-content checked (the default), end to end with the openai SDK: a follow-up may name only a reply
this proxy delivered, unblocked, to the same tenant; the memory survives a restart, expires, and is bounded."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio

from capsem_proxyd.config import Settings
from capsem_proxyd.daemon.server import serve
from capsem_proxyd.enforcement.tenants import load_policy_config
from capsem_proxyd.proxy.response_store import FILE_NAME
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import OPENAI_AUTH, OPENAI_KEY, Proxy, in_thread
from tests.support.sdk import refused

OTHER_TENANT_KEY = "sk-test-other-tenant-7a6b5c4d3e2f"
REFUSED = "previous_response_id refers to stored content capsem-proxyd did not deliver to this tenant"


def create(proxy: Proxy, **kwargs: Any) -> Any:
    return proxy.openai(api_key=kwargs.pop("api_key", OPENAI_KEY)).responses.create(model="gpt-4.1", **kwargs)


def stream(proxy: Proxy, **kwargs: Any) -> tuple[str, str, BaseException | None]:
    """(the response id the stream stated first, the text, the error the SDK raised)."""
    response_id, text = "", []
    try:
        for event in proxy.openai().responses.create(model="gpt-4.1", stream=True, **kwargs):
            if event.type == "response.created":
                response_id = event.response.id
            elif event.type == "response.output_text.delta":
                text.append(event.delta)
    except openai.APIError as error:
        return response_id, "".join(text), error
    return response_id, "".join(text), None


def database(settings: Settings) -> Path:
    assert settings.state_dir is not None
    return Path(settings.state_dir) / FILE_NAME


async def test_a_follow_up_to_our_own_json_reply_passes(proxy: Proxy, fake: FakeUpstream) -> None:
    first = await in_thread(lambda: create(proxy, input="hi"))
    fake.script(Reply(text="Still here."))
    second = await in_thread(lambda: create(proxy, input="and then?", previous_response_id=first.id))
    assert second.output_text == "Still here."
    assert fake.requests[-1].json["previous_response_id"] == first.id


async def test_a_follow_up_to_our_own_streamed_reply_passes_streamed_too(proxy: Proxy, fake: FakeUpstream) -> None:
    first_id, _, error = await in_thread(lambda: stream(proxy, input="hi"))
    assert error is None and first_id.startswith("resp_")
    fake.script(Reply(text="Streamed follow-up."))
    second_id, text, error = await in_thread(lambda: stream(proxy, input="go on", previous_response_id=first_id))
    assert error is None and text == "Streamed follow-up."
    third = await in_thread(lambda: create(proxy, input="and?", previous_response_id=second_id))  # chains go on
    assert third.status == "completed"


async def test_another_tenants_id_is_refused_and_nothing_goes_upstream(proxy: Proxy, fake: FakeUpstream) -> None:
    first = await in_thread(lambda: create(proxy, input="mine"))
    sent = len(fake.requests)
    error = await refused(lambda: create(proxy, input="theirs?", previous_response_id=first.id, api_key=OTHER_TENANT_KEY))
    assert error.status_code == 400 and REFUSED in error.message
    assert error.body["param"] == "previous_response_id" and error.body["code"] == "capsem_stored_content"
    assert error.response.headers["x-capsem-decision"] == "block"
    assert len(fake.requests) == sent


async def test_an_id_never_relayed_is_refused_though_the_provider_has_it(proxy: Proxy, fake: FakeUpstream) -> None:
    async with httpx.AsyncClient() as client:  # straight to the provider, around the proxy
        direct = await client.post(fake.url + "/v1/responses", json={"model": "gpt-4.1", "input": "hi"},
                                   headers=OPENAI_AUTH)
    response_id = direct.json()["id"]
    assert response_id in fake.stored_responses
    error = await refused(lambda: create(proxy, input="go on", previous_response_id=response_id))
    assert REFUSED in error.message
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "reply",
    [
        Reply(chunks=["fine so far, caps", "em_blo", "ck and beyond"]),
        Reply(text="an answer cut short " * 20, fault="reset_mid_stream", fault_after_events=5),
    ],
    ids=["blocked", "cut"],
)
async def test_a_blocked_or_cut_streams_id_is_refused(proxy: Proxy, fake: FakeUpstream, reply: Reply) -> None:
    fake.script(reply)
    response_id, text, error = await in_thread(lambda: stream(proxy, input="go"))
    assert error is not None and response_id and "capsem_block" not in text
    assert response_id in fake.stored_responses  # the provider keeps it: a follow-up would get it all back
    error = await refused(lambda: create(proxy, input="what did you say?", previous_response_id=response_id))
    assert REFUSED in error.message
    assert len(fake.requests) == 1


async def test_the_memory_survives_a_restart(proxy_settings: Settings, fake: FakeUpstream, nursery: trio.Nursery) -> None:
    config = load_policy_config(proxy_settings)
    first_life = trio.CancelScope()
    binds = await nursery.start(lambda task_status: _serve_until_cancelled(proxy_settings, config, first_life, task_status))
    first = await in_thread(lambda: create(Proxy(binds[0], proxy_settings), input="before the restart"))
    first_life.cancel()
    binds = await nursery.start(lambda task_status: serve(proxy_settings, config, handle_signals=False, task_status=task_status))
    after = await in_thread(lambda: create(Proxy(binds[0], proxy_settings), input="after", previous_response_id=first.id))
    assert after.status == "completed"


async def _serve_until_cancelled(settings: Settings, config: Any, scope: trio.CancelScope, task_status: Any) -> None:
    with scope:
        await serve(settings, config, handle_signals=False, task_status=task_status)


async def test_an_expired_id_is_refused(start_proxy, proxy_settings: Settings, fake: FakeUpstream) -> None:
    proxy = await start_proxy(proxy_settings, stored_responses_days=1)
    old = await in_thread(lambda: create(proxy, input="long ago"))
    recent = await in_thread(lambda: create(proxy, input="just now"))
    with sqlite3.connect(database(proxy_settings)) as connection:  # two days pass for the first one
        connection.execute("UPDATE relayed SET recorded = recorded - 2 * 86400 WHERE response_id = ?", (old.id,))
    error = await refused(lambda: create(proxy, input="remember?", previous_response_id=old.id))
    assert REFUSED in error.message
    assert (await in_thread(lambda: create(proxy, input="go on", previous_response_id=recent.id))).status == "completed"


async def test_beyond_the_bound_the_oldest_ids_are_forgotten(start_proxy, proxy_settings: Settings, fake: FakeUpstream) -> None:
    proxy = await start_proxy(proxy_settings, stored_responses_max=2)
    ids = [(await in_thread(lambda number=number: create(proxy, input=f"turn {number}"))).id for number in range(3)]
    with sqlite3.connect(database(proxy_settings)) as connection:
        assert connection.execute("SELECT COUNT(*) FROM relayed").fetchone()[0] == 2
    error = await refused(lambda: create(proxy, input="first?", previous_response_id=ids[0]))
    assert REFUSED in error.message
    for kept in ids[1:]:
        assert (await in_thread(lambda kept=kept: create(proxy, input="go on", previous_response_id=kept))).status == "completed"


async def test_a_background_replys_id_is_refused_its_output_was_never_checked(proxy: Proxy, fake: FakeUpstream) -> None:
    queued = await in_thread(lambda: create(proxy, input="take your time", background=True))
    assert queued.status == "queued"
    error = await refused(lambda: create(proxy, input="done?", previous_response_id=queued.id))
    assert REFUSED in error.message


async def test_nothing_is_recorded_or_opened_without_a_stored_reply(proxy: Proxy, fake: FakeUpstream) -> None:
    """Chat, and Responses with store=false: the state directory is never even created."""
    await in_thread(lambda: proxy.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]))
    unstored = await in_thread(lambda: create(proxy, input="hi", store=False))
    _, _, error = await in_thread(lambda: stream(proxy, input="hi", store=False))
    assert error is None
    assert not database(proxy.settings).parent.exists()
    error = await refused(lambda: create(proxy, input="go on", previous_response_id=unstored.id))
    assert REFUSED in error.message
