"""Which tenants the proxy serves, and under which policy folder.

A tenant is an API key, known here only by its id: the first 16 hex digits of
the key's SHA-256 (``capsem-proxyd tenant-id`` prints it; every request log
line carries it). Two optional files, both TOML:

``--tenants-file`` — the allow-list; any other tenant gets 401 in its
provider's error shape, so a proxy reachable by others is not an open relay::

    tenants = ["3f2a9c0d1e4b5a67", "0b1c2d3e4f5a6b7c"]

``--tenant-profiles`` — a policy folder per tenant; tenants not listed run
under the default folder (``--policy-dir``). Relative folders are resolved
against the file's own directory::

    [profiles]
    "3f2a9c0d1e4b5a67" = "policies/strict"
    "0b1c2d3e4f5a6b7c" = "/etc/capsem-proxyd/policies/lenient"
"""

from __future__ import annotations

import logging
import re
import tomllib
from pathlib import Path
from typing import Any

from capsem_proxyd.errors import ProxyError
from capsem_proxyd.policy.loader import PolicyConfigError

log = logging.getLogger("capsem_proxyd.policy.tenants")

TENANT_ID = re.compile(r"^[0-9a-f]{16}$")


def tenant_not_allowed(tenant_id: str) -> ProxyError:
    """The 401 an unlisted tenant gets; logged once per refusal with the tenant id (never the key)."""
    log.warning("tenant_id=%s refused: not in the tenants file", tenant_id)
    return ProxyError(
        401,
        "authentication",
        "This API key is not allowed to use this capsem-proxyd instance.",
        code="tenant_not_allowed",
    )


def load_allowed_tenants(path: str | Path) -> frozenset[str]:
    """The ``tenants = [...]`` list of ``path``; raises PolicyConfigError (one line)."""
    data = _read(path, "tenants file")
    tenants = data.get("tenants")
    unknown = sorted(set(data) - {"tenants"})
    if unknown or not isinstance(tenants, list):
        raise PolicyConfigError(f"tenants file {path}: expected only tenants = [\"<tenant id>\", ...]")
    return frozenset(_tenant_id(path, value) for value in tenants)


def load_tenant_profiles(path: str | Path) -> dict[str, str]:
    """Tenant id → policy folder (absolute) from the ``[profiles]`` table of ``path``."""
    data = _read(path, "tenant profiles file")
    profiles = data.get("profiles")
    unknown = sorted(set(data) - {"profiles"})
    if unknown or not isinstance(profiles, dict):
        raise PolicyConfigError(f"tenant profiles file {path}: expected only a [profiles] table of \"<tenant id>\" = \"<folder>\"")
    base = Path(path).resolve().parent
    folders: dict[str, str] = {}
    for tenant, folder in profiles.items():
        tenant_id = _tenant_id(path, tenant)
        if not isinstance(folder, str) or not folder:
            raise PolicyConfigError(f"tenant profiles file {path}: the folder of tenant {tenant_id} must be a path")
        folders[tenant_id] = str((base / folder).resolve())
    return folders


def _read(path: str | Path, what: str) -> dict[str, Any]:
    try:
        with Path(path).open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise PolicyConfigError(f"{what} {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise PolicyConfigError(f"{what} {path} is not valid TOML: {error}") from None
    except OSError as error:
        raise PolicyConfigError(f"{what} {path}: cannot read: {error.strerror}") from None


def _tenant_id(path: str | Path, value: Any) -> str:
    if not isinstance(value, str) or not TENANT_ID.match(value.lower()):
        raise PolicyConfigError(
            f"{path}: {value!r} is not a tenant id (16 hex digits; capsem-proxyd tenant-id prints a key's)"
        )
    return value.lower()
