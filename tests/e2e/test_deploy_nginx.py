"""deploy/nginx.conf in front of two real capsem-proxyd instances, streamed through with the SDKs.

The test runs the shipped file itself, not a copy: it swaps in its two
instances, a free port and a log path, wraps it in a minimal ``http { }``
block and starts nginx as its own child (own prefix, ``daemon off``, one
process); the system's nginx service is never touched.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import trio

from capsem_proxyd.mcp.control import CONTROL_PATH, TOKEN_FILE, TOKEN_HEADER
from capsem_proxyd.proxy.placeholder_key import KEY_BYTES, KEY_FILE
from tests.e2e.test_mcp_hop import CREDENTIAL, INITIALIZE, PROTOCOL, mcp_client, mcp_server, ran, server_ready, text_of
from tests.support.daemon import Daemon, free_port
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.metrics import requests_total, scrape
from tests.support.proxy import ALL_TEST_KEYS, GEMINI_AUTH, GEMINI_KEY, OPENAI_KEY, in_thread
from tests.support.waiting import wait_until

DEPLOY_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin")
requires_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs it with apt-get)")

# Seconds a daemon may take to start: generous, since CI hosts are often busy (it takes ~3 s idle).
STARTUP_TIMEOUT = 60
USER = [{"role": "user", "content": "tell me a story"}]
STORY = "Once upon a time a proxy checked every word. " * 12

_MAIN_CONF = """\
daemon off;
master_process off;
user {user};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {site};
}}
"""
_UPSTREAM_SERVER = re.compile(r"^(\s*)server\s+\S+:\d+\b([^;]*);\n", re.MULTILINE)
_LISTEN = re.compile(r"^(\s*)listen 8080;$", re.MULTILINE)
_ACCESS_LOG = re.compile(r"^(\s*)access_log /var/log/nginx/capsem-proxyd\.access\.log (\w+);$", re.MULTILINE)


_UPSTREAM = re.compile(r"^upstream (\w+) \{\n(.*?)^\}", re.MULTILINE | re.DOTALL)
# The upstream blocks the example must keep: the model APIs by key, the MCP hop by session id.
UPSTREAMS = ("capsem_proxyd", "capsem_proxyd_mcp")


def _with_instances(upstream: re.Match[str], instances: list[str]) -> str:
    """One upstream block (its whole text) with ``instances`` in place of its ``server`` lines."""
    block = upstream.group(2)
    servers = _UPSTREAM_SERVER.findall(block)
    assert servers, f"deploy/nginx.conf: no `server HOST:PORT ...;` line in `upstream {upstream.group(1)}`"
    indent, options = servers[0]
    block = _UPSTREAM_SERVER.sub("", block, count=len(servers))
    block = "".join(f"{indent}server {instance}{options};\n" for instance in instances) + block
    return f"upstream {upstream.group(1)} {{\n{block}}}"


def render_site(instances: list[str], port: int, access_log: Path) -> str:
    """deploy/nginx.conf with the test's instances in every upstream block, its port and its log; fails if
    the file lost a placeholder."""
    text = DEPLOY_CONF.read_text()
    names = [upstream.group(1) for upstream in _UPSTREAM.finditer(text)]
    assert sorted(names) == sorted(UPSTREAMS), f"deploy/nginx.conf: upstream blocks {names}, expected {UPSTREAMS}"
    text = _UPSTREAM.sub(lambda upstream: _with_instances(upstream, instances), text)
    text, listens = _LISTEN.subn(rf"\g<1>listen 127.0.0.1:{port};", text)
    text, logs = _ACCESS_LOG.subn(rf"\g<1>access_log {access_log} \g<2>;", text)
    assert (listens, logs) == (1, 1), "deploy/nginx.conf: expected one `listen 8080;` and one access_log line"
    return text


@dataclass
class Gateway:
    """nginx on ``url`` in front of ``instances``."""

    url: str
    instances: list[Daemon]
    access_log: Path
    error_log: Path

    def openai(self, api_key: str = OPENAI_KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0)


@pytest.fixture
async def gateway(tmp_path: Path, fake: FakeUpstream) -> AsyncIterator[Gateway]:
    upstreams = ["--openai-upstream", fake.url + "/v1", "--gemini-upstream", fake.url, "--anthropic-upstream", fake.url]
    # A state directory each, as on two hosts: only routing can bring a follow-up to the instance that knows its reply.
    async with open_gateway(tmp_path, [[*upstreams, "--state-dir", str(tmp_path / f"state{index}")]
                                       for index in range(2)]) as gateway:
        yield gateway


@asynccontextmanager
async def open_gateway(tmp_path: Path, instance_args: list[list[str]]) -> AsyncIterator[Gateway]:
    """nginx running deploy/nginx.conf in front of one started instance per ``instance_args``."""
    instances = [Daemon(args, tmp_path / f"instance{index}.log") for index, args in enumerate(instance_args)]
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    port = free_port()
    site = prefix / "capsem-proxyd.conf"
    site.write_text(render_site([f"127.0.0.1:{d.port}" for d in instances], port, prefix / "access.log"))
    main = prefix / "nginx.conf"
    main.write_text(_MAIN_CONF.format(user=getpass.getuser(), prefix=prefix, site=site))
    command = [NGINX, "-p", str(prefix), "-c", str(main), "-e", str(prefix / "error.log")]
    nginx: subprocess.Popen[bytes] | None = None
    gateway = Gateway(f"http://127.0.0.1:{port}", instances, prefix / "access.log", prefix / "error.log")
    try:
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, f"nginx -t rejected deploy/nginx.conf:\n{checked.stderr}"
        nginx = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for instance in instances:
            await instance.wait_ready(STARTUP_TIMEOUT)
        await _wait_for_gateway(gateway, nginx)
        yield gateway
    finally:
        if nginx is not None:
            nginx.terminate()
            try:
                nginx.wait(10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait(5)
        for instance in instances:
            instance.kill()


async def _wait_for_gateway(gateway: Gateway, nginx: subprocess.Popen[bytes]) -> None:
    with trio.fail_after(STARTUP_TIMEOUT):
        async with httpx.AsyncClient() as client:
            while True:
                if nginx.poll() is not None:
                    raise AssertionError(f"nginx exited with {nginx.returncode}: {gateway.error_log.read_text()}")
                try:
                    if (await client.get(gateway.url + "/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)


# Tenants (keys) enough that nginx's hash puts some on each of two instances: 16 keys all on one
# instance would take a split of the hash ring far worse than ketama's.
TENANT_KEYS = (
    "sk-test-tenant-01-5d2c9a7e", "sk-test-tenant-02-8b1f4c3d", "sk-test-tenant-03-2e7a6b9c", "sk-test-tenant-04-9c3d1e8f",
    "sk-test-tenant-05-4a6b2c7d", "sk-test-tenant-06-7e9f3a1b", "sk-test-tenant-07-1c8d5e2f", "sk-test-tenant-08-6b3a9c4d",
    "sk-test-tenant-09-3f2e8d7c", "sk-test-tenant-10-8a1b6c5d", "sk-test-tenant-11-5e4f2a9b", "sk-test-tenant-12-2d7c3b8a",
    "sk-test-tenant-13-9f6e1d4c", "sk-test-tenant-14-4b8a7c2e", "sk-test-tenant-15-7d2f5e9a", "sk-test-tenant-16-1a9b4d6c",
)


def stream_story(
    gateway: Gateway, fake: FakeUpstream, api_key: str = OPENAI_KEY
) -> tuple[str, bool | None, BaseException | None]:
    """(text received, whether the upstream was still sending at the first text, error raised by the SDK)."""
    text: list[str] = []
    upstream_busy_at_first_text: bool | None = None
    try:
        stream = gateway.openai(api_key).chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content and upstream_busy_at_first_text is None:
                    upstream_busy_at_first_text = not fake.streams[-1].closed.is_set()
                text.append(choice.delta.content or "")
    except openai.APIError as error:
        return "".join(text), upstream_busy_at_first_text, error
    return "".join(text), upstream_busy_at_first_text, None


@requires_nginx
async def test_streams_through_nginx_reassemble_and_blocks_still_raise(gateway: Gateway, fake: FakeUpstream) -> None:
    # Allowed: the SDK gets the whole story, and got its first words while the upstream was still
    # sending (nothing between the SDK and the provider buffered the stream).
    fake.script(Reply(chunks=[word + " " for word in STORY.split()], chunk_delay=0.04))
    text, incremental, error = await in_thread(stream_story, gateway, fake)
    assert error is None and text.split() == STORY.split()
    assert incremental is True

    # Blocked mid-stream: the final error event crosses nginx and the SDK raises; the marker never arrives.
    fake.script(Reply(chunks=["All fine until caps", "em_bl", "ock shows up", " and more"]))
    text, _, error = await in_thread(stream_story, gateway, fake)
    assert isinstance(error, openai.APIError), error
    assert "capsem_block" not in text.lower()

    # Blocked before upstream: the 400 and its body come back through nginx.
    with pytest.raises(openai.BadRequestError) as blocked:
        await in_thread(lambda: gateway.openai().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "capsem_block"}]))
    assert "capsem_block" in str(blocked.value)


@requires_nginx
async def test_concurrent_streams_of_many_tenants_land_on_both_instances(gateway: Gateway, fake: FakeUpstream) -> None:
    count = len(TENANT_KEYS)
    fake.script(*[Reply(text=STORY, chunk_delay=0.01) for _ in range(count)])
    results: list[tuple[str, bool | None, BaseException | None]] = []

    async def one(api_key: str) -> None:
        results.append(await in_thread(stream_story, gateway, fake, api_key))

    async with trio.open_nursery() as nursery:
        for api_key in TENANT_KEYS:
            nursery.start_soon(one, api_key)
    assert [(text, error) for text, _, error in results] == [(STORY, None)] * count

    served = [requests_total(await scrape(instance.url), "200") for instance in gateway.instances]
    assert sum(served) == count and all(served), served
    upstreams = {match for match in re.findall(r"upstream=(\S+)", gateway.access_log.read_text())}
    assert upstreams == {f"127.0.0.1:{instance.port}" for instance in gateway.instances}


@requires_nginx
async def test_a_follow_up_lands_on_the_instance_that_relayed_its_reply(gateway: Gateway, fake: FakeUpstream) -> None:
    """--stored-content checked behind the balancer: every tenant's previous_response_id is admitted, since
    the key's hash sends the follow-up where the reply went; a Gemini key sticks too, in a header or the query."""

    def conversation(api_key: str) -> tuple[str, str]:
        client = gateway.openai(api_key)
        first = client.responses.create(model="gpt-4.1", input="hi")
        text = "".join(event.delta for event in client.responses.create(
            model="gpt-4.1", input="go on", previous_response_id=first.id, stream=True)
            if event.type == "response.output_text.delta")
        return first.id, text

    for api_key in TENANT_KEYS:
        _, text = await in_thread(conversation, api_key)
        assert text  # a refusal from the other instance would have raised
    responses = {"provider": "openai", "endpoint": "responses"}
    served = [requests_total(await scrape(instance.url), "200", **responses) for instance in gateway.instances]
    assert sum(served) == 2 * len(TENANT_KEYS) and all(served), served

    async with httpx.AsyncClient() as client:
        path = "/v1beta/models/gemini-2.0-flash:generateContent"
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        for _ in range(3):
            assert (await client.post(gateway.url + path + f"?key={GEMINI_KEY}", json=body)).status_code == 200
            assert (await client.post(gateway.url + path, json=body, headers=GEMINI_AUTH)).status_code == 200
    upstreams = re.findall(r":generateContent HTTP/1.1\" 200 .* upstream=(\S+)", gateway.access_log.read_text())
    assert len(upstreams) == 6 and len(set(upstreams)) == 1, upstreams


