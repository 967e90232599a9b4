"""The ``capsem-proxyd`` command line (click).

Every option of ``start`` reads ``CAPSEM_PROXYD_<OPTION>`` from the environment
and a key of the ``--config`` TOML file; click's own precedence gives flags >
environment > file > defaults (the file feeds click's ``default_map``).
"""

from __future__ import annotations

import os
import sys
import tomllib
import typing
from collections.abc import Callable
from dataclasses import Field
from pathlib import Path
from typing import Any

import click

from capsem_proxyd import __version__
from capsem_proxyd.config import DEFAULTS, ENV_PREFIX, Setting, Settings, declaration, declared, envvar, option_name
from capsem_proxyd.enforcement.loader import PolicyConfigError, PolicySet
from capsem_proxyd.enforcement.tenants import PolicyConfig, load_policy_config
from capsem_proxyd.observe.tracing import TraceExport, TracingConfigError, trace_export

EXIT_CONFIG_ERROR = 2


class ConfigError(click.ClickException):
    exit_code = EXIT_CONFIG_ERROR


def _env(name: str) -> str:
    """The environment variable of an option that is not a setting (``--log-file``, ``--url``)."""
    return f"{ENV_PREFIX}_{name.upper()}"


def _load_config_file(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Eager ``--config``: its keys become click defaults (below env and flags)."""
    if not value:
        return value
    path = Path(value)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    section = data.get("capsem-proxyd", data.get("capsem_proxyd", data))
    known = {param.name for param in ctx.command.params} - {"config", "env_file"}
    by_option = {option_name(item).replace("-", "_"): item.name for item in declared()}
    defaults: dict[str, Any] = {}
    for key, item in section.items():
        name = key.replace("-", "_")
        name = by_option.get(name, name)
        if name not in known:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
        defaults[name] = item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def server_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that define a proxy instance (shared by start, check, policies and config).

    Generated from the ``Settings`` declarations (``config.py``), after the two
    eager options that feed the others: ``--env-file`` and ``--config``.
    """
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option("--env-file", type=click.Path(dir_okay=False), envvar=f"{ENV_PREFIX}_ENV_FILE", is_eager=True,
                     expose_value=False, callback=_load_env_file,
                     help="File of CAPSEM_PROXYD_* settings (default: .env in the working directory when present). "
                          "Provider keys in it are never used: clients always bring their own."),
        click.option("--config", type=click.Path(dir_okay=False), envvar=f"{ENV_PREFIX}_CONFIG", is_eager=True,
                     expose_value=False, callback=_load_config_file,
                     help="TOML file with settings (keys as option names). Env: CAPSEM_PROXYD_CONFIG."),
        *(_setting_option(item, hints[item.name]) for item in declared()),
    ]
    for option in reversed(options):
        command = option(command)
    return command


hints = typing.get_type_hints(Settings)


def _setting_option(item: Field[Any], hint: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One click option from one ``Settings`` field and its ``Setting``."""
    spec = declaration(item)
    name = option_name(item)
    envvars = [envvar(item), *spec.envvars]
    common: dict[str, Any] = {"envvar": envvars if spec.envvars else envvars[0], "help": spec.help}
    if item.default is not None and item.default != ():
        common.update(default=item.default, show_default=True)
    if hint is bool:
        return click.option(f"--{name}/--no-{name}", item.name, **common)
    if typing.get_origin(hint) is tuple:
        return click.option(f"--{name}", item.name, multiple=True, **common)
    return click.option(f"--{name}", item.name, type=_click_type(spec, hint), **common)


def _click_type(spec: Setting, hint: Any) -> Any:
    if spec.choices:
        return click.Choice(spec.choices, case_sensitive=False)
    if spec.file:
        return click.Path(dir_okay=False)
    if hint is int:
        return click.IntRange(min=_bound(spec.minimum), max=_bound(spec.maximum))
    if hint is float:
        return click.FloatRange(min=spec.minimum, max=spec.maximum)
    return None


def _bound(value: float | None) -> int | None:
    return None if value is None else int(value)


_ENV_FILE_NAMES: set[str] = set()  # variables this process took from an env file


def _load_env_file(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Eager ``--env-file``: its CAPSEM_PROXYD_* entries become environment variables.

    Real environment variables win over the file; other entries (such as
    OPENAI_API_KEY) are ignored, so a provider key in the file never
    authenticates client traffic.
    """
    from dotenv import dotenv_values

    if value is None and Path(".env").is_file():
        value = ".env"
    if not value:
        return value
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"env file {path} does not exist")
    for name, item in dotenv_values(path).items():
        if not name.startswith(ENV_PREFIX + "_") or item is None:
            continue
        if name in os.environ and name not in _ENV_FILE_NAMES:
            continue
        os.environ[name] = item
        _ENV_FILE_NAMES.add(name)
    return value


