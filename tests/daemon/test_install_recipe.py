"""The production install recipe installs what the systemd unit runs (issue 24, item 6).

The README's ``sudo uv tool install --from . capsem-proxyd`` put the
executable in ~/.local/bin while the unit ran /usr/local/bin/capsem-proxyd
(``systemd-analyze verify``: "is not executable"), and a tool environment
under /root would have been hidden by the unit's ``ProtectHome=yes`` anyway;
the old test pointed a copy of the unit at a stand-in script, so it could not
see either. Here ``deploy/install.sh`` runs as the README says, into
temporary directories, and the unit it installs is verified as installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import REPO, daemon_env

HOMES = ("/root", "/home")
REQUIRED = (
    "Type=notify", "ExecStartPre=", "ExecReload=", "Restart=on-failure", "NoNewPrivileges=yes",
    "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "CapabilityBoundingSet=",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "StateDirectory=capsem-proxyd", "LogsDirectory=",
    "Environment=CAPSEM_PROXYD_STATE_DIR=/var/lib/capsem-proxyd", "EnvironmentFile=-/etc/capsem-proxyd/env",
)


def under_home(path: str | Path) -> bool:
    resolved = os.path.realpath(path)
    return any(resolved == home or resolved.startswith(home + "/") for home in HOMES)


def python_outside_homes() -> str:
    """A Python >= 3.11 that ProtectHome=yes would not hide: this one, else the system's."""
    names = ("python3.13", "python3.12", "python3.11", "python3")
    candidates = [sys.executable, *(f"{folder}/{name}" for folder in ("/usr/bin", "/usr/local/bin") for name in names)]
    for candidate in candidates:
        if os.access(candidate, os.X_OK) and not under_home(candidate) and subprocess.run(
            [candidate, "-c", "import sys; sys.exit(sys.version_info < (3, 11))"], capture_output=True
        ).returncode == 0:
            return candidate
    pytest.skip("no Python >= 3.11 outside /root and /home to install with")


def unit_value(unit: str, key: str) -> str:
    return next(line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(key + "="))


def test_the_install_recipe_installs_what_the_unit_runs_and_systemd_analyze_verify_accepts_it(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (CI installs the systemd package)")
    prefix, bin_dir, unit_dir, conf_dir = (tmp_path / name for name in ("opt", "bin", "units", "etc"))
    installed = subprocess.run(
        [str(REPO / "deploy" / "install.sh"), "--prefix", str(prefix), "--bin-dir", str(bin_dir),
         "--unit-dir", str(unit_dir), "--conf-dir", str(conf_dir), "--python", python_outside_homes()],
        capture_output=True, text=True, timeout=300,
        env=daemon_env(UV_OFFLINE="1"),  # the locked versions come from uv's cache: no test reaches the internet
    )
    assert installed.returncode == 0, installed.stderr + installed.stdout

    unit_file = unit_dir / "capsem-proxyd.service"
    unit = unit_file.read_text()
    for required in REQUIRED:
        assert required in unit, required
    executable = unit_value(unit, "ExecStart").split()[0]
    assert executable == str(prefix / "bin" / "capsem-proxyd")
    assert unit_value(unit, "ExecStartPre").split()[0] == executable
    assert unit_value(unit, "ExecReload").split() == [executable, "reload", "--pid", "$MAINPID"]
    assert os.access(executable, os.X_OK) and not under_home(executable)
    interpreter = Path(executable).read_text().splitlines()[0].removeprefix("#!")
    assert not under_home(interpreter), interpreter  # ProtectHome=yes would hide it from the service
    assert os.path.realpath(bin_dir / "capsem-proxyd") == os.path.realpath(executable)
    assert "editable" not in subprocess.run(  # the project is installed, not linked to this tree
        [interpreter, "-c", "import capsem_proxyd; print(capsem_proxyd.__file__)"], capture_output=True, text=True
    ).stdout and str(REPO) not in subprocess.run(
        [interpreter, "-c", "import capsem_proxyd; print(capsem_proxyd.__file__)"], capture_output=True, text=True,
        cwd=tmp_path,
    ).stdout

    # The settings file binds nothing but the loopback unless the operator says so, with a tenants file.
    settings = [line for line in (conf_dir / "env").read_text().splitlines() if line and not line.startswith("#")]
    assert settings == []
    checked = subprocess.run([executable, "check"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                             env=daemon_env(CAPSEM_PROXYD_STATE_DIR=str(tmp_path / "state")))
    assert checked.returncode == 0 and "listen 127.0.0.1:8000" in checked.stdout, checked.stderr

    verified = subprocess.run(["systemd-analyze", "verify", str(unit_file)], capture_output=True, text=True, timeout=60)
    problems = [line for line in verified.stderr.splitlines() if "capsem-proxyd.service" in line]
    assert verified.returncode == 0 and not problems, verified.stderr


def test_the_repository_unit_runs_the_recipes_executable() -> None:
    """The unit as shipped names the path install.sh installs to by default, outside the homes."""
    unit = (REPO / "capsem-proxyd.service").read_text()
    recipe = (REPO / "deploy" / "install.sh").read_text()
    assert unit_value(unit, "ExecStart").split()[0] == "/opt/capsem-proxyd/bin/capsem-proxyd"
    assert "prefix=/opt/capsem-proxyd\n" in recipe