@requires_nginx
async def test_keys_stay_out_of_every_log_and_metrics_stay_private(gateway: Gateway, fake: FakeUpstream) -> None:
    async with httpx.AsyncClient() as client:
        gemini = await client.post(
            gateway.url + f"/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key={GEMINI_KEY}",
            json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        )
        hidden = await client.get(gateway.url + "/metrics")
    assert gemini.status_code == 200 and "data: " in gemini.text
    assert fake.requests[-1].path.endswith(":streamGenerateContent") and fake.requests[-1].query["alt"] == "sse"
    assert hidden.status_code == 404
    for instance in gateway.instances:  # instances are scraped directly
        assert "capsem_proxyd_requests_total" in (await scrape(instance.url)).text

    access_log = gateway.access_log.read_text()
    assert ":streamGenerateContent" in access_log
    logs = [access_log, gateway.error_log.read_text(), *(instance.log for instance in gateway.instances)]
    for key in ALL_TEST_KEYS:
        assert not any(key in text for text in logs), f"{key[:8]}... leaked into a log"



# --- The MCP hop behind nginx: routed by session id, verified with one placeholder key ---------------------

# Sessions opened one after the other until one was opened on one instance and served by the other (nginx
# balances the id-less initialize round-robin and hashes the id after it, so about every other session
# crosses): 2**-16 that none does.
MAX_SESSIONS = 16
_SESSION = re.compile(r"mcp \w+ message server=docs method=(\S+) [^\n]*? session=([0-9a-f]{12}) ")
_OPENED = "mcp client message server=docs method=initialize "


