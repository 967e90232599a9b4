"""The ``capsem-proxyd`` command line (click).

Every option of ``start`` reads ``CAPSEM_PROXYD_<OPTION>`` from the environment
and a key of the ``--config`` TOML file; click's own precedence gives flags >
environment > file > defaults (the file feeds click's ``default_map``).
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import trio

from capsem_proxyd import __version__
from capsem_proxyd.config import (
    DEFAULT_ANTHROPIC_UPSTREAM,
    DEFAULT_GEMINI_UPSTREAM,
    DEFAULT_OPENAI_UPSTREAM,
    ENV_PREFIX,
    Settings,
)
from capsem_proxyd.policy.loader import PolicyConfigError, load_policy_set

EXIT_CONFIG_ERROR = 2


class ConfigError(click.ClickException):
    exit_code = EXIT_CONFIG_ERROR


def _env(name: str) -> str:
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
    known = {param.name for param in ctx.command.params}
    defaults: dict[str, Any] = {}
    for key, item in section.items():
        name = key.replace("-", "_")
        if name not in known or name == "config":
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
        defaults[name] = item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def server_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that define a proxy instance (shared by start and check)."""
    options = [
        click.option("--env-file", type=click.Path(dir_okay=False), envvar=_env("env_file"), is_eager=True,
                     expose_value=False, callback=_load_env_file,
                     help="File of CAPSEM_PROXYD_* settings (default: .env in the working directory when present). "
                          "Provider keys in it are never used: clients always bring their own."),
        click.option("--config", type=click.Path(dir_okay=False), envvar=_env("config"), is_eager=True,
                     expose_value=False, callback=_load_config_file,
                     help="TOML file with settings (keys as option names). Env: CAPSEM_PROXYD_CONFIG."),
        click.option("--host", default="127.0.0.1", show_default=True, envvar=_env("host"), help="Address to listen on."),
        click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), envvar=_env("port"),
                     help="Port to listen on."),
        click.option("--openai-upstream", default=DEFAULT_OPENAI_UPSTREAM, show_default=True,
                     envvar=_env("openai_upstream"), help="Base URL of the OpenAI API (up to and including /v1)."),
        click.option("--gemini-upstream", default=DEFAULT_GEMINI_UPSTREAM, show_default=True,
                     envvar=_env("gemini_upstream"), help="Base URL of the Gemini API (the client's /v1beta/... path is kept)."),
        click.option("--anthropic-upstream", default=DEFAULT_ANTHROPIC_UPSTREAM, show_default=True,
                     envvar=_env("anthropic_upstream"), help="Base URL of the Anthropic API."),
        click.option("--policy-dir", default=None, envvar=[_env("policy_dir"), "PROXY_CONFIG_DIR"],
                     help="Folder of CAPSEM policy TOML files (default: the Debug policy alone). "
                          "Env: CAPSEM_PROXYD_POLICY_DIR, then PROXY_CONFIG_DIR."),
        click.option("--shadow-policy-dir", default=None, envvar=_env("shadow_policy_dir"),
                     help="Folder of candidate policies evaluated on live traffic after the real decision: "
                          "their verdicts are logged (capsem_proxyd.shadow) and audited, never enforced."),
        click.option("--tenant-profiles", default=None, type=click.Path(dir_okay=False), envvar=_env("tenant_profiles"),
                     help="TOML [profiles] table: tenant id -> policy folder (others use --policy-dir)."),
        click.option("--tenants-file", default=None, type=click.Path(dir_okay=False), envvar=_env("tenants_file"),
                     help="TOML tenants = [...] allow-list of tenant ids; any other key gets 401."),
        click.option("--cors/--no-cors", default=True, show_default=True, envvar=_env("cors"),
                     help="Answer CORS preflights and add CORS headers for browser clients."),
        click.option("--cors-origin", "cors_origins", multiple=True, envvar=_env("cors_origin"),
                     help="Allowed browser origin (repeatable; default: any origin, never with credentials)."),
        click.option("--passthrough", "passthrough", multiple=True, envvar=_env("passthrough"),
                     help="Path glob (e.g. '/v1/files*') forwarded WITHOUT policy checks (repeatable; "
                          "default: unknown provider paths are refused with 404). Env: space-separated."),
        click.option("--upstream-timeout", default=600.0, show_default=True, type=click.FloatRange(min=0.001),
                     envvar=_env("upstream_timeout"), help="Seconds to wait for upstream data (read and stream idle)."),
        click.option("--connect-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.001),
                     envvar=_env("connect_timeout"), help="Seconds to wait for an upstream connection."),
        click.option("--policy-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0),
                     envvar=_env("policy_timeout"), help="Seconds a policy may take before the request is blocked (0: no limit)."),
        click.option("--max-body-size", default=32 * 1024 * 1024, show_default=True, type=click.IntRange(min=1),
                     envvar=_env("max_body_size"), help="Largest request body accepted, in bytes (413 beyond)."),
        click.option("--request-timeout", default=900.0, show_default=True, type=click.FloatRange(min=0),
                     envvar=_env("request_timeout"),
                     help="Seconds a non-streamed call may take upstream in all (504 beyond; 0: no deadline)."),
        click.option("--max-json-depth", default=64, show_default=True, type=click.IntRange(min=1),
                     envvar=_env("max_json_depth"), help="Deepest JSON nesting accepted in a request body (400 beyond)."),
        click.option("--max-items", default=10_000, show_default=True, type=click.IntRange(min=1),
                     envvar=_env("max_items"),
                     help="Most messages (contents, input items) in a request, and most parts inside them (400 beyond)."),
        click.option("--max-tools", default=1_000, show_default=True, type=click.IntRange(min=1),
                     envvar=_env("max_tools"), help="Most tool definitions in a request (400 beyond)."),
        click.option("--max-header-count", default=100, show_default=True, type=click.IntRange(min=1),
                     envvar=_env("max_header_count"), help="Most request headers (431 beyond)."),
        click.option("--max-header-size", default=32 * 1024, show_default=True, type=click.IntRange(min=1024),
                     envvar=_env("max_header_size"),
                     help="Largest total size of the request headers, in bytes (431 beyond; connections sending "
                          "more than twice this are cut by the HTTP parser)."),
        click.option("--max-response-size", default=256 * 1024 * 1024, show_default=True, type=click.IntRange(min=1),
                     envvar=_env("max_response_size"),
                     help="Largest upstream reply, streamed or not, in bytes (502, or an error event that ends the stream)."),
        click.option("--keep-alive-timeout", default=75.0, show_default=True, type=click.FloatRange(min=0.001),
                     envvar=_env("keep_alive_timeout"),
                     help="Seconds an idle client connection stays open; also the time a client has to send its "
                          "request headers (slow-header clients are cut)."),
        click.option("--body-timeout", default=60.0, show_default=True, type=click.FloatRange(min=0.001),
                     envvar=_env("body_timeout"), help="Seconds a client has to send its whole request body (408 beyond)."),
        click.option("--forward-client-ip/--no-forward-client-ip", default=False, show_default=True,
                     envvar=_env("forward_client_ip"),
                     help="Send the client's address upstream in X-Forwarded-For/Forwarded (otherwise both are removed)."),
        click.option("--certfile", default=None, type=click.Path(dir_okay=False), envvar=_env("certfile"),
                     help="PEM certificate (chain): serve HTTPS (and HTTP/2) instead of HTTP. Needs --keyfile."),
        click.option("--keyfile", default=None, type=click.Path(dir_okay=False), envvar=_env("keyfile"),
                     help="PEM private key for --certfile."),
        click.option("--stream-holdback", default=64, show_default=True, type=click.IntRange(min=0),
                     envvar=_env("stream_holdback"),
                     help="Characters of streamed text held back until a later check (>= the longest term a policy matches)."),
        click.option("--confirm-action", default="block", show_default=True, type=click.Choice(["block", "allow"]),
                     envvar=_env("confirm_action"), help="What a CONFIRM verdict does."),
        click.option("--log-level", default="info", show_default=True,
                     type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
                     envvar=_env("log_level"), help="Log level."),
        click.option("--graceful-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0),
                     envvar=_env("graceful_timeout"), help="Seconds in-flight requests get to finish on shutdown."),
        click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]),
                     envvar=_env("log_format"), help="Log line format."),
        click.option("--audit-log", default=None, envvar=_env("audit_log"),
                     help="Append the hash-chained JSON audit log here ('-' for stdout). Reopened on SIGHUP."),
        click.option("--audit-prompts/--no-audit-prompts", default=False, show_default=True,
                     envvar=_env("audit_prompts"), help="Include prompt text in audit records."),
        click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), envvar=_env("workers"),
                     help="Worker processes serving the one port (for multi-core hosts)."),
        click.option("--pidfile", default=None, envvar=_env("pidfile"),
                     help="Write the main process id here (used by stop, status and reload)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


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
    options = dict(options)
    options["cors_origins"] = tuple(options.get("cors_origins") or ())
    options["passthrough"] = tuple(options.get("passthrough") or ())
    if options.get("policy_dir") == "":
        options["policy_dir"] = None
    for name in ("certfile", "keyfile"):
        options[name] = options.get(name) or None
    if (options.get("certfile") is None) != (options.get("keyfile") is None):
        raise ConfigError("--certfile and --keyfile go together: give both to serve HTTPS, or neither")
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


def load_engine(settings: Settings):  # type: ignore[no-untyped-def]
    """Build the policy engine exactly as ``start`` does; ConfigError on any problem."""
    from capsem_proxyd.http.app import build_engine

    try:
        return build_engine(settings, load_policy_set(settings.policy_dir))
    except PolicyConfigError as error:
        raise ConfigError(str(error)) from None


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
    engine = load_engine(settings)
    args = _start_args()
    try:
        code = launch(settings, engine, lambda: _resolve_settings(args), detach=process["daemon"],
                      log_file=process["log_file"])
    except OSError as error:
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {error.strerror or error}") from None
    sys.exit(code)


@cli.command()
@server_options
def check(**options: Any) -> None:
    """Load the configuration and every policy as start would; exit non-zero on any problem."""
    settings = settings_from(options)
    engine = load_engine(settings)
    for warning in engine.policy_set.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"configuration OK: listen {settings.host}:{settings.port}, workers {settings.workers}")
    click.echo(f"upstreams: openai={settings.openai_upstream} gemini={settings.gemini_upstream} "
               f"anthropic={settings.anthropic_upstream}")
    click.echo(f"policies ({engine.policy_set.source}): {', '.join(engine.names) or 'NONE'}")


