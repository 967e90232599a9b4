"""capsem-proxyd: an LLM security proxy that enforces CAPSEM policies on every call."""

from capsem_proxyd._compat.capsem import import_capsem

__version__ = "0.1.0"

import_capsem()  # before any module of ours imports capsem (see _compat/capsem.py)
