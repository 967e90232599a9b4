"""The ``capsem-proxyd`` command line (click): the commands, kept thin.

The options that define an instance are generated from the settings
declaration (``options.py``); what ``start`` and ``check`` verify before
serving is ``preflight.py``; serving itself is ``launcher.py`` and
``server.py``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from capsem_proxyd import __version__
from capsem_proxyd.config import Settings, declared
from capsem_proxyd.daemon.options import (
    CommandLine,
    ConfigError,
    command_line,
    control_options,
    env_name,
    pins_options,
    process_options,
    server_options,
    settings_from,
    settings_loader,
    state_options,
)
from capsem_proxyd.daemon.preflight import load_config, preflight
from capsem_proxyd.enforcement.loader import PolicySet


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="capsem-proxyd")
def cli() -> None:
    """capsem-proxyd: an LLM security proxy enforcing CAPSEM policies.

    Point an SDK's base_url at it; it forwards to the provider with the
    client's own key and blocks what the policies refuse.
    """


@cli.command()
@server_options
@click.option("--daemon", is_flag=True, help="Detach into the background (for hosts without systemd).")
@click.option("--log-file", default="capsem-proxyd.log", show_default=True, envvar=env_name("log_file"),
              help="With --daemon: where stdout and stderr go.")
@click.pass_context
def start(ctx: click.Context, **options: Any) -> None:
    """Run the proxy (in the foreground unless --daemon) until SIGINT/SIGTERM."""
    from capsem_proxyd.daemon.launcher import launch
    from capsem_proxyd.observe.logs import configure_logging

    process = process_options(options)
    settings = settings_from(options)
    configure_logging(settings.log_level, settings.log_format)
    checked = preflight(settings, pidfile=settings.pidfile or ("capsem-proxyd.pid" if process["daemon"] else None))
    reload_settings = settings_loader(start, command_line(ctx))  # SIGHUP resolves these options again
    code = launch(settings, checked.config, reload_settings, detach=process["daemon"], log_file=process["log_file"])
    sys.exit(code)


DEMO_BANNER = """\
capsem-proxyd demo: the proxy on {url}, in front of a built-in demo provider
({provider}) that answers OpenAI Chat Completions, Anthropic Messages and Gemini.
Any key works (it only names your tenant); no request leaves this machine.
Try it (README, "Try it without a key"): point an SDK at {url}/v1 (OpenAI) or
{url} (Anthropic, Gemini); a prompt containing capsem_block is blocked by the
Debug policy. Ctrl-C stops both."""


@cli.command()
@server_options
def demo(**options: Any) -> None:
    """Run the proxy in front of a built-in demo provider: try it with any key, no provider account.

    Every option of start applies (--port, --policy-dir, ...), except the upstream URLs, which point at
    the demo provider."""
    from dataclasses import replace

    from capsem_proxyd.daemon.demo_provider import DemoProvider
    from capsem_proxyd.daemon.launcher import launch
    from capsem_proxyd.observe.logs import configure_logging

    process_options(options)
    settings = settings_from(options)
    configure_logging(settings.log_level, settings.log_format)
    provider = DemoProvider().start()
    settings = replace(settings, openai_upstream=provider.url + "/v1", gemini_upstream=provider.url,
                       anthropic_upstream=provider.url)
    checked = preflight(settings)
    scheme = "https" if settings.certfile else "http"
    click.echo(DEMO_BANNER.format(url=f"{scheme}://{settings.host}:{settings.port}", provider=provider.url), err=True)
    try:
        code = launch(settings, checked.config, lambda: settings)
    finally:
        provider.close()
    sys.exit(code)


@cli.command()
@server_options
def check(**options: Any) -> None:
    """Load the configuration and every policy as start would; exit non-zero on any problem."""
    settings = settings_from(options)
    checked = preflight(settings, repair=False)  # a damaged state file is reported, left for start to set aside
    config, export, state = checked.config, checked.export, checked.state_file
    for warning in [*config.warnings, *checked.warnings]:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"configuration OK: listen {settings.host}:{settings.port}, workers {settings.workers}")
    click.echo(f"upstreams: openai={settings.openai_upstream} gemini={settings.gemini_upstream} "
               f"anthropic={settings.anthropic_upstream}")
    click.echo(f"policies ({config.main.source}): {config.main.described_names() or 'NONE'}")
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
            by_default = (" (by default: a secrets.toml with enabled = false turns it off)"
                          if policy.name in policy_set.by_default else "")
            click.echo(f"  {policy.name} [{policy_set.mode_of(policy.name)}]{by_default}: {policy.description}")
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


@cli.group("policy")
def policy() -> None:
    """Write your own policy."""


@policy.command("new")
@click.argument("name")
@click.option("--dir", "folder", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Folder to write NAME.py and NAME.toml into: give it as --policy-dir and --policy-path.")
@click.option("--force", is_flag=True, help="Replace NAME.py and NAME.toml when they exist.")
def policy_new(name: str, folder: str, force: bool) -> None:
    """Write a working policy to start from: NAME.py (every hook, with its signature) and NAME.toml.

    As written, it blocks the word in NAME.toml's blocked_words wherever it appears.
    """
    from pathlib import Path

    from capsem_proxyd.daemon.skeleton import SkeletonError, write_skeleton

    try:
        skeleton = write_skeleton(name, Path(folder), overwrite=force)
    except SkeletonError as error:
        raise ConfigError(str(error)) from None
    where = os.path.abspath(folder)
    click.echo(f"wrote {skeleton.module} ({skeleton.class_name}) and {skeleton.policy_file}")
    click.echo(f"try it: capsem-proxyd check --policy-dir {where} --policy-path {where}")


@cli.command("tenant-id")
def tenant_id() -> None:
    """Print the tenant id of the API key read from stdin (for --tenants-file and --tenant-profiles)."""
    from capsem_proxyd.exchange import tenant_id_for

    key = sys.stdin.readline().strip()
    if not key:
        raise click.ClickException("no API key on stdin (e.g. printenv OPENAI_API_KEY | capsem-proxyd tenant-id)")
    click.echo(tenant_id_for(key))


@cli.command("placeholder")
@state_options
@click.option("--tenant", "tenant", default=None, metavar="TENANT_ID",
              help="The tenant's id (16 hex digits: as the audit log and capsem-proxyd tenant-id show it).")
@click.option("--api-key-file", type=click.Path(dir_okay=False), default=None,
              help="A file holding the tenant's API key (first line): its tenant id is derived as the proxy "
                   "derives it. Standard input holds the value.")
@click.option("--kind", default=None,
              help="The rule or entity that masks the value (e.g. aws-secret): prints the whole placeholder. "
                   "Without it, the kind label is left as <KIND>: it is a label, the tag alone is the identity.")
@click.argument("arguments", nargs=-1, metavar="")
def placeholder_command(
    tenant: str | None, api_key_file: str | None, kind: str | None, arguments: tuple[str, ...], **options: Any,
) -> None:
    """Print the placeholder the proxy writes for the value read from stdin, for a tenant.

    For an incident responder: "did this leaked key pass, for whom, when?" Read the value from standard
    input (never an argument: it would land in the shell's history and in ps), e.g.
    printenv LEAKED | capsem-proxyd placeholder --tenant 0123456789abcdef, then search the audit log for the
    tag ({"type": "redaction"} records carry the placeholder and the key id). The key is read from the
    state directory, never made there: placeholders are only comparable under the same key id.
    """
    from capsem_proxyd.daemon.placeholder_lookup import look_up

    if arguments:  # a value typed as an argument is already in the shell's history: at least not echoed back
        raise ConfigError("placeholder takes no argument: the value is read from standard input")
    found = look_up(settings_from(options).state_dir, sys.stdin.buffer.read(), tenant=tenant,
                    api_key_file=api_key_file, kind=kind)
    click.echo(f"placeholder  {found.placeholder}")
    click.echo(f"tag          {found.tag}")
    click.echo(f"key_id       {found.key_id}")
    click.echo(f"tenant       {found.tenant}")


_SOURCE_NAMES = {"COMMANDLINE": "flag", "ENVIRONMENT": "environment", "DEFAULT_MAP": "config file",
                 "DEFAULT": "default"}


@cli.command("config")
@server_options
@click.pass_context
def show_config(ctx: click.Context, **options: Any) -> None:
    """Print the effective configuration and where each value came from."""
    from capsem_proxyd.observe.logs import redact
    from capsem_proxyd.proxy.response_store import state_directory

    settings = settings_from(options)
    width = max(len(name) for name in options)
    for name in (item.name for item in declared()):
        source = ctx.get_parameter_source(name)
        where = _SOURCE_NAMES.get(source.name if source else "DEFAULT", "default")
        param = next(p for p in ctx.command.params if p.name == name)
        envvars = param.envvar if isinstance(param.envvar, list) else [param.envvar]
        if where == "environment" and any(var in command_line(ctx).env_file_names for var in envvars if var):
            where = "env file"
        value = getattr(settings, name)
        if name == "state_dir":  # the folder the proxy will use, not "None" (it resolves the default at start)
            value = str(state_directory(value).absolute())
        click.echo(f"{name.ljust(width)}  {redact(repr(value))}  ({where})")
    # The key placeholders are made with (issue 23): its id only, read without making one.
    from capsem_proxyd.proxy.placeholder_key import read_placeholder_key

    key = read_placeholder_key(state_directory(settings.state_dir))
    shown = repr(key.id) if key is not None else "None"
    click.echo(f"{'placeholder_key_id'.ljust(width)}  {shown}  ({'state dir' if key is not None else 'made at start'})")


def _control_target(options: dict[str, Any]) -> tuple[str, int, str]:
    """From the resolved options of stop, status or reload: the pidfile, the pid of the proxy holding it,
    and the base URL of its /health; ClickException ("not running: ...") when no proxy holds it."""
    from capsem_proxyd.daemon.process import DEFAULT_PIDFILE, ProcessError, pid_alive, running_pid

    url, given_pid = options.pop("url", None), options.pop("pid", None)
    settings = settings_from(options)
    pidfile = settings.pidfile or DEFAULT_PIDFILE
    if given_pid is not None:  # systemd's $MAINPID: no pidfile under systemd
        if not pid_alive(given_pid):
            raise click.ClickException(f"not running: no process {given_pid}")
        return pidfile, given_pid, url or _health_base(settings)
    try:
        pid = running_pid(pidfile)
    except ProcessError as error:
        raise click.ClickException(f"not running: {error}") from None
    return pidfile, pid, url or _health_base(settings)


def _health_base(settings: Settings) -> str:
    """Where the proxy ``settings`` describe answers: its scheme and port; a wildcard address is probed
    on the loopback of its family."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if settings.certfile else 'http'}://{host}:{settings.port}"


def _health(base: str) -> dict[str, Any]:
    """The proxy's /health body; httpx.HTTPError or ValueError when it does not answer as one."""
    import httpx

    # A liveness probe of our own pid on this host: its certificate names the public host, not the loopback.
    body = httpx.get(base + "/health", timeout=5, verify=False).json()
    if not isinstance(body, dict):
        raise ValueError("not a /health body")
    return body


_PID_OPTION = click.option("--pid", type=click.IntRange(min=1), default=None,
                           help="The proxy's process id instead of its pidfile (systemd: ... reload --pid $MAINPID).")
_URL_OPTION = click.option("--url", default=None, envvar=env_name("status_url"),
                           help="Base URL of the proxy's /health (default: http(s)://HOST:PORT of the settings).")


@cli.command()
@control_options
@_PID_OPTION
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the process to exit.")
def stop(timeout: float, **options: Any) -> None:
    """Stop a running proxy (SIGTERM, then wait for it to exit).

    The pidfile is the one start used: --pidfile, CAPSEM_PROXYD_PIDFILE or the --config file's pidfile,
    else capsem-proxyd.pid.
    """
    from capsem_proxyd.daemon.process import ProcessError
    from capsem_proxyd.daemon.process import stop as stop_process

    _pidfile, pid, _url = _control_target(options)
    try:
        stop_process(pid, timeout)
    except ProcessError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"capsem-proxyd (pid {pid}) stopped")


