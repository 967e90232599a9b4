"""What ``start`` and ``check`` verify before anything is served.

Each check does what serving would do first, the same way, so that a
configuration ``check`` accepts also starts, and one that cannot start fails
here with one line (``ConfigError``, exit code 2) instead of a traceback
from a worker: every policy folder and tenant file loaded, the trace
endpoint valid and OpenTelemetry importable, the record of delivered replies
openable in ``--state-dir`` and the placeholder key there, the audit log and its chain head writable,
the TLS certificate and key loaded into a context as the server loads them, the pidfile writable.
(The upstream URLs are refused as they are parsed: ``options.UpstreamURL``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from capsem_proxyd.config import Settings
from capsem_proxyd.daemon.options import ConfigError
from capsem_proxyd.enforcement.loader import PolicyConfigError
from capsem_proxyd.enforcement.tenants import PolicyConfig, load_policy_config
from capsem_proxyd.observe.tracing import TraceExport, TracingConfigError, trace_export


@dataclass(frozen=True, slots=True)
class Preflight:
    """What the checks found: the policy configuration, where spans go, where delivered replies are kept,
    and what is wrong but does not stop a start (``check`` prints it as warnings)."""

    config: PolicyConfig
    export: TraceExport | None
    state_file: Path | None
    warnings: tuple[str, ...] = ()


def preflight(settings: Settings, *, repair: bool = True, pidfile: str | None = None) -> Preflight:
    """Every check ``start`` runs before it binds; ConfigError on the first that fails.

    ``repair``: what ``start`` does, which ``check`` only reports: a damaged record of delivered replies
    is set aside and a fresh one made, a missing or damaged placeholder key replaced (each logged at ERROR).
    ``pidfile``: the one start will write (``--daemon`` has a default), else ``--pidfile``.
    """
    check_pidfile(pidfile or settings.pidfile)
    check_tls(settings)
    check_audit(settings)
    config, export = load_config(settings), check_tracing(settings)
    state_file, warnings = check_state(settings, repair=repair)
    check_mcp_pins(settings)
    return Preflight(config, export, state_file, warnings)


def check_mcp_pins(settings: Settings) -> None:
    """With ``--mcp-server``: the pinned MCP tool definitions in ``--state-dir`` read as the hop will read
    them; ConfigError when the file is there but unreadable (every tool would otherwise be pinned anew)."""
    if not settings.mcp_servers:
        return
    from capsem_proxyd.mcp.pins import Pins, PinsUnreadable
    from capsem_proxyd.proxy.response_store import state_directory

    try:
        Pins(state_directory(settings.state_dir))
    except PinsUnreadable as error:
        raise ConfigError(str(error)) from None


def load_config(settings: Settings) -> PolicyConfig:
    """Load every policy folder and tenant file exactly as ``start`` does; ConfigError on any problem."""
    try:
        return load_policy_config(settings)
    except PolicyConfigError as error:
        raise ConfigError(str(error)) from None


def check_tracing(settings: Settings) -> TraceExport | None:
    """Where spans go (None: nowhere), once the endpoint is valid and OpenTelemetry importable; else ConfigError."""
    try:
        export = trace_export(settings)
    except TracingConfigError as error:
        raise ConfigError(str(error)) from None
    if export is not None:
        try:
            import capsem_proxyd.observe.otel  # noqa: F401 - what the instance will import, with the same error
        except ImportError as error:
            raise ConfigError(f"{export.source} is set: {error}") from None
    return export


def check_state(settings: Settings, *, repair: bool = True) -> tuple[Path | None, tuple[str, ...]]:
    """The state directory as the workers will use it; ConfigError when it cannot hold what it must.

    The placeholder key is loaded (made the first time) whatever ``--stored-content`` says: redaction's
    placeholders and the MCP hop's session tags are keyed from it, and every worker (and every instance
    given a copy of the key) must agree on them. With ``--stored-content checked`` the store's file is
    created and opened as the workers will open it (then closed: a forked worker must not inherit a
    connection); its path is returned, None otherwise.

    A damaged file or key does not stop a start (the proxy would stay down until an operator deleted
    it): ``start`` sets it aside and starts afresh (``repair``), ``check`` only warns that it will.
    """
    import sqlite3

    from capsem_proxyd.proxy.placeholder_key import key_problem, load_placeholder_key
    from capsem_proxyd.proxy.response_store import is_damaged, state_directory
    from capsem_proxyd.proxy.stored_content import open_store

    checked = settings.stored_content == "checked"
    store = open_store(settings) if checked else None
    directory = store.path.parent if store is not None else state_directory(settings.state_dir)
    warnings: list[str] = []
    try:
        if repair:
            if store is not None:
                store.prepare()
            load_placeholder_key(directory)
        else:
            if store is not None:
                try:
                    store.open()
                except sqlite3.DatabaseError as error:
                    if not is_damaged(error):
                        raise
                    warnings.append(f"--state-dir {directory}: the record of delivered replies {store.path.name} is "
                                    f"damaged ({error}): start moves it aside and begins a fresh one (the ids it "
                                    "held are then refused)")
            problem = key_problem(directory)
            if problem is not None:
                warnings.append(f"--state-dir {directory}: {problem}: start makes a new placeholder key (a new id)")
    except (OSError, sqlite3.Error) as error:
        kept = "the record of delivered replies (--stored-content checked)" if checked else "the placeholder key"
        raise ConfigError(f"--state-dir {directory}: cannot keep {kept} there: {error}") from None
    finally:
        if store is not None:
            store.close()
    return (store.path if store is not None else None), tuple(warnings)


def check_audit(settings: Settings) -> None:
    """With ``--audit-log`` a file: it and its chain head (in ``--state-dir``) opened for writing as the
    instance will open them, nothing written; ConfigError when they cannot be."""
    import os
    import stat

    from capsem_proxyd.observe.audit_head import ChainHead, head_path
    from capsem_proxyd.proxy.response_store import state_directory

    if not settings.audit_log or settings.audit_log == "-":
        return
    path = settings.audit_log
    head = head_path(state_directory(settings.state_dir), path)
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError(f"--audit-log {path}: not a regular file (a chained log is read back and "
                                  "appended to; '-' writes it to stdout)")
            # Zero bytes: a regular file is left as it was, while a file that takes no writes (/proc/version)
            # fails here as the log's first record would at start.
            os.write(fd, b"")
            _room_for_a_record(path, fd)
        finally:
            os.close(fd)
    except OSError as error:
        raise ConfigError(f"--audit-log {path}: cannot write it: {error.strerror or error}") from None
    try:
        ChainHead(head, path).close()
    except OSError as error:
        raise ConfigError(f"--audit-log {path}: cannot keep its chain head {head} (in --state-dir): "
                          f"{error.strerror or error}") from None


# What the log's first record (its chain_start, written at start) needs, with room to spare.
_RECORD_ROOM = 4096


def _room_for_a_record(path: str, fd: int) -> None:
    """ConfigError when start's first record could not be written: the file at this process's file-size
    limit (``ulimit -f``, systemd's ``LimitFSIZE=``) or its file system full. (A zero-byte write does not
    see either: the kernel answers it before looking at sizes.)"""
    import os
    import resource

    size = os.fstat(fd).st_size
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and size + _RECORD_ROOM > limit:
        raise ConfigError(f"--audit-log {path}: no room for a record: the file ({size} bytes) is at the "
                          f"file-size limit of this process ({limit} bytes: ulimit -f, LimitFSIZE=)")
    space = os.fstatvfs(fd)
    if space.f_bavail * space.f_frsize < _RECORD_ROOM:
        raise ConfigError(f"--audit-log {path}: no room for a record: its file system is full")


def check_tls(settings: Settings) -> None:
    """With ``--certfile``/``--keyfile``: each readable, and both loaded into a TLS context exactly as the
    server builds it (Hypercorn's ``create_ssl_context``); ConfigError naming the file otherwise."""
    import re
    import ssl

    from capsem_proxyd.daemon.server import hypercorn_config

    if not settings.certfile or not settings.keyfile:
        return
    for flag, path, what, block in (
        ("--certfile", settings.certfile, "certificate", rb"-----BEGIN (?:TRUSTED )?CERTIFICATE-----"),
        ("--keyfile", settings.keyfile, "private key", rb"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----"),
    ):
        try:
            with open(path, "rb") as handle:
                text = handle.read(1024 * 1024)
        except OSError as error:
            raise ConfigError(f"{flag} {path}: cannot read it: {error.strerror or error}") from None
        if b"-----BEGIN " not in text:
            raise ConfigError(f"{flag} {path}: not a PEM file (no -----BEGIN line)")
        if re.search(block, text) is None:
            raise ConfigError(f"{flag} {path}: holds no PEM {what}")
    try:
        hypercorn_config(settings).create_ssl_context()
    except (ssl.SSLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or str(error)
        raise ConfigError(f"--certfile {settings.certfile} and --keyfile {settings.keyfile}: cannot serve TLS "
                          f"with them ({reason}: a certificate chain and its private key, PEM, unencrypted)") from None


def check_pidfile(pidfile: str | None) -> None:
    """The pidfile's folder made and the file openable for writing, as start writes it; nothing written
    (a running daemon's pidfile is left as it is), a file made here removed again."""
    import os

    if not pidfile:
        return
    path = Path(pidfile)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
        if not existed:
            path.unlink(missing_ok=True)
    except OSError as error:
        raise ConfigError(f"--pidfile {pidfile}: cannot write it: {error.strerror or error}") from None
