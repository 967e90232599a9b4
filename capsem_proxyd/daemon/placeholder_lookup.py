"""The placeholder of a leaked value, computed as the proxy computes it (``capsem-proxyd placeholder``).

An incident responder holding a leaked credential asks whether it passed
the proxy, for whom and when. The audit log never holds values, only their
placeholders (``{"type": "redaction"}`` records: placeholder and key id), so
the question becomes "which records carry this value's placeholder": this
module computes it from the value, the tenant and the state directory's key.

* The value comes from standard input, never from an argument: an argument
  lands in the shell's history and in ``ps``. One trailing line ending is
  dropped (``printenv``, ``echo`` add it); nothing else is changed, since the
  proxy masks the value exactly as written.
* The tenant is its id, or derived from its API key read from a file, as the
  proxy derives it (``exchange.tenant_id_for``): placeholders differ between
  tenants by design.
* The key is read from the state directory (``proxy/placeholder_key.py``),
  never made or replaced: a missing or damaged key is an operator's error
  (one line, exit 2), and placeholders made under another key id do not match.
* The kind label is not part of a placeholder's identity (the same value
  masked by two rules keeps the tag it got first): the tag is what to search.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from capsem_proxyd.daemon.options import ConfigError
from capsem_proxyd.exchange import tenant_id_for
from capsem_proxyd.proxy.placeholder_key import key_problem, read_placeholder_key
from capsem_proxyd.proxy.response_store import state_directory
from capsem_proxyd.redaction.placeholder import PREFIX, placeholder, tag

_TENANT_ID = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the command prints: never the value."""

    placeholder: str
    tag: str
    key_id: str
    tenant: str


def look_up(
    state_dir: str | None, stdin: bytes, *, tenant: str | None, api_key_file: str | None, kind: str | None,
) -> Lookup:
    """The placeholder of the value on ``stdin`` for the tenant; ``ConfigError`` (exit 2) otherwise."""
    tenant_id = _tenant(tenant, api_key_file)
    value = _value(stdin)
    directory = state_directory(state_dir)
    if not directory.is_dir():
        raise ConfigError(f"state directory {directory} does not exist: give the --state-dir the proxy runs with")
    key = read_placeholder_key(directory)
    if key is None:
        problem = key_problem(directory) or "there is no placeholder key"
        raise ConfigError(f"state directory {directory}: {problem}; the proxy makes it at start "
                          "(with --stored-content checked, the default)")
    made = tag(key.secret, key.id, tenant_id, value)
    shown = placeholder(made, kind) if kind else f"{PREFIX}<KIND>-{made}"
    return Lookup(shown, made, key.id, tenant_id)


def _tenant(tenant: str | None, api_key_file: str | None) -> str:
    if (tenant is None) == (api_key_file is None):
        raise ConfigError("give the tenant: either --tenant TENANT_ID or --api-key-file FILE (one of them)")
    if tenant is not None:
        if not _TENANT_ID.fullmatch(tenant):
            raise ConfigError("--tenant takes a tenant id: 16 lowercase hex digits (capsem-proxyd tenant-id prints "
                              "one from an API key)")
        return tenant
    path = Path(api_key_file or "")
    try:
        lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except OSError as error:
        raise ConfigError(f"--api-key-file {path}: {error.strerror or error}") from None
    key = lines[0].strip() if lines else ""
    if not key:
        raise ConfigError(f"--api-key-file {path}: no API key on its first line")
    return tenant_id_for(key)


def _value(stdin: bytes) -> str:
    try:
        text = stdin.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("the value on standard input is not UTF-8 text") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise ConfigError("no value on standard input (e.g. printenv LEAKED_KEY | capsem-proxyd placeholder "
                          "--tenant TENANT_ID)")
    return text
