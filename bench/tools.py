"""The C tools the bench drives (nginx, wrk), installed from Debian when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

# command -> Debian package
REQUIRED = {"nginx": "nginx", "wrk": "wrk", "taskset": "util-linux"}


def find(command: str) -> str | None:
    return shutil.which(command) or next(
        (path for path in (f"/usr/sbin/{command}", f"/usr/bin/{command}") if os.access(path, os.X_OK)), None
    )


def missing() -> list[str]:
    return [command for command in REQUIRED if find(command) is None]


def ensure_installed(log: Callable[[str], None] = print) -> dict[str, str]:
    """Return command -> path, running ``apt-get install`` once for what is missing."""
    absent = missing()
    if absent:
        packages = sorted({REQUIRED[command] for command in absent})
        if shutil.which("apt-get") is None:
            raise RuntimeError(f"missing {', '.join(absent)} and no apt-get to install {', '.join(packages)}")
        prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
        log(f"installing {', '.join(packages)} with apt-get (missing: {', '.join(absent)})")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*prefix, "apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run([*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        still = missing()
        if still:
            raise RuntimeError(f"apt-get did not provide {', '.join(still)}")
    return {command: find(command) or command for command in REQUIRED}
