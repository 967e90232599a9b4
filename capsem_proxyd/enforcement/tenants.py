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

``PolicyConfig`` is everything the policy side of an instance is built from
(the main folder, the shadow folder, the profiles, the allow-list), loaded
once at start and again at each reload; ``TenantPolicies`` is what a running
instance asks which engine a tenant's request runs under.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capsem_proxyd.config import Settings
from capsem_proxyd.enforcement.engine import PolicyEngine
from capsem_proxyd.enforcement.holdbacks import holdback_summary, stream_holdbacks
from capsem_proxyd.enforcement.loader import PolicyConfigError, PolicySet, load_policy_set, no_policy_set
from capsem_proxyd.enforcement.shadow import ShadowRunner, ShadowTasks
from capsem_proxyd.enforcement.verdict_cache import VerdictCache
from capsem_proxyd.enforcement.workers import PolicyWorkers, RemotePolicy, usable_cores
from capsem_proxyd.errors import tenant_not_allowed
from capsem_proxyd.observe.recorders import Recorder

log = logging.getLogger("capsem_proxyd.enforcement.tenants")

TENANT_ID = re.compile(r"^[0-9a-f]{16}$")


@dataclass(slots=True)
class PolicyConfig:
    """The loaded policy folders of one configuration; tenants sharing a folder share its set."""

    main: PolicySet
    shadow: PolicySet | None = None
    profiles: dict[str, PolicySet] = field(default_factory=dict)
    allowed_tenants: frozenset[str] | None = None

    @property
    def warnings(self) -> list[str]:
        """Every folder's warnings, each named after its folder."""
        warnings = list(self.main.warnings)
        if self.shadow is not None:
            warnings += [f"shadow: {warning}" for warning in self.shadow.warnings]
        for policy_set in {id(item): item for item in self.profiles.values()}.values():
            warnings += [f"profile {policy_set.source}: {warning}" for warning in policy_set.warnings]
        return warnings

    def describe(self, holdback_cap: int) -> str:
        """One line for the start-up and reload log: active policies, hold-back, shadow, profiles, allow-list."""
        names = self.main.described_names() or "NONE (requests are forwarded unchecked)"
        line = f"policies: {names} [{self.main.source}] | {self.holdback(holdback_cap)}"
        if self.shadow is not None:
            line += f" | shadow (recorded, never enforced): {', '.join(self.shadow.names) or 'none'}"
        if self.profiles:
            line += f" | tenant profiles: {len(self.profiles)} tenant(s)"
        if self.allowed_tenants is not None:
            line += f" | tenant allow-list: {len(self.allowed_tenants)} tenant(s)"
        return line


    def holdback(self, cap: int, policy_set: PolicySet | None = None) -> str:
        """What streams hold back under ``policy_set`` (the main folder), and which policy says so."""
        policy_set = policy_set or self.main
        monitored = frozenset(name for name in policy_set.names if policy_set.mode_of(name) == "monitor")
        return holdback_summary(stream_holdbacks(policy_set.manager.policies, monitored, cap))


def load_policy_config(settings: Settings) -> PolicyConfig:
    """Load every folder and file ``settings`` names; raises PolicyConfigError (one line)."""
    config = PolicyConfig(main=_main_policy_set(settings))
    if settings.shadow_policy_dir:
        config.shadow = load_policy_set(settings.shadow_policy_dir, settings.policy_path, secrets_by_default=False)
    if settings.tenant_profiles:
        folders = load_tenant_profiles(settings.tenant_profiles)
        by_folder = {folder: load_policy_set(folder, settings.policy_path) for folder in sorted(set(folders.values()))}
        config.profiles = {tenant_id: by_folder[folder] for tenant_id, folder in folders.items()}
    if settings.tenants_file:
        config.allowed_tenants = load_allowed_tenants(settings.tenants_file)
    return config


