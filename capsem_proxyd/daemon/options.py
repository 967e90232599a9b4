"""The options that define a proxy instance, generated from the settings declared in ``config.py``.

Every option reads ``CAPSEM_PROXYD_<OPTION>`` from the environment and a key
of the ``--config`` TOML file; click's own precedence gives flags >
environment > file > defaults (the file feeds click's ``default_map``). An
``--env-file`` (or ``./.env``) adds ``CAPSEM_PROXYD_*`` environment variables
below the real ones.

A value is refused where it was given: a bad one names the config file and
key, or the environment variable (and the env file that set it), not a flag
nobody typed (``SettingOption``); a TOML value of the wrong type is refused,
not converted (``workers = 2.5``); a misspelt config key and a
``CAPSEM_PROXYD_*`` variable no option reads are refused alike.

Nothing here is kept in module globals: what one run of the command line
needs to remember (its arguments, the variables its env file set) lives in
a ``CommandLine`` that click carries as the context's ``obj``, so that a
reload can resolve ``start``'s options again exactly as they were resolved
at start (``settings_loader``).
"""

from __future__ import annotations

import difflib
import os
import tomllib
import typing
from collections.abc import Callable
from dataclasses import Field, dataclass, field
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from capsem_proxyd.config import ENV_PREFIX, Setting, Settings, declaration, declared, envvar, option_name
from capsem_proxyd.mcp.servers import McpConfigError, load_servers, named_url

EXIT_CONFIG_ERROR = 2
SettingsLoader = Callable[[], Settings]
# Options of ``start`` that shape the process, not the proxy.
PROCESS_OPTIONS = ("daemon", "log_file")
# The settings stop, status and reload use: where the pidfile is, and where /health answers.
CONTROL_SETTINGS = frozenset({"pidfile", "host", "port", "certfile", "keyfile"})
# The settings of the commands that read the state directory (``placeholder``): where it is.
STATE_SETTINGS = frozenset({"state_dir"})

_HINTS = typing.get_type_hints(Settings)
# Environment variables of options that are not settings (``env_name``), known so a misspelt one is refused.
_OTHER_ENV_NAMES: set[str] = {f"{ENV_PREFIX}_CONFIG", f"{ENV_PREFIX}_ENV_FILE"}
# Where ``--config``'s callback leaves the file's path and the keys as written there (``ctx.meta``).
_CONFIG_FILE = "capsem_proxyd.config_file"
_CONFIG_KEYS = "capsem_proxyd.config_keys"
_ENV_FILE = "capsem_proxyd.env_file"


class ConfigError(click.ClickException):
    """A configuration the proxy cannot start with: one line on stderr, exit code 2."""

    exit_code = EXIT_CONFIG_ERROR


@dataclass
class CommandLine:
    """One run of ``capsem-proxyd``: its arguments, and the environment variables its env file set.

    ``env_file_names`` tells a variable the env file set (which the file, read
    again on reload, may change) from one the real environment set (which
    always wins), and lets ``config`` say where a value came from.
    """

    argv: list[str] = field(default_factory=list)
    env_file_names: set[str] = field(default_factory=set)

    def start_args(self) -> list[str]:
        """The arguments after ``start``: what a reload resolves again."""
        return self.argv[self.argv.index("start") + 1 :] if "start" in self.argv else []


def command_line(ctx: click.Context) -> CommandLine:
    """The run's ``CommandLine`` (made here when click was invoked without one, as by a test runner)."""
    return ctx.ensure_object(CommandLine)


def env_name(name: str) -> str:
    """The environment variable of an option that is not a setting (``--log-file``, ``--url``)."""
    name = f"{ENV_PREFIX}_{name.upper()}"
    _OTHER_ENV_NAMES.add(name)
    return name


