"""Runtime settings: one frozen object built by the CLI (flags > env > file > defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_OPENAI_UPSTREAM = "https://api.openai.com/v1"
DEFAULT_GEMINI_UPSTREAM = "https://generativelanguage.googleapis.com"
DEFAULT_ANTHROPIC_UPSTREAM = "https://api.anthropic.com"
ENV_PREFIX = "CAPSEM_PROXYD"


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    openai_upstream: str = DEFAULT_OPENAI_UPSTREAM
    gemini_upstream: str = DEFAULT_GEMINI_UPSTREAM
    anthropic_upstream: str = DEFAULT_ANTHROPIC_UPSTREAM
    policy_dir: str | None = None
    shadow_policy_dir: str | None = None  # evaluated on live traffic, recorded, never enforced
    tenant_profiles: str | None = None  # TOML: tenant id -> policy folder
    tenants_file: str | None = None  # TOML allow-list of tenant ids; others get 401
    cors: bool = True
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    passthrough: tuple[str, ...] = field(default_factory=tuple)  # path globs forwarded unchecked
    upstream_timeout: float = 600.0
    connect_timeout: float = 10.0
    policy_timeout: float = 30.0
    max_body_size: int = 32 * 1024 * 1024
    # Limits and timeouts (see limits.py, guard.py and server.hypercorn_config).
    request_timeout: float = 900.0  # whole-request deadline of a non-streamed call (504)
    max_json_depth: int = 64
    max_items: int = 10_000  # messages (or contents, input items) and the parts inside them
    max_tools: int = 1_000
    max_header_count: int = 100
    max_header_size: int = 32 * 1024
    max_response_size: int = 256 * 1024 * 1024  # upstream reply, streamed or not
    keep_alive_timeout: float = 75.0  # idle client connection, and the time to send request headers
    body_timeout: float = 60.0  # time a client has to send its whole request body (408)
    forward_client_ip: bool = False
    certfile: str | None = None
    keyfile: str | None = None
    stream_holdback: int = 64
    confirm_action: str = "block"
    log_level: str = "info"
    graceful_timeout: float = 30.0
    log_format: str = "text"
    audit_log: str | None = None  # a file path, "-" for stdout, None for no audit log
    audit_prompts: bool = False
    workers: int = 1
    pidfile: str | None = None
