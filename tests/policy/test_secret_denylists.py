"""``secret_denylists``: detect-secrets' rules copied as data, checked against the installed release.

The proxy's process reads the Secrets rules from ``secret_denylists`` instead of
importing detect-secrets (whose package imports ``requests``, ``urllib3`` and
``charset_normalizer``: ~5 MiB of resident memory). Here the copy is compared
with what the installed detect-secrets gives (every plugin's denylist, in order,
with its flags; the AWS label words), the two checks with detect-secrets' own on
generated values, and a started policy set is shown to leave detect-secrets and
``requests`` unimported. When detect-secrets changes a rule, the first test
fails: ``uv run python -m tests.policy.test_secret_denylists`` prints the table
to paste into ``capsem_proxyd/policies/secret_denylists.py``.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
from detect_secrets.filters.heuristic import is_sequential_string as their_sequential
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from hypothesis import given
from hypothesis import strategies as st

from capsem_proxyd.policies.secret_denylists import (
    AWS_SECRET_KEYWORD,
    DENYLISTS,
    Denylisted,
    is_sequential_string,
    jwt_formally_valid,
)

ROOT = Path(__file__).resolve().parents[2]


def installed() -> tuple[Denylisted, ...]:
    """Every plugin's denylist as the installed detect-secrets gives it."""
    return tuple(
        Denylisted(kind, plugin.__name__, index, int(pattern.flags), pattern.pattern)
        for kind, plugin in get_mapping_from_secret_type_to_class().items()
        for index, pattern in enumerate(getattr(plugin, "denylist", ()))
    )


def render() -> str:
    """The ``DENYLISTS`` table as ``secret_denylists.py`` writes it."""
    rows = "\n".join(f"    Denylisted({row.kind!r}, {row.plugin!r}, {row.position}, {row.flags},\n"
                     f"               {row.pattern!r})," for row in installed())
    return f"DENYLISTS: tuple[Denylisted, ...] = (\n{rows}\n)\n"


def test_the_copy_is_the_installed_detect_secrets_rules() -> None:
    assert installed() == DENYLISTS, "detect-secrets changed its rules: run python -m tests.policy.test_secret_denylists"
    assert AWSKeyDetector.secret_keyword == AWS_SECRET_KEYWORD


_BASE64ISH = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_.", max_size=40)


@given(st.one_of(_BASE64ISH, st.text(max_size=20), st.sampled_from(["ABCDEF", "0123456789", "abcdefgh", "XYZ=/",
                                                                      "789ABC", "+/", "ABCDEFGHIJKLMNOPQRSTUVWXYZA"])))
def test_the_sequential_string_filter_is_detect_secrets_own(value: str) -> None:
    assert is_sequential_string(value) == their_sequential(value)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_JSON_PART = st.dictionaries(st.text(max_size=5), st.integers(), max_size=3).map(lambda value: _b64(
    json.dumps(value).encode()))
_TOKENS = st.one_of(
    st.lists(st.one_of(_JSON_PART, _BASE64ISH, st.binary(max_size=12).map(_b64)), min_size=1, max_size=4).map(".".join),
    _BASE64ISH, st.text(max_size=30),
)


@given(_TOKENS)
def test_the_jwt_check_is_detect_secrets_own(token: str) -> None:
    assert jwt_formally_valid(token) == JwtTokenDetector.is_formally_valid(token)


def test_a_policy_set_with_secrets_leaves_detect_secrets_and_requests_unimported() -> None:
    """What the copy is for: the proxy's process runs the Secrets rules without detect-secrets' imports."""
    script = (
        "import sys\n"
        "from capsem_proxyd.enforcement.loader import load_policy_set\n"
        "policy_set = load_policy_set(None)\n"
        "print(policy_set.names, sorted(name for name in ('detect_secrets', 'requests', 'charset_normalizer')"
        " if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "['Debug', 'Secrets'] []"


if __name__ == "__main__":
    print(render(), end="")
