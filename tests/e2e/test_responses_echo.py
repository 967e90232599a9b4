"""A Responses reply echoes the request: what equals the request is the client's own words, not read again.

The reply repeats the request's ``instructions``, ``tools``, ``metadata``...
in every lifecycle event (the fake provider does, as the API does). Checked
again as reply content, a reply policy matching a word of a long system prompt
would refuse every reply of an agent (Codex sends kilobytes of instructions).
Where the echo differs from the request in any way, it is the provider's
words, and checked.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from capsem_proxyd.config import Settings
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import OPENAI_AUTH, Proxy, in_thread
from tests.support.sdk import policy_proxy

RULES = """
[on_model_response]
block = ["project falcon"]
"""
INSTRUCTIONS = "You work on project falcon. Answer briefly."


@pytest.fixture
async def reply_rules(start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path,
                      fake: FakeUpstream) -> Proxy:
    return await policy_proxy(start_proxy, proxy_settings, tmp_path, rules=RULES)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_an_echo_of_the_request_is_not_read_again_as_the_reply(
    reply_rules: Proxy, fake: FakeUpstream, stream: bool
) -> None:
    fake.script(Reply(text="Done."))

    def ask() -> str:
        with reply_rules.openai() as client:
            if not stream:
                return client.responses.create(model="gpt-4o", instructions=INSTRUCTIONS, input="go").output_text
            with client.responses.stream(model="gpt-4o", instructions=INSTRUCTIONS, input="go") as events:
                return events.get_final_response().output_text

    assert await in_thread(ask) == "Done."


async def test_an_echo_that_differs_from_the_request_is_the_providers_and_is_checked(
    reply_rules: Proxy, fake: FakeUpstream
) -> None:
    reply = {"id": "resp_1", "object": "response", "created_at": 1, "status": "completed", "model": "gpt-4o",
             "instructions": INSTRUCTIONS, "output": [], "usage": None}
    fake.script(Reply(raw_body=httpx.Response(200, json=reply).content, content_type="application/json"))

    def ask() -> BaseException | None:
        with reply_rules.openai() as client:
            try:
                client.responses.create(model="gpt-4o", instructions="Answer briefly.", input="go")
            except openai.BadRequestError as error:
                return error
        return None

    error = await in_thread(ask)
    assert error is not None and "project falcon" in str(error).lower()


async def test_a_raw_echo_equal_to_the_request_passes_and_the_models_own_text_is_still_checked(
    reply_rules: Proxy, fake: FakeUpstream
) -> None:
    fake.script(Reply(text="The project falcon files are ready."))
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(reply_rules.url + "/v1/responses", headers=OPENAI_AUTH,
                                     json={"model": "gpt-4o", "instructions": INSTRUCTIONS, "input": "go"})
    assert response.status_code == 400 and "project falcon" in response.text.lower()
