"""``capsem-proxyd placeholder``: the placeholder of a leaked value, as the real daemon wrote it (issue 23).

The daemon masks a value with a Rules ``redact`` rule and writes a
``{"type": "redaction"}`` audit record; the command, a separate process reading
the value from standard input and the key from the same ``--state-dir``,
prints the placeholder the fake provider received and the key id the audit
record names: what an incident responder searches the audit log for.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from capsem_proxyd.exchange import tenant_id_for
from capsem_proxyd.proxy.placeholder_key import load_placeholder_key
from capsem_proxyd.redaction.placeholder import tag
from tests.support.daemon import assert_startup_error, daemon_env, run_capsem_proxyd, upstream_args
from tests.support.fake_upstream import FakeUpstream
from tests.support.masking import MESSAGES, RULES, SECRET
from tests.support.proxy import OPENAI_AUTH, OPENAI_KEY


def printed(output: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in output.strip().splitlines())


async def test_the_printed_placeholder_is_the_one_the_provider_received_and_the_audit_log_records(
    tmp_path: Path, fake: FakeUpstream, daemons,
) -> None:
    policies, state, audit = tmp_path / "policies", tmp_path / "state", tmp_path / "audit.jsonl"
    policies.mkdir()
    (policies / "rules.toml").write_text(RULES)
    daemon = daemons("--state-dir", str(state), "--policy-dir", str(policies), "--audit-log", str(audit),
                     *upstream_args(fake.url))
    await daemon.wait_ready()
    async with httpx.AsyncClient(timeout=10) as client:
        reply = await client.post(daemon.url + "/v1/chat/completions", headers=dict(OPENAI_AUTH),
                                  json={"model": "gpt-4o-mini", "messages": MESSAGES})
    assert reply.status_code == 200 and reply.headers["x-capsem-decision"] == "redact", reply.text
    assert await daemon.stop() == 0
    (sent,) = fake.requests
    (received,) = re.findall(r"CAPSEM-MASKED-[A-Z0-9]+-[A-Z2-7]{20}", sent.body.decode())
    (record,) = [r for r in map(json.loads, audit.read_text().splitlines()) if r.get("type") == "redaction"]

    tenant = tenant_id_for(OPENAI_KEY)
    result = run_capsem_proxyd("placeholder", "--state-dir", str(state), "--tenant", tenant, "--kind", "aws-secret",
                               stdin=SECRET + "\n")
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    shown = printed(result.stdout)
    assert shown["placeholder"] == received == record["placeholder"]
    assert shown["key_id"] == record["key_id"]
    assert shown["tenant"] == tenant == record["tenant_id"]
    assert received.endswith("-" + shown["tag"])

    # The tenant from its API key in a file, no kind: the tag is the identity, the kind a label.
    key_file = tmp_path / "tenant.key"  # an input file (the key watch skips .key files)
    key_file.write_text(OPENAI_KEY + "\n")
    result = run_capsem_proxyd("placeholder", "--state-dir", str(state), "--api-key-file", str(key_file),
                               stdin=SECRET)
    assert result.returncode == 0, result.stderr
    assert printed(result.stdout)["tag"] == shown["tag"]
    assert printed(result.stdout)["placeholder"] == f"CAPSEM-MASKED-<KIND>-{shown['tag']}"

    # Another tenant: another placeholder.
    other = run_capsem_proxyd("placeholder", "--state-dir", str(state), "--tenant", "0123456789abcdef", stdin=SECRET)
    assert other.returncode == 0 and printed(other.stdout)["tag"] != shown["tag"]


def test_a_missing_state_dir_or_key_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = run_capsem_proxyd("placeholder", "--state-dir", str(tmp_path / "nowhere"), "--tenant", "0123456789abcdef",
                                stdin=SECRET)
    assert_startup_error(missing, "state directory", "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    no_key = run_capsem_proxyd("placeholder", "--state-dir", str(empty), "--tenant", "0123456789abcdef", stdin=SECRET)
    assert_startup_error(no_key, str(empty), "no placeholder key")
    (empty / "placeholder.key").write_bytes(b"short")
    damaged = run_capsem_proxyd("placeholder", "--state-dir", str(empty), "--tenant", "0123456789abcdef", stdin=SECRET)
    assert damaged.returncode == 2 and "damaged" in damaged.stderr.strip().splitlines()[-1], damaged.stderr


def test_the_value_comes_from_stdin_and_the_tenant_must_be_given(tmp_path: Path) -> None:
    nothing = run_capsem_proxyd("placeholder", "--state-dir", str(tmp_path), "--tenant", "0123456789abcdef", stdin="")
    assert_startup_error(nothing, "no value on standard input")
    no_tenant = run_capsem_proxyd("placeholder", "--state-dir", str(tmp_path), stdin=SECRET)
    assert_startup_error(no_tenant, "--tenant", "--api-key-file")
    bad_tenant = run_capsem_proxyd("placeholder", "--state-dir", str(tmp_path), "--tenant", SECRET, stdin=SECRET)
    assert_startup_error(bad_tenant, "16 lowercase hex digits")
    assert SECRET not in bad_tenant.stderr
    as_argument = run_capsem_proxyd("placeholder", "--state-dir", str(tmp_path), "--tenant", "0123456789abcdef", SECRET)
    assert_startup_error(as_argument, "standard input")
    assert SECRET not in as_argument.stderr  # a value given as an argument by mistake is not repeated


def test_the_state_dir_is_found_as_start_finds_it_in_a_config_file_or_the_environment(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = load_placeholder_key(state)  # as start's preflight makes it
    expected = tag(key.secret, key.id, "0123456789abcdef", SECRET)
    config = tmp_path / "capsem-proxyd.toml"
    config.write_text(f'state_dir = "{state}"\n')
    from_file = run_capsem_proxyd("placeholder", "--config", str(config), "--tenant", "0123456789abcdef", stdin=SECRET)
    from_env = run_capsem_proxyd("placeholder", "--tenant", "0123456789abcdef", stdin=SECRET,
                                 env=daemon_env(CAPSEM_PROXYD_STATE_DIR=str(state)))
    for result in (from_file, from_env):
        assert result.returncode == 0, result.stderr
        assert printed(result.stdout)["tag"] == expected and printed(result.stdout)["key_id"] == key.id
