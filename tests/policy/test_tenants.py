"""Per-tenant policy profiles and the tenant allow-list, through the real proxy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google.genai import errors as genai_errors

from capsem_proxyd.config import Settings
from capsem_proxyd.enforcement.loader import PolicyConfigError
from capsem_proxyd.enforcement.tenants import load_allowed_tenants, load_tenant_profiles
from capsem_proxyd.exchange import tenant_id_for
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import ANTHROPIC_KEY, GEMINI_KEY, OPENAI_KEY, Proxy, in_thread

OTHER_OPENAI_KEY = "sk-test-other-tenant-77aa88bb99cc"
PROMPT = [{"role": "user", "content": "what is the status of project falcon?"}]


def ask(proxy: Proxy, api_key: str) -> Any:
    return proxy.openai(api_key=api_key).chat.completions.create(model="gpt-4o-mini", messages=PROMPT)


async def test_two_tenants_with_different_profiles_get_different_outcomes(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path
) -> None:
    strict = tmp_path / "profiles" / "strict"
    strict.mkdir(parents=True)
    (strict / "rules.toml").write_text('[on_model_call]\nblock = ["project falcon"]\n')
    profiles = tmp_path / "tenant-profiles.toml"
    profiles.write_text(f'[profiles]\n"{tenant_id_for(OPENAI_KEY)}" = "profiles/strict"\n')  # relative to the file
    proxy = await start_proxy(proxy_settings, tenant_profiles=str(profiles))
    fake.script(Reply(text="on track"))

    with pytest.raises(openai.BadRequestError) as caught:
        await in_thread(ask, proxy, OPENAI_KEY)
    assert caught.value.body["capsem"]["policy"] == "Rules"
    assert caught.value.response.headers["x-capsem-policies"] == "Secrets, Rules"  # a profile folder: Secrets too (masking policies first)

    raw = await in_thread(lambda: proxy.openai(api_key=OTHER_OPENAI_KEY).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=PROMPT))
    assert raw.parse().choices[0].message.content == "on track"
    assert raw.headers["x-capsem-policies"] == "Secrets, Debug"  # unknown tenants get the default set
    (received,) = fake.requests
    assert received.headers["authorization"] == f"Bearer {OTHER_OPENAI_KEY}"


@pytest.fixture
async def listed_proxy(start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path) -> Proxy:
    allowed = tmp_path / "tenants.toml"
    allowed.write_text(f'# the only tenants served\ntenants = ["{tenant_id_for(OPENAI_KEY)}"]\n')
    return await start_proxy(proxy_settings, tenants_file=str(allowed))


async def test_listed_tenant_is_served(listed_proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(text="fine"))
    assert (await in_thread(ask, listed_proxy, OPENAI_KEY)).choices[0].message.content == "fine"


async def test_unlisted_tenant_gets_401_in_each_providers_shape(
    listed_proxy: Proxy, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(openai.AuthenticationError) as openai_error:
        await in_thread(ask, listed_proxy, OTHER_OPENAI_KEY)
    assert openai_error.value.body["code"] == "tenant_not_allowed"

    gemini = listed_proxy.gemini()
    with pytest.raises(genai_errors.ClientError) as gemini_error:
        await in_thread(lambda: gemini.models.generate_content(model="gemini-2.0-flash", contents="hi"))
    assert gemini_error.value.code == 401

    client = anthropic.Anthropic(base_url=listed_proxy.url, api_key=ANTHROPIC_KEY, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        await in_thread(lambda: client.messages.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "hi"}]))

    # Content-free side paths are refused too: an exposed proxy is not an open relay.
    async with httpx.AsyncClient() as http:
        models = await http.get(listed_proxy.url + "/v1/models", headers={"authorization": f"Bearer {OTHER_OPENAI_KEY}"})
    assert models.status_code == 401
    assert fake.requests == []
    refusals = [r.getMessage() for r in caplog.records if r.name == "capsem_proxyd.enforcement.tenants"]
    assert f"tenant_id={tenant_id_for(GEMINI_KEY)} refused: not in the tenants file" in refusals


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tenants = ['not-a-tenant']\n", "'not-a-tenant' is not a tenant id"),
        ("allowed = []\n", "expected only tenants = ["),
        ("tenants = [oops\n", "is not valid TOML"),
    ],
)
def test_bad_tenants_file_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text(text)
    with pytest.raises(PolicyConfigError, match=message.replace("[", r"\[")):
        load_allowed_tenants(path)


def test_profiles_resolve_relative_folders_and_validate_ids(tmp_path: Path) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text('[profiles]\n"ABCDEF0123456789" = "strict"\n')
    assert load_tenant_profiles(path) == {"abcdef0123456789": str(tmp_path / "strict")}
    path.write_text('[profiles]\n"abc" = "strict"\n')
    with pytest.raises(PolicyConfigError, match="'abc' is not a tenant id"):
        load_tenant_profiles(path)


async def test_missing_profile_folder_fails_startup(
    start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path
) -> None:
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(f'[profiles]\n"{tenant_id_for(OPENAI_KEY)}" = "nowhere"\n')
    with pytest.raises(PolicyConfigError, match="nowhere does not exist"):
        await start_proxy(proxy_settings, tenant_profiles=str(profiles))
