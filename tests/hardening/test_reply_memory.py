"""Memory for non-streamed replies: a per-process budget (``--reply-memory``) and a per-reply peak.

A non-streamed reply is held whole while it is checked: its bytes, and the
text the policies read. Each reply's peak of Python-allocated memory stays
within twice its size (measured here with tracemalloc on the real app, the
upstream and the client allocating nothing in the window), and all replies
held at once stay within the budget: one that does not fit waits for room or
is refused with a provider-shaped 503.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import orjson
import pytest
import trio

from capsem_proxyd.config import Settings
from tests.support.daemon import daemon_env, upstream_args
from tests.support.proxy import OPENAI_KEY, Proxy
from tests.support.sdk import PROVIDERS, message_of, sdk_error, sdk_errors, status_of
from tests.support.waiting import wait_until

TEXT_LINE = b"The quick brown fox jumps over the lazy dog, then writes another line of its reply.\\n"


def chat_reply(size: int) -> bytes:
    """An OpenAI chat completion of about ``size`` bytes, nearly all of it the reply's text."""
    shell = orjson.dumps({
        "id": "chatcmpl-big", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "@@"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    })
    text = TEXT_LINE * ((size - len(shell)) // len(TEXT_LINE))
    return shell.replace(b"@@", text)


class BigReplies:
    """A provider answering every request with ``body`` (prebuilt bytes: sending them allocates nothing).

    ``pause_after``: bytes of the body sent before the rest waits for ``go`` (None: no pause);
    ``content_length``: False frames the body by closing the connection (no length stated)."""

    def __init__(self, body: bytes, *, content_length: bool = True, pause_after: int | None = None) -> None:
        self.body = body
        self.content_length = content_length
        self.pause_after = pause_after
        self.url = ""
        self.go = trio.Event()
        if pause_after is None:
            self.go.set()

    async def serve(self, stream: trio.SocketStream) -> None:
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
        )
        while len(rest) < length:
            rest += await stream.receive_some(65536)
        stated = b"content-length: %d\r\n" % len(self.body) if self.content_length else b""
        first = len(self.body) if self.pause_after is None else self.pause_after
        try:
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n%sconnection: close\r\n\r\n" % stated)
            with memoryview(self.body) as body:
                await stream.send_all(body[:first])
                await self.go.wait()
                await stream.send_all(body[first:])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    async def start(self, nursery: trio.Nursery) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        await nursery.start(trio.serve_listeners, self.serve, listeners)
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


REQUEST_BODY = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'


def post_and_discard(proxy: Proxy) -> tuple[int, int, bytes]:
    """POST a chat completion and read the reply into one reused buffer: (status, body bytes, head).

    A client that allocates nothing per byte, so a tracemalloc window sees only the proxy."""
    host, port = proxy.url.removeprefix("http://").rsplit(":", 1)
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + OPENAI_KEY.encode()
            + b"\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (len(REQUEST_BODY), REQUEST_BODY)
        )
        head = b""
        while b"\r\n\r\n" not in head:
            count = sock.recv_into(view)
            if not count:
                break
            head += bytes(view[:count])
            if len(head) > 65536:
                break
        head, _, start = head.partition(b"\r\n\r\n")
        body = len(start)
        while True:
            count = sock.recv_into(view)
            if not count:
                break
            if len(start) < 4096:
                start += bytes(view[:min(count, 4096)])
            body += count
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body, head[:200] if status == 200 else head + b"\r\n\r\n" + start[:4096]


def memory_of(pid: int) -> dict[str, int]:
    """The kernel's account of a process's memory (``VmRSS``, ``VmHWM``...), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        return {
            name: int(value.split()[0]) * 1024
            for name, value in (line.split(":", 1) for line in status) if value.strip().endswith("kB")
        }


def reset_peak(pid: int) -> int:
    """Reset the process's peak resident size to what it holds now (Linux ``clear_refs`` 5); returns that."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear:
        clear.write("5")
    return memory_of(pid)["VmRSS"]


# glibc keeps freed memory for reuse unless an allocation is mapped on its own, and raises its mapping
# threshold as big blocks are freed: with it fixed, every big buffer of the daemon is mapped when
# allocated and returned when freed, so its peak resident size measures what it held at once.
EXACT_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


# What the process itself allocates around one reply (socket buffers, log records, a window of text
# being checked or sent: Debug's, and since Secrets runs by default its keyword sieve's 64 kB window, lowered
# and encoded), whatever the reply's size. 1 MiB left no room: a stressed CI run measured 2 x 20 MiB + 1.03 MiB.
WORKING_MEMORY = 2 * 1024 * 1024