def settings_from(options: dict[str, Any]) -> Settings:
    """``Settings`` from the parsed options: repeatable ones as tuples, an empty optional value as none."""
    options = dict(options)
    for item in declared():
        if typing.get_origin(hints[item.name]) is tuple:
            options[item.name] = tuple(options.get(item.name) or ())
        elif item.default is None:
            options[item.name] = options.get(item.name) or None
    if (options.get("certfile") is None) != (options.get("keyfile") is None):
        raise ConfigError("--certfile and --keyfile go together: give both to serve HTTPS, or neither")
    if options.get("state_dir"):  # --daemon changes the working directory: resolved before it does
        options["state_dir"] = os.path.abspath(os.path.expanduser(options["state_dir"]))
    return Settings(**options)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="capsem-proxyd")
def cli() -> None:
    """capsem-proxyd: an LLM security proxy enforcing CAPSEM policies.

    Point an SDK's base_url at it; it forwards to the provider with the
    client's own key and blocks what the policies refuse.
    """


_INVOCATION: list[str] = []  # the command line, so a reload can resolve it again


def _start_args() -> list[str]:
    return _INVOCATION[_INVOCATION.index("start") + 1 :] if "start" in _INVOCATION else []


def _process_options(options: dict[str, Any]) -> dict[str, Any]:
    """Split off the options that shape the process, not the proxy."""
    return {name: options.pop(name) for name in ("daemon", "log_file") if name in options}


def _resolve_settings(args: list[str]) -> Settings:
    """Resolve ``start``'s options again (flags, environment, env file, config file)."""
    with start.make_context("start", list(args), resilient_parsing=False) as ctx:
        options = dict(ctx.params)
    _process_options(options)
    return settings_from(options)


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
            import capsem_proxyd.observe.otel  # noqa: F401 - what create_app will import, with the same error
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


@cli.command()
@server_options
@click.option("--daemon", is_flag=True, help="Detach into the background (for hosts without systemd).")
@click.option("--log-file", default="capsem-proxyd.log", show_default=True, envvar=_env("log_file"),
              help="With --daemon: where stdout and stderr go.")
def start(**options: Any) -> None:
    """Run the proxy (in the foreground unless --daemon) until SIGINT/SIGTERM."""
    from capsem_proxyd.daemon.launcher import launch
    from capsem_proxyd.observe.logs import configure_logging

    process = _process_options(options)
    settings = settings_from(options)
    configure_logging(settings.log_level, settings.log_format)
    config = load_config(settings)
    check_tracing(settings)
    check_state(settings)
    args = _start_args()
    try:
        code = launch(settings, config, lambda: _resolve_settings(args), detach=process["daemon"],
                      log_file=process["log_file"])
    except OSError as error:
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {error.strerror or error}") from None
    sys.exit(code)


@cli.command()
@server_options
def check(**options: Any) -> None:
    """Load the configuration and every policy as start would; exit non-zero on any problem."""
    settings = settings_from(options)
    config = load_config(settings)
    export = check_tracing(settings)
    state = check_state(settings)
    for warning in config.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"configuration OK: listen {settings.host}:{settings.port}, workers {settings.workers}")
    click.echo(f"upstreams: openai={settings.openai_upstream} gemini={settings.gemini_upstream} "
               f"anthropic={settings.anthropic_upstream}")
    click.echo(f"policies ({config.main.source}): {', '.join(config.main.names) or 'NONE'}")
    click.echo(f"traces: OTLP/HTTP to {export.describe()}" if export is not None else "traces: not exported")
    click.echo(f"stored content: {settings.stored_content}" + (f", delivered replies recorded in {state}" if state else ""))


@cli.command("policies")
@server_options
def list_policies(**options: Any) -> None:
    """List the active policies: mode, description and the hooks each implements."""
    from capsem_proxyd.enforcement.loader import implemented_hooks

    settings = settings_from(options)
    config = load_config(settings)

    def show(title: str, policy_set: PolicySet, enforced: bool = True) -> None:
        click.echo(f"{title} ({policy_set.source}):")
        for policy in policy_set.manager.policies:
            click.echo(f"  {policy.name} [{policy_set.mode_of(policy.name)}]: {policy.description}")
            click.echo(f"    hooks: {', '.join(implemented_hooks(policy)) or 'none'}")
        if not policy_set.names:
            click.echo("  NONE (requests are forwarded unchecked)")
        elif enforced:
            click.echo(f"  {config.holdback(settings.stream_holdback, policy_set)}")

    show("policies", config.main)
    if config.shadow is not None:
        show("shadow policies, recorded and never enforced", config.shadow, enforced=False)
    profiles: dict[int, tuple[PolicySet, list[str]]] = {}
    for tenant_id, profile in config.profiles.items():
        profiles.setdefault(id(profile), (profile, []))[1].append(tenant_id)
    for profile, tenants in profiles.values():
        show(f"profile for tenants {', '.join(sorted(tenants))}", profile)
    if config.allowed_tenants is not None:
        click.echo(f"tenant allow-list: {len(config.allowed_tenants)} tenant(s); others are refused")
    for warning in config.warnings:
        click.echo(f"warning: {warning}", err=True)


