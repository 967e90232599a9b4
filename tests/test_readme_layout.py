"""The README's "## Layout" section names the package as it is: nothing named there is missing from the
tree, and nothing in the tree is left out of it.

A newcomer finds their way by that section, and later issues cite it; a rename that forgets it leaves a
map that lies. This test reads the fenced block under "## Layout" the way a person does:

- The package tree starts at the line ``capsem_proxyd/`` and ends at the next line indented no deeper
  than it (``tests/``, ``bench/``).
- A line starts with the names it is about, separated by single spaces (``http/``, ``engine.py``,
  ``guard.py cors.py``), then two or more spaces and what they do. A line that starts with prose is
  the continuation of the entry above it.
- Names one step deeper than ``capsem_proxyd/`` are top-level modules and packages; names deeper than
  a package's line are its modules. A ``name.py`` written in a package's description (``policy/
  engine.py (...), loader.py (...)``) names a module of that package too, unless it is a top-level
  module of the same name (``cli.py (click, generated from config.py)``).
- A name may be a pattern (``openai_*.py``) to stand for a family of modules.

What is required: every name exists; every top-level module and package is named; and in a package
whose modules the section names at all, every module is named (``__init__.py``/``__main__.py`` need
not be).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "capsem_proxyd"
EXEMPT = {"__init__.py", "__main__.py"}
NAME = re.compile(r"^[\w*.-]+(\.py|/)$")
PROSE_MODULE = re.compile(r"(?<![\w/.])([\w*]+\.py)\b")


@dataclass
class Layout:
    """What the section names: top-level entries, and per package the module names it gives."""

    top: set[str] = field(default_factory=set)  # "config.py", "http/"
    modules: dict[str, set[str]] = field(default_factory=dict)  # "http/" -> {"app.py", ...}
    mentioned: dict[str, set[str]] = field(default_factory=dict)  # modules named only in prose


def layout_block(readme: str) -> list[str]:
    """The lines of the first fenced block after the "## Layout" heading."""
    heading = re.search(r"^## Layout[ \t]*$", readme, re.MULTILINE)
    assert heading, 'README.md has no "## Layout" section'
    fence = re.search(r"^```[^\n]*\n(.*?)^```", readme[heading.end():], re.MULTILINE | re.DOTALL)
    assert fence, 'the "## Layout" section of README.md has no fenced block'
    return fence.group(1).splitlines()


def leading_names(text: str) -> list[str]:
    """The names a line starts with (``a.py b.py``, ``http/``), before the first run of two spaces."""
    head = re.split(r"\s{2,}", text.strip(), maxsplit=1)[0]
    words = head.split(" ")
    if all(NAME.match(word) for word in words):
        return words
    return []


def indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def parse(lines: list[str]) -> Layout:
    start = next((number for number, line in enumerate(lines) if line.strip() == f"{PACKAGE}/"), None)
    assert start is not None, f"the layout block has no line '{PACKAGE}/'"
    root = indent(lines[start])
    layout = Layout()
    package: str | None = None  # the package whose entry (or a module of it) the current line belongs to
    package_indent = 0
    top_indent: int | None = None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        depth = indent(line)
        if depth <= root:
            break
        names = leading_names(line)
        if top_indent is None:
            top_indent = depth
        if names and depth == top_indent:
            package = names[0] if names[0].endswith("/") else None
            package_indent = depth
            layout.top.update(names)
            if package:
                layout.modules.setdefault(package, set())
                layout.mentioned.setdefault(package, set())
                description = re.split(r"\s{2,}", line.strip(), maxsplit=1)[1:]
                layout.mentioned[package].update(PROSE_MODULE.findall(" ".join(description)))
            continue
        if package is None:
            continue
        if names and depth > package_indent:
            layout.modules[package].update(names)
            description = re.split(r"\s{2,}", line.strip(), maxsplit=1)[1:]
            layout.mentioned[package].update(PROSE_MODULE.findall(" ".join(description)))
        else:
            layout.mentioned[package].update(PROSE_MODULE.findall(line))
    return layout


def tree() -> tuple[set[str], dict[str, set[str]]]:
    """The package as it is: top-level modules and packages, and each package's modules and subpackages."""
    base = ROOT / PACKAGE
    top: set[str] = set()
    modules: dict[str, set[str]] = {}
    for entry in base.iterdir():
        if entry.is_dir() and (entry / "__init__.py").exists():
            top.add(entry.name + "/")
            modules[entry.name + "/"] = {
                child.name + ("/" if child.is_dir() else "")
                for child in entry.iterdir()
                if (child.suffix == ".py" and child.name not in EXEMPT) or (child / "__init__.py").exists()
            }
        elif entry.suffix == ".py" and entry.name not in EXEMPT:
            top.add(entry.name)
    return top, modules


def matches(pattern: str, names: set[str]) -> set[str]:
    return {name for name in names if fnmatch.fnmatchcase(name, pattern)}


def read_layout() -> Layout:
    return parse(layout_block((ROOT / "README.md").read_text(encoding="utf-8")))


def test_every_name_in_the_layout_exists() -> None:
    layout = read_layout()
    top, modules = tree()
    missing = [f"{PACKAGE}/{name}" for name in sorted(layout.top) if not matches(name, top)]
    for package, names in sorted(layout.modules.items()):
        missing += [f"{PACKAGE}/{package}{name}" for name in sorted(names) if not matches(name, modules.get(package, set()))]
    for package, names in sorted(layout.mentioned.items()):
        missing += [
            f"{PACKAGE}/{package}{name} (in the description of {package})"
            for name in sorted(names)
            if not matches(name, modules.get(package, set())) and not matches(name, top)
        ]
    assert not missing, "README.md's Layout names what the tree does not have:\n  " + "\n  ".join(missing)


def test_everything_in_the_tree_is_named_in_the_layout() -> None:
    layout = read_layout()
    top, modules = tree()
    unnamed = [f"{PACKAGE}/{name}" for name in sorted(top) if not any(fnmatch.fnmatchcase(name, p) for p in layout.top)]
    for package, named in sorted(layout.modules.items()):
        given = named | layout.mentioned.get(package, set())
        if not given:
            continue  # the section describes this package as a whole
        unnamed += [
            f"{PACKAGE}/{package}{name}"
            for name in sorted(modules.get(package, set()))
            if not any(fnmatch.fnmatchcase(name, pattern) for pattern in given)
        ]
    assert not unnamed, "the tree has what README.md's Layout does not name:\n  " + "\n  ".join(unnamed)


SAMPLE = """\
intro
## Layout

Some words.

```
capsem_proxyd/
  config.py errors.py   the shared vocabulary: every setting declared once,
                        every error built once
  http/          the edge
    app.py         the control plane
    guard.py cors.py  framing checks; the CORS policy
  policy/        engine.py (views to hooks), loader.py (policy folders), and
                 split.py, generated from config.py
  dialects/      one module per provider API
    openai_*.py    the OpenAI APIs
tests/           mirrors the package (http/, proxy/)
```

## Next
"""


def test_the_parser_reads_names_modules_and_prose_mentions() -> None:
    layout = parse(layout_block(SAMPLE))
    assert layout.top == {"config.py", "errors.py", "http/", "policy/", "dialects/"}
    assert layout.modules["http/"] == {"app.py", "guard.py", "cors.py"}
    assert layout.modules["policy/"] == set()
    assert layout.mentioned["policy/"] == {"engine.py", "loader.py", "split.py", "config.py"}
    assert layout.modules["dialects/"] == {"openai_*.py"}
    assert "proxy/" not in layout.top  # tests/ ended the package tree
