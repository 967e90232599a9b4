"""What ``start`` and ``check`` verify before anything is served.

Each check does what serving would do first, the same way, so that a
configuration ``check`` accepts also starts, and one that cannot start fails
here with one line (``ConfigError``, exit code 2) instead of a traceback
from a worker: every policy folder and tenant file loaded, the trace
endpoint valid and OpenTelemetry importable, the record of delivered replies
openable in ``--state-dir``, the audit log and its chain head writable.
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
    """What the checks found: the policy configuration, where spans go, where delivered replies are kept."""

    config: PolicyConfig
    export: TraceExport | None
    state_file: Path | None


def preflight(settings: Settings) -> Preflight:
    """Every check ``start`` runs before it binds; ConfigError on the first that fails."""
    check_audit(settings)
    return Preflight(load_config(settings), check_tracing(settings), check_state(settings))


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


def check_state(settings: Settings) -> Path | None:
    """With ``--stored-content checked``: the store's file, created and opened as the workers will open it
    (then closed: a forked worker must not inherit a connection); ConfigError when it cannot be."""
    import sqlite3

    from capsem_proxyd.proxy.stored_content import open_store

    if settings.stored_content != "checked":
        return None
    store = open_store(settings)
    try:
        store.open()
    except (OSError, sqlite3.Error) as error:
        raise ConfigError(f"--state-dir {store.path.parent}: cannot keep the record of delivered replies there "
                          f"(--stored-content checked): {error}") from None
    finally:
        store.close()
    return store.path


def check_audit(settings: Settings) -> None:
    """With ``--audit-log`` a file: it and its chain head (in ``--state-dir``) opened for writing as the
    instance will open them, nothing written; ConfigError when they cannot be."""
    import os

    from capsem_proxyd.observe.audit_head import ChainHead, head_path
    from capsem_proxyd.proxy.response_store import state_directory

    if not settings.audit_log or settings.audit_log == "-":
        return
    head = head_path(state_directory(settings.state_dir), settings.audit_log)
    try:
        Path(settings.audit_log).parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(settings.audit_log, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600))
        ChainHead(head, settings.audit_log).close()
    except OSError as error:
        raise ConfigError(f"--audit-log {settings.audit_log}: cannot write it, or its chain head {head}: "
                          f"{error.strerror or error}") from None