async def test_one_reply_peaks_within_twice_its_size(daemons: Callable[..., Any], nursery: trio.Nursery) -> None:
    """A 20 MiB reply through the real daemon: its peak resident size grows by at most twice the reply
    (its text and its bytes while it is decoded; its text and the parsed reply while it is checked).
    On main it grew by about 3 times the reply (4.1x with glibc's own settings): the bytes read in
    pieces and joined, orjson's copy of its input, the Debug policy's lowered copy of the text."""
    upstream = BigReplies(chat_reply(20 * 1024 * 1024))
    await upstream.start(nursery)
    daemon = daemons(*upstream_args(upstream.url), env=daemon_env(**EXACT_MALLOC))
    await daemon.wait_ready(30)
    pid = daemon.process.pid
    proxy = Proxy(daemon.url, Settings())
    reset_peak(pid)
    status, received, head = await trio.to_thread.run_sync(post_and_discard, proxy)  # warm: first-use imports
    assert status == 200 and received == len(upstream.body), head
    # The client has the reply when the daemon closes the connection, maybe before it dropped the reply.
    await wait_until(lambda: memory_of(pid)["VmRSS"] < memory_of(pid)["VmHWM"] - 35 * 2**20, timeout=30,
                     what="the warm-up reply's memory returned")
    before = reset_peak(pid)
    status, received, head = await trio.to_thread.run_sync(post_and_discard, proxy)
    grew = memory_of(pid)["VmHWM"] - before
    assert status == 200 and received == len(upstream.body), head
    print(f"peak grew {grew / 2**20:.1f} MiB for a {received / 2**20:.1f} MiB reply: {grew / received:.2f}x")
    assert grew <= 2 * received + WORKING_MEMORY


# --- the budget: --reply-memory --------------------------------------------------------------------

MIB = 1024 * 1024


async def health(proxy: Proxy) -> dict[str, int]:
    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.get(proxy.url + "/health")).json()["reply_memory"]


async def held_gauge(proxy: Proxy) -> float:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(proxy.url + "/metrics")).text
    return next(float(line.split()[1]) for line in text.splitlines()
                if line.startswith("capsem_proxyd_reply_memory_held_bytes "))


async def concurrently(proxy: Proxy, count: int, results: list[tuple[int, int, bytes]], nursery: trio.Nursery) -> None:
    async def one() -> None:
        results.append(await trio.to_thread.run_sync(post_and_discard, proxy))

    for _ in range(count):
        nursery.start_soon(one)


async def test_replies_of_known_size_wait_for_room_and_all_complete(
    start_proxy: Callable[..., Any], proxy_settings: Settings, nursery: trio.Nursery,
) -> None:
    """Three 8 MiB replies under a 20 MiB budget: two are held, the third waits (never more than the
    budget held), and all three complete once the first ones went out."""
    upstream = BigReplies(chat_reply(8 * MIB), pause_after=0)  # the length is stated; the bodies wait for ``go``
    await upstream.start(nursery)
    proxy = await start_proxy(proxy_settings, openai_upstream=upstream.url + "/v1", reply_memory=20 * MIB)
    size = len(upstream.body)
    results: list[tuple[int, int, bytes]] = []
    async with trio.open_nursery() as clients:
        await concurrently(proxy, 3, results, clients)
        state = await wait_until(lambda: _is(health(proxy), {"capacity": 20 * MIB, "held": 2 * size, "waiting": 1}),
                                 timeout=30, what="two replies held, one waiting")
        assert state and await held_gauge(proxy) == 2 * size
        upstream.go.set()
    assert sorted(status for status, _, _ in results) == [200, 200, 200], results
    assert all(received == size for _, received, _ in results)
    await wait_until(lambda: _is(health(proxy), {"capacity": 20 * MIB, "held": 0, "waiting": 0}), timeout=30,
                     what="the budget free again")


async def test_a_reply_of_unknown_size_that_outgrows_the_room_gets_503_at_once(
    start_proxy: Callable[..., Any], proxy_settings: Settings, nursery: trio.Nursery,
) -> None:
    """Three 8 MiB replies framed by the connection's end, 7 MiB of each sent: they grow their holds
    as they arrive, none waits while it holds something, so the one that no longer fits is refused at
    once; the other two complete."""
    upstream = BigReplies(chat_reply(8 * MIB), content_length=False, pause_after=7 * MIB)
    await upstream.start(nursery)
    proxy = await start_proxy(proxy_settings, openai_upstream=upstream.url + "/v1", reply_memory=20 * MIB)
    results: list[tuple[int, int, bytes]] = []
    async with trio.open_nursery() as clients:
        await concurrently(proxy, 3, results, clients)
        await wait_until(lambda: len(results) >= 1, timeout=30, what="one reply refused while the others wait")
        assert (await health(proxy))["held"] == 14 * MIB
        upstream.go.set()
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 200, 503], results
    refused = next(head for status, _, head in results if status == 503)
    assert b'"code":"reply_memory_full"' in refused and b"--reply-memory" in refused, refused
    assert (await health(proxy))["held"] == 0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_reply_larger_than_the_budget_is_503_in_the_providers_shape(
    provider: str, start_proxy: Callable[..., Any], proxy_settings: Settings, nursery: trio.Nursery,
) -> None:
    upstream = BigReplies(chat_reply(8 * MIB), pause_after=0)  # its body never needs to come
    await upstream.start(nursery)
    proxy = await start_proxy(proxy_settings, openai_upstream=upstream.url + "/v1", anthropic_upstream=upstream.url,
                              gemini_upstream=upstream.url, reply_memory=4 * MIB)
    error = await sdk_error(provider, proxy)
    assert isinstance(error, sdk_errors(provider)) and status_of(error) == 503, repr(error)
    assert f"larger than the {4 * MIB} bytes" in message_of(error) and "--reply-memory" in message_of(error)
    assert (await health(proxy)) == {"capacity": 4 * MIB, "held": 0, "waiting": 0}


