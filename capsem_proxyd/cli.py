"""The ``capsem-proxyd`` command line (click).

Every option of ``start`` reads ``CAPSEM_PROXYD_<OPTION>`` from the environment
and a key of the ``--config`` TOML file; click's own precedence gives flags >
environment > file > defaults (the file feeds click's ``default_map``).
"""

from __future__ import annotations

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
from capsem_proxyd.policy_loader import PolicyConfigError, load_policy_set

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
    ]
    for option in reversed(options):
        command = option(command)
    return command


def settings_from(options: dict[str, Any]) -> Settings:
    options = dict(options)
    options["cors_origins"] = tuple(options.get("cors_origins") or ())
    options["passthrough"] = tuple(options.get("passthrough") or ())
    if options.get("policy_dir") == "":
        options["policy_dir"] = None
    return Settings(**options)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="capsem-proxyd")
def cli() -> None:
    """capsem-proxyd: an LLM security proxy enforcing CAPSEM policies.

    Point an SDK's base_url at it; it forwards to the provider with the
    client's own key and blocks what the policies refuse.
    """


@cli.command()
@server_options
def start(**options: Any) -> None:
    """Run the proxy in the foreground until SIGINT/SIGTERM."""
    from capsem_proxyd.app import build_engine
    from capsem_proxyd.logs import configure_logging
    from capsem_proxyd.server import serve

    settings = settings_from(options)
    configure_logging(settings.log_level)
    try:
        engine = build_engine(settings, load_policy_set(settings.policy_dir))
    except PolicyConfigError as error:
        raise ConfigError(str(error)) from None
    try:
        trio.run(serve, settings, engine)
    except OSError as error:
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {error.strerror or error}") from None


def main(argv: list[str] | None = None) -> None:
    """Entry point: errors become one line on stderr and a non-zero exit code."""
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
