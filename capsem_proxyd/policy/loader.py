"""Build the active policy set from a folder of CAPSEM TOML files.

Compatible with CAPSEM's own loader (``debug.toml``, ``pii.toml``, ``enabled =
false``), with two deliberate differences: explicit configuration wins (a folder
whose policies are all disabled runs with none, with a warning), and every
problem is a startup error instead of a silent fallback to the Debug policy.

Besides the policy's own settings, every file may carry keys the proxy reads
itself and never passes to the policy: ``class = "package.module:ClassName"``
(any CAPSEM ``Policy`` subclass, built through its ``from_config``),
``mode = "enforce" | "monitor"`` (monitor never refuses; it records what it
would have refused) and ``fail_open = true`` (a policy that times out or
raises lets the request through, logged and recorded as LOG, instead of
blocking it).
"""

from __future__ import annotations

import importlib
import inspect
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
    "pii": "capsem_proxyd.policies.pii:OfflinePIIPolicy",
    "rules": "capsem_proxyd.policies.rules:RulesPolicy",
}

MODES = ("enforce", "monitor")
# Keys the proxy reads from a policy file and does not pass to the policy.
PROXY_KEYS = ("class", "mode", "fail_open")
HOOKS = ("on_model_call", "on_tool_call", "on_tool_response", "on_model_response")


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

    def mode_of(self, policy_name: str) -> str:
        """``enforce`` unless the policy's file says ``mode = "monitor"``."""
        return str(self.options.get(policy_name, {}).get("mode", "enforce"))

    def fails_open(self, policy_name: str) -> bool:
        """True when the policy's file says ``fail_open = true``: its failures do not block."""
        return self.options.get(policy_name, {}).get("fail_open", False) is True


def implemented_hooks(policy: Policy) -> list[str]:
    """The CAPSEM hooks ``policy`` overrides (the others always allow)."""
    return [hook for hook in HOOKS if getattr(type(policy), hook) is not getattr(Policy, hook)]


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
    mode = config.get("mode", "enforce")
    if mode not in MODES:
        raise PolicyConfigError(f"{toml_file}: mode must be one of {', '.join(MODES)}, not {mode!r}")
    if not isinstance(config.get("fail_open", False), bool):
        raise PolicyConfigError(f"{toml_file}: fail_open must be true or false, not {config['fail_open']!r}")
    policy_class = _import_policy_class(toml_file, str(class_path))
    policy_config = {key: value for key, value in config.items() if key not in PROXY_KEYS}
    try:
        policy = _from_config(policy_class, toml_file, policy_config)
    except (ImportError, ModuleNotFoundError) as error:
        raise PolicyConfigError(f"{toml_file}: missing dependency: {error}") from None
    except ValueError as error:  # CAPSEM's convention for an invalid configuration
        raise PolicyConfigError(f"{toml_file}: {_one_line(error)}") from None
    except Exception as error:  # noqa: BLE001 - any failure is a config error
        raise PolicyConfigError(f"{toml_file}: {type(error).__name__}: {_one_line(error)}") from None
    if policy is None:
        return None
    if not isinstance(policy, Policy):
        raise PolicyConfigError(f"{toml_file}: {class_path}.from_config returned {type(policy).__name__}, not a Policy")
    for warning in getattr(policy, "warnings", None) or []:
        policy_set.warnings.append(f"{toml_file.name}: {warning}")
    return policy


def _from_config(policy_class: type[Policy], toml_file: Path, config: dict[str, Any]) -> Policy | None:
    """``from_config(config)``; a class whose ``from_config`` takes ``source_lines`` also gets the
    file's lines, so that its errors can name a line (tomllib keeps no positions)."""
    if "source_lines" in inspect.signature(policy_class.from_config).parameters:
        lines = toml_file.read_text(encoding="utf-8").splitlines()
        return policy_class.from_config(config, source_lines=lines)
    return policy_class.from_config(config)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


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
