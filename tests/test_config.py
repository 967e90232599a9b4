"""Settings are declared once (``capsem_proxyd/config.py``): the command line, the environment,
the ``config`` output, the README and the reload's restart warnings all follow the declaration."""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Any

from capsem_proxyd.config import DEFAULTS, Settings, declaration, declared, envvar, option_name, restart_only_changes
from tests.support.daemon import daemon_env, run_cli

README = Path(__file__).resolve().parents[1] / "README.md"
HINTS = typing.get_type_hints(Settings)


def _other_value(name: str) -> tuple[str, Any]:
    """A value unlike the default, as an environment string and as the Settings value."""
    item = next(field for field in declared() if field.name == name)
    spec, default, hint = declaration(item), item.default, HINTS[name]
    if hint is bool:
        return ("false" if default else "true"), not default
    if spec.choices:
        other = next(choice for choice in spec.choices if choice != default)
        return other, other
    if hint is int:
        value = default + 1 if spec.maximum is None or default + 1 <= spec.maximum else default - 1
        return str(value), value
    if hint is float:
        return str(default + 1.5), default + 1.5
    if typing.get_origin(hint) is tuple and spec.folder:  # existing folders, separated as in PYTHONPATH
        return os.pathsep.join(["/tmp", "/"]), ("/tmp", "/")
    if spec.named_url:  # MCP servers: NAME=URL each
        return "a=http://127.0.0.1:9/a b=http://127.0.0.1:9/b", ("a=http://127.0.0.1:9/a", "b=http://127.0.0.1:9/b")
    if name == "mcp_headers":  # SERVER=Header, for the servers above
        return "a=x-team b=x-team", ("a=x-team", "b=x-team")
    if name == "mcp_timeouts":  # SERVER=SECONDS, for the servers above
        return "a=2.5 b=30", ("a=2.5", "b=30")
    if name == "mcp_redact_passthrough":  # SERVER/TOOL, for the servers above
        return "a/write b/send", ("a/write", "b/send")
    if typing.get_origin(hint) is tuple:
        return "a b", ("a", "b")
    if spec.upstream:
        return f"http://127.0.0.1:9/{name}", f"http://127.0.0.1:9/{name}"
    return f"/tmp/{name}", f"/tmp/{name}"


def test_every_setting_reads_its_environment_variable_and_config_says_so() -> None:
    values = {item.name: _other_value(item.name) for item in declared()}
    env = daemon_env(**{envvar(item): values[item.name][0] for item in declared()})
    result = run_cli("config", env=env)
    assert result.returncode == 0, result.stderr
    shown = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    # the placeholder key's id (issue 23) follows the settings: it is read from the state directory, not set
    assert shown.pop("placeholder_key_id").split()[1] in ("None", repr(None))
    assert list(shown) == [item.name for item in declared()]  # in declaration order, every one
    for item in declared():
        assert repr(values[item.name][1]) in shown[item.name], shown[item.name]
        assert shown[item.name].endswith("(environment)"), shown[item.name]


def test_flags_are_generated_with_their_defaults_and_help() -> None:
    result = run_cli("start", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for item in declared():
        name = option_name(item)
        flag = f"--{name} / --no-{name}" if HINTS[item.name] is bool else f"--{name}"
        assert flag in text, flag
        first_words = " ".join(declaration(item).help.split()[:4])
        assert first_words in text, (flag, first_words)


def test_the_readme_documents_every_setting() -> None:
    table = README.read_text()
    documented = set(re.findall(r"`--([a-z0-9-]+)", table))
    missing = [option_name(item) for item in declared() if option_name(item) not in documented]
    assert missing == []


def test_a_reload_names_the_settings_it_cannot_apply() -> None:
    assert restart_only_changes(DEFAULTS, Settings(port=9001, stream_holdback=12, policy_dir="/p")) == [
        "port", "stream_holdback"]
    assert restart_only_changes(DEFAULTS, Settings(policy_dir="/p", confirm_action="allow", policy_timeout=3)) == []


def test_the_readme_lists_exactly_what_a_reload_applies() -> None:
    """The operator reads which settings a SIGHUP applies from the README; the settings' own
    declarations (``reloads=True``) decide it. The README's list once left out --log-level's restart."""
    text = " ".join(README.read_text().split())
    found = re.search(r"A reload applies (`--.*?), and reopens the audit", text)
    assert found, "the README lost its list of what a reload applies"
    sentence = found.group(1)
    listed = set(re.findall(r"`--([a-z0-9-]+)`", sentence))
    reloading = {option_name(item) for item in declared() if declaration(item).reloads}
    assert listed == reloading
