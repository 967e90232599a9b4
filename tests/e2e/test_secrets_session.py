"""An agent session through the real daemon with the Secrets policy (issue 23's first done-when test).

Turn 3's tool result prints an AWS access key id and its secret access key
(``AWS_SECRET_ACCESS_KEY=...``), a GitHub token and a private key block; the
agent resends the whole conversation every turn, and in turn 5 an assistant
message quotes the secret access key bare. With ``secrets.toml`` (the default
rules, which mask) and ``debug.toml`` in ``--policy-dir``, two worker
processes and the verdict cache answering for the pieces resent: every turn
from 3 to 10 succeeds, for every API, JSON and streamed; the fake provider
never receives a value; each value has one placeholder in every turn; and
the tool result reaches the provider as the client wrote it, but for the
placeholders.

One daemon serves every API and mode (the suite's CPU budget); each turn is a
fresh SDK client, so a fresh connection the kernel gives to either worker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from google.genai import types

from capsem_proxyd.config import Settings
from tests.support.daemon import upstream_args
from tests.support.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.support.metrics import scrape
from tests.support.proxy import ANTHROPIC_AUTH, OPENAI_AUTH, Proxy, in_thread
from tests.support.sdk import conversation_turn, policy_proxy

# Fake, well-formed, not the documented examples (which the policy lets through).
KEY_ID = "AKIAZ7Q3K5M2N8P4R6T1"
SECRET = "q8Vn3Rk/Zt5Lw9Xb2Hc+Jm7Pd4Ys6Fg1Ue0Ta3Ko"
GITHUB_TOKEN = "ghp_R4nd0mL00k1ngT0k3nV4lu3XyZ12AbCdEf9G"
PEM = ("-----BEGIN RSA PRIVATE KEY-----\n"
       "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
       "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
       "LxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW/VDL5AaWTg0nLVkjRo\n"
       "-----END RSA PRIVATE KEY-----")
TOOL_OUTPUT = (f"$ env | grep -E 'AWS|GITHUB'\nAWS_ACCESS_KEY_ID={KEY_ID}\nAWS_SECRET_ACCESS_KEY={SECRET}\n"
               f"GITHUB_TOKEN={GITHUB_TOKEN}\n$ cat ~/.ssh/id_rsa\n{PEM}\n$ echo done \"quoted\" \\ tab\there\n")
QUOTE = f"The secret access key is {SECRET}, I will rotate it."  # turn 5: bare, no label
KINDS = {"AWSACCESSKEYID": KEY_ID, "AWSSECRETACCESSKEY": SECRET, "GITHUBTOKEN": GITHUB_TOKEN, "PRIVATEKEY": PEM}
PLACEHOLDER = re.compile(r"CAPSEM-MASKED-([A-Z0-9]+)-[A-Z2-7]{20}")
TURNS = range(3, 11)
COMMAND = {"cmd": "env | grep -E 'AWS|GITHUB'; cat ~/.ssh/id_rsa"}


def later(turn: int) -> Iterator[tuple[str, str]]:
    """(assistant, user) texts after the tool result, up to ``turn``: turn 5's assistant quotes the key."""
    for number in range(4, turn + 1):
        yield (QUOTE if number == 5 else f"Step {number} done."), f"Go on with step {number}."


def chat_messages(turn: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Why does the deploy fail?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_env", "type": "function", "function": {"name": "shell", "arguments": json.dumps(COMMAND)}}]},
        {"role": "tool", "tool_call_id": "call_env", "content": TOOL_OUTPUT},
    ]
    for assistant, user in later(turn):
        messages += [{"role": "assistant", "content": assistant}, {"role": "user", "content": user}]
    return messages


def responses_input(turn: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [
        {"role": "user", "content": "Why does the deploy fail?"},
        {"type": "function_call", "call_id": "call_env", "name": "shell", "arguments": json.dumps(COMMAND)},
        {"type": "function_call_output", "call_id": "call_env", "output": TOOL_OUTPUT},
    ]
    for assistant, user in later(turn):
        items += [{"role": "assistant", "content": assistant}, {"role": "user", "content": user}]
    return items


def anthropic_messages(turn: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Why does the deploy fail?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_env", "name": "shell", "input": COMMAND}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_env", "content": TOOL_OUTPUT}]},
    ]
    for assistant, user in later(turn):
        messages += [{"role": "assistant", "content": assistant}, {"role": "user", "content": user}]
    return messages


