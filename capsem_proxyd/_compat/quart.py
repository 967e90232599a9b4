"""quart-trio's HTTP connection, with the last send of every response shielded.

Why: that send makes Hypercorn recycle the connection, which tells the app the
request is over (``http.disconnect``); quart-trio's ``TrioASGIHTTPConnection``
answers by cancelling the request's nursery while that very send is still
running, and the cancellation lands in Hypercorn's restart of its keep-alive
timer. Without the shield, a keep-alive connection is never timed out after
its first control-plane request: a health checker's idle connection, or one
trickling a second request's headers, stays open for good. Hypercorn shields
its socket writes itself, so this adds no new way to block.

Installed only where it is used: ``ControlPlane.asgi_http_class`` (``app.py``).
It relies on quart's private ``ASGIHTTPConnection._send_response`` (quart
0.20-0.22, quart-trio 0.12; pinned below the next minor in pyproject.toml, and
``tests/_compat/test_quart.py`` fails first if a release moves it). It can
go when quart-trio stops cancelling the request's nursery while its final send
runs (https://github.com/pgjones/quart-trio/issues: handle_request cancels
``nursery.cancel_scope`` on ``http.disconnect``).
"""

from __future__ import annotations

from typing import Any

import trio
from quart_trio.asgi import TrioASGIHTTPConnection


class ShieldedLastSend(TrioASGIHTTPConnection):
    async def _send_response(self, send: Any, response: Any) -> None:
        async def send_last_shielded(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):
                    await send(message)
            else:
                await send(message)

        await super()._send_response(send_last_shielded, response)
