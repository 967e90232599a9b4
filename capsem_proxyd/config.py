"""Every setting of a proxy instance, declared once.

Each field of ``Settings`` is the one place a setting is written: its name,
type, default and help text, plus how it may be given (bounds, choices, an
extra environment variable). The command line (``daemon/cli.py``) generates
``start``'s options from these declarations, each reading
``CAPSEM_PROXYD_<OPTION>`` from the environment and a key of the ``--config``
TOML file; ``capsem-proxyd config`` prints them; a reload knows from them which
changes need a restart. Code that needs a default (the limits, the stream
settings) reads it from ``DEFAULTS`` instead of writing it again.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields, replace
from typing import Any

ENV_PREFIX = "CAPSEM_PROXYD"


@dataclass(frozen=True, slots=True)
class Setting:
    """How a setting is given, besides its name, type and default (the field's own).

    ``option``: the flag's name when it is not the field's (``--cors-origin`` for
    ``cors_origins``); ``envvars``: environment variables read after
    ``CAPSEM_PROXYD_<OPTION>``; ``file``: the value names a file; ``folder``: each
    value names an existing folder (its environment variable lists them separated by
    ``os.pathsep``, as ``PYTHONPATH`` does); ``reloads``: a reload (SIGHUP) applies a
    new value, every other setting needs a restart; ``upstream``: the value is
    a provider's base URL (http or https, with a host: anything else is refused before start, not answered
    with a 502 on every request); ``named_url``: each value is ``NAME=URL`` (a TOML table ``{ NAME = "URL" }``
    in the config file), NAME a path segment of letters, digits, ``-`` and ``_``, URL as ``upstream``.
    """

    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    option: str | None = None
    envvars: tuple[str, ...] = ()
    file: bool = False
    folder: bool = False
    reloads: bool = False
    upstream: bool = False
    named_url: bool = False


def setting(default: Any, help: str, **how: Any) -> Any:
    """A ``Settings`` field: its default and its ``Setting`` (see there)."""
    return field(default=default, metadata={"setting": Setting(help, **how)})


@dataclass(frozen=True, slots=True)
class Settings:
    """One proxy instance's configuration; frozen, replaced whole on reload."""

    host: str = setting("127.0.0.1", "Address to listen on.")
    port: int = setting(8000, "Port to listen on.", minimum=0, maximum=65535)
    openai_upstream: str = setting(
        "https://api.openai.com/v1", "Base URL of the OpenAI API (up to and including /v1).", upstream=True
    )
    gemini_upstream: str = setting(
        "https://generativelanguage.googleapis.com", "Base URL of the Gemini API (the client's /v1beta/... path is kept).",
        upstream=True,
    )
    anthropic_upstream: str = setting("https://api.anthropic.com", "Base URL of the Anthropic API.", upstream=True)
    policy_dir: str | None = setting(
        None, "Folder of CAPSEM policy TOML files (default: the Debug and Secrets policies; a folder runs Secrets "
        "too unless its secrets.toml says enabled = false). "
        "Env: CAPSEM_PROXYD_POLICY_DIR, then PROXY_CONFIG_DIR.", envvars=("PROXY_CONFIG_DIR",), reloads=True,
    )
    policies: bool = setting(
        True, "Check requests and replies with policies (--policy-dir's and Secrets, else Debug and Secrets). "
        "--no-policies runs with none: every request is forwarded unchecked (said in the start-up line and "
        "/health). Without it, a policy folder with no policy file is a configuration error.", reloads=True,
    )
    policy_path: tuple[str, ...] = setting(
        (), "Folder added to the import path of class = \"module:Class\" policies, in the proxy's process and its "
        "policy worker processes (repeatable; looked in before the installed packages, as PYTHONPATH is). "
        "Env: separated by ':'.", folder=True, reloads=True,
    )
    shadow_policy_dir: str | None = setting(
        None, "Folder of candidate policies evaluated on live traffic after the real decision: "
        "their verdicts are logged (capsem_proxyd.shadow) and audited, never enforced.", reloads=True,
    )
    tenant_profiles: str | None = setting(
        None, "TOML [profiles] table: tenant id -> policy folder (others use --policy-dir).", file=True, reloads=True
    )
    tenants_file: str | None = setting(
        None, "TOML tenants = [...] allow-list of tenant ids; any other key gets 401.", file=True, reloads=True
    )
    cors: bool = setting(True, "Answer CORS preflights and add CORS headers for browser clients.")
    cors_origins: tuple[str, ...] = setting(
        (), "Allowed browser origin (repeatable; default: any origin, never with credentials).", option="cors-origin"
    )
    passthrough: tuple[str, ...] = setting(
        (), "Path glob (e.g. '/v1/files*') forwarded WITHOUT policy checks (repeatable; default: unknown "
        "provider paths are refused with 404). Env: space-separated.",
    )
    upstream_timeout: float = setting(600.0, "Seconds to wait for upstream data (read and stream idle).", minimum=0.001)
    connect_timeout: float = setting(10.0, "Seconds to wait for an upstream connection.", minimum=0.001)
    policy_timeout: float = setting(
        30.0, "Seconds a policy may take before the request is blocked (0: no limit).", minimum=0, reloads=True
    )
    max_body_size: int = setting(32 * 1024 * 1024, "Largest request body accepted, in bytes (413 beyond).", minimum=1)
    request_timeout: float = setting(
        900.0, "Seconds a call may take upstream until its reply is in hand (504 beyond; 0: no deadline): "
        "the response headers of every call, and the whole body of a reply read whole (JSON, also when a "
        "stream request is answered with JSON). A streamed reply's events are bounded by --upstream-timeout "
        "each instead.", minimum=0
    )
    max_json_depth: int = setting(64, "Deepest JSON nesting accepted in a request body (400 beyond).", minimum=1)
    max_items: int = setting(
        10_000, "Most messages (contents, input items) in a request, and most parts inside them (400 beyond).", minimum=1
    )
    max_tools: int = setting(1_000, "Most tool definitions in a request (400 beyond).", minimum=1)
    max_header_count: int = setting(100, "Most request headers (431 beyond).", minimum=1)
    max_header_size: int = setting(
        32 * 1024, "Largest total size of the request headers, in bytes (431 beyond; connections sending more "
        "than twice this are cut by the HTTP parser).", minimum=1024,
    )
    max_response_size: int = setting(
        256 * 1024 * 1024, "Largest upstream reply, streamed or not, in bytes (502, or an error event that ends "
        "the stream).", minimum=1,
    )
    reply_memory: int = setting(
        512 * 1024 * 1024, "Bytes of non-streamed upstream replies one process holds at once (each worker of "
        "--workers has its own): a reply that does not fit waits for room until its --request-timeout passes, then "
        "gets 503; one larger than this alone gets 503 at once (keep it at least --max-response-size). A held reply "
        "costs up to about twice its size in memory while it is checked.", minimum=1024 * 1024,
    )
    keep_alive_timeout: float = setting(
        75.0, "Seconds an idle client connection stays open; also the time a client has to send its request "
        "headers (slow-header clients are cut).", minimum=0.001,
    )
    body_timeout: float = setting(
        60.0, "Seconds a client has to send its whole request body (408 beyond).", minimum=0.001
    )
    forward_client_ip: bool = setting(
        False, "Send the client's address upstream in X-Forwarded-For/Forwarded (otherwise both are removed)."
    )
    certfile: str | None = setting(
        None, "PEM certificate (chain): serve HTTPS (and HTTP/2) instead of HTTP. Needs --keyfile.", file=True
    )
    keyfile: str | None = setting(None, "PEM private key for --certfile.", file=True)
    stream_holdback: int = setting(
        64, "The cap: characters of streamed text held back for a policy that may match text of any length or "
        "declares no stream_holdback (policies that declare one hold only what they need).", minimum=0,
    )
    verdict_cache_size: int = setting(
        100_000, "Most policy decisions remembered per configuration (LRU; about 155 bytes each), so that content "
        "an agent resends every turn is analysed once per tenant: requests are checked piece by piece (messages, "
        "tool results, tool definitions, and the seams between pieces) by the policies that allow it. 0: no cache, "
        "every policy sees every request whole. Emptied by a reload.", minimum=0, reloads=True,
    )
    policy_processes: int = setting(
        0, "Worker processes that run CPU-heavy policies (the PII analysis) beside the event loop, each with its own "
        "copy of those policies: 0 means one per usable core, divided among --workers. A policy file with "
        "processes = false keeps its policy in the proxy's process.", minimum=0, maximum=64, reloads=True,
    )
    confirm_action: str = setting("block", "What a CONFIRM verdict does.", choices=("block", "allow"), reloads=True)
    log_level: str = setting("info", "Log level.", choices=("debug", "info", "warning", "error"))
    graceful_timeout: float = setting(30.0, "Seconds in-flight requests get to finish on shutdown.", minimum=0)
    log_format: str = setting("text", "Log line format.", choices=("text", "json"))
    audit_log: str | None = setting(
        None, "Append the hash-chained JSON audit log here ('-' for stdout). Reopened on SIGHUP."
    )
    audit_prompts: bool = setting(False, "Include prompt text in audit records.")
    audit_failure: str = setting(
        "block", "What happens while the audit log cannot be written (disk full, I/O error): 'block' answers every "
        "proxied request with a provider-shaped 503 before anything reaches the provider (fail closed); 'allow' "
        "keeps serving, unrecorded (logged at ERROR). Either way the log is retried on each request and recovers by "
        "itself; /health and the capsem_proxyd_audit_log_writable gauge show it.",
        choices=("block", "allow"), reloads=True,
    )
    otlp_endpoint: str | None = setting(
        None, "Export one OpenTelemetry trace span per proxied request over OTLP/HTTP (protobuf) to this collector "
        "(base URL, e.g. http://collector:4318: spans go to <url>/v1/traces). Needs the 'otel' extra. Wins over "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT and OTEL_EXPORTER_OTLP_ENDPOINT, which turn export on when this is "
        "not set; OTEL_SDK_DISABLED=true turns it off; the other OTEL_* variables apply.",
    )
    stored_content: str = setting(
        "checked", "What a request may reference of the content a provider stores (previous_response_id, "
        "conversations, file ids, cached content, stored prompts, provider-run MCP servers and skills): "
        "'checked' only Responses ids this proxy delivered unblocked to the same tenant, 'refuse' nothing, "
        "'allow' everything (logged at WARNING and audited).", choices=("checked", "refuse", "allow"), reloads=True,
    )
    state_dir: str | None = setting(
        None, "Folder of the proxy's state: the response ids --stored-content checked admits (SQLite, shared by "
        "workers and instances on one host). Default: $XDG_STATE_HOME/capsem-proxyd, else "
        "~/.local/state/capsem-proxyd. Relative paths are resolved against the working directory at start.",
    )
    stored_responses_max: int = setting(
        1_000_000, "Most response ids remembered for --stored-content checked (the oldest are dropped first; "
        "about 150 bytes each on disk).", minimum=1, reloads=True,
    )
    stored_responses_days: float = setting(
        30.0, "Days a remembered response id stays usable for --stored-content checked (OpenAI keeps stored "
        "responses 30 days).", minimum=0.0001, reloads=True,
    )
    mcp_servers: tuple[str, ...] = setting(
        (), "MCP server served at /mcp/NAME and forwarded to URL (Streamable HTTP), its traffic checked by the "
        "same policies: NAME=URL, repeatable (config file: mcp_servers = { NAME = \"URL\" }). Env: space-separated.",
        option="mcp-server", named_url=True,
    )
    mcp_headers: tuple[str, ...] = setting(
        (), "Request header forwarded to one MCP server besides Authorization and the protocol's own: "
        "NAME=Header-Name, repeatable. Cookies and provider-key headers (x-api-key, x-goog-api-key, api-key) "
        "are never forwarded.", option="mcp-header",
    )
    mcp_timeouts: tuple[str, ...] = setting(
        (), "Seconds one MCP server has to answer a JSON-RPC request (its reply, or the event of an event stream "
        "that answers it): NAME=SECONDS, repeatable. A server slower than that is cut off and the client gets a "
        "JSON-RPC error with the request's id. Default: none beyond --upstream-timeout between reads.",
        option="mcp-timeout",
    )
    mcp_redact_passthrough: tuple[str, ...] = setting(
        (), "MCP tool whose call arguments go to its server unchanged when a policy asks to mask part of them: "
        "SERVER/TOOL, repeatable (default: none; such a call is refused, since a placeholder written into a file or "
        "sent as an address is silent damage). A BLOCK still refuses; results are masked either way.",
        option="mcp-redact-passthrough",
    )
    mcp_origins: tuple[str, ...] = setting(
        (), "Browser Origin allowed on /mcp/* (repeatable; default: none, every request carrying an Origin "
        "header is refused, against DNS rebinding).", option="mcp-origin",
    )
    mcp_new_tools: str = setting(
        "hold", "What becomes of an MCP tool a server lists after its first listing was pinned: 'hold' it pending "
        "until an operator accepts it (capsem-proxyd mcp-pins accept), or 'serve' it at once once the policies "
        "approved it, pinned as first listed (logged at WARNING and audited as an automatic pin).",
        choices=("hold", "serve"),
    )
    mcp_max_message_size: int = setting(
        4 * 1024 * 1024, "Largest JSON-RPC message on the MCP hop, in bytes, each way (a request body, a JSON "
        "reply, one SSE event; not a whole stream).", minimum=1024,
    )
    workers: int = setting(1, "Worker processes serving the one port (for multi-core hosts).", minimum=1, maximum=64)
    pidfile: str | None = setting(
        None, "Write the main process id here, locked while the proxy runs: a second start with the same pidfile "
        "is refused; stop, status and reload read it. Default: none in the foreground; capsem-proxyd.pid in the "
        "working directory with start --daemon, and for stop, status and reload.",
    )


DEFAULTS = Settings()


def declared() -> tuple[Field[Any], ...]:
    """The settings' fields, in declaration order (each with its ``Setting``)."""
    return fields(Settings)


def declaration(setting_field: Field[Any]) -> Setting:
    return setting_field.metadata["setting"]


def option_name(setting_field: Field[Any]) -> str:
    """The flag's name without dashes (``cors-origin``)."""
    return declaration(setting_field).option or setting_field.name.replace("_", "-")


def envvar(setting_field: Field[Any]) -> str:
    return f"{ENV_PREFIX}_{option_name(setting_field).upper().replace('-', '_')}"


def reloaded(old: Settings, new: Settings) -> Settings:
    """The settings in effect after a reload: ``new``'s reloadable values, ``old``'s for the rest."""
    return replace(old, **{item.name: getattr(new, item.name) for item in declared() if declaration(item).reloads})


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    """The settings that differ between ``old`` and ``new`` and that a reload cannot apply."""
    return [
        item.name for item in declared()
        if not declaration(item).reloads and getattr(old, item.name) != getattr(new, item.name)
    ]