def gemini_contents(turn: int) -> list[types.Content]:
    contents = [
        types.Content(role="user", parts=[types.Part(text="Why does the deploy fail?")]),
        types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(name="shell", args=COMMAND))]),
        types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
            name="shell", response={"output": TOOL_OUTPUT}))]),
    ]
    for assistant, user in later(turn):
        contents += [types.Content(role="model", parts=[types.Part(text=assistant)]),
                     types.Content(role="user", parts=[types.Part(text=user)])]
    return contents


def call(api: str, stream: bool, proxy: Proxy, turn: int) -> None:
    """Turn ``turn`` of the session through the API's official SDK; raises if refused."""
    build = {"chat": chat_messages, "responses": responses_input, "anthropic": anthropic_messages,
             "gemini": gemini_contents}[api]
    conversation_turn(api, stream, proxy, build(turn))


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, member in value.items():
            yield key
            yield from strings(member)
    elif isinstance(value, list):
        for member in value:
            yield from strings(member)


def served_by(log: str) -> set[str]:
    return {line.split("capsem_proxyd.request[")[1].split("]")[0]
            for line in log.splitlines() if "capsem_proxyd.request[" in line and "decision=redact" in line}


async def test_an_agent_session_goes_on_with_credentials_masked_in_every_api_and_turn(
    tmp_path: Path, fake: FakeUpstream, daemons: Callable[..., Any], proxy_settings: Settings,
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "secrets.toml").write_text("# the default rules: credentials in requests are masked\n")
    (policies / "debug.toml").write_text("enabled = true\n")
    daemon = daemons("--workers", "2", "--state-dir", str(tmp_path / "state"), "--policy-dir", str(policies),
                     *upstream_args(fake.url))
    health = await daemon.wait_ready(timeout=90)
    assert set(health["policies"]) == {"Secrets", "Debug"}
    proxy = Proxy(daemon.url, proxy_settings)
    values = (KEY_ID, SECRET, GITHUB_TOKEN, PEM, *PEM.splitlines()[1:-1])
    for api in ("chat", "responses", "anthropic", "gemini"):
        for stream in (False, True):
            before = len(fake.generation_requests)
            for turn in TURNS:
                await in_thread(call, api, stream, proxy, turn)  # raises if refused: every turn succeeds
            sent = fake.generation_requests[before:]
            assert len(sent) == len(TURNS), (api, stream)
            placeholders: dict[str, set[str]] = {}
            for turn, request in zip(TURNS, sent, strict=True):
                body = request.body.decode()
                shown = body + json.dumps(request.json, ensure_ascii=False) + request.path
                leaked = [value[:8] for value in values if value in shown or value.replace("/", "\\/") in shown]
                assert not leaked, (api, stream, turn, leaked)
                found = {match[0]: match[1] for match in PLACEHOLDER.finditer(body)}
                for made, kind in found.items():
                    placeholders.setdefault(kind, set()).add(made)
                assert set(found.values()) == set(KINDS), (api, stream, turn, found)
                one = {kind: next(iter(made)) for kind, made in placeholders.items()}
                # the tool result as the client wrote it, every character but the values'
                expected = TOOL_OUTPUT
                for kind, value in KINDS.items():
                    expected = expected.replace(value, one[kind])
                forwarded = list(strings(request.json))
                assert expected in forwarded, (api, stream, turn)
                if turn >= 5:
                    assert QUOTE.replace(SECRET, one["AWSSECRETACCESSKEY"]) in forwarded, (api, stream, turn)
            assert all(len(made) == 1 for made in placeholders.values()), (api, stream, placeholders)  # every turn
    metrics = await scrape(daemon.url)
    assert metrics("capsem_proxyd_verdict_cache_hits_total", hook="on_model_call") > 0  # turns resent from cache
    assert await daemon.stop() == 0
    assert len(served_by(daemon.log)) == 2, "both workers masked"
    assert not any(value[:12] in daemon.log for value in values)


