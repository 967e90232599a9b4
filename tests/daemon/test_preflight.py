"""What ``check`` passes, ``start`` starts: every start-up failure is found by both, as one line and exit 2.

Each case below is a configuration that cannot serve. The real executable runs ``check`` and then ``start``
with it; both must refuse it with the same one-line reason and exit code 2, never a traceback, and
``start`` must not begin serving (a ``start`` that serves would run until the test's timeout).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from tests.support.daemon import assert_startup_error, daemon_env, run_cli

Case = Callable[[Path], list[str]]


def _pem_pair(tmp_path: Path, *, mismatched: bool = False) -> list[str]:
    ca = trustme.CA()
    cert, other = ca.issue_cert("127.0.0.1"), ca.issue_cert("localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    (other if mismatched else cert).private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    return ["--certfile", str(tmp_path / "cert.pem"), "--keyfile", str(tmp_path / "key.pem")]


def _not_pem(tmp_path: Path) -> list[str]:
    (tmp_path / "cert.txt").write_text("not a certificate\n")
    _pem_pair(tmp_path)
    return ["--certfile", str(tmp_path / "cert.txt"), "--keyfile", str(tmp_path / "key.pem")]


def _key_is_a_certificate(tmp_path: Path) -> list[str]:
    _pem_pair(tmp_path)
    return ["--certfile", str(tmp_path / "cert.pem"), "--keyfile", str(tmp_path / "cert.pem")]


def _config_file(text: str) -> Case:
    def write(tmp_path: Path) -> list[str]:
        (tmp_path / "proxy.toml").write_text(text)
        return ["--config", str(tmp_path / "proxy.toml")]

    return write


# (case, fragments the one line must hold)
STARTUP_FAILURES: dict[str, tuple[Case, tuple[str, ...]]] = {
    "audit log in a folder that cannot exist": (
        lambda tmp: ["--audit-log", "/proc/nope/audit.jsonl"], ("--audit-log /proc/nope/audit.jsonl",)),
    "audit log a file that takes no writes": (
        lambda tmp: ["--audit-log", "/proc/version"], ("--audit-log /proc/version", "cannot write it")),
    "audit log a device": (lambda tmp: ["--audit-log", "/dev/null"], ("--audit-log /dev/null", "not a regular file")),
    "certificate missing": (
        lambda tmp: ["--certfile", str(tmp / "nope.pem"), "--keyfile", str(tmp / "nope.key")],
        ("--certfile", "nope.pem", "No such file")),
    "certificate not PEM": (_not_pem, ("--certfile", "cert.txt", "not a PEM file")),
    "key is a certificate": (_key_is_a_certificate, ("--keyfile", "cert.pem", "no PEM private key")),
    "key of another certificate": (lambda tmp: _pem_pair(tmp, mismatched=True), ("cannot serve TLS",)),
    "pidfile in a folder that cannot exist": (
        lambda tmp: ["--pidfile", "/proc/nope/capsem-proxyd.pid"], ("--pidfile /proc/nope/capsem-proxyd.pid",)),
    "OpenAI upstream not a URL": (lambda tmp: ["--openai-upstream", "not-a-url"], ("--openai-upstream", "not-a-url")),
    "OpenAI upstream over FTP": (lambda tmp: ["--openai-upstream", "ftp://x"], ("--openai-upstream", "ftp://x")),
    "Gemini upstream without a host": (lambda tmp: ["--gemini-upstream", "https://"], ("--gemini-upstream",)),
    "Anthropic upstream with a bad port": (
        lambda tmp: ["--anthropic-upstream", "http://host:port"], ("--anthropic-upstream",)),
    "upstream from the config file": (
        _config_file('openai_upstream = "ftp://x"\n'), ("proxy.toml", "openai_upstream", "ftp://x")),
    "state folder that cannot exist": (lambda tmp: ["--state-dir", "/proc/nope/state"], ("--state-dir",)),
    "policy folder missing": (lambda tmp: ["--policy-dir", str(tmp / "none")], ("none", "does not exist")),
    "a size that is not a number, from the config file": (
        _config_file('max_body_size = "big"\n'), ("config file", "proxy.toml", "max_body_size", "big")),
    "workers not a whole number": (_config_file("workers = 2.5\n"), ("proxy.toml", "workers", "whole number", "2.5")),
    "a list setting given a number": (_config_file("passthrough = 3\n"), ("proxy.toml", "passthrough", "array")),
}


@pytest.mark.parametrize("command", ["check", "start"])
@pytest.mark.parametrize("name", list(STARTUP_FAILURES))
def test_each_startup_failure_is_one_line_and_exit_2_from_check_and_start(
    tmp_path: Path, name: str, command: str
) -> None:
    case, fragments = STARTUP_FAILURES[name]
    args = case(tmp_path)
    if "--state-dir" not in args:
        args = [*args, "--state-dir", str(tmp_path / "state")]
    result = run_cli(command, "--port", "0", *args, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    assert_startup_error(result, *fragments)


def test_a_pidfile_check_leaves_no_file_behind_and_a_running_daemons_pidfile_as_it_was(tmp_path: Path) -> None:
    made = tmp_path / "run" / "new.pid"
    assert run_cli("check", "--pidfile", str(made), "--state-dir", str(tmp_path / "state")).returncode == 0
    assert not made.exists()
    existing = tmp_path / "running.pid"
    existing.write_text("12345\n")
    assert run_cli("check", "--pidfile", str(existing), "--state-dir", str(tmp_path / "state")).returncode == 0
    assert existing.read_text() == "12345\n"


def test_a_good_certificate_and_key_pass_check(tmp_path: Path) -> None:
    result = run_cli("check", *_pem_pair(tmp_path), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 0, result.stderr


# -- where a bad value came from --------------------------------------------------------------------------


def test_a_bad_value_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    result = run_cli("check", env=daemon_env(CAPSEM_PROXYD_PORT="nine", CAPSEM_PROXYD_STATE_DIR=str(tmp_path)))
    assert_startup_error(result, "environment variable CAPSEM_PROXYD_PORT", "nine")
    assert "--port" not in result.stderr


def test_a_bad_value_from_an_env_file_names_the_variable_and_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / "proxy.env"
    env_file.write_text("CAPSEM_PROXYD_OPENAI_UPSTREAM=ftp://x\n")
    result = run_cli("check", "--env-file", str(env_file), "--state-dir", str(tmp_path))
    assert_startup_error(result, "CAPSEM_PROXYD_OPENAI_UPSTREAM", str(env_file), "ftp://x")


def test_a_misspelt_environment_variable_is_refused_with_the_likely_name(tmp_path: Path) -> None:
    result = run_cli("check", env=daemon_env(CAPSEM_PROXYD_PROT="9001", CAPSEM_PROXYD_STATE_DIR=str(tmp_path)))
    assert_startup_error(result, "CAPSEM_PROXYD_PROT", "CAPSEM_PROXYD_PORT")


def test_a_misspelt_variable_in_the_env_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / "proxy.env"
    env_file.write_text("CAPSEM_PROXYD_WORKER=2\nOPENAI_API_KEY=sk-not-used\n")
    for command in ("check", "start"):
        result = run_cli(command, "--port", "0", "--env-file", str(env_file), "--state-dir", str(tmp_path))
        assert_startup_error(result, str(env_file), "CAPSEM_PROXYD_WORKER", "CAPSEM_PROXYD_WORKERS")


def test_the_variables_of_the_other_commands_are_not_typos(tmp_path: Path) -> None:
    env = daemon_env(CAPSEM_PROXYD_LOG_FILE=str(tmp_path / "log"), CAPSEM_PROXYD_STATUS_URL="http://127.0.0.1:1",
                     CAPSEM_PROXYD_PIDFILE=str(tmp_path / "p.pid"), CAPSEM_PROXYD_STATE_DIR=str(tmp_path))
    result = run_cli("check", env=env)
    assert result.returncode == 0, result.stderr


def test_a_list_setting_takes_one_string_or_an_array_in_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    for text, shown in (('passthrough = "/v1/files*"\n', "('/v1/files*',)"),
                        ('passthrough = ["/v1/files*", "/v1/batches*"]\n', "('/v1/files*', '/v1/batches*')")):
        config.write_text(text)
        result = run_cli("config", "--config", str(config), "--state-dir", str(tmp_path))
        assert result.returncode == 0, result.stderr
        line = next(line for line in result.stdout.splitlines() if line.startswith("passthrough"))
        assert shown in line and line.endswith("(config file)"), line


def test_config_shows_the_state_folder_start_would_use(tmp_path: Path) -> None:
    result = run_cli("config", env=daemon_env(XDG_STATE_HOME=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("state_dir"))
    assert repr(os.path.join(tmp_path, "capsem-proxyd")) in line and line.endswith("(default)"), line


@pytest.mark.parametrize("command", ["check", "start"])
def test_an_audit_log_with_no_room_for_its_first_record_is_refused_by_check_and_start(
    tmp_path: Path, command: str
) -> None:
    """The fault is a real one: the process's file-size limit (RLIMIT_FSIZE, as ``ulimit -f`` or systemd's
    ``LimitFSIZE=`` set it) just above the log's size, as a full disk would leave it. Start writes the log's
    first record before it serves: without room it failed with a traceback after check had passed."""
    import resource
    import subprocess
    import sys

    audit = tmp_path / "audit.jsonl"
    audit.write_bytes(b"x" * 64 * 1024 + b"\n")
    limit = audit.stat().st_size + 100

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    result = subprocess.run(
        [sys.executable, "-m", "capsem_proxyd", command, "--port", "0", "--audit-log", str(audit),
         "--stored-content", "allow", "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=60, env=daemon_env(), preexec_fn=limited,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert_startup_error(result, "--audit-log", "no room for a record", "file-size limit")
