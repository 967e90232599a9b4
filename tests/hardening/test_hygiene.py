"""Request and header hygiene: what is never forwarded, where requests may go, smuggling, log injection.

The upstream host is fixed by configuration: every hostile request below either
reaches the fake provider on a path inside the proxied API, with the fake's own
Host, or is refused before anything goes upstream.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from capsem_proxyd.config import Settings
from capsem_proxyd.http.guard import is_safe_path
from capsem_proxyd.observe.logs import RedactingFormatter
from capsem_proxyd.proxy.upstream import request_headers
from tests.support.bodies import chat_body, messages_body
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import ANTHROPIC_AUTH, GEMINI_KEY, OPENAI_AUTH, OPENAI_KEY, Proxy, in_thread
from tests.support.sdk import raw_exchange

OPENAI_AUTH_LINE = f"Authorization: Bearer {OPENAI_KEY}\r\n".encode()
CHAT_BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'


# --- headers never forwarded -------------------------------------------------------------------


async def test_hop_by_hop_host_length_and_cookie_never_reach_the_provider(proxy: Proxy, fake: FakeUpstream) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            proxy.url + "/v1/chat/completions",
            content=CHAT_BODY,
            headers={
                "authorization": f"Bearer {OPENAI_KEY}",
                "content-type": "application/json",
                "host": "evil.example",
                "connection": "keep-alive, x-secret-hop",
                "x-secret-hop": "named by Connection, so hop-by-hop",
                "keep-alive": "timeout=5",
                "proxy-authorization": "Basic cHJveHk6c2VjcmV0",
                "proxy-connection": "keep-alive",
                "te": "trailers",
                "trailer": "x-checksum",
                "upgrade": "h2c",
                "cookie": "session=other-tenant",
                "openai-organization": "org-kept",
            },
        )
    assert response.status_code == 200
    (received,) = fake.requests
    for name in ("x-secret-hop", "keep-alive", "proxy-authorization", "proxy-connection", "te",
                 "trailer", "upgrade", "cookie", "transfer-encoding"):
        assert name not in received.headers, name
    # The proxy's own hop to the provider may say keep-alive; nothing of the client's Connection header goes.
    assert received.headers.get("connection", "keep-alive") == "keep-alive"
    assert received.headers["host"] == fake.url.removeprefix("http://")
    assert received.headers["content-length"] == str(len(CHAT_BODY))  # recomputed, not copied
    assert received.headers["openai-organization"] == "org-kept"
    assert received.headers["authorization"] == f"Bearer {OPENAI_KEY}"


async def test_client_address_headers_are_dropped_unless_configured(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream
) -> None:
    forged = {"x-forwarded-for": "10.0.0.1", "forwarded": "for=10.0.0.1", "x-real-ip": "10.0.0.1"}
    default = await start_proxy(proxy_settings)
    forwarding = await start_proxy(proxy_settings, forward_client_ip=True)
    async with httpx.AsyncClient(timeout=10) as client:
        for proxy in (default, forwarding):
            response = await client.post(
                proxy.url + "/v1/chat/completions", content=CHAT_BODY,
                headers={"authorization": f"Bearer {OPENAI_KEY}", **forged},
            )
            assert response.status_code == 200
    plain, forwarded = fake.requests
    assert not {"x-forwarded-for", "forwarded", "x-real-ip"} & set(plain.headers)
    assert forwarded.headers["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert forwarded.headers["forwarded"] == "for=10.0.0.1, for=127.0.0.1"
    assert "x-real-ip" not in forwarded.headers


def test_forwarded_address_of_an_ipv6_client_is_quoted() -> None:
    headers = dict(request_headers([("authorization", "Bearer k")], client_addr="::1"))
    assert headers["x-forwarded-for"] == "::1" and headers["forwarded"] == 'for="[::1]"'


# --- the upstream host and path are fixed ------------------------------------------------------

HOSTILE_TARGETS = [
    # (request target, extra headers) — none may leave the proxied API or change the host
    (b"http://evil.example/v1/chat/completions", b""),
    (b"//evil.example/v1/chat/completions", b""),
    (b"/v1/chat/completions/../../admin", b""),
    (b"/v1/chat/completions/%2e%2e/%2e%2e/admin", b""),
    (b"/v1/chat/completions?x=@evil.example/admin", b""),
    (b"/v1/chat/completions#@evil.example", b""),
    (b"/v1beta/models/..:generateContent", b""),
    (b"/v1beta/models/%2e%2e%2Fadmin:generateContent", b""),
    (b"/v1beta/models/gemini%2F..%2F..%2Fadmin:generateContent", b""),
    (b"/v1beta/models/@evil.example:generateContent", b""),
    (b"/v1beta/models/gemini-2.5-flash:generateContent/../../../admin", b""),
    (b"/v1/models/..%2F..%2Fadmin", b""),
    (b"/v1/models/%252e%252e%252fadmin", b""),
    (b"/v1/../admin", b""),
    (b"/v1/files/../../admin", b""),
    (b"/v1/files/%2e%2e/%2e%2e/admin", b""),
    (b"/v1/files/%252e%252e/admin", b""),
    (b"/v1/files/a\\..\\..\\admin", b""),
    (b"/v1/chat/completions", b"Host: evil.example\r\nX-Forwarded-Host: evil.example\r\n"),
]


@pytest.mark.parametrize(("target", "extra"), HOSTILE_TARGETS, ids=[t.decode("latin-1") for t, _ in HOSTILE_TARGETS])
async def test_nothing_a_client_sends_leaves_the_proxied_api(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, target: bytes, extra: bytes
) -> None:
    # Pass-through of /v1/files* opted in: the widest door an operator can open.
    proxy = await start_proxy(proxy_settings, passthrough=("/v1/files*",))
    auth = OPENAI_AUTH_LINE if b"v1beta" not in target else f"x-goog-api-key: {GEMINI_KEY}\r\n".encode()
    head = (b"POST " + target + b" HTTP/1.1\r\n" + (b"" if b"Host:" in extra else b"Host: proxy\r\n") + extra + auth
            + b"Content-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(CHAT_BODY)}\r\n\r\n".encode() + CHAT_BODY)
    answer = await trio.to_thread.run_sync(lambda: raw_exchange(proxy.url, head))
    status = int(answer.split(b" ", 2)[1])
    fake_host = fake.url.removeprefix("http://")
    for received in fake.requests:
        assert received.headers["host"] == fake_host
        assert "admin" not in received.path and "evil" not in received.path and ".." not in received.path
        assert received.path.startswith(("/v1/chat/completions", "/v1beta/models/", "/v1/files/", "/v1/models"))
    if not fake.requests:
        assert 400 <= status < 500, answer[:200]
        assert answer.rstrip().endswith(b"}")  # a JSON error body (hypercorn's own 400s have none)
        assert b'"error"' in answer


def test_passthrough_paths_are_plain_segments_only() -> None:
    for safe in ("/v1/files", "/v1/files/file-abc123", "/v1beta/tunedModels/x:generate", "/v1/models/ft:gpt-4o:org:1"):
        assert is_safe_path(safe), safe
    for unsafe in ("/v1/files/../admin", "/v1/files/./x", "/v1/files/%2e%2e", "/v1//x", "/v1/a\\b", "v1/x",
                   "/v1/a\nb", "/v1/a?b", "/v1/a#b", "/v1/" + "a" * 300):
        assert not is_safe_path(unsafe), unsafe


async def test_model_names_in_bodies_never_change_the_path(proxy: Proxy, fake: FakeUpstream) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for model in ("../../admin", "http://evil.example/", "@evil.example", "%2e%2e/admin", "a/../../b"):
            response = await client.post(
                proxy.url + "/v1/chat/completions", headers=OPENAI_AUTH,
                json=chat_body(model=model),
            )
            assert response.status_code == 200
            response = await client.post(
                proxy.url + "/v1/messages", headers=ANTHROPIC_AUTH,
                json=messages_body(model=model, max_tokens=5),
            )
            assert response.status_code == 200
    assert {received.path for received in fake.requests} == {"/v1/chat/completions", "/v1/messages"}


# --- request smuggling -------------------------------------------------------------------------


async def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(
    proxy: Proxy, fake: FakeUpstream
) -> None:
    smuggled = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + OPENAI_AUTH_LINE + b"\r\n"
    chunk = CHAT_BODY
    body = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\n\r\n" + smuggled
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + OPENAI_AUTH_LINE + b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(chunk)}\r\n".encode() + b"Transfer-Encoding: chunked\r\n\r\n")
    answer = await trio.to_thread.run_sync(lambda: raw_exchange(proxy.url, head + body))
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert answer.count(b"HTTP/1.1 ") == 1, answer  # the smuggled request was never answered
    assert b"connection: close" in answer.lower(), answer
    assert b'"code":"ambiguous_request_framing"' in answer
    assert fake.requests == []


@pytest.mark.parametrize(
    "lengths",
    [[b"Content-Length: 5", b"Content-Length: 6"], [b"Content-Length: 5, 6"], [b"Content-Length: 5", b"Content-Length: 5"]],
    ids=["two-headers-conflicting", "one-header-two-values", "two-headers-equal"],
)
async def test_duplicate_content_lengths(proxy: Proxy, fake: FakeUpstream, lengths: list[bytes]) -> None:
    """Conflicting lengths never reach the app (h11: 400); equal ones are merged into one, unambiguous."""
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + OPENAI_AUTH_LINE + b"\r\n".join(lengths) + b"\r\n\r\n"
    answer = await trio.to_thread.run_sync(lambda: raw_exchange(proxy.url, head + b'{"a":'))
    if len(set(lengths)) > 1 or b"," in lengths[0]:
        assert answer.startswith(b"HTTP/1.1 400 ")
    else:
        assert answer.startswith(b"HTTP/1.1 400 ") and b"not valid JSON" in answer  # read as the one 5-byte body
    assert fake.requests == []


@pytest.mark.parametrize("encoding", [b"chunked, chunked", b"gzip, chunked", b"identity"])
async def test_odd_transfer_encodings_are_refused(proxy: Proxy, fake: FakeUpstream, encoding: bytes) -> None:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + OPENAI_AUTH_LINE + b"Transfer-Encoding: " + encoding + b"\r\n\r\n"
    answer = await trio.to_thread.run_sync(lambda: raw_exchange(proxy.url, head + b"0\r\n\r\n"))
    assert answer.split(b" ", 2)[1] in (b"400", b"501")
    assert fake.requests == []


# --- log injection -----------------------------------------------------------------------------

INJECTED_MODEL = "gpt-4o\nFORGED 2026-01-01 INFO capsem_proxyd.request: request_id=req_x status=200\x1b[31m\u2028"


async def test_control_characters_are_escaped_in_logs_and_audit(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    audit = tmp_path / "audit.jsonl"
    proxy = await start_proxy(proxy_settings, audit_log=str(audit), passthrough=("/v1/files*",))
    async with httpx.AsyncClient(timeout=10) as client:
        await client.post(proxy.url + "/v1/chat/completions", headers=OPENAI_AUTH,
                          json=chat_body(model=INJECTED_MODEL))
        # Too many headers: the refusal is logged with the path.
        many = {f"x-h{i}": "v" for i in range(120)}
        await client.post(proxy.url + "/v1/x%0AFORGED%1B[0m", headers={"authorization": f"Bearer {OPENAI_KEY}", **many})
    ours = [record for record in caplog.records if record.name.startswith("capsem_proxyd")]
    messages = [record.getMessage() for record in ours]
    # quoted too: the spaces in it would otherwise start forged fields (status=200) on the line
    assert any('model="gpt-4o\\nFORGED' in message for message in messages), messages
    assert any("path=/v1/x\\nFORGED\\x1b[0m" in message for message in messages), messages
    formatter = RedactingFormatter("%(name)s: %(message)s")
    for text in [*messages, *(formatter.format(record) for record in ours)]:
        # Escaped where it is logged (so the JSON log format is safe too) and again by the formatter.
        assert "\n" not in text and "\x1b" not in text and "\u2028" not in text, text
    audit_lines = audit.read_text(encoding="utf-8").splitlines()  # Unicode line ends (U+2028, NEL...) too
    records = [json.loads(line) for line in audit_lines]  # every line one JSON record
    assert any(record.get("model") == INJECTED_MODEL for record in records)  # kept exactly, escaped by JSON
    assert not any(line.startswith("FORGED") for line in audit_lines)


async def test_a_daemon_log_file_has_no_forged_lines(
    daemons: Callable[..., Any], fake: FakeUpstream, tmp_path: Path
) -> None:
    from tests.support.daemon import upstream_args

    audit = tmp_path / "audit.jsonl"
    daemon = daemons(*upstream_args(fake.url), "--audit-log", str(audit), "--log-level", "debug")
    await daemon.wait_ready(timeout=60)
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(daemon.url + "/v1/chat/completions", headers=OPENAI_AUTH,
                                     json=chat_body(model=INJECTED_MODEL))
        assert response.status_code == 200
        await client.get(daemon.url + "/v1/nothing%0AFORGED%20line", headers=OPENAI_AUTH)
    await daemon.stop()
    log_lines = daemon.log.splitlines()
    assert any("gpt-4o\\nFORGED" in line for line in log_lines), daemon.log
    assert not any(line.startswith("FORGED") for line in log_lines), daemon.log
    assert "\x1b" not in daemon.log and "\u2028" not in daemon.log
    assert all(json.loads(line) for line in audit.read_text().splitlines())


# --- TLS termination ---------------------------------------------------------------------------


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, made here with the cryptography package."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "capsem-proxyd test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return certfile, keyfile


async def test_tls_termination_serves_sdks_over_https(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, self_signed: tuple[Path, Path]
) -> None:
    import ssl

    import openai

    certfile, keyfile = self_signed
    proxy = await start_proxy(proxy_settings, certfile=str(certfile), keyfile=str(keyfile))
    assert proxy.url.startswith("https://")
    trusted = ssl.create_default_context(cafile=str(certfile))

    def chat() -> str:
        with httpx.Client(verify=trusted) as http_client:
            client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=OPENAI_KEY, http_client=http_client, max_retries=0)
            reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "echo: over TLS"}])
            return reply.choices[0].message.content

    assert await in_thread(chat) == "over TLS"
    async with httpx.AsyncClient(verify=trusted) as client:
        assert (await client.get(proxy.url + "/health")).status_code == 200
    with pytest.raises(httpx.ConnectError):  # a client that does not trust the certificate is refused
        async with httpx.AsyncClient() as client:
            await client.get(proxy.url + "/health")
    with pytest.raises(httpx.HTTPError):  # and plain HTTP on the TLS port gets nowhere
        async with httpx.AsyncClient(timeout=3) as client:
            await client.get(proxy.url.replace("https://", "http://") + "/health")


def test_certfile_and_keyfile_go_together() -> None:
    from tests.support.daemon import run_cli

    result = run_cli("check", "--certfile", "/tmp/cert.pem")
    assert result.returncode == 2 and "--certfile and --keyfile go together" in result.stderr
