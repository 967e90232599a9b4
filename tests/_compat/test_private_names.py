"""Every use of a third-party private name lives in ``capsem_proxyd/_compat/``, and its canary names it.

A private name (``_name``: one leading underscore, not a dunder or a
``_sunder_``) of another library can change in any release; the shims that
rely on one are kept in one folder, each with its library pinned and a canary
(``tests/_compat/test_<shim>.py``). This test walks the syntax tree of every
module of ``capsem_proxyd`` and finds, outside ``_compat``:

* an attribute ``x._name`` (read, written or deleted, or named as a string to
  ``getattr``/``setattr``/``hasattr``/``delattr``) where ``_name`` is not one
  of capsem_proxyd's own private names;
* a private name defined in a class (a method, a class attribute, a
  ``self._name = ...``) that a third-party class in the class's MRO already
  has (an override of, or a write to, their private name);
* ``from library import _name`` or an import from a private module of another
  library.

capsem_proxyd's own private names are those it defines: module globals, class
attributes and methods, ``self._name`` / ``cls._name`` assignments, less the
ones that are overrides of a third-party class's. The names of another library
that capsem_proxyd also happens to define are missed (the check reads names,
not types); the canaries are the line of defence there.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import capsem_proxyd

PACKAGE = Path(capsem_proxyd.__file__).resolve().parent
SHIMS = "capsem_proxyd._compat"
CANARIES = Path(__file__).resolve().parent
# Names with a leading underscore that the standard library documents for use.
DOCUMENTED = {
    "_exit",  # os._exit: the way out of a forked or worker process without running clean-up (os docs)
    "_srcfile",  # logging._srcfile = None: the logging HOWTO's "Optimization" section, to skip caller lookup
}
NAMED_IN_STRINGS = {"getattr", "setattr", "hasattr", "delattr"}


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and not name.endswith("_") and name not in DOCUMENTED


def ours(module_name: str) -> bool:
    return module_name == "capsem_proxyd" or module_name.startswith("capsem_proxyd.")


@dataclass(frozen=True)
class Finding:
    module: str
    line: int
    name: str
    how: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.how} {self.name}"


@dataclass
class Module:
    name: str
    tree: ast.Module
    loaded: types.ModuleType | None  # for the classes' MROs; None: resolved statically only


def project_modules() -> list[Module]:
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        loaded = None
        if not name.endswith("__main__"):  # running __main__ would start the command line
            try:
                loaded = importlib.import_module(name)
            except ImportError:  # an extra not installed (pii, otel): its classes are checked statically
                pass
        modules.append(Module(name, ast.parse(path.read_text(encoding="utf-8")), loaded))
    return modules


def module_from_source(name: str, source: str) -> Module:
    """A module of capsem_proxyd that is not on disk (the detector's own tests)."""
    loaded = types.ModuleType(name)
    exec(compile(source, name, "exec"), loaded.__dict__)
    return Module(name, ast.parse(source), loaded)


# -- the classes, and what of a third party's they define -------------------------------------------------------


def classes(module: Module) -> Iterator[tuple[ast.ClassDef, type | None]]:
    """Every class statement of ``module`` with the class it made (None where it cannot be reached by name:
    a class made inside a function)."""

    def walk(body: list[ast.stmt], owner: object, reachable: bool) -> Iterator[tuple[ast.ClassDef, type | None]]:
        for node in body:
            if isinstance(node, ast.ClassDef):
                made = getattr(owner, node.name, None) if reachable else None
                made = made if isinstance(made, type) else None
                yield node, made
                yield from walk(node.body, made, made is not None)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from walk(node.body, None, False)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for block in (getattr(node, "body", []), getattr(node, "orelse", []), getattr(node, "finalbody", [])):
                    yield from walk(block, owner, reachable)
                for handler in getattr(node, "handlers", []):
                    yield from walk(handler.body, owner, reachable)

    yield from walk(module.tree.body, module.loaded, module.loaded is not None)


def defined_in_class(node: ast.ClassDef) -> Iterator[tuple[str, int]]:
    """The private names a class statement defines: methods, class attributes, ``self._x = ...``."""
    for statement in node.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield statement.name, statement.lineno
            for inner in ast.walk(statement):
                for target in assigned(inner):
                    if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                            and target.value.id in ("self", "cls")):
                        yield target.attr, target.lineno
        for target in assigned(statement):
            if isinstance(target, ast.Name):
                yield target.id, target.lineno


