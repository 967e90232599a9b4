"""Session-wide check: nothing the daemon wrote during the whole test run holds a key the tests used.

The per-test fixture (``no_key_in_daemon_logs``) sees one test's log records.
This one sees the run: a logging handler on the root logger from the first test
to the last reads every record of the daemon's loggers (message and exception
trace, before any redaction), and at the end every file the daemon wrote under
this run's pytest temporary directory is read — the log files of subprocess
daemons, audit logs, multi-process metrics files — skipping the inputs tests
write on purpose (``.env`` files, policy TOML, certificates).

The keys are every key-shaped literal in the test sources (``sk-...``,
``sk-ant-...``, ``AIza...``), so a key a new test invents is covered without
registering it. A leak fails the run at its end, naming the record or file.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

DAEMON_LOGGERS = ("capsem_proxyd", "hypercorn", "quart")
KEY_SHAPE = re.compile(r"(?<![A-Za-z0-9_-])(sk-(?:ant-)?[A-Za-z0-9_-]{8,}|AIza[0-9A-Za-z_-]{16,})")
# Folders that are an agent CLI's own HOME (tests/clients): the client keeps its own key there (Codex's shell
# snapshots hold the environment it was given); not the daemon's output.
CLIENT_HOMES = "agent-home"
# Files tests write as inputs (a provider key in an env file must stay unused, so it is there on purpose).
INPUT_SUFFIXES = (".env", ".toml", ".py", ".pem", ".key", ".crt", ".conf", ".service", ".md")
TESTS_DIR = Path(__file__).resolve().parents[1]


def keys_in_sources(folder: Path = TESTS_DIR) -> frozenset[str]:
    """Every key-shaped string in the test sources (``Bearer sk-...`` inside a header value too)."""
    keys: set[str] = set()
    for source in folder.rglob("*.py"):
        if "node_modules" in source.parts:  # tests/clients' installed agent CLIs are not test sources
            continue
        keys.update(KEY_SHAPE.findall(source.read_text(encoding="utf-8")))
    return frozenset(keys)


def daemon_outputs(root: Path) -> Iterator[Path]:
    """Files under ``root`` a daemon may have written (not test inputs, not nginx's own files)."""
    for path in root.rglob("*"):
        if not path.is_file() or "nginx" in path.parts or CLIENT_HOMES in path.parts:
            continue
        if path.name.startswith(".env") or path.suffix in INPUT_SUFFIXES or path.name.endswith(".env"):
            continue
        yield path


def leaks_in_files(paths: Iterable[Path], keys: frozenset[str]) -> list[str]:
    found = []
    encoded = [(key, key.encode()) for key in keys]
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        found.extend(f"{path}: {key[:12]}..." for key, raw in encoded if raw in data)
    return found


class KeyWatch(logging.Handler):
    """Reads every record of the daemon's loggers; remembers where a key appeared."""

    def __init__(self, keys: frozenset[str], prefixes: tuple[str, ...] = DAEMON_LOGGERS) -> None:
        super().__init__(logging.DEBUG)
        self.keys = keys
        self.prefixes = prefixes
        self.records = 0
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(self.prefixes):
            return
        self.records += 1
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not this handler's business
            text = str(record.msg)
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.leaks.extend(f"log record {record.name}: {text[:160]!r}" for key in self.keys if key in text)


@pytest.fixture(scope="session", autouse=True)
def key_watch(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[KeyWatch]:
    watch = KeyWatch(keys_in_sources())
    root = logging.getLogger()
    root.addHandler(watch)
    try:
        yield watch
    finally:
        root.removeHandler(watch)
    files = list(daemon_outputs(tmp_path_factory.getbasetemp()))
    leaks = watch.leaks + leaks_in_files(files, watch.keys)
    counts = {"keys": len(watch.keys), "records": watch.records, "files": len(files), "leaks": len(leaks)}
    workeroutput = getattr(request.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: the controller adds up every worker's counts
        workeroutput["key_watch"] = counts
    else:
        report_key_watch(request.config, [counts])
    assert not leaks, "API keys leaked into daemon output:\n" + "\n".join(leaks[:20])


def report_key_watch(config: pytest.Config, counts: list[dict[str, int]]) -> None:
    """One line in the run's summary: what the watch looked at, over every worker."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or not counts:
        return
    keys = max(count["keys"] for count in counts)
    records, files, leaks = (sum(count[name] for count in counts) for name in ("records", "files", "leaks"))
    line = (f"\nkey watch: {keys} test keys looked for in {records} daemon log records "
            f"and {files} files the daemons wrote; {leaks} found")
    if capture is None:
        reporter.write_line(line)
        return
    with capture.global_and_fixture_disabled():  # a teardown's output is captured otherwise
        reporter.write_line(line)


class KeyWatchCounts:
    """The controller's side under pytest-xdist: each worker sends its counts when it ends."""

    def __init__(self) -> None:
        self.counts: list[dict[str, int]] = []

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        counts = getattr(node, "workeroutput", {}).get("key_watch")
        if counts:
            self.counts.append(counts)

    def pytest_terminal_summary(self, config: pytest.Config) -> None:
        report_key_watch(config, self.counts)
