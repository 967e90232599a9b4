"""Build the active policy set from a folder of CAPSEM TOML files.

Compatible with CAPSEM's own loader (``debug.toml``, ``pii.toml``, ``enabled =
false``), with two deliberate differences: explicit configuration wins (a folder
whose policies are all disabled runs with none, with a warning), and every
problem is a startup error instead of a silent fallback to the Debug policy.

What is a policy file: every ``*.toml`` in the folder, not hidden. Its name
must be a known one (``KNOWN_POLICIES``) unless it says ``class = ...``: a
misnamed ``rule.toml`` used to be skipped with a warning, so the folder ran
with no checking at all (fail open); it is now a configuration error naming
the file and the known names (``check``, ``start`` and a reload refuse it).
Any other file (``README.md``, an editor's ``.rules.toml.swp`` or
``rules.toml~``, a hidden ``.#rules.toml``) is ignored: it cannot be meant as
a policy. A folder with no policy file at all is an error too; running
without policies is said explicitly, with a file that says ``enabled =
false`` or with ``--no-policies`` (``tenants.load_policy_config``).

The Secrets policy is on by default (issue 23): without a folder, Debug and
Secrets run; a folder (``--policy-dir``, a tenant profile's) runs Secrets too,
with its default rules, unless its own ``secrets.toml`` configures it or says
``enabled = false``. A credential an agent leaks is caught whoever wrote the
folder, and turning that off is a line the operator writes, not an omission.
Shadow folders get nothing implicit: they hold what is being tried.

Besides the policy's own settings, every file may carry keys the proxy reads
itself and never passes to the policy: ``class = "package.module:ClassName"``
(any CAPSEM ``Policy`` subclass, built through its ``from_config``),
``mode = "enforce" | "monitor"`` (monitor never refuses; it records what it
would have refused), ``fail_open = true`` (a policy that times out or
raises lets the request through, logged and recorded as LOG, instead of
blocking it) and ``processes = false`` (a ``cpu_heavy`` policy runs in the
proxy's own process instead of the worker processes, ``workers.py``).

A ``cpu_heavy`` policy (``policies/declarations.py``) is not built here at
all: a short-lived worker process builds it and reports what it is, and the
set holds a ``RemotePolicy`` that sends its hook calls to the configuration's
worker processes. The proxy's process never imports its libraries.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capsem.manager import SecurityManager
from capsem.policies import Policy

from capsem_proxyd.enforcement.building import (
    HOOKS,
    PROXY_KEYS,
    PolicyConfigError,
    _import_policy_class,
    _one_line,
    build_from_class,
    extend_import_path,
    implemented_hooks,
)
from capsem_proxyd.enforcement.workers import PolicySpec, RemotePolicy, manifest
from capsem_proxyd.policies.debug import DebugPolicy

__all__ = ["HOOKS", "PROXY_KEYS", "PolicyConfigError", "PolicySet", "implemented_hooks", "load_policy_set",
           "default_policy_set", "no_policy_set", "DEFAULT_SOURCE"]

log = logging.getLogger("capsem_proxyd.enforcement")

# File stem -> "module:Class" for the policies known by name, as in CAPSEM.
KNOWN_POLICIES: dict[str, str] = {
    "debug": "capsem_proxyd.policies.debug:DebugPolicy",
    "pii": "capsem_proxyd.policies.pii:OfflinePIIPolicy",
    "rules": "capsem_proxyd.policies.rules:RulesPolicy",
    "secrets": "capsem_proxyd.policies.secrets:SecretsPolicy",
}

MODES = ("enforce", "monitor")
# Our policies that declare cpu_heavy = True, known without importing them (PII imports Presidio and
# spaCy: ~65 MiB the proxy's process does not need when they run in workers). A test keeps this true.
CPU_HEAVY_KNOWN = frozenset({"capsem_proxyd.policies.pii:OfflinePIIPolicy"})


@dataclass(slots=True)
class PolicySet:
    """The loaded policies plus the per-policy options the engine needs."""

    manager: SecurityManager
    source: str
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    by_default: frozenset[str] = frozenset()  # policies the folder did not name (Secrets, without a secrets.toml)

    @property
    def names(self) -> list[str]:
        return [policy.name for policy in self.manager.policies]

    def described_names(self) -> str:
        """The names for the start-up, ``check`` and ``policies`` lines: one the folder did not name says so."""
        return ", ".join(f"{name} (by default)" if name in self.by_default else name for name in self.names)

    def mode_of(self, policy_name: str) -> str:
        """``enforce`` unless the policy's file says ``mode = "monitor"``."""
        return str(self.options.get(policy_name, {}).get("mode", "enforce"))

    def fails_open(self, policy_name: str) -> bool:
        """True when the policy's file says ``fail_open = true``: its failures do not block."""
        return self.options.get(policy_name, {}).get("fail_open", False) is True


DEFAULT_SOURCE = "built-in default (Debug, Secrets)"
SECRETS_FILE = "secrets.toml"


def default_policy_set() -> PolicySet:
    """No folder given: the Debug policy and the Secrets policy with its default rules."""
    manager = SecurityManager()
    manager.add_policy(DebugPolicy())
    manager.add_policy(_default_secrets())
    return PolicySet(manager=manager, source=DEFAULT_SOURCE)


def _default_secrets() -> Policy:
    """The Secrets policy as no ``secrets.toml`` configures it (imported here: its rules load with it)."""
    from capsem_proxyd.policies.secrets import SecretsPolicy

    return SecretsPolicy()