def _main_policy_set(settings: Settings) -> PolicySet:
    """``--policy-dir``'s policies and Secrets (Debug and Secrets without one), or none when ``--no-policies`` says so."""
    if settings.policies:
        return load_policy_set(settings.policy_dir, settings.policy_path)
    if settings.policy_dir:
        raise PolicyConfigError(
            f"--no-policies and --policy-dir {settings.policy_dir} contradict each other; drop one of them"
        )
    return no_policy_set()


class TenantPolicies:
    """Which engine a tenant's requests run under: its profile's, or the main folder's.

    Built whole from a ``PolicyConfig`` (one engine per policy set, the shadow
    runner shared) and swapped whole on reload; requests in flight keep the
    engine they started with.

    ``shadow_tasks``: where shadow evaluations run (``shadow.open_shadow_tasks``,
    owned by the process instance and shared by every configuration it
    loads). A configuration with shadow policies needs it: built without one,
    it raises ``ValueError`` rather than evaluate them on the client's path or
    in tasks nobody owns.
    """

    def __init__(
        self, config: PolicyConfig, settings: Settings, recorder: Recorder, *, shadow_tasks: ShadowTasks | None = None
    ) -> None:
        # One verdict cache for the configuration's engines (each keys its own entries); a reload builds
        # new TenantPolicies, so decisions made under the old policies are never reused.
        self.cache = VerdictCache(settings.verdict_cache_size)

        def engine_for(policy_set: PolicySet, shadow: ShadowRunner | None) -> PolicyEngine:
            return PolicyEngine(
                policy_set, recorder=recorder, confirm_action=settings.confirm_action,
                policy_timeout=settings.policy_timeout or None, shadow=shadow, holdback_cap=settings.stream_holdback,
                cache=self.cache,  # the shadow runner evaluates whole views: it never uses it
            )

        self.config = config
        shadow = None
        if config.shadow is not None:
            if shadow_tasks is None:
                raise ValueError("shadow policies need shadow_tasks to run in (shadow.open_shadow_tasks())")
            shadow = ShadowRunner(engine_for(config.shadow, None), shadow_tasks)
        self.default = engine_for(config.main, shadow)
        engines = {id(policy_set): engine_for(policy_set, shadow) for policy_set in config.profiles.values()}
        self.profiles: Mapping[str, PolicyEngine] = {
            tenant_id: engines[id(policy_set)] for tenant_id, policy_set in config.profiles.items()
        }
        self.allowed = config.allowed_tenants
        self.shadow = shadow
        self.pool = _worker_pool(config, settings, recorder)

    async def start(self) -> None:
        """Start and warm the worker processes of the CPU-heavy policies, if any (before serving)."""
        if self.pool is not None:
            await self.pool.start()

    async def aclose(self) -> None:
        """Close the worker processes of the CPU-heavy policies, if any (the instance, as it closes)."""
        if self.pool is not None:
            await self.pool.aclose()

    def retire(self) -> None:
        """Newer policies took over: this configuration's worker pool stops reporting (it closes with its last request)."""
        if self.pool is not None:
            self.pool.retire()

    def for_tenant(self, tenant_id: str) -> PolicyEngine:
        """The engine ``tenant_id``'s requests run under; ProxyError(401) if it is not allowed."""
        if self.allowed is not None and tenant_id not in self.allowed:
            log.warning("tenant_id=%s refused: not in the tenants file", tenant_id)
            raise tenant_not_allowed()
        return self.profiles.get(tenant_id, self.default)


def _worker_pool(config: PolicyConfig, settings: Settings, recorder: Recorder) -> PolicyWorkers | None:
    """One pool for every CPU-heavy policy of the configuration (main, shadow, profiles)."""
    sets = [config.main, *([config.shadow] if config.shadow is not None else []), *config.profiles.values()]
    remotes = [
        policy for policy_set in {id(item): item for item in sets}.values()
        for policy in policy_set.manager.policies if isinstance(policy, RemotePolicy)
    ]
    if not remotes:
        return None
    count = settings.policy_processes or max(1, usable_cores() // settings.workers)
    pool = PolicyWorkers([remote.spec for remote in remotes], count, report=recorder.policy_workers)
    for index, remote in enumerate(remotes):
        remote.pool, remote.index = pool, index
    return pool


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