def _mcp_instances(tmp_path: Path, server_url: str, *, shared_key: bool) -> list[list[str]]:
    """Two instances serving ``docs``, a state directory each (two hosts); with ``shared_key`` the operator
    copied one placeholder key into both before they started (a key already there is the one used)."""
    states = [tmp_path / f"state{index}" for index in range(2)]
    if shared_key:
        secret = os.urandom(KEY_BYTES)
        for state in states:
            state.mkdir(mode=0o700)
            key = state / KEY_FILE
            key.write_bytes(secret)
            key.chmod(0o600)
    return [["--mcp-server", f"docs={server_url}/mcp", "--state-dir", str(state)] for state in states]


def _sessions_served(gateway: Gateway) -> list[set[str]]:
    """Per instance, the (hashed) session ids of the MCP messages it served."""
    return [{match.group(2) for match in _SESSION.finditer(instance.log)} for instance in gateway.instances]


def _upstreams(access_log: str, method: str, path: str) -> list[str]:
    return re.findall(rf'"{method} {re.escape(path)} HTTP/1.1" \d+ [^\n]* upstream=(\S+)', access_log)


@requires_nginx
async def test_an_mcp_session_through_nginx_stays_on_one_instance_and_verifies_on_any(tmp_path: Path) -> None:
    with mcp_server(tmp_path) as (server_url, headers_file):
        async with open_gateway(tmp_path, _mcp_instances(tmp_path, server_url, shared_key=True)) as gateway:
            await server_ready(server_url)
            addresses = [f"127.0.0.1:{instance.port}" for instance in gateway.instances]
            # (instance that answered initialize, instance that served the session after it)
            sessions: list[tuple[int, int]] = []
            for number in range(MAX_SESSIONS):
                opened_before = [instance.log.count(_OPENED) for instance in gateway.instances]
                served_before = set().union(*_sessions_served(gateway))
                async with mcp_client(gateway.url + "/mcp/docs") as client:
                    assert client.protocol_version == "2025-11-25"
                    listed = await client.list_tools()
                    assert sorted(tool.name for tool in listed.tools) == ["echo", "leak"]
                    result = await client.call_tool("echo", {"text": f"session {number}"})
                    assert not result.is_error and f"echo: session {number}" in text_of(result)
                calls = number + 1
                await wait_until(lambda: sum(instance.log.count("method=tools/call response") for instance in
                                             gateway.instances) == calls, timeout=15, what="the call logged")  # noqa: B023
                opened = [instance.log.count(_OPENED) - before
                          for instance, before in zip(gateway.instances, opened_before, strict=True)]
                assert sorted(opened) == [0, 1], opened
                served = _sessions_served(gateway)
                new = set().union(*served) - served_before
                assert len(new) == 1, new
                # Every request after initialize reached one instance: the session's messages are in one log.
                holders = [index for index, ids in enumerate(served) if new & ids]
                assert len(holders) == 1, f"session {number} was served by both instances"
                sessions.append((opened.index(1), holders[0]))
                if number and any(at != by for at, by in sessions):
                    break
            assert any(at != by for at, by in sessions), (
                f"every session was served where it was opened ({sessions}): the shared key went untested")
            assert ran(headers_file) == ["echo"] * len(sessions)

            # nginx's own record agrees: each session's GET stream and DELETE went to the instance serving it.
            served_by = sorted(addresses[by] for _, by in sessions)

            def routed() -> bool:
                log = gateway.access_log.read_text()
                return all(sorted(_upstreams(log, method, "/mcp/docs")) == served_by for method in ("GET", "DELETE"))

            await wait_until(routed, timeout=15, what="each session's GET and DELETE logged with its instance")

            # The pins' control path is not served through the balancer, even with an instance's token (each
            # token sent twice in a row: nginx balances the key-less request round-robin, so one reaches its
            # instance, whose loopback check nginx's own connection would pass).
            async with httpx.AsyncClient(timeout=10) as http:
                for instance in (0, 0, 1, 1):
                    token = (tmp_path / f"state{instance}" / TOKEN_FILE).read_text().strip()
                    control = await http.get(gateway.url + CONTROL_PATH, headers={TOKEN_HEADER: token})
                    assert control.status_code == 404, control.text


