"""Resolving ``start``'s options again, as a reload does, from what one run of the command line remembers.

No process is started: the real ``start`` command's options are resolved
by click from real files and real environment variables.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from capsem_proxyd.daemon.cli import start
from capsem_proxyd.daemon.options import CommandLine, ConfigError, settings_loader

UPSTREAM = "CAPSEM_PROXYD_UPSTREAM_TIMEOUT"
CONNECT = "CAPSEM_PROXYD_CONNECT_TIMEOUT"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No CAPSEM_PROXYD_* of the developer's, restored after the test (whatever the env file set)."""
    for name in (UPSTREAM, CONNECT):
        monkeypatch.setenv(name, "1")  # recorded: the test's end puts back what was there before
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no ./.env of the developer's
    return monkeypatch


def test_start_args_are_what_follows_start() -> None:
    assert CommandLine(["start", "--port", "9"]).start_args() == ["--port", "9"]
    assert CommandLine(["check", "--port", "9"]).start_args() == []
    assert CommandLine().start_args() == []


def test_a_reload_resolves_the_same_flags_and_reads_the_env_file_again_below_the_real_environment(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / "proxy.env"
    env_file.write_text(f"{UPSTREAM}=11\n{CONNECT}=3\n")
    clean_env.setenv(CONNECT, "4")  # a real environment variable wins over the file
    load = settings_loader(start, CommandLine(["start", "--env-file", str(env_file), "--port", "1234"]))

    settings = load()
    assert (settings.upstream_timeout, settings.connect_timeout, settings.port) == (11.0, 4.0, 1234)

    env_file.write_text(f"{UPSTREAM}=22\n{CONNECT}=5\n")  # edited, then SIGHUP
    settings = load()
    assert (settings.upstream_timeout, settings.connect_timeout, settings.port) == (22.0, 4.0, 1234)


def test_each_command_line_remembers_its_own_env_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing is kept in module globals: a variable one run's env file set is that run's to change."""
    first, second = tmp_path / "first.env", tmp_path / "second.env"
    first.write_text(f"{UPSTREAM}=11\n")
    second.write_text(f"{UPSTREAM}=22\n")
    one = CommandLine(["start", "--env-file", str(first)])
    assert settings_loader(start, one)().upstream_timeout == 11.0
    assert one.env_file_names == {UPSTREAM}
    # Another run sees UPSTREAM as set by the environment (not by its file): the environment wins.
    other = CommandLine(["start", "--env-file", str(second)])
    assert settings_loader(start, other)().upstream_timeout == 11.0
    assert other.env_file_names == set()


def test_a_broken_option_on_reload_is_a_config_error(clean_env: pytest.MonkeyPatch) -> None:
    load = settings_loader(start, CommandLine(["start", "--certfile", "cert.pem"]))
    with pytest.raises(ConfigError, match="--certfile and --keyfile go together"):
        load()