@cli.command("policies")
@server_options
def list_policies(**options: Any) -> None:
    """List the active policies: mode, description and the hooks each implements."""
    from capsem_proxyd.policy.loader import implemented_hooks

    engine = load_engine(settings_from(options))

    def show(title: str, policy_set: Any) -> None:
        click.echo(f"{title} ({policy_set.source}):")
        for policy in policy_set.manager.policies:
            click.echo(f"  {policy.name} [{policy_set.mode_of(policy.name)}]: {policy.description}")
            click.echo(f"    hooks: {', '.join(implemented_hooks(policy)) or 'none'}")
        if not policy_set.names:
            click.echo("  NONE (requests are forwarded unchecked)")

    show("policies", engine.policy_set)
    if engine.shadow_set is not None:
        show("shadow policies, recorded and never enforced", engine.shadow_set)
    profiles: dict[int, tuple[Any, list[str]]] = {}
    for tenant_id, profile in engine.profiles.items():
        profiles.setdefault(id(profile), (profile, []))[1].append(tenant_id)
    for profile, tenants in profiles.values():
        show(f"profile for tenants {', '.join(sorted(tenants))}", profile.policy_set)
    if engine.allowed_tenants is not None:
        click.echo(f"tenant allow-list: {len(engine.allowed_tenants)} tenant(s); others are refused")
    for warning in engine.policy_set.warnings:
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
    for name in options:
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
@click.option("--host", default="127.0.0.1", envvar=_env("host"), hidden=True)
@click.option("--port", default=8000, type=int, envvar=_env("port"), hidden=True)
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
