"""Hypercorn's trio HTTP server, with connections that end when their client does.

``serve_hypercorn`` runs an ASGI app the way Hypercorn's trio worker does —
its ``Lifespan`` for start-up and shutdown, trio's ``serve_listeners`` over the
already-bound sockets, one Hypercorn ``TCPServer`` per connection — except that
each connection is a ``ClosingTCPServer``. Nothing else in the process is
touched: no Hypercorn module is patched, and another Hypercorn server in the
same process keeps Hypercorn's behaviour.

What ``ClosingTCPServer`` changes, and why:

* **A hang-up stops its request.** Once reading has ended (the client closed
  or reset), everything still running for the connection is cancelled: a
  request waiting on the provider, a stream being relayed; their upstream
  connections close at once. Hypercorn's trio worker never tells the app
  (https://github.com/pgjones/hypercorn/issues/210, "disconnect detection
  broken when running with trio"), and a watcher task per request waiting for
  ``http.disconnect`` (what quart-trio does) cost ~70 us of every request.
* **No CLOSE_WAIT.** When the client's side ends, Hypercorn's connection task
  still waits for its keep-alive timer before it closes the socket, holding
  a file descriptor and a task for up to ``--keep-alive-timeout`` per
  connection (every client that connects and leaves, and every request that
  ends after its client reset it, since the timer restarts then). With
  reading over, the timer is stopped, and a later "keep-alive" wait closes at
  once: nothing more can arrive on such a connection.

* **A whole reply in one write.** Hypercorn writes a reply's head as soon
  as the app starts it and its body when the app sends it: two writes, and
  a client that waits for the reply wakes for a head it can do nothing with
  (py-spy, the bench's agent workload: each write that reaches the client
  runs it on the proxy's core). A head that states a ``Content-Length`` (a
  whole reply: the data plane sends its body right after) is held until
  Hypercorn's next send for the connection, which carries both; a stream's
  head (no length) goes at once. The bytes and their order are Hypercorn's.

It overrides two private methods of ``hypercorn.trio.tcp_server.TCPServer``
(``_read_data``, ``_idle_timeout``) and its public ``protocol_send`` (every
write of the connection passes there, as ``RawData``), calls its private
``_initiate_server_close``, and reads its ``idle_task`` and private
``_task_group`` (a ``hypercorn.trio.task_group.TaskGroup``), and that task
group's private ``_nursery`` (the trio nursery its requests run in, cancelled
when the client is gone): Hypercorn is pinned below its next minor release in
pyproject.toml, and ``tests/_compat/test_hypercorn.py`` fails first if a
release renames or reshapes any of them. The subclass can go when
Hypercorn's trio worker closes a connection at client EOF and cancels or
notifies the app (issue 210 above).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config, Sockets
from hypercorn.events import Event, RawData
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import repr_socket_addr, wrap_app

ASGIApp = Callable[..., Awaitable[None]]

# A reply head is held only when it is small (a head with long headers is worth its own write) and states
# its body's length (a whole reply, whose body the app sends next; a stream's head goes at once).
_HELD_HEAD_BELOW = 16 * 1024
# A body larger than this follows its held head in a write of its own: joining them would copy it.
_JOINED_BODY_BELOW = 256 * 1024


def _whole_reply_head(data: bytes) -> bool:
    """A final (not 1xx) HTTP/1.1 head that states its body's length; an HTTP/2 frame never starts so."""
    return (len(data) < _HELD_HEAD_BELOW and data.startswith(b"HTTP/1.1 ") and data[9:10] != b"1"
            and b"\r\ncontent-length:" in data.lower())


class ClosingTCPServer(TCPServer):
    """One client connection; it ends, and cancels what runs for it, as soon as its client is gone."""

    client_done = False
    held_head = b""

    def protocol_send(self, event: Event) -> Coroutine[Any, Any, None]:
        """Hypercorn's send, a whole reply's head held for the next send (its body) and written with it.

        Not a coroutine function itself: a write with no head held or to hold (each of a stream's writes)
        is Hypercorn's own coroutine, handed back as it is, with no coroutine of ours around it (once per
        event when a provider streams token by token: what a plain Hypercorn relay pays, no more)."""
        if self.held_head or (isinstance(event, RawData) and _whole_reply_head(event.data)):
            return self._send_holding_head(event)
        return super().protocol_send(event)

    async def _send_holding_head(self, event: Event) -> None:
        held = self.held_head
        if held:
            self.held_head = b""
            if isinstance(event, RawData) and len(event.data) < _JOINED_BODY_BELOW:
                event = RawData(data=held + event.data)
            else:
                await super().protocol_send(RawData(data=held))
        elif isinstance(event, RawData) and _whole_reply_head(event.data):
            self.held_head = event.data
            return
        await super().protocol_send(event)

    async def _read_data(self) -> None:
        try:
            await super()._read_data()
        finally:
            self.client_done = True
            await self.idle_task.stop()
            # The client is gone: cancel what still runs for it (a request waiting on the
            # upstream, a stream), which closes its upstream connection at once.
            self._task_group._nursery.cancel_scope.cancel()  # type: ignore[union-attr]

    async def _idle_timeout(self) -> None:
        if not self.client_done:
            await super()._idle_timeout()
            return
        with trio.CancelScope(shield=True):
            await self._initiate_server_close()


async def serve_hypercorn(
    app: ASGIApp,
    config: Config,
    sockets: Sockets,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on the bound ``sockets`` until ``shutdown`` is set; reports the bound URLs.

    After ``shutdown``: no new connections, idle keep-alive connections close,
    requests in flight get ``config.graceful_timeout`` seconds, then the app's
    lifespan shutdown runs.
    """
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan = Lifespan(wrapped, config, {})
    context = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        listeners, binds = _listeners(config, sockets)
        connection = partial(ClosingTCPServer, wrapped, config, context, ConnectionState(lifespan.state.copy()))
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as accepting:
                accepting.start_soon(partial(trio.serve_listeners, connection, listeners, handler_nursery=connections))
                task_status.started(binds)
                await shutdown.wait()
                accepting.cancel_scope.cancel()  # closes the listeners: no new connections
            # Idle keep-alive connections close now; requests in flight get the grace period.
            await context.terminated.set()
            connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


def _listeners(config: Config, sockets: Sockets) -> tuple[list[Any], list[str]]:
    listeners: list[Any] = []
    binds: list[str] = []
    ssl_context = config.create_ssl_context() if sockets.secure_sockets else None
    if ssl_context is not None:
        for sock in sockets.secure_sockets:
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            listeners.append(trio.SSLListener(listener, ssl_context, https_compatible=True))
            binds.append(f"https://{repr_socket_addr(sock.family, sock.getsockname())}")
    for sock in sockets.insecure_sockets:
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
    return listeners, binds

