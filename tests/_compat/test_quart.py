"""Canary for the quart-trio subclass (``capsem_proxyd/_compat/quart.py``).

The subclass overrides quart's private ``ASGIHTTPConnection._send_response``
(and calls it through ``super()``); a quart or quart-trio release that renames
or reshapes it must fail here, by name, before the keep-alive bug it works
around comes back silently.
"""

from __future__ import annotations

import inspect

from packaging.version import Version
from quart.asgi import ASGIHTTPConnection
from quart_trio.asgi import TrioASGIHTTPConnection

from capsem_proxyd._compat.quart import ShieldedLastSend
from capsem_proxyd.http.app import ControlPlane
from tests._compat.pins import assert_below_next_minor


def test_the_private_method_overridden_still_exists_with_its_shape() -> None:
    send_response = getattr(ASGIHTTPConnection, "_send_response", None)
    assert inspect.iscoroutinefunction(send_response)
    assert list(inspect.signature(send_response).parameters) == ["self", "send", "response"]
    assert "_send_response" not in vars(TrioASGIHTTPConnection)  # quart-trio inherits quart's: the one we wrap
    assert "_send_response" in vars(ShieldedLastSend)
    assert issubclass(ShieldedLastSend, TrioASGIHTTPConnection)


def test_installed_only_on_the_control_plane() -> None:
    assert ControlPlane.asgi_http_class is ShieldedLastSend
    from quart_trio import QuartTrio

    assert QuartTrio.asgi_http_class is TrioASGIHTTPConnection  # untouched for everyone else


def test_versions_are_the_ones_the_subclass_was_written_for_and_pinned_below_the_next_minor() -> None:
    assert Version("0.12") <= assert_below_next_minor("quart-trio") < Version("0.13")
    assert Version("0.20") <= assert_below_next_minor("quart") < Version("0.23")
