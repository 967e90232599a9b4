"""Canary for ``capsem_proxyd/_compat/httpx_cli.py``: the daemon's httpx without its command line.

The shim relies on httpx importing the private ``httpx._main`` inside ``try``/
``except ImportError``: a release that imports it unguarded would fail the
daemon's start, and one that renames it would bring rich and pygments back
(about 4 MiB of every daemon). Both are told here, in fresh interpreters, the
way the daemon imports its modules.
"""

from __future__ import annotations

import json
import subprocess
import sys

from capsem_proxyd._compat.httpx_cli import COMMAND_LINE


def _modules_after(code: str) -> dict[str, bool]:
    names = ("httpx", COMMAND_LINE, "rich", "pygments")
    probe = f"import sys, json\n{code}\nprint(json.dumps({{n: n in sys.modules and sys.modules[n] is not None for n in {names!r}}}))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_daemon_imports_httpx_without_its_command_line() -> None:
    loaded = _modules_after("import capsem_proxyd.daemon.cli")
    assert loaded == {"httpx": True, COMMAND_LINE: False, "rich": False, "pygments": False}


def test_httpx_imports_its_command_line_where_the_shim_expects_it_and_falls_back_without_it() -> None:
    # Installed here (the PII extra brings rich and pygments), httpx loads the module the shim names ...
    assert _modules_after("import httpx")[COMMAND_LINE]
    # ... and imports without it, with its own stub in place of the command line.
    stub = ("import sys\nsys.modules[" + repr(COMMAND_LINE) + "] = None\nimport httpx\n"
            "assert callable(httpx.main) and httpx.main.__module__ == 'httpx'")
    subprocess.run([sys.executable, "-c", stub], check=True, timeout=120)