def known_env_names() -> set[str]:
    """Every ``CAPSEM_PROXYD_*`` variable some option reads: any other is a typo, refused."""
    names = set(_OTHER_ENV_NAMES)
    for item in declared():
        names.add(envvar(item))
        names.update(name for name in declaration(item).envvars if name.startswith(ENV_PREFIX + "_"))
    return names


def server_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that define a proxy instance (shared by start, check, policies and config).

    Generated from the ``Settings`` declarations (``config.py``), after the two
    eager options that feed the others: ``--env-file`` and ``--config``.
    """
    return _instance_options(command, shown=None)


def control_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The same options for the commands that talk to a running proxy (stop, status, reload).

    They find it as ``start`` configured it: its pidfile and its address are
    resolved from the same flags, environment, env file and ``--config`` file
    (``CAPSEM_PROXYD_CONFIG``), so a config file that ``start`` accepts is
    accepted here too. Only the options that matter here are in ``--help``.
    """
    return _instance_options(command, shown=CONTROL_SETTINGS)


def state_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The same options for the commands that read a proxy's state directory (``placeholder``): it is
    resolved as ``start`` resolves it (flag, environment, env file, ``--config`` file, default), so the
    command finds the key the proxy made without being told twice. Only ``--state-dir`` is in ``--help``."""
    return _instance_options(command, shown=STATE_SETTINGS)


def pins_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of ``mcp-pins``: where the running proxy answers (as ``status`` finds it) and the state
    directory its control token is in (as ``placeholder`` finds it)."""
    return _instance_options(command, shown=CONTROL_SETTINGS | STATE_SETTINGS)


def _instance_options(command: Callable[..., Any], shown: frozenset[str] | None) -> Callable[..., Any]:
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option("--env-file", type=click.Path(dir_okay=False), envvar=f"{ENV_PREFIX}_ENV_FILE", is_eager=True,
                     expose_value=False, callback=_load_env_file,
                     help="File of CAPSEM_PROXYD_* settings (default: .env in the working directory when present). "
                          "Provider keys in it are never used: clients always bring their own."),
        click.option("--config", type=click.Path(dir_okay=False), envvar=f"{ENV_PREFIX}_CONFIG", is_eager=True,
                     expose_value=False, callback=_load_config_file,
                     help="TOML file with settings (keys as option names). Env: CAPSEM_PROXYD_CONFIG."),
        *(_setting_option(item, _HINTS[item.name], hidden=shown is not None and item.name not in shown)
          for item in declared()),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def settings_from(options: dict[str, Any]) -> Settings:
    """``Settings`` from the parsed options: repeatable ones as tuples, an empty optional value as none."""
    options = dict(options)
    for item in declared():
        if typing.get_origin(_HINTS[item.name]) is tuple:
            options[item.name] = tuple(options.get(item.name) or ())
        elif item.default is None:
            options[item.name] = options.get(item.name) or None
    if (options.get("certfile") is None) != (options.get("keyfile") is None):
        raise ConfigError("--certfile and --keyfile go together: give both to serve HTTPS, or neither")
    try:  # names checked against each other: a header for a server nobody declared, a name given twice
        load_servers(options.get("mcp_servers") or (), options.get("mcp_headers") or (),
                     options.get("mcp_timeouts") or (), options.get("mcp_redact_passthrough") or ())
    except McpConfigError as error:
        raise ConfigError(str(error)) from None
    if options.get("state_dir"):  # --daemon changes the working directory: resolved before it does
        options["state_dir"] = os.path.abspath(os.path.expanduser(options["state_dir"]))
    if options.get("policy_path"):  # likewise, and a worker process must find the same folders
        options["policy_path"] = tuple(os.path.abspath(os.path.expanduser(path)) for path in options["policy_path"])
    return Settings(**options)


def process_options(options: dict[str, Any]) -> dict[str, Any]:
    """Split off (remove and return) the options that shape the process, not the proxy."""
    return {name: options.pop(name) for name in PROCESS_OPTIONS if name in options}