async def _is(value: Any, expected: Any) -> bool:
    return await value == expected


def post_then_read_later(proxy: Proxy, release: threading.Event) -> tuple[int, int, bytes]:
    """``post_and_discard`` from a client that reads nothing until ``release``: its reply, already
    read and checked by the proxy, stays held while the proxy's write to it is blocked."""
    host, port = proxy.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.settimeout(60)
    sock.connect((host, int(port)))
    with sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + OPENAI_KEY.encode()
            + b"\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (len(REQUEST_BODY), REQUEST_BODY)
        )
        release.wait(60)
        received = b""
        while chunk := sock.recv(1 << 20):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), len(body), head[:200]


async def test_a_reply_that_finds_no_room_before_its_deadline_gets_503(
    start_proxy: Callable[..., Any], proxy_settings: Settings, nursery: trio.Nursery,
) -> None:
    """Two 9 MiB replies held while their slow clients read nothing; a 4 MiB reply waits for room as long
    as its --request-timeout allows, then gets a 503 its SDK raises (retryable); the held ones complete."""
    held = BigReplies(chat_reply(9 * MIB))
    waiting = BigReplies(chat_reply(4 * MIB))
    await held.start(nursery)
    await waiting.start(nursery)
    proxy = await start_proxy(proxy_settings, openai_upstream=held.url + "/v1", anthropic_upstream=waiting.url,
                              reply_memory=20 * MIB, request_timeout=2)
    release = threading.Event()
    results: list[tuple[int, int, bytes]] = []

    async def slow_client() -> None:
        results.append(await trio.to_thread.run_sync(post_then_read_later, proxy, release))

    try:
        async with trio.open_nursery() as clients:
            clients.start_soon(slow_client)
            clients.start_soon(slow_client)
            await wait_until(lambda: _is(health(proxy), {"capacity": 20 * MIB, "held": 2 * len(held.body), "waiting": 0}),
                             timeout=30, what="two replies held by clients that do not read")
            error = await sdk_error("anthropic", proxy)
            assert isinstance(error, anthropic.InternalServerError) and status_of(error) == 503, repr(error)
            assert "none finished in time; retry shortly" in message_of(error)
            release.set()
    finally:
        release.set()
    assert [status for status, _, _ in results] == [200, 200] and all(n == len(held.body) for _, n, _ in results)


async def test_a_client_that_leaves_while_its_reply_waits_for_room_takes_nothing_with_it(
    start_proxy: Callable[..., Any], proxy_settings: Settings, nursery: trio.Nursery,
) -> None:
    """Its place in the queue goes, and when room comes nothing is reserved for it: the budget ends empty."""
    upstream = BigReplies(chat_reply(8 * MIB), pause_after=0)
    await upstream.start(nursery)
    proxy = await start_proxy(proxy_settings, openai_upstream=upstream.url + "/v1", reply_memory=20 * MIB)
    size = len(upstream.body)
    results: list[tuple[int, int, bytes]] = []
    async with trio.open_nursery() as clients:
        await concurrently(proxy, 2, results, clients)
        await wait_until(lambda: _is(health(proxy), {"capacity": 20 * MIB, "held": 2 * size, "waiting": 0}),
                         timeout=30, what="two replies held")
        host, port = proxy.url.removeprefix("http://").rsplit(":", 1)
        leaving = await trio.open_tcp_stream(host, int(port))
        await leaving.send_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + OPENAI_KEY.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(REQUEST_BODY), REQUEST_BODY)
        )
        await wait_until(lambda: _is(health(proxy), {"capacity": 20 * MIB, "held": 2 * size, "waiting": 1}),
                         timeout=30, what="the third reply waiting")
        await leaving.aclose()
        await wait_until(lambda: _is(health(proxy), {"capacity": 20 * MIB, "held": 2 * size, "waiting": 0}),
                         timeout=30, what="the leaving client's place in the queue gone")
        upstream.go.set()
    assert [status for status, _, _ in results] == [200, 200]
    await wait_until(lambda: _is(health(proxy), {"capacity": 20 * MIB, "held": 0, "waiting": 0}), timeout=30,
                     what="the budget free again")
