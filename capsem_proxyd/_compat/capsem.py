"""Import ``capsem`` without ``networkx``, which it imports and never uses.

capsem 0.3.2's ``capsem/policies/policy.py`` says ``from networkx import
Graph`` and never uses the name. networkx is some 285 modules: 28 MiB of
resident memory in the proxy and again in every policy worker process, a
third of what the proxy needs in all.

So while capsem is first imported, ``networkx`` is a stand-in module whose
only name is ``Graph``, a class that builds the real ``networkx.Graph`` if
anyone ever instantiates it. The stand-in is taken out of ``sys.modules`` as
soon as capsem is imported: any later ``import networkx`` (a third-party
policy's, say) gets the real package. Where capsem or networkx was imported
before capsem_proxyd, nothing is done.

capsem is pinned (``==0.3.2`` in pyproject.toml) and
``tests/_compat/test_capsem.py`` is the canary: it fails when capsem uses
``Graph`` for anything but that import, and when importing the daemon loads
networkx after all. This module can go when capsem drops the import.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class DeferredGraph:
    """What capsem imports as ``networkx.Graph``: the real one, built only if it is ever used."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from networkx import Graph  # the real package: the stand-in was removed after capsem's import

        return Graph(*args, **kwargs)


def import_capsem() -> None:
    """Import capsem (once per process) with ``networkx`` stood in for."""
    if "capsem" in sys.modules or "networkx" in sys.modules:
        return
    stand_in = types.ModuleType("networkx", "Stands in while capsem is imported (capsem_proxyd._compat.capsem).")
    stand_in.Graph = DeferredGraph  # type: ignore[attr-defined]
    sys.modules["networkx"] = stand_in
    try:
        import capsem  # noqa: F401 - imports capsem.policies.policy, the module that names networkx
    finally:
        if sys.modules.get("networkx") is stand_in:
            del sys.modules["networkx"]