# -- a credential the model reads across parts and pieces ------------------------------------------------------

LONG_PEM = "\n".join([PEM.splitlines()[0], *(PEM.splitlines()[1 + line % 3] for line in range(60)),
                      PEM.splitlines()[-1]])


def anthropic_body(contents: list[Any]) -> dict[str, Any]:
    return {"model": "claude-haiku-4-5", "max_tokens": 32, "messages": contents}


@pytest.mark.parametrize("cut", [len(GITHUB_TOKEN) // 2, 4, len(GITHUB_TOKEN) - 1])
async def test_a_token_split_across_adjacent_text_parts_is_masked_in_both(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path, cut: int,
) -> None:
    """Adjacent text parts are one text to the model: ``ghp_R4nd`` + ``0mL...`` is the token, masked on both
    sides of the joint (on main: refused, the value being found in no one string)."""
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", secrets="")
    content = [{"type": "text", "text": f"my token: {GITHUB_TOKEN[:cut]}"},
               {"type": "text", "text": f"{GITHUB_TOKEN[cut:]} is it valid?"}]
    async with httpx.AsyncClient(timeout=20) as client:
        reply = await client.post(proxy.url + "/v1/messages", headers=dict(ANTHROPIC_AUTH),
                                  json=anthropic_body([{"role": "user", "content": content}]))
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-capsem-decision"] == "redact"
    sent = fake.generation_requests[-1].json["messages"][0]["content"]
    texts = [part["text"] for part in sent]
    placeholder = texts[1].removesuffix(" is it valid?")
    assert PLACEHOLDER.fullmatch(placeholder) and "GITHUBTOKEN" in placeholder
    assert texts == [f"my token: {placeholder}", f"{placeholder} is it valid?"]


@pytest.mark.parametrize("pem", [PEM, LONG_PEM], ids=["short", "long"])
@pytest.mark.parametrize("where", ["line end", "mid line"])
async def test_a_private_key_block_that_continues_into_the_next_piece_is_masked_to_its_end(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path, pem: str,
    where: str,
) -> None:
    """A tool output cut inside a key block, the rest in the next message: the block is masked from its
    BEGIN line to the end of the first piece and from the next piece's start to its END line, whether or
    not the seam between them reaches the BEGIN line (a long block)."""
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", secrets="")
    lines = pem.splitlines()
    cut = len(pem) // 2
    cut = pem.index("\n", cut) if where == "line end" else cut
    first, second = f"$ cat id_rsa | head -c {cut}\n{pem[:cut]}", f"{pem[cut:].lstrip(chr(10))}\n$ echo ok"
    messages = [{"role": "user", "content": first}, {"role": "user", "content": second},
                {"role": "user", "content": "what is that?"}]
    async with httpx.AsyncClient(timeout=20) as client:
        reply = await client.post(proxy.url + "/v1/chat/completions", headers=dict(OPENAI_AUTH),
                                  json={"model": "gpt-4o-mini", "messages": messages})
    assert reply.status_code == 200, reply.text
    sent = [message["content"] for message in fake.generation_requests[-1].json["messages"]]
    assert sent[0].startswith(f"$ cat id_rsa | head -c {cut}\nCAPSEM-MASKED-PRIVATEKEY-"), sent[0]
    assert sent[1].startswith("CAPSEM-MASKED-PRIVATEKEY-") and sent[1].endswith("\n$ echo ok"), sent[1]
    body = fake.generation_requests[-1].body.decode()
    assert not any(line[:16] in body for line in lines[1:-1])
    assert lines[0] not in body and lines[-1] not in body


@pytest.mark.parametrize("api", ["chat", "anthropic"])
async def test_a_private_key_in_tool_call_arguments_is_masked_on_its_value_not_refused(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path, api: str,
) -> None:
    """Arguments are read as JSON, where a key's newlines are ``\\n`` escapes: the finding names the decoded
    value, which the proxy masks inside the arguments (JSON in a string for Chat, an object for Anthropic)."""
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", secrets="")
    arguments = {"path": "/root/.ssh/id_rsa", "content": PEM + "\n", "token": GITHUB_TOKEN}
    if api == "chat":
        path, auth = "/v1/chat/completions", OPENAI_AUTH
        body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [
            {"role": "user", "content": "save my key"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
                "name": "write_file", "arguments": json.dumps(arguments)}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "written"}]}
    else:
        path, auth = "/v1/messages", ANTHROPIC_AUTH
        body = anthropic_body([
            {"role": "user", "content": "save my key"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "write_file", "input": arguments}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "written"}]}])
    async with httpx.AsyncClient(timeout=20) as client:
        reply = await client.post(proxy.url + path, headers=dict(auth), json=body)
    assert reply.status_code == 200, reply.text
    sent = fake.generation_requests[-1].json
    if api == "chat":
        forwarded = json.loads(sent["messages"][1]["tool_calls"][0]["function"]["arguments"])
    else:
        forwarded = sent["messages"][1]["content"][0]["input"]
    assert forwarded["path"] == "/root/.ssh/id_rsa"
    assert re.fullmatch(r"CAPSEM-MASKED-PRIVATEKEY-[A-Z2-7]{20}\n", forwarded["content"]), forwarded
    assert re.fullmatch(r"CAPSEM-MASKED-GITHUBTOKEN-[A-Z2-7]{20}", forwarded["token"]), forwarded
    assert not any(line in fake.generation_requests[-1].body.decode() for line in PEM.splitlines())


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_credential_in_a_tool_call_the_model_makes_never_reaches_the_client(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path, stream: bool,
) -> None:
    """A model's tool call carrying a token: in a JSON reply the token is masked in the call's arguments (the
    reply is rewritten by value); a streamed call's arguments are never rewritten, so the stream is refused.
    Either way the client never receives the token."""
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", secrets="")
    fake.script(Reply(tool_calls=[ToolCall(name="shell", arguments={"cmd": f"gh auth login --with-token {GITHUB_TOKEN}"})]))
    received: list[str] = []

    def ask() -> None:
        reply = proxy.openai().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "log in"}], stream=stream)
        for chunk in (reply if stream else [reply]):
            received.append(chunk.model_dump_json())

    if stream:
        with pytest.raises(openai.APIError):
            await in_thread(ask)
    else:
        await in_thread(ask)
        (reply,) = received
        arguments = json.loads(json.loads(reply)["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
        assert re.fullmatch(r"gh auth login --with-token CAPSEM-MASKED-GITHUBTOKEN-[A-Z2-7]{20}", arguments["cmd"])
    assert not any(GITHUB_TOKEN[:12] in text for text in received)


async def test_a_private_key_split_across_the_parts_of_a_tool_result_is_masked_in_each(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path,
) -> None:
    proxy = await policy_proxy(start_proxy, proxy_settings, tmp_path / "policies", secrets="")
    cut = PEM.index("\n", len(PEM) // 2) + 5
    parts = [{"type": "text", "text": f"$ cat id_rsa\n{PEM[:cut]}"}, {"type": "text", "text": f"{PEM[cut:]}\n$ ok"}]
    body = anthropic_body([
        {"role": "user", "content": "show the key"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shell", "input": {"cmd": "cat"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": parts}]}])
    async with httpx.AsyncClient(timeout=20) as client:
        reply = await client.post(proxy.url + "/v1/messages", headers=dict(ANTHROPIC_AUTH), json=body)
    assert reply.status_code == 200, reply.text
    sent = [part["text"] for part in fake.generation_requests[-1].json["messages"][2]["content"][0]["content"]]
    assert re.fullmatch(r"\$ cat id_rsa\nCAPSEM-MASKED-PRIVATEKEY-[A-Z2-7]{20}", sent[0]), sent
    assert re.fullmatch(r"CAPSEM-MASKED-PRIVATEKEY-[A-Z2-7]{20}\n\$ ok", sent[1]), sent
