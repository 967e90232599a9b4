"""Canary for ``capsem_proxyd/_compat/capsem.py``: capsem imported without networkx, which it never uses."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import capsem.policies.policy

from tests._compat.pins import assert_exact


def test_capsem_names_graph_only_in_its_import() -> None:
    """If capsem starts using ``Graph`` (or moves the import), the stand-in must be looked at again."""
    assert str(assert_exact("capsem")) == "0.3.2", "capsem changed: does it still import networkx for nothing?"
    source = inspect.getsource(capsem.policies.policy)
    assert re.findall(r".*\bGraph\b.*", source) == ["from networkx import Graph"]


def test_the_daemon_never_loads_networkx_and_a_later_import_gets_the_real_one() -> None:
    program = """
import sys
import capsem_proxyd.daemon.cli, capsem_proxyd.http.app, capsem_proxyd.policies.debug, capsem_proxyd.policies.rules
import capsem.policies.policy

from tests._compat.pins import assert_exact
assert "networkx" not in sys.modules, "networkx was loaded"
import networkx
assert networkx.Graph.__module__.startswith("networkx."), networkx.Graph
print(type(capsem.policies.policy.Graph()).__module__)
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "networkx.classes.graph"  # what capsem holds still builds the real Graph


def test_nothing_is_stood_in_when_networkx_came_first() -> None:
    program = """
import sys
import networkx
import capsem_proxyd
import capsem.policies.policy

from tests._compat.pins import assert_exact
assert capsem.policies.policy.Graph is networkx.Graph
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
