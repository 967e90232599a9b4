"""capsem-proxy 0.1.0 from PyPI, in a throwaway venv under ``bench/.work``.

Its OpenAI upstream is hard-coded (``https://api.openai.com/v1`` in
``capsem_proxy/providers/openai.py``); the installed copy is patched at run
time to read ``CAPSEM_BENCH_OPENAI_UPSTREAM`` instead. Nothing of it is
committed: the venv is rebuilt whenever the marker file is missing.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

PACKAGE = "capsem-proxy==0.1.0"
UPSTREAM_ENV = "CAPSEM_BENCH_OPENAI_UPSTREAM"
_HARD_CODED = 'self.base_url = "https://api.openai.com/v1"'
_PATCHED = f'self.base_url = __import__("os").environ["{UPSTREAM_ENV}"]  # patched by capsem-proxyd bench'
_READY = ".bench-ready"


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path, log: Callable[[str], None] = print) -> Path:
    """Create the venv, install capsem-proxy 0.1.0 and patch its upstream; reuse it when ready.

    A lock file serialises concurrent bench runs sharing ``bench/.work``.
    """
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(venv, log)


def _build(venv: Path, log: Callable[[str], None]) -> Path:
    if (venv / _READY).exists() and python_of(venv).exists():
        return python_of(venv)
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv is needed to build the capsem-proxy 0.1.0 venv")
    log(f"building a throwaway venv for {PACKAGE} in {venv}")
    shutil.rmtree(venv, ignore_errors=True)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run([uv, "venv", "-q", "--python", python, str(venv)], check=True)
    subprocess.run([uv, "pip", "install", "-q", "--python", str(python_of(venv)), PACKAGE], check=True)
    patch_upstream(venv)
    (venv / _READY).write_text(PACKAGE + "\n")
    return python_of(venv)


def patch_upstream(venv: Path) -> Path:
    found = subprocess.run(
        [str(python_of(venv)), "-c", "import capsem_proxy.providers.openai as m; print(m.__file__)"],
        check=True, capture_output=True, text=True,
    )
    source = Path(found.stdout.strip())
    text = source.read_text()
    if _PATCHED in text:
        return source
    if text.count(_HARD_CODED) != 1:
        raise RuntimeError(f"{source}: expected one {_HARD_CODED!r} to patch; is this really {PACKAGE}?")
    source.write_text(text.replace(_HARD_CODED, _PATCHED))
    return source


def command(python: Path, port: int) -> list[str]:
    """How the package is meant to be served: uvicorn on its FastAPI app, defaults otherwise."""
    return [str(python), "-m", "uvicorn", "capsem_proxy.server:app", "--host", "127.0.0.1", "--port", str(port)]
