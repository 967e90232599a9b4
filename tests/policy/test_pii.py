"""PII (CAPSEM's PIIPolicy on Presidio) through the real proxy, with no network at all.

Skipped when the ``pii`` extra is not installed (CI installs it: ``.ci/run``
syncs ``--all-extras``). Every test here runs with a guard that refuses any
socket connection or name lookup outside loopback, so a model download or a
Public Suffix List fetch, at startup or per request, fails the test.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import trio

pytest.importorskip("presidio_analyzer", reason="the 'pii' extra is not installed")

from capsem.models import Agent  # noqa: E402

from capsem_proxyd.config import Settings  # noqa: E402
from capsem_proxyd.enforcement.loader import PolicyConfigError, load_policy_set  # noqa: E402
from tests.support.daemon import (  # noqa: E402
    assert_startup_error,
    daemon_env,  # noqa: E402
    run_capsem_proxyd,
)
from tests.support.fake_upstream import FakeUpstream, Reply  # noqa: E402
from tests.support.proxy import Proxy, in_thread  # noqa: E402
from tests.support.sdk import chat  # noqa: E402

PII_TOML = """
[entity_decisions]
EMAIL_ADDRESS = "BLOCK"
CREDIT_CARD = "block"
PHONE_NUMBER = "LOG"
"""
CARD = "4111 1111 1111 1111"
EMAIL = "jane.doe@example.com"
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


def _is_loopback(address: Any) -> bool:
    if not isinstance(address, tuple):
        return True  # AF_UNIX paths
    host = str(address[0])
    return host in LOOPBACK_HOSTS or host.startswith("127.")


@pytest.fixture(autouse=True)
def no_outside_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Any]:
    """Patch the environment (not the proxy): lookups and connections beyond loopback fail and are noted.

    tldextract's shared extractor also gets an empty cache, as on a fresh
    machine: a Public Suffix List it fetched (or failed to) earlier on this
    machine must not hide a fetch attempt.
    """
    import tldextract.tldextract as tldextract_module
    from tldextract.cache import DiskCache

    monkeypatch.setattr(tldextract_module.TLD_EXTRACTOR, "_cache", DiskCache(str(tmp_path / "tldextract-cache")))
    monkeypatch.setattr(tldextract_module.TLD_EXTRACTOR, "_extractor", None)
    attempts: list[Any] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo
    real_create_connection = socket.create_connection

    def guard(address: Any) -> None:
        if not _is_loopback(address):
            attempts.append(address)
            raise OSError(f"test network guard: no connection to {address!r}")

    def connect(self: socket.socket, address: Any) -> Any:
        guard(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        guard(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_loopback((host if isinstance(host, str) else host.decode(), 0)):
            attempts.append(host)
            raise socket.gaierror(socket.EAI_NONAME, f"test network guard: no lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> Any:
        guard(address)
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    yield attempts
    assert attempts == [], f"network access beyond loopback was attempted: {attempts}"


@pytest.fixture(params=["worker processes", "in the proxy's process"])
def pii_dir(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """Both ways the policy runs: in worker processes (the default), and in the proxy's own process
    (``processes = false``: threads, the fallback), where the network guard also covers its start-up."""
    folder = tmp_path / "policies"
    folder.mkdir()
    local = "processes = false\n" if request.param == "in the proxy's process" else ""
    (folder / "pii.toml").write_text(local + PII_TOML)
    return folder


@pytest.fixture
async def pii_proxy(start_proxy: Callable[..., Any], proxy_settings: Settings, pii_dir: Path) -> Proxy:
    # Built inside the test, so the guard covers startup (analyzer, suffix list) too.
    return await start_proxy(proxy_settings, policy_dir=str(pii_dir))


async def test_email_in_prompt_is_blocked_before_upstream(
    pii_proxy: Proxy, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await in_thread(chat, pii_proxy, f"Please write to {EMAIL} about the invoice")
    error = caught.value.body
    assert error["code"] == "capsem_blocked"
    assert error["capsem"]["policy"] == "PIIDetection"
    assert error["capsem"]["hook"] == "on_model_call"
    assert "EMAIL_ADDRESS" in error["capsem"]["details"]
    assert EMAIL not in str(caught.value.body)  # the decision names the entity, never the data
    assert fake.requests == []
    assert EMAIL not in caplog.text


async def test_clean_prompt_passes_and_log_verdict_is_reported(pii_proxy: Proxy, fake: FakeUpstream) -> None:
    fake.script(Reply(text="Noted."))
    raw = await in_thread(
        lambda: pii_proxy.openai().chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "my phone number is 212-555-0123"}]
        )
    )
    assert raw.parse().choices[0].message.content == "Noted."
    assert raw.headers["x-capsem-decision"] == "log"  # PHONE_NUMBER = "LOG": allowed, recorded
    assert raw.headers["x-capsem-policies"] == "Secrets, PIIDetection"  # Secrets: on by default (masking policies first)
    assert len(fake.requests) == 1


async def test_credit_card_in_streamed_response_is_cut_before_it_reaches_the_client(
    pii_proxy: Proxy, fake: FakeUpstream
) -> None:
    lead = "Here is the summary you asked for. " * 6
    fake.script(Reply(chunks=[lead, "The card on file is 4111 1111 ", "1111 1111, expiring soon.", " More text."]))
    received: list[str] = []

    def consume() -> BaseException | None:
        try:
            for chunk in chat(pii_proxy, "summarise my account", stream=True):
                for choice in chunk.choices:
                    received.append(choice.delta.content or "")
        except openai.APIError as error:
            return error
        return None

    error = await in_thread(consume)
    text = "".join(received)
    assert isinstance(error, openai.APIError), text
    assert "capsem_blocked" in str(error.body) and "CREDIT_CARD" in str(error.body)
    assert CARD not in text and "1111 1111" not in text
    assert text == lead[: len(text)]  # what was released is a prefix of the clean text


async def test_email_in_tool_result_is_blocked(pii_proxy: Proxy, fake: FakeUpstream) -> None:
    messages = [
        {"role": "user", "content": "who is the contact?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": f'{{"contact": "{EMAIL}"}}'},
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        await in_thread(lambda: pii_proxy.openai().chat.completions.create(model="m", messages=messages))
    assert caught.value.body["capsem"]["hook"] == "on_tool_response"
    assert fake.requests == []


async def test_analysis_runs_off_the_event_loop(pii_dir: Path) -> None:
    """While a long text is analysed, other tasks keep running (a worker process or thread, not the loop)."""
    policy = load_policy_set(pii_dir).manager.policies[0]
    agent = Agent.model_construct(name="t", instructions="", tools=[], sub_agents=[])
    text = ("Nothing to see here, just filler text for the analyzer. " * 4000) + EMAIL
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        decision = await policy.on_model_call("r", agent, "m", "", text, [])
        nursery.cancel_scope.cancel()
    assert decision.verdict.value == "BLOCK"
    assert ticks > 1, "the event loop was stalled during analysis"


def test_ner_entity_without_model_is_a_one_line_startup_error(tmp_path: Path) -> None:
    (tmp_path / "pii.toml").write_text('[entity_decisions]\nPERSON = "BLOCK"\nEMAIL_ADDRESS = "BLOCK"\n')
    result = run_capsem_proxyd("start", "--policy-dir", str(tmp_path), "--port", "0", env=daemon_env())
    assert_startup_error(result, "pii.toml", "PERSON", "en_core_web_lg", "python -m spacy download", "ner = false")


def test_ner_false_skips_ner_entities_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "pii.toml").write_text(
        'processes = false\nner = false\n[entity_decisions]\nPERSON = "BLOCK"\nLOCATION = "LOG"\nEMAIL_ADDRESS = "BLOCK"\n'
    )
    policy_set = load_policy_set(tmp_path)
    assert policy_set.names == ["PIIDetection", "Secrets"]  # Secrets: on by default
    policy = policy_set.manager.policies[0]
    assert [entity.value for entity in policy.entity_decisions] == ["EMAIL_ADDRESS"]
    assert any("LOCATION, PERSON skipped" in warning and "pii.toml" in warning for warning in policy_set.warnings)


def test_unknown_entity_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "pii.toml").write_text('[entity_decisions]\nSHOE_SIZE = "BLOCK"\n')
    with pytest.raises(PolicyConfigError, match="pii.toml: unknown PII entity 'SHOE_SIZE'"):
        load_policy_set(tmp_path)


@pytest.mark.parametrize("local", [False, True], ids=["worker processes", "in the proxy's process"])
async def test_an_entity_listed_under_redact_is_masked_and_the_request_goes_on(
    start_proxy: Callable[..., Any], proxy_settings: Settings, tmp_path: Path, fake: FakeUpstream, local: bool,
) -> None:
    """Issue 23: ``redact = [...]`` (a key CAPSEM's loader ignores) masks the entity, though
    ``entity_decisions`` blocks it, in the prompt and in a tool result; the decision pickles back from a
    worker process."""
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "pii.toml").write_text(("processes = false\n" if local else "") + 'redact = ["EMAIL_ADDRESS"]\n' + PII_TOML)
    proxy = await start_proxy(proxy_settings, policy_dir=str(folder))
    messages = [
        {"role": "user", "content": f"write to {EMAIL} about the contract"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": f'{{"contact": "{EMAIL}"}}'},
    ]
    raw = await in_thread(lambda: proxy.openai().chat.completions.with_raw_response.create(model="m", messages=messages))
    assert raw.headers["x-capsem-decision"] == "redact"
    sent = fake.requests[-1].body.decode()
    assert EMAIL not in sent
    assert len(set(re.findall(r"CAPSEM-MASKED-EMAILADDRESS-[A-Z2-7]{20}", sent))) == 1
    assert sent.count("CAPSEM-MASKED-EMAILADDRESS-") == 2