@requires_nginx
async def test_without_one_placeholder_key_a_session_is_lost_on_the_other_instance(tmp_path: Path) -> None:
    """Why the key must be shared: an id tagged by one instance's key is unknown to the other (404, the
    protocol's "session lost"), and nothing reaches the server for it."""
    with mcp_server(tmp_path) as (server_url, _):
        async with open_gateway(tmp_path, _mcp_instances(tmp_path, server_url, shared_key=False)) as gateway:
            await server_ready(server_url)
            url = gateway.url + "/mcp/docs"
            statuses: list[int] = []
            async with httpx.AsyncClient(timeout=10) as client:
                for _ in range(MAX_SESSIONS):
                    opened = await client.post(url, json=INITIALIZE, headers={**PROTOCOL, **CREDENTIAL})
                    assert opened.status_code == 200, opened.text
                    initialized = await client.post(
                        url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                        headers={**PROTOCOL, **CREDENTIAL, "Mcp-Session-Id": opened.headers["mcp-session-id"]})
                    statuses.append(initialized.status_code)
                    if {202, 404} <= set(statuses):
                        break
            # Sessions hashed back to the instance that opened them work; the others are lost.
            assert {202, 404} == set(statuses), statuses
            refused = sum(instance.log.count("mcp session refused: not opened by this client") for instance in
                          gateway.instances)
            assert refused == statuses.count(404)


