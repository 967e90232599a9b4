"""What pyproject.toml pins a shim's library to, and whether the installed release is inside that pin."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def pin(distribution: str) -> SpecifierSet:
    """The version specifier pyproject.toml gives ``distribution`` (dependencies or an extra)."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    found = [Requirement(text) for text in requirements if canonicalize_name(Requirement(text).name) == distribution]
    assert len(found) == 1, f"{distribution} is not required (once) in pyproject.toml"
    return found[0].specifier


def assert_below_next_minor(distribution: str) -> Version:
    """The installed release is inside the pin, and the pin stops below the installed release's next minor."""
    installed = Version(version(distribution))
    specifier = pin(distribution)
    assert specifier.contains(installed, prereleases=True), f"{distribution} {installed} is outside {specifier}"
    next_minor = Version(f"{installed.major}.{installed.minor + 1}")
    assert not specifier.contains(next_minor, prereleases=True), f"{distribution} {specifier} admits {next_minor}"
    assert not specifier.contains(Version(f"{installed.major + 1}"), prereleases=True), specifier
    return installed


def assert_exact(distribution: str) -> Version:
    """The pin is ``==`` one release, and that release is the one installed."""
    installed = Version(version(distribution))
    specifier = pin(distribution)
    assert [(spec.operator, Version(spec.version)) for spec in specifier] == [("==", installed)], (
        f"{distribution} must be pinned exactly (==), to the release installed ({installed}), not {specifier}")
    return installed