@cli.command()
@control_options
@_URL_OPTION
@_PID_OPTION
@click.option("--timeout", default=60.0, show_default=True,
              help="Seconds to wait for the proxy's verdict on the new configuration.")
def reload(timeout: float, **options: Any) -> None:
    """Reload a running proxy's configuration and policies (SIGHUP) and report its verdict.

    Exits 0 once the proxy runs the new configuration; exits 2 with the proxy's one-line reason when
    it rejected it (the old configuration stays), as /health's "reload" shows.
    """
    import signal
    import time

    import httpx

    from capsem_proxyd.daemon.process import pid_alive

    _pidfile, pid, base = _control_target(options)
    try:  # where the verdict will be read: found before the signal is sent, or no signal at all
        _health(base)
    except (httpx.HTTPError, ValueError) as error:
        raise click.ClickException(
            f"pid {pid} is alive but {base}/health does not answer ({type(error).__name__}), so its verdict could "
            f"not be read: give the --config, --port or --url it runs with (or kill -HUP {pid} and read its log)"
        ) from None
    requested = time.time()
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while True:
        try:
            verdict = _health(base).get("reload")
        except (httpx.HTTPError, ValueError):
            verdict = None
        if isinstance(verdict, dict) and verdict.get("requested", 0) >= requested and "ok" in verdict:
            break
        if not pid_alive(pid):
            raise click.ClickException(f"pid {pid} exited while reloading; see its log")
        if time.monotonic() > deadline:
            raise click.ClickException(f"reload requested (pid {pid}), but {base}/health did not report its "
                                       f"result within {timeout:g}s (give --url if it answers elsewhere)")
        time.sleep(0.1)
    if not verdict["ok"]:
        raise ConfigError(f"reload rejected (pid {pid} keeps its running configuration): {verdict.get('error')}")
    click.echo(f"reloaded (pid {pid}): {verdict.get('summary') or 'new configuration active'}")