def settings_loader(command: click.Command, invocation: CommandLine) -> SettingsLoader:
    """What a reload calls: ``command``'s options resolved again from the same arguments, and the
    environment, env file and config file as they are now."""
    args = invocation.start_args()

    def load() -> Settings:
        with command.make_context(command.name, list(args), obj=invocation, resilient_parsing=False) as ctx:
            options = dict(ctx.params)
        process_options(options)
        return settings_from(options)

    return load


class SettingOption(click.Option):
    """An option generated from a setting, whose bad value is reported where it was given.

    Click names the flag (``Invalid value for '--port'``) even when the value
    came from the config file or the environment, so an operator looks for a
    flag nobody typed; this names the file and its key, or the variable (and
    the env file that set it), and keeps click's wording for a flag.
    """

    def handle_parse_result(self, ctx: click.Context, opts: Any, args: list[str]) -> Any:
        try:
            return super().handle_parse_result(ctx, opts, args)
        except click.BadParameter as error:
            where = _where_given(ctx, self)
            if where is None:
                raise
            raise ConfigError(f"{where}: {error.message}") from None


def _where_given(ctx: click.Context, param: click.Parameter) -> str | None:
    """Where ``param``'s value came from, in the operator's words; None for a flag (click says so)."""
    source = ctx.get_parameter_source(param.name or "")
    if source is ParameterSource.DEFAULT_MAP:
        key = ctx.meta.get(_CONFIG_KEYS, {}).get(param.name, param.name)
        return f"config file {ctx.meta.get(_CONFIG_FILE, '(--config)')}, key {key}"
    if source is ParameterSource.ENVIRONMENT:
        names = param.envvar if isinstance(param.envvar, list) else [param.envvar]
        name = next((name for name in names if name and name in os.environ), names[0])
        if name in command_line(ctx).env_file_names:
            return f"{name} in env file {ctx.meta.get(_ENV_FILE, '.env')}"
        return f"environment variable {name}"
    return None


class UpstreamURL(click.ParamType):
    """A provider's base URL: http or https with a host. Anything else would pass start and then answer
    every request with a 502 (``UnsupportedProtocol``), so it is refused before."""

    name = "url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from urllib.parse import urlsplit

        text = str(value)
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError as error:
            self.fail(f"{text!r} is not a URL ({error})", param, ctx)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.fail(f"{text!r} is not an http:// or https:// URL with a host (e.g. https://api.openai.com/v1)",
                      param, ctx)
        return text


class NamedURL(click.ParamType):
    """``NAME=URL`` (``--mcp-server``): a name that can be a path segment and an http(s) URL with a host."""

    name = "name=url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            named_url(str(value))
        except McpConfigError as error:
            self.fail(str(error), param, ctx)
        return str(value)


