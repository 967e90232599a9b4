"""OpenTelemetry trace export: one span per proxied request, exported to a real OTLP/HTTP receiver.

The proxy runs as in every e2e test (real sockets, the official SDKs against
the fake provider); ``--otlp-endpoint`` points it at ``OTLPReceiver``, which
decodes what it gets with opentelemetry-proto. The batch processor's
schedule is shortened (``OTEL_BSP_SCHEDULE_DELAY``) so spans arrive quickly;
waits are bounded, nothing is timed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from capsem_proxyd.config import Settings
from capsem_proxyd.exchange import tenant_id_for
from capsem_proxyd.observe.tracing import TraceExport, TracingConfigError, trace_export
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.otlp_receiver import OTLPReceiver, ReceivedSpan, run_otlp_receiver
from tests.support.proxy import ALL_TEST_KEYS, ANTHROPIC_KEY, GEMINI_KEY, OPENAI_KEY, Proxy, in_thread
from tests.support.sdk import GEMINI_MODEL

ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"
TRACESTATE = "vendor=opaque-value"
# Text that must never leave in a span: the prompt, the reply, the policy's details.
PROMPT = "Meet me where the falcon sleeps, code word tangerine-4471"
REPLY = "Understood: the heron waits by the old mill 9182"
KEYS = {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY, "gemini": GEMINI_KEY}
SPAN_NAMES = {"openai": "chat gpt-4o-mini", "anthropic": "chat claude-sonnet-4-6",
              "gemini": f"generate_content {GEMINI_MODEL}"}
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}


@pytest.fixture
async def receiver(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OTLPReceiver]:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")  # milliseconds between exports of a partial batch
    async with run_otlp_receiver() as receiver:
        yield receiver


@pytest.fixture
async def traced(start_proxy: Callable[..., Any], proxy_settings: Settings, receiver: OTLPReceiver) -> Proxy:
    proxy: Proxy = await start_proxy(proxy_settings, otlp_endpoint=receiver.url)
    return proxy


async def exported(receiver: OTLPReceiver, matches: Callable[[ReceivedSpan], bool]) -> ReceivedSpan:
    with trio.fail_after(15):
        return await receiver.wait_for_span(matches)


def assert_nothing_secret(receiver: OTLPReceiver) -> None:
    raw = receiver.raw
    assert raw, "nothing was exported"
    for secret in (PROMPT, REPLY, "capsem_block", "Detected", *ALL_TEST_KEYS):
        assert secret.encode() not in raw, f"{secret!r} was exported"


def hex_id(value: bytes) -> str:
    return value.hex()


# -- a chat request: span shape, usage, parent, the traceparent sent upstream ----------------


async def test_chat_span_follows_the_genai_conventions_and_continues_the_clients_trace(
    traced: Proxy, fake: FakeUpstream, receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.script(Reply(text=REPLY))

    def call() -> Any:
        with httpx.Client() as plain:  # the control plane is never traced
            assert plain.get(traced.url + "/health").status_code == 200
        with traced.openai() as client:
            return client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}],
                extra_headers={"traceparent": TRACEPARENT, "tracestate": TRACESTATE},
            )

    raw = await in_thread(call)
    completion = raw.parse()
    request_id = raw.headers["x-capsem-request-id"]
    span = await exported(receiver, lambda span: span.attributes.get("capsem.request_id") == request_id)

    assert span.name == "chat gpt-4o-mini"
    assert span.span.kind == Span.SPAN_KIND_SERVER
    assert span.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": completion.model,
        "gen_ai.usage.input_tokens": completion.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": completion.usage.completion_tokens,
        "server.address": "127.0.0.1",
        "server.port": httpx.URL(fake.url).port,
        "http.response.status_code": 200,
        "capsem.request_id": request_id,
        "capsem.tenant_id": tenant_id_for(OPENAI_KEY),
        "capsem.provider": "openai",
        "capsem.endpoint": "chat.completions",
        "capsem.stream": False,
        "capsem.decision": "allow",
        "capsem.outcome": "200",
    }
    assert span.span.status.code == Status.STATUS_CODE_UNSET
    decisions = span.events("capsem.policy_decision")
    assert [(d["capsem.policy"], d["capsem.hook"], d["capsem.verdict"], d["capsem.mode"]) for d in decisions] == [
        ("Secrets", "on_model_call", "ALLOW", "enforce"),  # the default set: Secrets (masking: asked first), Debug
        ("Debug", "on_model_call", "ALLOW", "enforce"),
        ("Secrets", "on_model_response", "ALLOW", "enforce"),
        ("Debug", "on_model_response", "ALLOW", "enforce"),
    ]
    assert all(d["capsem.decision_id"] and d["capsem.reason"] for d in decisions)
    assert span.resource["service.name"] == "capsem-proxyd"

    # The client's span is the parent; the upstream got our span's context and the client's tracestate.
    assert hex_id(span.span.trace_id) == TRACE_ID
    assert hex_id(span.span.parent_span_id) == CLIENT_SPAN_ID
    upstream = fake.requests_to("/chat/completions")[0].headers
    assert upstream["traceparent"] == f"00-{TRACE_ID}-{hex_id(span.span.span_id)}-01"
    assert upstream["tracestate"] == TRACESTATE

    assert len(receiver.spans()) == 1, [s.name for s in receiver.spans()]  # /health made none
    assert_nothing_secret(receiver)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_json_replies_of_each_provider_give_their_usage(
    provider: str, traced: Proxy, fake: FakeUpstream, receiver: OTLPReceiver
) -> None:
    fake.script(Reply(text=REPLY))
    stated = await in_thread(json_call, provider, traced)
    span = await exported(receiver, lambda span: span.name == SPAN_NAMES[provider])
    attributes = span.attributes
    assert attributes["gen_ai.provider.name"] == PROVIDER_NAMES[provider]
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"],
            attributes["gen_ai.response.model"]) == stated
    assert attributes["capsem.tenant_id"] == tenant_id_for(KEYS[provider])
    assert not span.span.parent_span_id  # no client trace: our span is the root
    assert_nothing_secret(receiver)


def json_call(provider: str, proxy: Proxy) -> tuple[int, int, str]:
    """One JSON call; the input and output tokens and the model the reply stated, as the SDK read them."""
    messages = [{"role": "user", "content": PROMPT}]
    if provider == "openai":
        with proxy.openai() as client:
            reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            return reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.model
    if provider == "anthropic":
        with proxy.anthropic() as client:
            message = client.messages.create(model="claude-sonnet-4-6", max_tokens=50, messages=messages)
            return anthropic_tokens(message)
    with proxy.gemini() as client:
        answer = client.models.generate_content(model=GEMINI_MODEL, contents=PROMPT)
        return gemini_tokens(answer)


# -- streams: usage from the final events -------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_stream_span_reads_usage_from_the_final_events(
    provider: str, traced: Proxy, fake: FakeUpstream, receiver: OTLPReceiver
) -> None:
    fake.script(Reply(text=REPLY))
    stated = await in_thread(stream_call, provider, traced)
    span = await exported(receiver, lambda span: span.name == SPAN_NAMES[provider])
    attributes = span.attributes
    assert attributes["capsem.stream"] is True
    assert attributes["capsem.outcome"] == "completed"
    assert attributes["http.response.status_code"] == 200
    assert "error.type" not in attributes
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"],
            attributes["gen_ai.response.model"]) == stated
    version, trace_id, parent_id, flags = fake.requests[0].headers["traceparent"].split("-")
    assert (version, trace_id, parent_id) == ("00", hex_id(span.span.trace_id), hex_id(span.span.span_id))
    assert int(flags, 16) & 1  # sampled (a root span may also set W3C's "random trace id" flag)
    assert_nothing_secret(receiver)


def stream_call(provider: str, proxy: Proxy) -> tuple[int, int, str]:
    messages = [{"role": "user", "content": PROMPT}]
    if provider == "openai":
        with proxy.openai() as client:
            chunks = list(client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
            ))
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
            final = chunks[-1]
            return final.usage.prompt_tokens, final.usage.completion_tokens, final.model
    if provider == "anthropic":
        with proxy.anthropic() as client:
            with client.messages.stream(model="claude-sonnet-4-6", max_tokens=50, messages=messages) as events:
                assert "".join(events.text_stream) == REPLY
                return anthropic_tokens(events.get_final_message())
    with proxy.gemini() as client:
        pieces = list(client.models.generate_content_stream(model=GEMINI_MODEL, contents=PROMPT))
        assert "".join(piece.text or "" for piece in pieces) == REPLY
        return gemini_tokens(pieces[-1])


def anthropic_tokens(message: Any) -> tuple[int, int, str]:
    usage = message.usage
    cached = (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
    return usage.input_tokens + cached, usage.output_tokens, message.model


def gemini_tokens(answer: Any) -> tuple[int, int, str]:
    usage = answer.usage_metadata
    return usage.prompt_token_count, usage.candidates_token_count + (usage.thoughts_token_count or 0), answer.model_version


# -- a blocked prompt ---------------------------------------------------------------------------


async def test_blocked_prompt_span_carries_the_decision_and_never_the_prompt(
    traced: Proxy, fake: FakeUpstream, receiver: OTLPReceiver
) -> None:
    def call() -> openai.BadRequestError:
        with traced.openai() as client, pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"capsem_block {PROMPT}"}],
                extra_headers={"traceparent": TRACEPARENT},
            )
        return refused.value

    error = await in_thread(call)
    capsem = error.response.json()["error"]["capsem"]
    span = await exported(receiver, lambda span: span.attributes.get("capsem.decision") == "block")

    assert span.name == "chat gpt-4o-mini"
    attributes = span.attributes
    assert attributes["http.response.status_code"] == 400
    assert attributes["error.type"] == "400"
    assert attributes["capsem.request_id"] == error.response.headers["x-capsem-request-id"]
    assert "gen_ai.usage.input_tokens" not in attributes and "gen_ai.response.model" not in attributes
    assert span.span.status.code == Status.STATUS_CODE_UNSET  # a block is the proxy doing its job
    allowed, decision = span.events("capsem.policy_decision")  # Secrets (asked first) let it through
    assert (allowed["capsem.policy"], allowed["capsem.verdict"]) == ("Secrets", "ALLOW")
    assert decision == {
        "capsem.policy": "Debug", "capsem.hook": "on_model_call", "capsem.verdict": "BLOCK",
        "capsem.reason": capsem["reason"], "capsem.decision_id": capsem["decision_id"], "capsem.mode": "enforce",
    }
    assert hex_id(span.span.parent_span_id) == CLIENT_SPAN_ID
    assert fake.requests == []  # nothing went upstream
    assert_nothing_secret(receiver)


async def test_blocked_stream_span_says_blocked(traced: Proxy, fake: FakeUpstream, receiver: OTLPReceiver) -> None:
    fake.script(Reply(text=f"{REPLY} capsem_block"))

    def call() -> None:
        with traced.anthropic() as client, pytest.raises(anthropic.APIError):
            with client.messages.stream(
                model="claude-sonnet-4-6", max_tokens=50, messages=[{"role": "user", "content": PROMPT}]
            ) as events:
                "".join(events.text_stream)

    await in_thread(call)
    span = await exported(receiver, lambda span: span.attributes.get("capsem.stream") is True)
    attributes = span.attributes
    assert (attributes["capsem.outcome"], attributes["error.type"], attributes["capsem.decision"]) == (
        "blocked", "blocked", "block"
    )
    assert [d["capsem.hook"] for d in span.events("capsem.policy_decision") if d["capsem.verdict"] == "BLOCK"] == [
        "on_model_response"
    ]
    assert_nothing_secret(receiver)


# -- the OTEL_* environment -----------------------------------------------------------------------


async def test_otel_environment_sets_endpoint_service_resource_and_export_headers(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, receiver: OTLPReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.url + "/collector/traces")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "llm-gateway")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test,service.name=ignored")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-token=c0llect0r")
    proxy: Proxy = await start_proxy(proxy_settings)  # no --otlp-endpoint: the environment turns export on

    await in_thread(json_call, "openai", proxy)
    span = await exported(receiver, lambda span: span.name == "chat gpt-4o-mini")
    assert span.resource["service.name"] == "llm-gateway"
    assert span.resource["deployment.environment.name"] == "test"
    assert {export.path for export in receiver.exports} == {"/collector/traces"}
    assert all(export.headers["x-collector-token"] == "c0llect0r" for export in receiver.exports)


def test_endpoint_precedence_flag_then_traces_variable_then_base_variable() -> None:
    flag = Settings(otlp_endpoint="http://flag:4318/")
    none = Settings()
    both = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces:4318/custom", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318"}
    assert trace_export(flag, both) == TraceExport("http://flag:4318/v1/traces", "--otlp-endpoint")
    assert trace_export(Settings(otlp_endpoint="http://flag:4318/v1/traces"), {}) == TraceExport(
        "http://flag:4318/v1/traces", "--otlp-endpoint"
    )
    assert trace_export(none, both) == TraceExport("https://traces:4318/custom", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    assert trace_export(none, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318/prefix/"}) == TraceExport(
        "http://base:4318/prefix/v1/traces", "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    assert trace_export(none, {}) is None
    assert trace_export(flag, {"OTEL_SDK_DISABLED": "true", **both}) is None
    with pytest.raises(TracingConfigError, match="http:// or https://"):
        trace_export(Settings(otlp_endpoint="collector:4318"), {})


# -- OpenTelemetry off --------------------------------------------------------------------------------


async def test_with_tracing_off_the_clients_trace_context_reaches_the_upstream_unchanged(
    proxy: Proxy, fake: FakeUpstream
) -> None:
    def call() -> None:
        with proxy.openai() as client:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                extra_headers={"traceparent": TRACEPARENT, "tracestate": TRACESTATE},
            )

    await in_thread(call)
    upstream = fake.requests_to("/chat/completions")[0].headers
    assert (upstream["traceparent"], upstream["tracestate"]) == (TRACEPARENT, TRACESTATE)


def test_with_tracing_off_nothing_of_opentelemetry_is_imported_on_the_request_path() -> None:
    script = textwrap.dedent("""
        import sys
        import httpx, trio
        from capsem_proxyd.config import Settings
        from capsem_proxyd.daemon.server import serve
        from capsem_proxyd.enforcement.tenants import load_policy_config
        from tests.support.fake_upstream import run_fake_upstream

        async def main():
            async with run_fake_upstream() as fake:
                settings = Settings(port=0, openai_upstream=fake.url + "/v1", graceful_timeout=0.5)
                async with trio.open_nursery() as nursery:
                    binds = await nursery.start(lambda task_status: serve(
                        settings, load_policy_config(settings), handle_signals=False, task_status=task_status))
                    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
                    headers = {"authorization": "Bearer sk-test-off", "traceparent": sys.argv[1]}
                    async with httpx.AsyncClient() as client:
                        for stream in (False, True):
                            reply = await client.post(binds[0] + "/v1/chat/completions",
                                                      json={**body, "stream": stream}, headers=headers)
                            assert reply.status_code == 200, reply.text
                    nursery.cancel_scope.cancel()
            print(sorted(name for name in sys.modules if name.startswith(("opentelemetry", "capsem_proxyd.observe.otel"))))

        trio.run(main)
    """)
    done = subprocess.run([sys.executable, "-c", script, TRACEPARENT], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["start", "check"])
def test_export_without_the_otel_extra_fails_startup_with_one_line_naming_it(command: str) -> None:
    script = (
        "import sys; sys.modules['opentelemetry'] = None  # as if the extra were not installed\n"
        "from capsem_proxyd.daemon.cli import main; main(sys.argv[1:])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, command, "--port", "0", "--otlp-endpoint", "http://127.0.0.1:4318"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("capsem-proxyd: error: --otlp-endpoint is set: trace export needs OpenTelemetry")
    assert "install the 'otel' extra: uv sync --extra otel" in lines[0]


def test_check_names_where_spans_go() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "capsem_proxyd", "check", "--otlp-endpoint", "http://user:secret@collector:4318"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "traces: OTLP/HTTP to http://collector:4318/v1/traces (--otlp-endpoint)" in done.stdout
    assert "secret" not in done.stdout


# -- a masked request (issue 23) ----------------------------------------------------------------

MASKED_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
MASKING_RULES = r"""
[on_tool_response]
redact = [{ name = "aws-secret", regex = 'AWS_SECRET_ACCESS_KEY\s*=\s*(?P<value>[A-Za-z0-9/+]{40})', group = "value" }]
"""


async def test_a_masked_request_has_a_redaction_event_per_value_and_never_the_value(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, receiver: OTLPReceiver,
    tmp_path: Path,
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "rules.toml").write_text(MASKING_RULES)
    proxy: Proxy = await start_proxy(proxy_settings, otlp_endpoint=receiver.url, policy_dir=str(policies))
    messages: list[Any] = [
        {"role": "user", "content": "deploy"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "shell", "arguments": '{"cmd": "env"}'}}]},
        {"role": "tool", "tool_call_id": "c1",
         "content": f"AWS_SECRET_ACCESS_KEY={MASKED_SECRET}\nagain: {MASKED_SECRET}\n"},
    ]

    def call() -> str:
        with proxy.openai() as client:
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
        return raw.headers["x-capsem-decision"]

    assert await in_thread(call) == "redact"
    span = await exported(receiver, lambda span: span.name == "chat gpt-4o-mini")
    assert span.attributes["capsem.decision"] == "redact"
    (event,) = span.events("capsem.redaction")
    (sent,) = fake.requests
    placeholders = set(re.findall(r"CAPSEM-MASKED-AWSSECRET-[A-Z2-7]{20}", sent.body.decode()))
    assert placeholders == {event["capsem.placeholder"]}
    async with httpx.AsyncClient() as client:
        health = (await client.get(proxy.url + "/health")).json()
    assert event == {
        "capsem.policy": "Rules", "capsem.kind": "aws-secret", "capsem.hook": "on_tool_response", "capsem.count": 2,
        "capsem.placeholder": event["capsem.placeholder"], "capsem.key_id": health["masking"]["key_id"],
    }
    assert MASKED_SECRET.encode() not in receiver.raw and MASKED_SECRET.encode() not in sent.body


# -- the MCP hop -----------------------------------------------------------------------------


async def test_mcp_spans_name_the_method_and_the_tool_never_the_arguments(
    start_proxy: Callable[..., Any], proxy_settings: Settings, receiver: OTLPReceiver, tmp_path: Path
) -> None:
    from tests.e2e.test_mcp_hop import mcp_client, mcp_server, server_ready

    with mcp_server(tmp_path) as (server_url, _):
        await server_ready(server_url)
        proxy = await start_proxy(proxy_settings, otlp_endpoint=receiver.url, mcp_servers=(f"docs={server_url}/mcp",))
        async with mcp_client(proxy.url + "/mcp/docs") as client:
            await client.list_tools()
            await client.call_tool("echo", {"text": PROMPT})
        span = await exported(receiver, lambda span: span.name == "tools/call echo")
    assert span.attributes["mcp.method.name"] == "tools/call"
    assert span.attributes["gen_ai.tool.name"] == "echo"
    assert span.attributes["capsem.provider"] == "mcp"
    assert PROMPT.encode() not in receiver.raw


async def test_an_mcp_call_continues_the_trace_its_meta_names_and_says_its_server(
    start_proxy: Callable[..., Any], proxy_settings: Settings, receiver: OTLPReceiver, tmp_path: Path
) -> None:
    """``params._meta.traceparent`` (the MCP conventions' place: one connection carries many calls) makes
    the span's parent, over the HTTP request's own ``traceparent``; the span names the server."""
    from tests.e2e.test_mcp_hop import mcp_client, mcp_server, server_ready

    http_trace = "00-11111111111111111111111111111111-2222222222222222-01"
    with mcp_server(tmp_path) as (server_url, _):
        await server_ready(server_url)
        proxy = await start_proxy(proxy_settings, otlp_endpoint=receiver.url, mcp_servers=(f"docs={server_url}/mcp",))
        async with mcp_client(proxy.url + "/mcp/docs", {"traceparent": http_trace}) as client:
            await client.list_tools()
            await client.call_tool("echo", {"text": "hi"}, meta={"traceparent": TRACEPARENT})
        span = await exported(receiver, lambda span: span.name == "tools/call echo")
        listed = await exported(receiver, lambda span: span.name == "tools/list")
    assert hex_id(span.span.trace_id) == TRACE_ID and hex_id(span.span.parent_span_id) == CLIENT_SPAN_ID
    assert hex_id(listed.span.trace_id) == "1" * 32  # no _meta: the HTTP request's traceparent
    assert span.attributes["capsem.mcp.server"] == "docs"
    assert span.attributes["server.address"] == "127.0.0.1"
    assert span.attributes["server.port"] == httpx.URL(server_url).port