@cli.command()
@control_options
@_PID_OPTION
@_URL_OPTION
def status(**options: Any) -> None:
    """Report whether the proxy runs: its pidfile held, its pid alive and /health answering at its address."""
    import httpx

    _pidfile, pid, base = _control_target(options)
    try:
        health = _health(base)
    except (httpx.HTTPError, ValueError) as error:
        raise click.ClickException(f"pid {pid} is alive but {base}/health does not answer ({type(error).__name__})") from None
    click.echo(f"running: pid {pid}, {base}, version {health.get('version')}, "
               f"policies {', '.join(health.get('policies', [])) or 'NONE'}")
    last = health.get("reload")
    if isinstance(last, dict) and last.get("ok") is False:
        click.echo(f"last reload rejected: {last.get('error')}")


@cli.group("mcp-pins")
def mcp_pins() -> None:
    """The MCP hop's pinned tool definitions and pending changes, through the running proxy."""


def _pins_client(options: dict[str, Any]) -> Any:
    from capsem_proxyd.daemon.pins_command import PinsClient, PinsCommandError
    from capsem_proxyd.proxy.response_store import state_directory

    url = options.pop("url", None)
    settings = settings_from(options)
    try:
        return PinsClient(url or _health_base(settings), state_directory(settings.state_dir))
    except PinsCommandError as error:
        raise _pins_error(error) from None


