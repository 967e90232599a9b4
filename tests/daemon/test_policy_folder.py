"""A policy folder that would check nothing is a configuration error, not a warning (issue 21, item 7).

A misnamed ``rule.toml`` used to be skipped with a warning, and the proxy ran
with no policy at all, forwarding every request unchecked (fail open), while
``check`` exited 0. Now an unknown ``*.toml`` name is one line and exit 2 from
``check`` and ``start``, and a reload that meets one is rejected (the old
policies stay). Running without policies is said explicitly: a file with
``enabled = false`` or ``--no-policies``.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from tests.support.daemon import assert_startup_error, run_cli, upstream_args, wait_for_log
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import OPENAI_KEY

HEADERS = {"authorization": f"Bearer {OPENAI_KEY}"}
BLOCKED = {"model": "m", "messages": [{"role": "user", "content": "capsem_block"}]}
KNOWN = "known names: debug.toml, pii.toml, rules.toml, secrets.toml"


def misnamed_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "rule.toml").write_text("[on_prompt]\nblock = ['secret']\n")
    return folder


async def post(url: str, body: dict) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url + "/v1/chat/completions", json=body, headers=HEADERS)


def test_check_refuses_a_misnamed_policy_file_naming_it_and_the_known_names(tmp_path: Path) -> None:
    folder = misnamed_folder(tmp_path)
    assert_startup_error(run_cli("check", "--policy-dir", str(folder)), "rule.toml", "unknown policy file", KNOWN)


def test_start_refuses_a_misnamed_policy_file(tmp_path: Path) -> None:
    folder = misnamed_folder(tmp_path)
    assert_startup_error(run_cli("start", "--policy-dir", str(folder)), "rule.toml", KNOWN)


def test_a_disabled_misnamed_file_is_still_refused(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "debug.toml").write_text("enabled = true\n")
    (folder / "pi.toml").write_text("enabled = false\n")
    assert_startup_error(run_cli("check", "--policy-dir", str(folder)), "pi.toml", KNOWN)


def test_files_that_are_not_policy_files_are_ignored(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "debug.toml").write_text("enabled = true\n")
    (folder / "README.md").write_text("# our policies\n")
    (folder / ".debug.toml.swp").write_bytes(b"\x00vim swap")
    (folder / ".#debug.toml").write_text("emacs lock")
    (folder / "debug.toml~").write_text("enabled = [broken\n")
    result = run_cli("check", "--policy-dir", str(folder))
    assert result.returncode == 0, result.stderr
    assert "policies (" in result.stdout and "Debug" in result.stdout


def test_a_folder_with_no_policy_file_is_an_error_unless_said(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "README.md").write_text("nothing here yet\n")
    for command in ("check", "start"):
        assert_startup_error(run_cli(command, "--policy-dir", str(folder)), str(folder), "no policy file",
                             "--no-policies", "enabled = false")


def test_no_policies_contradicting_a_policy_dir_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "debug.toml").write_text("enabled = true\n")
    assert_startup_error(run_cli("check", "--no-policies", "--policy-dir", str(folder)),
                         "--no-policies", "--policy-dir")


def test_check_with_no_policies_says_so(tmp_path: Path) -> None:
    result = run_cli("check", "--no-policies")
    assert result.returncode == 0, result.stderr
    assert "policies (--no-policies): NONE" in result.stdout
    assert "requests are forwarded unchecked" in result.stderr


async def test_start_with_no_policies_forwards_unchecked_and_says_so(fake: FakeUpstream, daemons) -> None:
    daemon = daemons("--no-policies", *upstream_args(fake.url))
    assert (await daemon.wait_ready())["policies"] == []
    assert (await post(daemon.url, BLOCKED)).status_code == 200  # the Debug policy would have refused it
    assert await daemon.stop() == 0
    assert "policies: NONE (requests are forwarded unchecked) [--no-policies]" in daemon.log
    assert "WARNING" in daemon.log and "--no-policies: no policy is active" in daemon.log


async def test_a_reload_meeting_a_misnamed_file_is_rejected_and_the_old_policies_kept(
    tmp_path: Path, fake: FakeUpstream, daemons
) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "debug.toml").write_text("enabled = true\n")
    daemon = daemons("--policy-dir", str(folder), *upstream_args(fake.url))
    await daemon.wait_ready()
    (folder / "debug.toml").rename(folder / "debugg.toml")
    daemon.process.send_signal(signal.SIGHUP)
    await wait_for_log(daemon, "reload rejected")
    assert "debugg.toml" in daemon.log and KNOWN in daemon.log
    assert (await post(daemon.url, BLOCKED)).status_code == 400  # still checked by the Debug policy
    assert await daemon.stop() == 0