@cli.command("tenant-id")
def tenant_id() -> None:
    """Print the tenant id of the API key read from stdin (for --tenants-file and --tenant-profiles)."""
    from capsem_proxyd.exchange import tenant_id_for

    key = sys.stdin.readline().strip()
    if not key:
        raise click.ClickException("no API key on stdin (e.g. printenv OPENAI_API_KEY | capsem-proxyd tenant-id)")
    click.echo(tenant_id_for(key))


_SOURCE_NAMES = {"COMMANDLINE": "flag", "ENVIRONMENT": "environment", "DEFAULT_MAP": "config file",
                 "DEFAULT": "default"}


@cli.command("config")
@server_options
@click.pass_context
def show_config(ctx: click.Context, **options: Any) -> None:
    """Print the effective configuration and where each value came from."""
    from capsem_proxyd.observe.logs import redact

    settings = settings_from(options)
    width = max(len(name) for name in options)
    for name in (item.name for item in declared()):
        source = ctx.get_parameter_source(name)
        where = _SOURCE_NAMES.get(source.name if source else "DEFAULT", "default")
        param = next(p for p in ctx.command.params if p.name == name)
        envvars = param.envvar if isinstance(param.envvar, list) else [param.envvar]
        if where == "environment" and any(var in _ENV_FILE_NAMES for var in envvars if var):
            where = "env file"
        value = getattr(settings, name)
        click.echo(f"{name.ljust(width)}  {redact(repr(value))}  ({where})")


def _pidfile_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--pidfile", default="capsem-proxyd.pid", show_default=True, envvar=_env("pidfile"),
                        help="The pidfile written by start.")(command)


@cli.command()
@_pidfile_option
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the process to exit.")
def stop(pidfile: str, timeout: float) -> None:
    """Stop a running proxy (SIGTERM, then wait for it to exit)."""
    from capsem_proxyd.daemon.process import ProcessError
    from capsem_proxyd.daemon.process import stop as stop_process

    try:
        pid = stop_process(pidfile, timeout)
    except ProcessError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"capsem-proxyd (pid {pid}) stopped")


@cli.command()
@_pidfile_option
def reload(pidfile: str) -> None:
    """Ask a running proxy to reload its configuration and policies (SIGHUP)."""
    import signal

    from capsem_proxyd.daemon.process import ProcessError, running_pid

    try:
        pid = running_pid(pidfile)
    except ProcessError as error:
        raise click.ClickException(str(error)) from None
    os.kill(pid, signal.SIGHUP)
    click.echo(f"reload requested (pid {pid})")


@cli.command()
@_pidfile_option
@click.option("--url", default=None, envvar=_env("status_url"),
              help="Base URL to probe (default: http://HOST:PORT from the usual settings).")
@click.option("--host", default=DEFAULTS.host, envvar=_env("host"), hidden=True)
@click.option("--port", default=DEFAULTS.port, type=int, envvar=_env("port"), hidden=True)
def status(pidfile: str, url: str | None, host: str, port: int) -> None:
    """Report whether the proxy runs: pid alive and /health answering."""
    import httpx

    from capsem_proxyd.daemon.process import ProcessError, running_pid

    try:
        pid = running_pid(pidfile)
    except ProcessError as error:
        raise click.ClickException(f"not running: {error}") from None
    base = url or f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    try:
        health = httpx.get(base + "/health", timeout=5).json()
    except (httpx.HTTPError, ValueError) as error:
        raise click.ClickException(f"pid {pid} is alive but {base}/health does not answer ({type(error).__name__})") from None
    click.echo(f"running: pid {pid}, {base}, version {health.get('version')}, "
               f"policies {', '.join(health.get('policies', [])) or 'NONE'}")


@cli.group()
def audit() -> None:
    """Audit log tools."""


@audit.command("verify")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def audit_verify(path: str) -> None:
    """Check the audit log's hash chains; report the first line where one breaks."""
    from capsem_proxyd.observe.audit import verify

    result = verify(path)
    if not result.ok:
        raise click.ClickException(f"{path}: line {result.broken_line}: {result.reason}")
    click.echo(f"{path}: OK, {result.lines} lines, hash chains intact")


def main(argv: list[str] | None = None) -> None:
    """Entry point: errors become one line on stderr and a non-zero exit code."""
    _INVOCATION[:] = sys.argv[1:] if argv is None else list(argv)
    try:
        cli.main(args=argv, prog_name="capsem-proxyd", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as error:
        click.echo(f"capsem-proxyd: error: {error.format_message()}", err=True)
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        click.echo("capsem-proxyd: aborted", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(0)
