"""CAPSEM's ``PIIPolicy`` with its private steps turned into public methods a subclass overrides.

capsem 0.3.2's ``PIIPolicy.__init__`` builds its analyzer by calling the
private ``_init_analyzer``, its hooks analyse through the private
``_analyze_text``, and they turn findings into a decision with the private
``_make_decision``. ``PIIPolicyBase`` routes each through a public name:

* ``_init_analyzer`` -> ``build_analyzer()``  (``policies/pii.py``: offline, no download)
* ``_analyze_text``  -> ``analyze_text(text)`` (``policies/pii.py``: errors propagate, fail closed)
* ``decide(...)``    -> ``_make_decision(...)``   (CAPSEM's own decision: entity verdicts, reasons, details)

Left alone, each public method does what CAPSEM does, so this class behaves
as ``PIIPolicy``. Importing this module imports ``capsem.policies.pii_policy``,
which fails without presidio-analyzer (its stray ``from regex import R``):
the PII policy turns that ``ImportError`` into its install hint.

capsem is pinned (``==0.3.2`` in pyproject.toml); ``tests/_compat/test_capsem_pii.py``
is the canary: it fails when the release differs or when ``__init__`` stops
calling ``_init_analyzer``, or either other name changes its shape. It can go
when CAPSEM's PII policy takes an analyzer (or an NLP engine) from its caller.
"""

from __future__ import annotations

from typing import Any

from capsem.models import Decision
from capsem.policies.pii_policy import PIIPolicy


class PIIPolicyBase(PIIPolicy):
    """CAPSEM's PII policy, built, analysing and deciding through public methods."""

    def build_analyzer(self) -> None:
        """Set ``self.analyzer`` (a Presidio ``AnalyzerEngine``); called once by ``PIIPolicy.__init__``."""
        PIIPolicy._init_analyzer(self)

    def analyze_text(self, text: str) -> list[Any]:
        """Presidio's findings in ``text`` for the entities of ``entity_decisions``."""
        result: list[Any] = PIIPolicy._analyze_text(self, text)
        return result

    def decide(self, results: list[Any], hook: str, context: str, *, is_response: bool) -> Decision:
        """CAPSEM's decision on ``results``: the strictest entity verdict, its reason and a summary."""
        return self._make_decision(results, hook, context, is_response=is_response)

    def _init_analyzer(self) -> None:
        self.build_analyzer()

    def _analyze_text(self, text: str) -> list[Any]:
        return self.analyze_text(text)
