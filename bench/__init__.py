"""Side-by-side benchmark: direct upstream, nginx as a reverse proxy,
capsem-proxy 0.1.0 (PyPI) and capsem-proxyd, under the same load.

Run ``uv run python -m bench --help``. Everything binds to loopback; the proxy
under test is pinned to core 0, the load generator and the upstream to core 1,
so every extra microsecond on core 0 is the proxy's own cost.
"""
