"""The real ``capsem-proxyd`` executable: startup errors, configuration precedence, signals, logs."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.daemon import daemon_env, free_port, run_cli, upstream_args
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy import ALL_TEST_KEYS, GEMINI_KEY, OPENAI_KEY


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("capsem-proxyd: error:")
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_policy_folder_is_a_one_line_startup_error(tmp_path: Path) -> None:
    result = run_cli("start", "--policy-dir", str(tmp_path / "nope"))
    assert_one_line_error(result, "does not exist", "nope")


def test_proxy_config_dir_is_honoured_as_the_default(tmp_path: Path) -> None:
    result = run_cli("start", env=daemon_env(PROXY_CONFIG_DIR=str(tmp_path / "legacy-dir")))
    assert_one_line_error(result, "legacy-dir")


def test_unparsable_toml_is_a_one_line_startup_error(tmp_path: Path) -> None:
    (tmp_path / "debug.toml").write_text("enabled = [oops\n")
    result = run_cli("start", "--policy-dir", str(tmp_path))
    assert_one_line_error(result, "debug.toml", "invalid TOML")


def test_bad_config_file_is_a_one_line_error(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text("no_such_setting = 1\n")
    assert_one_line_error(run_cli("start", "--config", str(config)), "unknown setting")


def test_version_and_help() -> None:
    assert "0.1.0" in run_cli("--version").stdout
    help_text = run_cli("start", "--help").stdout
    for option in ("--openai-upstream", "--gemini-upstream", "--anthropic-upstream", "--policy-dir", "--no-cors"):
        assert option in help_text


async def test_all_disabled_folder_runs_without_policies_and_warns(
    tmp_path: Path, fake: FakeUpstream, daemons
) -> None:
    (tmp_path / "debug.toml").write_text("enabled = false\n")
    (tmp_path / "secrets.toml").write_text("enabled = false\n")  # without it, Secrets runs by default
    daemon = daemons("--policy-dir", str(tmp_path), *upstream_args(fake.url))
    health = await daemon.wait_ready()
    assert health["policies"] == []
    async with httpx.AsyncClient() as client:
        response = await client.post(
            daemon.url + "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "capsem_block passes"}]},
            headers={"authorization": f"Bearer {OPENAI_KEY}"},
        )
    assert response.status_code == 200
    assert await daemon.stop() == 0
    assert "WARNING" in daemon.log and "no policy is active" in daemon.log


async def test_debug_toml_loads_the_full_coverage_debug_policy(tmp_path: Path, fake: FakeUpstream, daemons) -> None:
    (tmp_path / "debug.toml").write_text("enabled = true\n")
    daemon = daemons("--policy-dir", str(tmp_path), *upstream_args(fake.url))
    assert (await daemon.wait_ready())["policies"] == ["Secrets", "Debug"]
    async with httpx.AsyncClient() as client:
        response = await client.post(
            daemon.url + "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "tool", "tool_call_id": "x", "content": "capsem_block"}]},
            headers={"authorization": f"Bearer {OPENAI_KEY}"},
        )
    assert response.status_code == 400
    await daemon.stop()


async def test_precedence_flags_over_env_over_file(tmp_path: Path, fake: FakeUpstream, daemons) -> None:
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    config = tmp_path / "proxy.toml"
    config.write_text(f'port = {file_port}\nopenai-upstream = "{fake.url}/v1"\nlog_level = "debug"\n')
    from_file = daemons("--config", str(config), port=file_port)
    assert (await from_file.wait_ready())["providers"]["openai"] == fake.url + "/v1"
    await from_file.stop()

    env = daemon_env(CAPSEM_PROXYD_CONFIG=str(config), CAPSEM_PROXYD_PORT=str(env_port))
    from_env = daemons(env=env, port=env_port)
    await from_env.wait_ready()
    await from_env.stop()

    from_flag = daemons("--port", str(flag_port), env=env, port=flag_port)
    await from_flag.wait_ready()
    await from_flag.stop()
    assert f":{flag_port}" in from_flag.log and f":{env_port}" not in from_flag.log


async def test_daemon_serves_both_providers_logs_no_keys_and_stops_on_sigterm(
    tmp_path: Path, fake: FakeUpstream, daemons
) -> None:
    daemon = daemons(*upstream_args(fake.url))
    health = await daemon.wait_ready()
    assert health["status"] == "ok" and health["policies"] == ["Secrets", "Debug"]
    async with httpx.AsyncClient() as client:
        gemini = await client.post(
            daemon.url + f"/v1beta/models/gemini-2.0-flash:generateContent?key={GEMINI_KEY}",
            json={"contents": [{"role": "user", "parts": [{"text": "hello"}]}]},
        )
        blocked = await client.post(
            daemon.url + "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "capsem_block"}]},
            headers={"authorization": f"Bearer {OPENAI_KEY}"},
        )
    assert gemini.status_code == 200 and blocked.status_code == 400
    assert await daemon.stop() == 0
    log = daemon.log
    assert "listening on" in log and "policies: Debug" in log
    assert "status=400" in log and "status=200" in log
    for key in ALL_TEST_KEYS:
        assert key not in log