def assigned(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        return [leaf for target in node.targets for leaf in ast.walk(target) if isinstance(leaf, (ast.Name, ast.Attribute))]
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        return [node.target]
    return []


def third_party_definer(made: type, name: str) -> type | None:
    """The first class of another library in ``made``'s MRO that has ``name`` (as an attribute of the class,
    or set as ``self.<name>`` in its source)."""
    for base in made.__mro__[1:]:
        if ours(base.__module__) or base is object:
            continue
        if name in vars(base):
            return base
        try:
            source = inspect.getsource(base)
        except (OSError, TypeError):
            continue
        if re.search(rf"\bself\.{re.escape(name)}\b", source):
            return base
    return None


def overrides(module: Module) -> list[Finding]:
    """Private names a class of ``module`` defines that a third-party class in its MRO already has."""
    found = []
    for node, made in classes(module):
        for name, line in defined_in_class(node):
            if not private(name):
                continue
            if made is None:  # no MRO to ask: a private name in a subclass of another library's class is suspect
                if not all(named_ours(module, base) for base in node.bases):
                    found.append(Finding(module.name, line, name, "defines (in a subclass of another library's)"))
                continue
            definer = third_party_definer(made, name)
            if definer is not None:
                found.append(Finding(module.name, line, name, f"overrides {definer.__module__}.{definer.__qualname__}'s"))
    return found


def named_ours(module: Module, base: ast.expr) -> bool:
    """Whether a base class expression names a class of capsem_proxyd (defined in the module or imported)."""
    if not isinstance(base, ast.Name):
        return False
    for node in ast.walk(module.tree):
        if isinstance(node, ast.ClassDef) and node.name == base.id:
            return True
        if (isinstance(node, ast.ImportFrom) and (node.level > 0 or ours(node.module or ""))
                and any((alias.asname or alias.name) == base.id for alias in node.names)):
            return True
    return False


# -- capsem_proxyd's own private names -------------------------------------------------------------------------


def own_names(modules: list[Module]) -> set[str]:
    """Private names capsem_proxyd defines, less those that override a third party's."""
    names: set[str] = set()
    for module in modules:
        for statement in module.tree.body:
            names |= bound_at_top(statement)
        for node, _ in classes(module):
            names |= {name for name, _ in defined_in_class(node)}
    overridden = {finding.name for module in modules for finding in overrides(module)}
    return {name for name in names if private(name)} - overridden


def bound_at_top(statement: ast.stmt) -> set[str]:
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {statement.name}
    if isinstance(statement, (ast.Import, ast.ImportFrom)):
        return {alias.asname or alias.name.split(".")[0] for alias in statement.names}
    if isinstance(statement, (ast.If, ast.Try)):
        blocks = [statement.body, statement.orelse, getattr(statement, "finalbody", [])]
        blocks += [handler.body for handler in getattr(statement, "handlers", [])]
        return {name for block in blocks for inner in block for name in bound_at_top(inner)}
    return {target.id for target in assigned(statement) if isinstance(target, ast.Name)}


# -- the uses --------------------------------------------------------------------------------------------------


def uses(module: Module, own: set[str]) -> list[Finding]:
    """Private names of other libraries ``module`` reads, writes or imports."""
    found = overrides(module)
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in own:
            found.append(Finding(module.name, node.lineno, node.attr, "uses attribute"))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in NAMED_IN_STRINGS
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and private(node.args[1].value) and node.args[1].value not in own):
            found.append(Finding(module.name, node.lineno, node.args[1].value, f"uses ({node.func.id})"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and not ours(node.module):
            for part in node.module.split("."):
                if private(part):
                    found.append(Finding(module.name, node.lineno, f"{node.module}", "imports from private module"))
            for alias in node.names:
                if private(alias.name):
                    found.append(Finding(module.name, node.lineno, alias.name, f"imports from {node.module}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if not ours(alias.name) and any(private(part) for part in alias.name.split(".")):
                    found.append(Finding(module.name, node.lineno, alias.name, "imports private module"))
    return sorted(set(found), key=lambda finding: (finding.module, finding.line, finding.name))


MODULES = project_modules()
OWN = own_names(MODULES)


def shim(module: Module) -> bool:
    return module.name == SHIMS or module.name.startswith(SHIMS + ".")


def test_no_module_outside_compat_uses_a_private_name_of_another_library() -> None:
    found = [finding for module in MODULES if not shim(module) for finding in uses(module, OWN)]
    assert not found, "move these into capsem_proxyd/_compat/ (a pinned, canary-tested shim):\n" + "\n".join(
        map(str, found))


@pytest.mark.parametrize("module", [module for module in MODULES if shim(module) and module.name != SHIMS],
                         ids=lambda module: module.name)
def test_every_private_name_a_shim_uses_is_named_by_its_canary(module: Module) -> None:
    """Within a shim, only the names the shim itself defines count as its own."""
    canary = CANARIES / f"test_{module.name.rsplit('.', 1)[1]}.py"
    assert canary.exists(), f"{module.name} has no canary ({canary.name})"
    own_here = own_names([module])
    named = canary.read_text(encoding="utf-8")
    missing = [finding for finding in uses(module, own_here) if finding.name.rsplit(".", 1)[-1] not in named]
    assert not missing, f"{canary.name} does not name:\n" + "\n".join(map(str, missing))


# -- the detector on small modules -----------------------------------------------------------------------------

SAMPLE = '''
import httpx
from phonenumbers.phonenumbermatcher import _PATTERN


class Client(httpx.AsyncClient):
    async def _send_single_request(self, request):  # httpx's private method: flagged
        return await super()._send_single_request(request)

    def _remember(self, value):  # a private name of ours in a third-party subclass: fine
        self._remembered = value
        return self._remembered


async def body(response):
    return response._content, getattr(response, "_elapsed")
'''


def test_the_detector_finds_overrides_attributes_strings_and_imports_and_nothing_of_ours() -> None:
    sample = module_from_source("capsem_proxyd.proxy.sample", SAMPLE)
    found = {(finding.line, finding.name) for finding in uses(sample, OWN | own_names([sample]))}
    assert found == {(3, "_PATTERN"), (7, "_send_single_request"), (8, "_send_single_request"),
                     (16, "_content"), (16, "_elapsed")}


def test_without_a_class_to_ask_a_subclass_of_another_librarys_class_is_suspect() -> None:
    source = "import httpx\nfrom capsem_proxyd.errors import ProxyError\n" + (
        "class A(httpx.AsyncClient):\n    def _anything(self): ...\n"
        "class B(ProxyError):\n    def _ours(self): ...\n")
    unloaded = Module("capsem_proxyd.proxy.sample", ast.parse(source), None)
    assert [(finding.line, finding.name) for finding in overrides(unloaded)] == [(4, "_anything")]


def test_an_access_like_response_content_in_the_proxy_would_fail_the_check() -> None:
    upstream = {module.name: module for module in MODULES}["capsem_proxyd.proxy.upstream"]
    source = ast.unparse(upstream.tree) + "\n\ndef peek(response):\n    return response._content\n"
    edited = Module(upstream.name, ast.parse(source), upstream.loaded)
    assert [finding.name for finding in uses(edited, OWN)] == ["_content"]
    assert uses(upstream, OWN) == []
