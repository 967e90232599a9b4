"""``--mcp-server``, ``--mcp-header`` and ``--mcp-redact-passthrough``: a bad entry is one line and exit 2 from ``check``, before ``start``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemon import assert_startup_error, run_cli

BAD = {
    "no name": (["--mcp-server", "https://mcp.example.com"], ("NAME=URL",)),
    "name with a slash": (["--mcp-server", "a/b=https://mcp.example.com"], ("NAME=URL",)),
    # policies read the server out of mcp__SERVER__tool: a name with "__" would read two ways
    "name with a double underscore": (["--mcp-server", "a__b=https://mcp.example.com"], ("no '__'",)),
    "not http": (["--mcp-server", "docs=ftp://mcp.example.com"], ("docs", "http://")),
    "no host": (["--mcp-server", "docs=http://"], ("docs",)),
    "credentials in the URL": (["--mcp-server", "docs=https://u:p@mcp.example.com"], ("credentials",)),
    "twice": (["--mcp-server", "docs=https://a.example", "--mcp-server", "docs=https://b.example"], ("twice",)),
    "header for no server": (["--mcp-header", "docs=X-Team"], ("--mcp-header",)),
    "cookie header": (["--mcp-server", "docs=https://a.example", "--mcp-header", "docs=Cookie"], ("never",)),
    "provider key header": (["--mcp-server", "docs=https://a.example", "--mcp-header", "docs=x-api-key"], ("never",)),
    "timeout for no server": (["--mcp-timeout", "docs=5"], ("--mcp-timeout", "declared")),
    "timeout not a number": (["--mcp-server", "docs=https://a.example", "--mcp-timeout", "docs=soon"], ("SECONDS",)),
    "timeout of zero": (["--mcp-server", "docs=https://a.example", "--mcp-timeout", "docs=0"], ("above 0",)),
    "timeout given twice": (["--mcp-server", "docs=https://a.example", "--mcp-timeout", "docs=1",
                             "--mcp-timeout", "docs=2"], ("already",)),
    "passthrough without a tool": (["--mcp-server", "docs=https://a.example", "--mcp-redact-passthrough", "docs"],
                                   ("--mcp-redact-passthrough", "SERVER/TOOL")),
    "passthrough for no server": (["--mcp-server", "docs=https://a.example", "--mcp-redact-passthrough",
                                   "other/write"], ("--mcp-redact-passthrough", "other")),
    "passthrough tool with a space": (["--mcp-server", "docs=https://a.example", "--mcp-redact-passthrough",
                                       "docs/write file"], ("SERVER/TOOL",)),
    "new tools neither hold nor serve": (["--mcp-new-tools", "accept"], ("--mcp-new-tools", "hold")),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_bad_mcp_entry_is_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    args, fragments = BAD[case]
    assert_startup_error(run_cli("check", "--state-dir", str(tmp_path), *args), *fragments)


def test_the_config_file_takes_a_table_of_servers(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text('mcp_servers = { docs = "https://mcp.example.com/mcp", "bad name" = "https://x.example" }\n')
    assert_startup_error(run_cli("check", "--state-dir", str(tmp_path), "--config", str(config)), "bad name")
    config.write_text('mcp_servers = { docs = "https://mcp.example.com/mcp" }\n')
    result = run_cli("check", "--state-dir", str(tmp_path), "--config", str(config))
    assert result.returncode == 0, result.stderr


def test_an_unreadable_pins_file_stops_check(tmp_path: Path) -> None:
    """Pins that cannot be read would let every tool be pinned anew: refused before start."""
    (tmp_path / "mcp-pins.json").write_text("{not json")
    result = run_cli("check", "--state-dir", str(tmp_path), "--mcp-server", "docs=https://mcp.example.com/mcp")
    assert_startup_error(result, "mcp-pins.json", "cannot be read")
