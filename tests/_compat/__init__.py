"""Canaries of the shims in ``capsem_proxyd/_compat/``: each names every private name its shim reads or sets."""
