"""Property tests run under the suite's hypothesis profile (``tests/conftest.py``): no per-example
deadline and the same examples every run, so a loaded CI machine cannot fail them on timing or on a
seed. This checks the profile is in force and that no test takes the deadline back."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import settings

TESTS = Path(__file__).resolve().parent
# A deadline given in a hypothesis settings(...) or profile, other than "deadline=None".
DEADLINE = re.compile(r"(settings|register_profile)\(.*\bdeadline\s*=\s*(?!None\b)")


def test_the_loaded_profile_has_no_deadline_and_fixed_examples() -> None:
    current = settings()
    assert current.deadline is None
    assert current.derandomize
    assert current.database is None  # nothing written into the repository


def test_no_test_gives_a_deadline_back() -> None:
    offenders = [
        f"{path.relative_to(TESTS.parent)}:{number}: {line.strip()}"
        for path in sorted(TESTS.rglob("*.py"))
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if DEADLINE.search(line)
    ]
    assert not offenders, "a per-example deadline fails property tests on a loaded machine:\n  " + "\n  ".join(offenders)
