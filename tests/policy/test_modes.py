"""Verdicts and modes: custom policy classes, CONFIRM vs BLOCK, monitor, shadow, decision headers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from capsem.models import DEFAULT_SAFE_DECISION, Agent, Decision, Media, Reason, Verdict
from capsem.policies import Policy

from capsem_proxyd.config import Settings
from capsem_proxyd.enforcement.loader import PolicyConfigError, load_policy_set
from capsem_proxyd.enforcement.shadow import ShadowTasks, open_shadow_tasks
from capsem_proxyd.enforcement.tenants import TenantPolicies, load_policy_config
from capsem_proxyd.exchange import Exchange
from capsem_proxyd.observe.recorders import Recorder
from capsem_proxyd.views import RequestView
from tests.support import exchanges
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import OPENAI_KEY, Proxy, capture_instances, in_thread


class ApprovalPolicy(Policy):
    """A custom policy loaded by ``class = "tests.policy.test_modes:ApprovalPolicy"``."""

    def __init__(self, phrase: str) -> None:
        super().__init__(name="Approval", description="Asks for confirmation on a phrase",
                         authors="tests", url="https://example.invalid")
        self.phrase = phrase

    async def on_model_call(
        self, invocation_id: str, agent: Agent, model_name: str, system_instructions: str, prompt: str, media: list[Media]
    ) -> Decision:
        if self.phrase in prompt.lower():
            return Decision(verdict=Verdict.CONFIRM, reason=Reason.HIGH_RISK_ACTION, details=f"'{self.phrase}' needs approval")
        return DEFAULT_SAFE_DECISION

    @classmethod
    def from_config(cls, config: dict) -> ApprovalPolicy:
        if set(config) - {"phrase", "enabled"}:
            raise ValueError(f"unexpected keys {sorted(config)}")  # proves class/mode are not passed on
        return cls(config.get("phrase", "wire money"))


def write(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.toml").write_text(text)
    return folder


def audit_decisions(path: Path) -> list[dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if line.get("type") == "decision" and line.get("verdict") != "ALLOW"]


def chat_raw(proxy: Proxy, content: str) -> httpx.Response:
    return httpx.post(
        proxy.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]},
        headers={"authorization": f"Bearer {OPENAI_KEY}"},
        timeout=10,
    )


@pytest.fixture
def shadow_tasks(monkeypatch: pytest.MonkeyPatch) -> Callable[[], ShadowTasks]:
    """The shadow tasks of the proxy a test starts next, to await their end (``wait_idle``)."""
    instances = capture_instances(monkeypatch)

    def tasks() -> ShadowTasks:
        assert instances, "no proxy instance was opened"
        return instances[-1].shadow_tasks

    return tasks


CUSTOM = 'class = "tests.policy.test_modes:ApprovalPolicy"\nmode = "enforce"\nphrase = "wire money"\n'
RULES = '[on_model_call]\nblock = ["forbidden plan"]\nconfirm = ["delete everything"]\nlog = ["mildly odd"]\n'


def test_custom_policy_class_loads_through_from_config(tmp_path: Path) -> None:
    policy_set = load_policy_set(write(tmp_path, approval=CUSTOM))
    assert policy_set.names == ["Approval", "Secrets"]  # Secrets: on by default
    policy = policy_set.manager.policies[0]
    assert isinstance(policy, ApprovalPolicy) and policy.phrase == "wire money"
    assert policy_set.mode_of("Approval") == "enforce"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('class = "tests.policy.test_modes:Nope"\n', "cannot load policy class"),
        ('class = "tests.policy.test_modes:write"\n', "is not a CAPSEM Policy subclass"),
        ('class = "tests.policy.test_modes:ApprovalPolicy"\ncolour = "red"\n', "unexpected keys"),
    ],
)
def test_bad_custom_class_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PolicyConfigError, match=message):
        load_policy_set(write(tmp_path, custom=text))


async def test_custom_policy_confirm_blocks_by_default(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path
) -> None:
    proxy = await start_proxy(proxy_settings, policy_dir=str(write(tmp_path, approval=CUSTOM)))
    with pytest.raises(openai.BadRequestError) as caught:
        await in_thread(lambda: proxy.openai().chat.completions.create(
            model="m", messages=[{"role": "user", "content": "please wire money to Bob"}]))
    assert caught.value.body["code"] == "capsem_confirmation_required"
    assert caught.value.body["capsem"]["policy"] == "Approval"
    assert fake.requests == []


async def test_confirm_and_block_answers_differ(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path
) -> None:
    proxy = await start_proxy(proxy_settings, policy_dir=str(write(tmp_path, rules=RULES)))
    blocked = await in_thread(chat_raw, proxy, "here is my forbidden plan")
    confirm = await in_thread(chat_raw, proxy, "now delete everything")
    assert blocked.status_code == confirm.status_code == 400
    blocked_error, confirm_error = blocked.json()["error"], confirm.json()["error"]
    assert blocked_error["code"] == "capsem_blocked"
    assert confirm_error["code"] == "capsem_confirmation_required"
    assert blocked_error["capsem"]["verdict"] == "BLOCK" and confirm_error["capsem"]["verdict"] == "CONFIRM"
    assert "needs confirmation" in confirm_error["message"]
    # The decision id lets a client ask for (and an operator find) the approval.
    ids = {blocked_error["capsem"]["decision_id"], confirm_error["capsem"]["decision_id"]}
    assert len(ids) == 2 and all(len(i) == 12 for i in ids)
    assert blocked.headers["x-capsem-decision"] == "block"
    assert confirm.headers["x-capsem-decision"] == "confirm"
    assert fake.requests == []


async def test_confirm_action_allow_lets_confirm_through_but_not_block(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path
) -> None:
    proxy = await start_proxy(proxy_settings, policy_dir=str(write(tmp_path, rules=RULES)), confirm_action="allow")
    confirm = await in_thread(chat_raw, proxy, "now delete everything")
    assert confirm.status_code == 200
    assert confirm.headers["x-capsem-decision"] == "confirm"
    blocked = await in_thread(chat_raw, proxy, "my forbidden plan")
    assert blocked.status_code == 400 and blocked.json()["error"]["code"] == "capsem_blocked"
    assert len(fake.requests) == 1


async def test_decision_headers_on_allowed_responses(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path
) -> None:
    proxy = await start_proxy(proxy_settings, policy_dir=str(write(tmp_path, rules=RULES, debug="")))
    plain = await in_thread(chat_raw, proxy, "hello")
    assert plain.status_code == 200
    assert plain.headers["x-capsem-decision"] == "allow"
    assert plain.headers["x-capsem-policies"] == "Secrets, Debug, Rules"  # Secrets: on by default (masking policies are asked, and listed, first)
    logged = await in_thread(chat_raw, proxy, "something mildly odd")
    assert logged.status_code == 200 and logged.headers["x-capsem-decision"] == "log"


async def test_decision_headers_on_a_stream_are_sent_at_stream_start(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path
) -> None:
    proxy = await start_proxy(proxy_settings, policy_dir=str(write(tmp_path, rules=RULES)))
    fake.script(Reply(text="a streamed answer", chunk_delay=0.01))
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "mildly odd question"}]}
    async with httpx.AsyncClient() as client, client.stream("POST", proxy.url + "/v1/chat/completions", json=body,
                             headers={"authorization": f"Bearer {OPENAI_KEY}"}) as response:
        assert response.headers["x-capsem-decision"] == "log"
        assert response.headers["x-capsem-policies"] == "Secrets, Rules"
        text = b"".join([chunk async for chunk in response.aiter_bytes()])
    assert b"[DONE]" in text


async def test_monitor_mode_lets_a_forbidden_prompt_through_and_records_it(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = write(tmp_path / "policies", rules='mode = "monitor"\n' + RULES)
    audit = tmp_path / "audit.jsonl"
    proxy = await start_proxy(proxy_settings, policy_dir=str(folder), audit_log=str(audit))
    fake.script(Reply(text="done"))
    response = await in_thread(chat_raw, proxy, "execute the forbidden plan")
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "done"
    assert response.headers["x-capsem-decision"] == "log"
    assert len(fake.requests) == 1
    (line,) = [r for r in caplog.records if r.name == "capsem_proxyd.enforcement" and r.getMessage().startswith("monitor:")]
    message = line.getMessage()
    assert "policy Rules would have refused (BLOCK in on_model_call" in message
    assert "'forbidden plan' (block)" in message
    assert response.headers["x-capsem-request-id"] in message
    (record,) = audit_decisions(audit)
    assert (record["policy"], record["verdict"], record["mode"], record["enforced"]) == ("Rules", "BLOCK", "monitor", False)


async def test_shadow_policies_are_recorded_and_never_change_the_response(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, shadow_tasks: Callable[[], ShadowTasks],
) -> None:
    main = write(tmp_path / "main", debug="")
    shadow = write(tmp_path / "shadow", rules='[on_model_call]\nblock = ["forbidden plan"]\n'
                                              '[on_model_response]\nblock = ["secret answer"]\n')
    audit = tmp_path / "audit.jsonl"
    proxy = await start_proxy(proxy_settings, policy_dir=str(main), shadow_policy_dir=str(shadow), audit_log=str(audit))
    fake.script(Reply(text="the secret answer"))
    response = await in_thread(chat_raw, proxy, "execute the forbidden plan")
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "the secret answer"
    assert response.headers["x-capsem-decision"] == "allow"
    assert response.headers["x-capsem-policies"] == "Secrets, Debug"  # shadow policies are not "active"
    assert len(fake.requests) == 1

    def shadow_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "capsem_proxyd.shadow"]

    await shadow_tasks().wait_idle()  # shadow runs in the background after the main decision
    request_id = response.headers["x-capsem-request-id"]
    assert any("Rules would have refused (BLOCK in on_model_call" in line and request_id in line for line in shadow_lines())
    assert any("Rules would have refused (BLOCK in on_model_response" in line for line in shadow_lines())
    records = audit_decisions(audit)
    assert {(r["hook"], r["policy"], r["mode"], r["enforced"]) for r in records} == {
        ("on_model_call", "Rules", "shadow", False), ("on_model_response", "Rules", "shadow", False)}
    assert all(r["request_id"] == request_id for r in records)


async def test_engine_tells_its_recorder_which_decisions_were_shadow_or_monitor(tmp_path: Path) -> None:
    main = write(tmp_path / "main", rules='mode = "monitor"\n[on_model_call]\nblock = ["alpha"]\n',
                 secrets="enabled = false\n")
    shadow = write(tmp_path / "shadow", rules='[on_model_call]\nconfirm = ["alpha"]\n')
    settings = Settings(policy_dir=str(main), shadow_policy_dir=str(shadow))
    records: list[tuple[str, str, str]] = []

    class Listener(Recorder):
        def decision_made(
            self, exchange: Exchange, hook: str, policy: str, decision: Decision, mode: str, cache: object = None
        ) -> None:
            records.append((policy, decision.verdict.value, mode))

    exchange = exchanges.exchange("openai", "chat", request_id="req_1", tenant_id="0" * 16)
    async with open_shadow_tasks() as tasks:
        policies = TenantPolicies(load_policy_config(settings), settings, Listener(), shadow_tasks=tasks)
        engine = policies.for_tenant(exchange.tenant_id)
        outcome = await engine.check_request(exchange, RequestView(model="m", prompt="alpha beta"))
        assert outcome == "LOG"  # monitor: would have blocked, let through
        assert tasks.pending == 1  # the shadow evaluation runs after the decision, in the background
        await tasks.wait_idle()
        assert records == [("Rules", "BLOCK", "monitor"), ("Rules", "CONFIRM", "shadow")]
        assert tasks.pending == 0 and tasks.dropped == 0


def test_shadow_policies_need_somewhere_to_run(tmp_path: Path) -> None:
    main = write(tmp_path / "main", debug="")
    settings = Settings(policy_dir=str(main), shadow_policy_dir=str(write(tmp_path / "shadow", debug="")))
    with pytest.raises(ValueError, match="shadow_tasks"):
        TenantPolicies(load_policy_config(settings), settings, Recorder())
    TenantPolicies(load_policy_config(Settings(policy_dir=str(main))), settings, Recorder())  # none: none needed


async def test_failing_shadow_policy_never_affects_traffic(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, shadow_tasks: Callable[[], ShadowTasks],
) -> None:
    shadow = write(tmp_path / "shadow", broken='class = "tests.policy.test_modes:ExplodingPolicy"\n')
    proxy = await start_proxy(proxy_settings, policy_dir=str(write(tmp_path / "main", debug="")),
                              shadow_policy_dir=str(shadow))
    response = await in_thread(chat_raw, proxy, "hello")
    assert response.status_code == 200
    await shadow_tasks().wait_idle()
    assert any("Exploding would have refused" in r.getMessage() for r in caplog.records if r.name == "capsem_proxyd.shadow")


class ExplodingPolicy(Policy):
    """Raises on every prompt (a shadow candidate with a bug)."""

    def __init__(self) -> None:
        super().__init__(name="Exploding", description="raises", authors="tests", url="https://example.invalid")

    async def on_model_call(self, *args: Any) -> Decision:
        raise RuntimeError("candidate policy bug")

    @classmethod
    def from_config(cls, config: dict) -> ExplodingPolicy:
        return cls()

