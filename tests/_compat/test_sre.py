"""Canary for ``capsem_proxyd/_compat/sre.py``: the stdlib regex parser still reads patterns the way our readers expect.

``policies/holdback.py`` (a regex's widest match), ``policies/dfa.py`` and
``policies/pattern_holdback.py`` (the stream hold-back's DFA) and
``policies/secret_rules.py`` (a rule's literal keywords) walk ``re._parser``'s
parse: a list of ``(opcode, operand)`` pairs whose opcodes print as their
names. A Python release that changes those shapes fails here, by name, before
a hold-back silently reads a pattern wrong.
"""

from __future__ import annotations

import re

from capsem_proxyd._compat import sre

# Every opcode name the readers compare ``str(op)`` with.
OPCODES = {"ANY", "ASSERT", "ASSERT_NOT", "ATOMIC_GROUP", "BRANCH", "CATEGORY", "GROUPREF", "GROUPREF_EXISTS",
           "IN", "LITERAL", "MAX_REPEAT", "MIN_REPEAT", "NEGATE", "NOT_LITERAL", "POSSESSIVE_REPEAT", "RANGE",
           "SUBPATTERN"}
CATEGORIES = {"CATEGORY_DIGIT", "CATEGORY_NOT_DIGIT", "CATEGORY_NOT_SPACE", "CATEGORY_NOT_WORD", "CATEGORY_SPACE",
              "CATEGORY_WORD"}


def names(parsed: object) -> set[str]:
    """Every opcode and category name in a parse, nested ones included."""
    found: set[str] = set()

    def walk(item: object) -> None:
        if isinstance(item, (list, tuple, sre.SubPattern)):
            for part in item:
                walk(part)
        elif type(item).__name__ == "_NamedIntConstant":
            found.add(str(item))

    walk(list(parsed))  # type: ignore[call-overload]
    return found


def test_the_parser_gives_opcode_pairs_that_print_as_their_names() -> None:
    pattern = r"(?:a|b)*?c[^d-f\s\w\d]{2,}(?=x)(?!y)(?>z)\W\S\D.x++(a)(?(1)b|c)\1"
    parsed = sre.parse(pattern)
    assert isinstance(parsed, sre.SubPattern)
    assert names(parsed) >= OPCODES - {"GROUPREF", "BRANCH", "NOT_LITERAL"}
    assert {"BRANCH", "NOT_LITERAL"} <= names(sre.parse(r"ab|cd|[^e]"))
    assert "GROUPREF" in names(sre.parse(r"(a)\1"))
    assert names(sre.parse(r"\W\S\D")) >= {"CATEGORY_NOT_WORD", "CATEGORY_NOT_SPACE", "CATEGORY_NOT_DIGIT"}
    assert names(sre.parse(r"[\w\W\s\S\d\D]")) >= CATEGORIES
    opcode, (low, high, _) = sre.parse("a{2,}")[0]
    assert str(opcode) == "MAX_REPEAT" and low == 2 and high == sre.MAXREPEAT


def test_getwidth_bounds_a_pattern_as_re_runs_it() -> None:
    assert sre.parse("ab{2,4}", re.IGNORECASE).getwidth() == (3, 5)
    assert sre.parse("a+").getwidth()[1] >= sre.MAXREPEAT


def test_branches_ending_at_the_end_read_as_presidio_s_suffix_search_reads_them() -> None:
    """``EndAnchoredSearch`` (``_compat/presidio.py``): a top-level alternation is one BRANCH whose branches are
    sub-patterns, each ending with (AT, AT_END) for ``$``; a lookbehind consumes no width; ``\\.\\.+`` is a LITERAL
    then a MAX_REPEAT of that LITERAL."""
    items = list(sre.parse(r"(?<=[0-9])km$|\.\.+$|ab$"))
    assert len(items) == 1 and str(items[0][0]) == "BRANCH"
    branches = items[0][1][1]
    assert [(str(list(branch)[-1][0]), str(list(branch)[-1][1])) for branch in branches] == [("AT", "AT_END")] * 3
    assert branches[0].getwidth() == (2, 2) and branches[2].getwidth() == (2, 2)
    literal, repeat, _ = list(branches[1])
    assert str(literal[0]) == "LITERAL" and literal[1] == ord(".") and str(repeat[0]) == "MAX_REPEAT"
    low, high, repeated = repeat[1]
    assert (low, high) == (1, sre.MAXREPEAT) and [(str(op), av) for op, av in repeated] == [("LITERAL", ord("."))]


def test_no_module_outside_the_shims_imports_a_private_module_by_name() -> None:
    """``importlib.import_module("re._parser")`` hides a private module from the import check
    (``test_private_names.py`` reads import statements): outside ``_compat/`` no such call is made."""
    from pathlib import Path

    import capsem_proxyd

    package = Path(capsem_proxyd.__file__).resolve().parent
    by_name = re.compile(r"""import_module\(\s*["'][\w.]*\._\w""")
    found = [str(path.relative_to(package)) for path in package.rglob("*.py")
             if "_compat" not in path.parts and by_name.search(path.read_text(encoding="utf-8"))]
    assert found == []