def _pins_error(error: Exception) -> click.ClickException:
    return ConfigError(str(error)) if getattr(error, "operator", False) else click.ClickException(str(error))


def _pins_view(options: dict[str, Any], server: str | None, tool: str | None) -> dict[str, Any]:
    from capsem_proxyd.daemon.pins_command import PinsCommandError, selected

    try:
        return selected(_pins_client(options).listing(), server, tool)
    except PinsCommandError as error:
        raise _pins_error(error) from None


@mcp_pins.command("list")
@pins_options
@_URL_OPTION
@click.argument("server", required=False)
@click.argument("tool", required=False)
def mcp_pins_list(server: str | None, tool: str | None, **options: Any) -> None:
    """List each server's pinned tools and the changes held pending (all workers' view)."""
    from capsem_proxyd.daemon.pins_command import list_lines

    for line in list_lines(_pins_view(options, server, tool)):
        click.echo(line)


@mcp_pins.command("diff")
@pins_options
@_URL_OPTION
@click.argument("server", required=False)
@click.argument("tool", required=False)
def mcp_pins_diff(server: str | None, tool: str | None, **options: Any) -> None:
    """Show each pending change as a unified diff of the pinned and the listed definition (canonical JSON)."""
    from capsem_proxyd.daemon.pins_command import diff_lines

    for line in diff_lines(_pins_view(options, server, tool)):
        click.echo(line)


@mcp_pins.command("accept")
@pins_options
@_URL_OPTION
@click.argument("server")
@click.argument("tool", required=False)
def mcp_pins_accept(server: str, tool: str | None, **options: Any) -> None:
    """Accept SERVER's pending change of TOOL (or all of them): pinned, served on the next listing, and
    audited by the proxy with the user and uid running this command."""
    from capsem_proxyd.daemon.pins_command import PinsCommandError

    try:
        answer = _pins_client(options).accept(server, tool)
    except PinsCommandError as error:
        raise _pins_error(error) from None
    for item in answer.get("accepted", []):
        click.echo(f"accepted {item['server']} {item['tool']} ({item['hash'][:16]})")


@cli.group()
def audit() -> None:
    """Audit log tools."""


@audit.command("verify")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--state-dir", envvar="CAPSEM_PROXYD_STATE_DIR", type=click.Path(file_okay=False),
              help="The --state-dir the proxy ran with, where the log's chain head is kept (default: as start's).")
def audit_verify(paths: tuple[str, ...], state_dir: str | None) -> None:
    """Check the audit log's hash chains; report the first line where one breaks.

    Give a rotated series oldest first (audit.log.2 audit.log.1 audit.log): each file must link to the one
    before it. The newest file's last line is checked against the chain head kept in the state directory.
    """
    from capsem_proxyd.observe.audit_head import head_path, read_head
    from capsem_proxyd.observe.audit_verify import verify
    from capsem_proxyd.proxy.response_store import state_directory

    head_file = head_path(state_directory(state_dir), paths[-1])
    head = read_head(head_file)
    result = verify(paths, head)
    if not result.ok:
        raise click.ClickException(f"{result.path}: line {result.broken_line}: {result.reason}")
    checked = "its last line matches the chain head" if head is not None else (
        f"no chain head in {head_file.parent}: an edit of the last line would go unseen")
    click.echo(f"{', '.join(paths)}: OK, {result.lines} lines, hash chains intact; {checked}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: errors become one line on stderr and a non-zero exit code."""
    invocation = CommandLine(sys.argv[1:] if argv is None else list(argv))
    try:
        cli.main(args=argv, prog_name="capsem-proxyd", standalone_mode=False, obj=invocation)
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
