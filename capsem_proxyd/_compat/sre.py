"""The standard library's regex parser, the one ``re.compile`` runs: read in one place.

Our matchers reason about a policy's regex the way Python will run it: its
widest match (``policies/holdback.py``), its DFA for the stream hold-back
(``policies/dfa.py``, ``policies/pattern_holdback.py``), the literal keywords a
Secrets rule cannot match without (``policies/secret_rules.py``), where a match
of spaCy's suffix pattern can start (``_compat/presidio.py``'s
``EndAnchoredSearch``). Parsing the
pattern with a second parser could read it differently from ``re``; so they
use ``re``'s own, ``re._parser`` (``sre_parse`` before Python 3.11), a private
module whose shapes may change with any Python release.

Everything of it the package uses is named here, and
``tests/_compat/test_sre.py`` is the canary: it checks ``parse`` still gives
the opcodes, operands and ``getwidth`` these readers expect, on the Python the
project allows (``requires-python``).
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported by name: the modules ship no type stubs (private), and the private-name check reads imports.
_parser: Any = importlib.import_module("re._parser")
_constants: Any = importlib.import_module("re._constants")

parse: Any = _parser.parse  # (pattern, flags=0) -> SubPattern: a list of (opcode, operand) pairs
SubPattern: Any = _parser.SubPattern
MAXREPEAT: int = _constants.MAXREPEAT  # a repeat's upper bound when it has none ({n,}, +, *)