def _setting_option(
    item: Field[Any], hint: Any, *, hidden: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One click option from one ``Settings`` field and its ``Setting``."""
    spec = declaration(item)
    name = option_name(item)
    envvars = [envvar(item), *spec.envvars]
    common: dict[str, Any] = {"envvar": envvars if spec.envvars else envvars[0], "help": spec.help, "hidden": hidden}
    if item.default is not None and item.default != ():
        common.update(default=item.default, show_default=True)
    common["cls"] = SettingOption
    if hint is bool:
        return click.option(f"--{name}/--no-{name}", item.name, **common)
    if typing.get_origin(hint) is tuple:
        return click.option(f"--{name}", item.name, multiple=True, type=_click_type(spec, hint), **common)
    return click.option(f"--{name}", item.name, type=_click_type(spec, hint), **common)


def _click_type(spec: Setting, hint: Any) -> Any:
    if spec.upstream:
        return UpstreamURL()
    if spec.named_url:
        return NamedURL()
    if spec.choices:
        return click.Choice(spec.choices, case_sensitive=False)
    if spec.file:
        return click.Path(dir_okay=False)
    if spec.folder:  # click splits its environment variable on os.pathsep
        return click.Path(exists=True, file_okay=False)
    if hint is int:
        return click.IntRange(min=_bound(spec.minimum), max=_bound(spec.maximum))
    if hint is float:
        return click.FloatRange(min=spec.minimum, max=spec.maximum)
    return None


def _bound(value: float | None) -> int | None:
    return None if value is None else int(value)


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
    keys: dict[str, str] = {}
    for key, item in section.items():
        name = key.replace("-", "_")
        name = by_option.get(name, name)
        if name not in known:
            raise ConfigError(f"config file {path}: unknown setting {key!r}{_did_you_mean(key, by_option)}")
        defaults[name] = _config_value(path, key, item, _HINTS.get(name))
        keys[name] = key
    ctx.meta[_CONFIG_FILE] = str(path)
    ctx.meta[_CONFIG_KEYS] = keys
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _config_value(path: Path, key: str, value: Any, hint: Any) -> Any:
    """A config file's value as the option expects it, or ConfigError naming the file and key.

    TOML has types, so a value of the wrong type is refused here rather than converted: ``workers = 2.5``
    is not two workers. A list setting takes an array, or one string for a single value.
    """
    def refuse(expected: str) -> ConfigError:
        return ConfigError(f"config file {path}, key {key}: expected {expected}, got {_toml(value)}")

    if typing.get_origin(hint) is tuple:
        if isinstance(value, dict) and _named_urls(key):  # mcp_servers = { NAME = "URL" }
            if not all(isinstance(entry, str) for entry in value.values()):
                raise refuse(f'a table of strings (e.g. {key} = {{ docs = "https://mcp.example.com/mcp" }})')
            return [f"{name}={url}" for name, url in value.items()]
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
            raise refuse(f'an array of strings (e.g. {key} = ["a", "b"])')
        return value
    if isinstance(value, (list, dict)):
        raise refuse("a single value")
    if hint is int and isinstance(value, (bool, float)):
        raise refuse("a whole number")
    if hint is float and isinstance(value, bool):
        raise refuse("a number")
    return value


def _named_urls(key: str) -> bool:
    """Whether config key ``key`` names a ``NAME=URL`` setting (given as a TOML table)."""
    name = key.replace("-", "_")
    return any(
        declaration(item).named_url and name in (item.name, option_name(item).replace("-", "_")) for item in declared()
    )


def _toml(value: Any) -> str:
    """``value`` as the TOML file wrote it, near enough to find it there."""
    import json

    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return json.dumps(value) if isinstance(value, str) else str(value)


def _did_you_mean(name: str, candidates: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def refuse_unknown_environment(env_file: Path | None, from_file: typing.Iterable[str]) -> None:
    """ConfigError on a ``CAPSEM_PROXYD_*`` variable no option reads, in the environment or the env file:
    a misspelt one would otherwise be ignored silently, as a misspelt config-file key is not."""
    known = known_env_names()
    file_names = set(from_file)
    for name in sorted(set(os.environ) | file_names):
        if not name.startswith(ENV_PREFIX + "_") or name in known:
            continue
        where = f"env file {env_file}" if name in file_names and env_file is not None else "environment"
        raise ConfigError(f"{where}: {name} is not a capsem-proxyd setting{_did_you_mean(name, known)}")


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
        refuse_unknown_environment(None, ())
        return value
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"env file {path} does not exist")
    ctx.meta[_ENV_FILE] = str(path)
    from_file = command_line(ctx).env_file_names
    in_file: list[str] = []
    for name, item in dotenv_values(path).items():
        if not name.startswith(ENV_PREFIX + "_") or item is None:
            continue
        in_file.append(name)
        if name in os.environ and name not in from_file:
            continue
        os.environ[name] = item
        from_file.add(name)
    refuse_unknown_environment(path, in_file)
    return value
