"""httpx's command line, kept out of the daemon's process.

httpx's ``__init__`` imports its command-line client (the private module
``httpx._main``) whenever click, rich and pygments are installed, and falls
back to a stub ``httpx.main`` when that import fails. click is ours, and the
PII extra brings rich and pygments (spaCy needs typer, typer needs rich), so
every daemon with PII support installed loaded a terminal renderer and a
syntax highlighter it never runs: about 4 MiB of resident memory, against the
80 MiB the daemon is measured by (``bench/``).

``skip_command_line`` marks ``httpx._main`` as absent (``None`` in
``sys.modules``: the import system's documented way to make an import fail)
before httpx is first imported, so httpx takes its own fallback. It does
nothing once httpx is imported (a test process, a program embedding the
package), and nothing but that stub changes: the daemon's ``httpx.main`` is
the one httpx gives an install without the CLI extras. It relies on httpx
importing ``httpx._main`` under ``except ImportError`` (httpx 0.28; pinned
below the next minor in pyproject.toml; ``tests/_compat/test_httpx_cli.py``
fails first if a release changes that). It can go when httpx imports its
command line lazily.
"""

from __future__ import annotations

import sys

COMMAND_LINE = "httpx._main"


def skip_command_line() -> None:
    """Before httpx is first imported: let it import without its command-line client."""
    if "httpx" not in sys.modules and COMMAND_LINE not in sys.modules:
        sys.modules[COMMAND_LINE] = None  # type: ignore[assignment]  # the import system's "absent"