def test_the_example_keeps_what_streams_need() -> None:
    """What the behaviour tests cannot see (nginx 1.22 forwards SSE promptly even with buffering on,
    and keep-alive is invisible to a client), checked in the shipped file's proxy location."""
    text = DEPLOY_CONF.read_text()
    location = re.search(r"^    location / \{\n(.*?)^    \}", text, re.MULTILINE | re.DOTALL)
    assert location, "deploy/nginx.conf: no `location / { ... }` block"
    directives = {line.strip() for line in location.group(1).splitlines() if line.strip() and not line.strip().startswith("#")}
    for required in (
        "proxy_pass http://capsem_proxyd;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_buffering off;",
        "proxy_request_buffering off;",
    ):
        assert required in directives, f"deploy/nginx.conf: `{required}` missing from location /"
    timeouts = dict(re.findall(r"^\s*(proxy_read_timeout|proxy_send_timeout) (\d+)s;", location.group(1), re.MULTILINE))
    assert int(timeouts["proxy_read_timeout"]) >= 600 and int(timeouts["proxy_send_timeout"]) >= 600
    assert re.search(r"^\s*keepalive \d+;", text, re.MULTILINE), "deploy/nginx.conf: no upstream keepalive"
    assert re.search(r"^\s*client_max_body_size 32m;", text, re.MULTILINE)


def test_the_mcp_location_keeps_what_its_streams_need() -> None:
    """The MCP hop's location: unbuffered (reply streams and the GET stream), HTTP/1.1 to the pooled
    instances, a read timeout longer than the instance's own (600 s) so a quiet GET stream is ended by the
    instance, the session headers left alone; its upstream hashes the session id."""
    text = DEPLOY_CONF.read_text()
    location = re.search(r"^    location /mcp/ \{\n(.*?)^    \}", text, re.MULTILINE | re.DOTALL)
    assert location, "deploy/nginx.conf: no `location /mcp/ { ... }` block"
    directives = {line.strip() for line in location.group(1).splitlines() if line.strip() and not line.strip().startswith("#")}
    for required in (
        "proxy_pass http://capsem_proxyd_mcp;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_buffering off;",
        "proxy_request_buffering off;",
    ):
        assert required in directives, f"deploy/nginx.conf: `{required}` missing from location /mcp/"
    timeouts = dict(re.findall(r"^\s*(proxy_read_timeout|proxy_send_timeout) (\d+)s;", location.group(1), re.MULTILINE))
    assert int(timeouts["proxy_read_timeout"]) > 600 and int(timeouts["proxy_send_timeout"]) >= 600
    for header in ("mcp-session-id", "last-event-id", "mcp-protocol-version"):
        assert not any(header in line.lower() for line in directives), f"deploy/nginx.conf: location /mcp/ touches {header}"
    upstream = re.search(r"^upstream capsem_proxyd_mcp \{\n(.*?)^\}", text, re.MULTILINE | re.DOTALL)
    assert upstream and re.search(r"^\s*hash \$http_mcp_session_id consistent;", upstream.group(1), re.MULTILINE)
