"""capsem-proxyd: an LLM security proxy that enforces CAPSEM policies on every call."""

__version__ = "0.1.0"
