"""The MCP hop against a server that misbehaves: a raw upstream on a socket, driven by the test.

Each scenario is a path of the raw server: ``/slow`` opens an event stream and waits (it records when
the proxy closes the connection), ``/redirect`` answers 307 to another origin, ``/big`` sends many
small events and then one larger than ``--mcp-max-message-size``, ``/bom`` starts its stream with a
byte-order mark, ``/latin1`` sends an event that is not UTF-8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from tests.e2e.test_mcp_hop import CREDENTIAL, PROTOCOL
from tests.support.daemon import free_port
from tests.support.mcp_server import MARKER

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
SMALL = b"data: " + b'{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"' + \
    b"x" * 700 + b'"}}' + b"\n\n"


class RawUpstream:
    """A socket server speaking just enough HTTP/1.1; ``closed`` is set when a /slow request's
    connection is closed by the proxy."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.closed = trio.Event()
        self.stream_open = trio.Event()

    @staticmethod
    async def read_head(stream: trio.SocketStream) -> bytes | None:
        """The request's head and what arrived after it (None: the proxy hung up first)."""
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return None
            head += chunk
        return head

    async def serve(self, stream: trio.SocketStream) -> None:
        received = await self.read_head(stream)
        if received is None:
            return
        head, _, body = received.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:  # read the whole request: closing with unread bytes sends a reset, not a FIN,
            chunk = await stream.receive_some(65536)  # and the reply could be lost with it
            if not chunk:
                return
            body += chunk
        path = head.split(b" ")[1]
        if path == b"/redirect":
            await stream.send_all(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:9/elsewhere\r\n"
                                  b"Content-Length: 0\r\n\r\n")
            return
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
        if path == b"/big":
            for _ in range(20):  # 20 events of ~760 bytes: 15 KB in all, each under the 1 KiB limit
                await stream.send_all(SMALL)
            await stream.send_all(b"data: " + b"y" * 3000 + b"\n\n")
            return
        if path == b"/bom":  # a byte-order mark, then a notification a policy refuses, then the answer
            await stream.send_all("\ufeff".encode() + b'data: {"jsonrpc":"2.0","method":"notifications/message",'
                                  b'"params":{"level":"info","data":"' + MARKER.encode() + b'"}}\n\n'
                                  b'data: {"jsonrpc":"2.0","id":1,"result":{}}\n\n')
            return
        if path == b"/latin1":  # an event that is not UTF-8
            await stream.send_all(b'data: {"jsonrpc":"2.0","id":1,"result":{"note":"caf\xe9"}}\n\n')
            return
        await stream.send_all(b": open\n\n")
        self.stream_open.set()
        while await stream.receive_some(65536):  # until the proxy closes the connection
            pass
        self.closed.set()


async def start(nursery: trio.Nursery, daemons: Any, tmp_path: Path) -> tuple[RawUpstream, Any]:
    raw = RawUpstream()
    await nursery.start(trio.serve_tcp, raw.serve, raw.port)
    daemon = daemons("--mcp-server", f"slow={raw.url}/slow", "--mcp-server", f"redirect={raw.url}/redirect",
                     "--mcp-server", f"big={raw.url}/big", "--mcp-server", f"bom={raw.url}/bom",
                     "--mcp-server", f"latin1={raw.url}/latin1", "--mcp-max-message-size", "1024",
                     "--state-dir", str(tmp_path / "state"))
    await daemon.wait_ready()
    return raw, daemon


async def test_a_client_hang_up_closes_the_upstream_request(tmp_path: Path, daemons: Any) -> None:
    async with trio.open_nursery() as nursery:
        raw, daemon = await start(nursery, daemons, tmp_path)
        async with httpx.AsyncClient(timeout=10) as client:
            async with client.stream("POST", daemon.url + "/mcp/slow", json=PING,
                                     headers={**PROTOCOL, **CREDENTIAL}) as reply:
                assert reply.status_code == 200
                async for chunk in reply.aiter_raw():
                    assert b": open" in chunk  # the comment came through as the server wrote it
                    break
        # The client is gone: the proxy closes its upstream connection.
        with trio.fail_after(10):
            await raw.closed.wait()
        nursery.cancel_scope.cancel()


async def test_a_redirect_is_never_relayed(tmp_path: Path, daemons: Any) -> None:
    async with trio.open_nursery() as nursery:
        _, daemon = await start(nursery, daemons, tmp_path)
        async with httpx.AsyncClient(timeout=10) as client:
            reply = await client.post(daemon.url + "/mcp/redirect", json=PING, headers={**PROTOCOL, **CREDENTIAL})
        assert reply.status_code == 502 and "location" not in reply.headers
        assert "redirect" in reply.json()["error"]["message"]
        nursery.cancel_scope.cancel()


async def test_the_size_limit_is_per_message_not_per_stream(tmp_path: Path, daemons: Any) -> None:
    async with trio.open_nursery() as nursery:
        _, daemon = await start(nursery, daemons, tmp_path)
        async with httpx.AsyncClient(timeout=10) as client:
            reply = await client.post(daemon.url + "/mcp/big", json=PING, headers={**PROTOCOL, **CREDENTIAL})
        assert reply.text.count("notifications/message") == 20  # 15 KB of small events, all relayed
        assert "y" * 100 not in reply.text and "larger than the proxy's limit" in reply.text
        nursery.cancel_scope.cancel()


async def test_a_byte_order_mark_does_not_hide_a_message_from_the_checks(tmp_path: Path, daemons: Any) -> None:
    """The client's reader drops the mark and reads the data line: so must the hop, or it relays unchecked."""
    async with trio.open_nursery() as nursery:
        _, daemon = await start(nursery, daemons, tmp_path)
        async with httpx.AsyncClient(timeout=10) as client:
            reply = await client.post(daemon.url + "/mcp/bom", json=PING, headers={**PROTOCOL, **CREDENTIAL})
        assert reply.status_code == 200 and '"result":{}' in reply.text  # the stream went on
        assert MARKER not in reply.text  # the refused notification was dropped
        nursery.cancel_scope.cancel()


async def test_an_event_that_is_not_utf8_ends_the_stream_with_an_error(tmp_path: Path, daemons: Any) -> None:
    async with trio.open_nursery() as nursery:
        _, daemon = await start(nursery, daemons, tmp_path)
        async with httpx.AsyncClient(timeout=10) as client:
            reply = await client.post(daemon.url + "/mcp/latin1", json=PING, headers={**PROTOCOL, **CREDENTIAL})
        assert reply.status_code == 200 and b"caf\xe9" not in reply.content
        assert "not UTF-8" in reply.text
        nursery.cancel_scope.cancel()
    assert "mcp event stream refused: an event is not UTF-8 server=latin1" in daemon.log