def no_policy_set() -> PolicySet:
    """``--no-policies``: none, said so (every request is forwarded unchecked)."""
    return PolicySet(
        manager=SecurityManager(), source="--no-policies",
        warnings=["--no-policies: no policy is active; requests are forwarded unchecked"],
    )


def load_policy_set(
    folder: str | Path | None, import_path: tuple[str, ...] = (), *, secrets_by_default: bool = True,
) -> PolicySet:
    """Load ``folder`` (or the default when ``None``); raise PolicyConfigError.

    ``import_path``: the ``--policy-path`` folders, where ``class =`` modules are looked for here and in
    the worker processes of ``cpu_heavy`` policies. ``secrets_by_default``: a folder without a
    ``secrets.toml`` runs the Secrets policy too (not for shadow folders).
    """
    extend_import_path(import_path)
    if folder is None or str(folder) == "":
        return default_policy_set()
    path = Path(folder)
    if not path.exists():
        raise PolicyConfigError(f"policy folder {path} does not exist")
    if not path.is_dir():
        raise PolicyConfigError(f"policy folder {path} is not a directory")

    policy_files = sorted(item for item in path.glob("*.toml") if not item.name.startswith("."))
    if not policy_files:
        raise PolicyConfigError(
            f"policy folder {path} holds no policy file (*.toml named {_known_names()}); to run without "
            "policies, say so: --no-policies, or a policy file with enabled = false"
        )
    policy_set = PolicySet(manager=SecurityManager(), source=str(path))
    for toml_file in policy_files:
        config = _read_toml(toml_file)
        policy = _build_policy(toml_file, config, policy_set, import_path)
        if policy is None:
            continue
        try:
            policy_set.manager.add_policy(policy)
        except ValueError as error:
            raise PolicyConfigError(f"{toml_file}: {error}") from None
        policy_set.options[policy.name] = config
    if secrets_by_default and not (path / SECRETS_FILE).is_file():
        try:
            policy_set.manager.add_policy(_default_secrets())
        except ValueError as error:  # a class = policy already named "Secrets"
            raise PolicyConfigError(
                f"{path}: {error}; the Secrets policy runs by default: add {SECRETS_FILE} with enabled = false "
                "to run your own under that name"
            ) from None
        policy_set.by_default = frozenset({"Secrets"})
    if not policy_set.names:
        policy_set.warnings.append(
            f"no policy is active: every policy in {path} is disabled (enabled = false); "
            "requests are forwarded unchecked"
        )
    return policy_set


def _read_toml(toml_file: Path) -> dict[str, Any]:
    try:
        with toml_file.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise PolicyConfigError(f"{toml_file}: invalid TOML: {error}") from None
    except OSError as error:
        raise PolicyConfigError(f"{toml_file}: cannot read: {error.strerror}") from None


def _known_names() -> str:
    return ", ".join(f"{stem}.toml" for stem in sorted(KNOWN_POLICIES))


def _build_policy(
    toml_file: Path, config: dict[str, Any], policy_set: PolicySet, import_path: tuple[str, ...]
) -> Policy | None:
    # The name is checked before ``enabled``: a misnamed file is a mistake whether or not it is enabled.
    class_path = config.get("class") or KNOWN_POLICIES.get(toml_file.stem)
    if class_path is None:
        raise PolicyConfigError(
            f"{toml_file}: unknown policy file name; known names: {_known_names()} "
            "(or set class = \"package.module:ClassName\" in the file)"
        )
    if not config.get("enabled", True):
        log.info("policy file %s is disabled", toml_file.name)
        return None
    mode = config.get("mode", "enforce")
    if mode not in MODES:
        raise PolicyConfigError(f"{toml_file}: mode must be one of {', '.join(MODES)}, not {mode!r}")
    if not isinstance(config.get("fail_open", False), bool):
        raise PolicyConfigError(f"{toml_file}: fail_open must be true or false, not {config['fail_open']!r}")
    if not isinstance(config.get("processes", True), bool):
        raise PolicyConfigError(f"{toml_file}: processes must be true or false, not {config['processes']!r}")
    if config.get("processes", True) and _cpu_heavy(toml_file, str(class_path)):
        return _remote(toml_file, str(class_path), config, policy_set, import_path)
    return build_from_class(toml_file, str(class_path), config, policy_set.warnings)


def _cpu_heavy(toml_file: Path, class_path: str) -> bool:
    if class_path in CPU_HEAVY_KNOWN:
        return True
    return getattr(_import_policy_class(toml_file, class_path), "cpu_heavy", False) is True


def _remote(
    toml_file: Path, class_path: str, config: dict[str, Any], policy_set: PolicySet, import_path: tuple[str, ...]
) -> Policy | None:
    """A stand-in for a CPU-heavy policy: built once in a short-lived worker to learn what it is."""
    spec = PolicySpec(str(toml_file), class_path, config, import_path)
    try:
        described = manifest(spec)
    except PolicyConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - the worker could not report: build it here (as before)
        log.warning("%s: could not be built in a worker process (%s: %s); built in the proxy's process",
                    toml_file.name, type(error).__name__, _one_line(error))
        return build_from_class(toml_file, class_path, config, policy_set.warnings)
    if described is None:
        return None
    for warning in described.warnings:
        policy_set.warnings.append(f"{toml_file.name}: {warning}")
    return RemotePolicy(spec, described)


