"""nginx configurations: the instant upstream (and OTLP sink) and the plain reverse proxy.

Both run as children of the bench with their own prefix under ``bench/.work``,
``daemon off`` and ``master_process off`` (one process, one PID to measure and
stop); the system's nginx service is never touched.
"""

from __future__ import annotations

from pathlib import Path

from bench import payloads

JSON_PATH = "/v1/chat/completions"
STREAM_PREFIX = "/sse"  # the upstream serves the SSE body under /sse/v1/...
STREAM_PATH = STREAM_PREFIX + JSON_PATH
SIZED_PREFIX = "/sse-"  # /sse-10k/v1/..., /sse-1m/v1/...: the streams of payloads.SIZED_STREAMS
# The upstream also takes OTLP/HTTP span exports (capsem-proxyd-otel), answering 200 and logging each.
OTLP_PATH = "/v1/traces"
OTLP_LOG = "otlp-exports.log"

_COMMON = """\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    server_tokens off;
{servers}
}}
"""

_UPSTREAM_SERVER = """\
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        client_body_buffer_size 64k;
        location = {json_path} {{
            default_type application/json;
            return 200 '{json_body}';
        }}
        location = {stream_path} {{
            default_type text/event-stream;
            add_header Cache-Control no-cache;
{stream_return}
        }}
{sized_locations}
        location = {otlp_path} {{
            access_log {otlp_log};
            return 200;
        }}
    }}
"""

_PROXY_SERVER = """\
    upstream provider {{
        server 127.0.0.1:{upstream_port};
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://provider;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
"""


def upstream_config(prefix: Path, port: int) -> str:
    """The provider stand-in: fixed JSON on the chat path, a 50-event SSE body under /sse; and a
    trivial OTLP sink on /v1/traces (the body is discarded, each export is one access-log line)."""
    server = _UPSTREAM_SERVER.format(
        port=port,
        json_path=JSON_PATH,
        stream_path=STREAM_PATH,
        json_body=payloads.nginx_safe(payloads.chat_completion()),
        stream_return=_long_return(payloads.chat_stream(), indent=" " * 12),
        sized_locations="\n".join(_sized_location(name, size) for name, size in payloads.SIZED_STREAMS.items()),
        otlp_path=OTLP_PATH,
        otlp_log=prefix / OTLP_LOG,
    )
    return config_text(prefix, server)


def otlp_exports(prefix: Path) -> int:
    """How many span exports the upstream's OTLP sink received."""
    try:
        return len((prefix / OTLP_LOG).read_text().splitlines())
    except OSError:
        return 0


def _sized_location(name: str, size: int) -> str:
    return "\n".join([
        f"        location = {SIZED_PREFIX}{name}{JSON_PATH} {{",
        "            default_type text/event-stream;",
        _long_return(payloads.sized_stream(size), indent=" " * 12),
        "        }",
    ])


def _long_return(body: bytes, indent: str, piece_size: int = 3000) -> str:
    """``return 200`` of a body longer than nginx's 4 kB token limit.

    The body is cut at line ends into ``set`` variables that the ``return``
    concatenates (nginx evaluates them per request; the cost is a memcpy).
    """
    pieces: list[str] = []
    current = ""
    for line in payloads.nginx_safe(body).splitlines(keepends=True):
        if current and len(current) + len(line) > piece_size:
            pieces.append(current)
            current = ""
        current += line
    pieces.append(current)
    lines = [f"{indent}set $bench_part{index} '{piece}';" for index, piece in enumerate(pieces)]
    names = [f"bench_part{index}" for index in range(len(pieces))]
    # A parameter is at most 4 kB too: long bodies are joined in groups, then the groups.
    group = 0
    while len(names) > 100:
        grouped = []
        for start in range(0, len(names), 100):
            lines.append(f'{indent}set $bench_group{group} "{"".join("${%s}" % name for name in names[start:start + 100])}";')
            grouped.append(f"bench_group{group}")
            group += 1
        names = grouped
    joined = "".join("${%s}" % name for name in names)
    lines.append(f'{indent}return 200 "{joined}";')
    return "\n".join(lines)


def proxy_config(prefix: Path, port: int, upstream_port: int) -> str:
    """nginx as a plain keep-alive reverse proxy in front of the upstream: the cost of one hop."""
    return config_text(prefix, _PROXY_SERVER.format(port=port, upstream_port=upstream_port))


def config_text(prefix: Path, servers: str) -> str:
    """A whole nginx configuration around ``servers`` (server blocks), with the bench's common settings."""
    return _COMMON.format(prefix=prefix, servers=servers)


def write_config(prefix: Path, text: str) -> Path:
    prefix.mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(text)
    return path


def command(nginx: str, prefix: Path, config: Path) -> list[str]:
    return [nginx, "-p", str(prefix), "-c", str(config), "-e", str(prefix / "error.log")]
