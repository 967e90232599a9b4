"""Building one policy from its file: the class it names, built through its ``from_config``.

Shared by the loader (in the proxy's process) and the policy worker processes
(``workers.py``), which build their own copies of the CPU-heavy policies from
the same file and settings.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from capsem.policies import Policy

# Keys the proxy reads from a policy file and does not pass to the policy.
PROXY_KEYS = ("class", "mode", "fail_open", "processes")
HOOKS = ("on_model_call", "on_tool_call", "on_tool_response", "on_model_response")


class PolicyConfigError(Exception):
    """A policy folder or file that cannot be loaded; the message is one line."""


def implemented_hooks(policy: Policy) -> list[str]:
    """The CAPSEM hooks ``policy`` overrides (the others always allow); a policy running in worker
    processes, those its real class overrides."""
    remote = getattr(policy, "remote_hooks", None)
    if remote is not None:
        return list(remote)
    return [hook for hook in HOOKS if getattr(type(policy), hook) is not getattr(Policy, hook)]


def build_from_class(toml_file: Path, class_path: str, config: dict[str, Any], warnings: list[str]) -> Policy | None:
    """Import and build the policy a file names (in the proxy's process, or in a worker's)."""
    policy_class = _import_policy_class(toml_file, class_path)
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
        warnings.append(f"{toml_file.name}: {warning}")
    return policy


def _from_config(policy_class: type[Policy], toml_file: Path, config: dict[str, Any]) -> Policy | None:
    """``from_config(config)``; a class whose ``from_config`` takes ``source_lines`` also gets the
    file's lines, so that its errors can name a line (tomllib keeps no positions)."""
    if "source_lines" in inspect.signature(policy_class.from_config).parameters:
        lines = toml_file.read_text(encoding="utf-8").splitlines()
        return policy_class.from_config(config, source_lines=lines)
    return policy_class.from_config(config)


def extend_import_path(folders: Sequence[str]) -> None:
    """Put ``folders`` (``--policy-path``) first on ``sys.path``, once each, where ``class =`` modules are looked for.

    Called wherever a policy is built, the proxy's process and each policy
    worker process alike: a worker is forked from a fresh forkserver interpreter and
    must not depend on what the parent's ``sys.path`` or environment held.
    """
    missing = [folder for folder in folders if folder not in sys.path]
    sys.path[:0] = missing
    if missing:
        importlib.invalidate_caches()


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
