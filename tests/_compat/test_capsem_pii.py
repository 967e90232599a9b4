"""Canary for ``capsem_proxyd/_compat/capsem_pii.py``: CAPSEM's PIIPolicy, its private steps made public.

``PIIPolicyBase`` overrides capsem's private ``PIIPolicy._init_analyzer``
(which ``PIIPolicy.__init__`` calls) and ``PIIPolicy._analyze_text`` (which
its hooks call), calls both as the defaults of ``build_analyzer`` and
``analyze_text``, and calls the private ``PIIPolicy._make_decision`` from
``decide``. capsem is pinned exactly.
"""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("presidio_analyzer", reason="the 'pii' extra is not installed")

from capsem.models import Verdict  # noqa: E402
from capsem.policies.pii_policy import PIIPolicy  # noqa: E402

from capsem_proxyd._compat.capsem_pii import PIIPolicyBase  # noqa: E402
from capsem_proxyd.policies.pii import OfflinePIIPolicy  # noqa: E402
from tests._compat.pins import assert_exact  # noqa: E402


def test_capsem_is_pinned_exactly_to_the_release_installed() -> None:
    assert str(assert_exact("capsem")) == "0.3.2"


def test_the_private_steps_keep_their_shapes_and_callers() -> None:
    parameters = {name: list(inspect.signature(getattr(PIIPolicy, name)).parameters)
                  for name in ("_init_analyzer", "_analyze_text", "_make_decision")}
    assert parameters == {
        "_init_analyzer": ["self"],
        "_analyze_text": ["self", "text"],
        "_make_decision": ["self", "results", "callback_name", "context", "is_response"],
    }
    assert "self._init_analyzer()" in inspect.getsource(PIIPolicy.__init__)
    assert "self._analyze_text(" in inspect.getsource(PIIPolicy.on_model_call)
    assert {"_init_analyzer", "_analyze_text"} <= set(vars(PIIPolicyBase))


def test_the_policy_is_built_analyses_and_decides_through_the_public_names() -> None:
    policy = OfflinePIIPolicy.from_config({"entity_decisions": {"EMAIL_ADDRESS": "BLOCK"}, "ner": False})
    assert policy is not None and policy.analyzer is not None  # built by build_analyzer, from PIIPolicy.__init__
    results = policy._analyze_text("write to someone@example.com")  # what capsem's own hooks call
    assert [result.entity_type for result in results] == ["EMAIL_ADDRESS"]
    decision = policy.decide(results, "on_model_call", "prompt", is_response=False)
    assert decision.verdict == Verdict.BLOCK and decision.callback == "on_model_call"
    assert "EMAIL_ADDRESS(count=1" in decision.details and decision.details.startswith("PII detected in prompt")
    assert policy.decide([], "on_model_call", "prompt", is_response=False).verdict == Verdict.ALLOW
