"""Build the active policy set from a folder of CAPSEM TOML files.

Compatible with CAPSEM's own loader (``debug.toml``, ``pii.toml``, ``enabled =
false``), with two deliberate differences: explicit configuration wins (a folder
whose policies are all disabled runs with none, with a warning), and every
problem is a startup error instead of a silent fallback to the Debug policy.
"""

from __future__ import annotations

import importlib
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capsem.manager import SecurityManager
from capsem.policies import Policy

from capsem_proxyd.policies.debug import DebugPolicy

log = logging.getLogger("capsem_proxyd.policy")

# File stem -> "module:Class" for the policies known by name, as in CAPSEM.
KNOWN_POLICIES: dict[str, str] = {
    "debug": "capsem_proxyd.policies.debug:DebugPolicy",
    "pii": "capsem.policies.pii_policy:PIIPolicy",
}


class PolicyConfigError(Exception):
    """A policy folder or file that cannot be loaded; the message is one line."""


@dataclass(slots=True)
class PolicySet:
    """The loaded policies plus the per-policy options the engine needs."""

    manager: SecurityManager
    source: str
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [policy.name for policy in self.manager.policies]


def default_policy_set() -> PolicySet:
    """No folder given: the Debug policy alone."""
    manager = SecurityManager()
    manager.add_policy(DebugPolicy())
    return PolicySet(manager=manager, source="built-in default (Debug)")


def load_policy_set(folder: str | Path | None) -> PolicySet:
    """Load ``folder`` (or the default when ``None``); raise PolicyConfigError."""
    if folder is None or str(folder) == "":
        return default_policy_set()
    path = Path(folder)
    if not path.exists():
        raise PolicyConfigError(f"policy folder {path} does not exist")
    if not path.is_dir():
        raise PolicyConfigError(f"policy folder {path} is not a directory")

    policy_set = PolicySet(manager=SecurityManager(), source=str(path))
    for toml_file in sorted(path.glob("*.toml")):
        config = _read_toml(toml_file)
        policy = _build_policy(toml_file, config, policy_set)
        if policy is None:
            continue
        try:
            policy_set.manager.add_policy(policy)
        except ValueError as error:
            raise PolicyConfigError(f"{toml_file}: {error}") from None
        policy_set.options[policy.name] = config
    if not policy_set.names:
        policy_set.warnings.append(
            f"no policy is active: every policy in {path} is disabled or the folder is empty; "
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


def _build_policy(toml_file: Path, config: dict[str, Any], policy_set: PolicySet) -> Policy | None:
    if not config.get("enabled", True):
        log.info("policy file %s is disabled", toml_file.name)
        return None
    class_path = config.get("class") or KNOWN_POLICIES.get(toml_file.stem)
    if class_path is None:
        message = (
            f"{toml_file.name}: unknown policy file (known: {', '.join(sorted(KNOWN_POLICIES))}; "
            "or set class = \"package.module:ClassName\"), skipped"
        )
        policy_set.warnings.append(message)
        return None
    policy_class = _import_policy_class(toml_file, str(class_path))
    policy_config = {key: value for key, value in config.items() if key != "class"}
    try:
        policy = policy_class.from_config(policy_config)
    except (ImportError, ModuleNotFoundError) as error:
        raise PolicyConfigError(f"{toml_file}: missing dependency: {error}") from None
    except Exception as error:  # noqa: BLE001 - any failure is a config error
        raise PolicyConfigError(f"{toml_file}: {type(error).__name__}: {error}") from None
    return policy


def _import_policy_class(toml_file: Path, class_path: str) -> type[Policy]:
    module_name, _, class_name = class_path.replace(":", ".").rpartition(".")
    if ":" in class_path:
        module_name, class_name = class_path.split(":", 1)
    try:
        module = importlib.import_module(module_name)
        policy_class = getattr(module, class_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise PolicyConfigError(f"{toml_file}: cannot load policy class {class_path}: {error}") from None
    if not (isinstance(policy_class, type) and issubclass(policy_class, Policy)):
        raise PolicyConfigError(f"{toml_file}: {class_path} is not a CAPSEM Policy subclass")
    return policy_class
