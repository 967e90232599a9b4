"""Fault injection with the fake provider: each fault gives the right error and leaves nothing behind.

For every fault, streamed and not, through each provider's SDK: the client gets
a provider-shaped error (an HTTP error before the stream starts, an error event
after), and afterwards

* no upstream connection is left in use (httpcore's pool lists its
  connections), and none is left open once the pool's idle ones are closed (the
  fake counts its open TCP connections),
* this process holds exactly the file descriptors it held before,
* no trio task is left running (the whole task tree is counted).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from capsem_proxyd.config import Settings
from capsem_proxyd.daemon.instance import Instance
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.proxy import Proxy, capture_instances, in_thread
from tests.support.sdk import PROVIDERS, message_of, open_fds, sdk_call, sdk_errors, socket_details

STREAM_TEXT = ["The first part arrives. ", "Then more words follow. ", "And the end comes. "] * 4


def task_count() -> int:
    """Every task in this trio run, the whole tree from the root down."""
    count, stack = 0, [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


@dataclass
class Ledger:
    """What the process holds when idle; ``settle`` waits for it to come back."""

    fake: FakeUpstream
    instance: Instance
    fds: int = 0
    tasks: int = 0

    async def idle(self, collect: bool = False) -> tuple[int, int, int, int]:
        """(upstream connections in use, open at the fake, fds, tasks), the pool's idle connections closed."""
        if collect:
            gc.collect()  # anything dropped without being closed lets go of its socket
        # httpx's transports over httpcore's pools (the upstream shards its connections over several)
        pools = [transport._pool for transport in self.instance.upstream.transport.transports]
        in_use = sum(not connection.is_idle() for pool in pools for connection in pool.connections)
        for pool in pools:
            await pool.aclose()  # idle keep-alive connections are not leaks (the pool stays usable)
        return in_use, self.fake.open_connections, open_fds(), task_count()

    async def mark(self) -> None:
        # Bounded polling on the state itself; the cap stops a broken build hanging, it measures nothing.
        with trio.fail_after(30):
            while any((await self.idle(collect=True))[:2]):
                await trio.sleep(0.02)
        _, _, self.fds, self.tasks = await self.idle(collect=True)

    async def settle(self, patience: float = 30.0) -> None:
        """Wait (at most ``patience`` seconds) until nothing is left over; then assert it.

        The wait ends as soon as nothing is left over, so the generous default costs a passing test
        nothing; it is there for a loaded machine, where closing a connection can take seconds.

        SDK clients are closed by the calls themselves (``sdk_call``); a full
        garbage collection (slow with this test process's heap) runs only while
        something is still left over.
        """
        now = await self.idle()
        with trio.move_on_after(patience):
            while now[0] or now[1] or now[2] > self.fds or now[3] > self.tasks:
                await trio.sleep(0.02)
                now = await self.idle(collect=True)
        in_use, connections, fds, tasks = now
        assert in_use == 0, f"{in_use} upstream connection(s) still in use"
        assert connections == 0, f"{connections} upstream connection(s) left open"
        # Fewer than before is no leak: a socket an earlier test dropped can be collected meanwhile.
        assert fds <= self.fds, f"file descriptors: {self.fds} before, {fds} after: {socket_details()}"
        assert tasks <= self.tasks, f"trio tasks: {self.tasks} before, {tasks} after"


@pytest.fixture
async def watched(
    monkeypatch: pytest.MonkeyPatch, start_proxy: Any, proxy_settings: Settings, fake: FakeUpstream
) -> AsyncIterator[tuple[Proxy, Ledger]]:
    """A proxy whose instance the test can see (to close the pool's idle connections), and its ledger."""
    instances = capture_instances(monkeypatch)
    proxy = await start_proxy(proxy_settings, upstream_timeout=0.5)
    ledger = Ledger(fake, instances[-1])
    for provider in PROVIDERS:  # warm up: lazy imports, SDK threads, first connections
        await in_thread(lambda provider=provider: sdk_call(provider, proxy, stream=True))
    await ledger.mark()
    yield proxy, ledger


@dataclass(frozen=True)
class Failure:
    """What a failed SDK call raised; only plain values, so no socket stays reachable through it."""

    error_type: type[BaseException]
    status: int | None
    message: str


async def failed_call(provider: str, proxy: Proxy, stream: bool) -> Failure:
    def call() -> Failure:
        try:
            sdk_call(provider, proxy, stream=stream)
        except sdk_errors(provider) as error:
            status = getattr(error, "status_code", None) or getattr(error, "code", None)
            return Failure(type(error), status if isinstance(status, int) else None, message_of(error))
        raise AssertionError(f"{provider}: the call succeeded despite the fault")

    return await in_thread(call)


FAULTS = {
    # fault: (status before headers or of the error event, words the message carries)
    "reset_before_headers": (502, "unreachable"),
    "reset_mid_body": (502, ""),
    "reset_mid_stream": (502, ""),
    "truncated_chunked": (502, ""),
    "malformed_sse": (502, ""),
    "never_answer": (504, ""),
}


@pytest.mark.parametrize("fault", FAULTS)
async def test_fault_gives_the_right_error_and_leaks_nothing(
    watched: tuple[Proxy, Ledger], fake: FakeUpstream, fault: str
) -> None:
    proxy, ledger = watched
    status, words = FAULTS[fault]
    for provider, stream in [(provider, stream) for stream in (False, True) for provider in PROVIDERS]:
        fake.script(Reply(chunks=STREAM_TEXT, fault=fault, fault_after_events=3))
        failure = await failed_call(provider, proxy, stream)
        text = failure.message
        assert words in text, (provider, text)
        if not stream or fault in ("reset_before_headers", "never_answer"):
            assert failure.status == status, (provider, failure, text)  # an HTTP error, no stream
        else:
            # The stream had started: it ends with the proxy's error event, which the SDK raises.
            assert "upstream" in text.lower() or "Upstream" in text, (provider, text)
        await ledger.settle()


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_provider_error_inside_a_stream_reaches_the_sdk(
    watched: tuple[Proxy, Ledger], fake: FakeUpstream, provider: str
) -> None:
    proxy, ledger = watched
    fake.script(Reply(chunks=STREAM_TEXT, fault="error_mid_stream", fault_after_events=3, status=529,
                      error_message="provider overloaded mid-stream"))
    failure = await failed_call(provider, proxy, stream=True)
    assert "overloaded mid-stream" in failure.message
    await ledger.settle()


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_provider_slower_than_the_client_reads_delivers_everything(
    watched: tuple[Proxy, Ledger], fake: FakeUpstream, provider: str
) -> None:
    """Events trickle in slower than the client reads (but inside the idle timeout): nothing is lost."""
    proxy, ledger = watched
    fake.script(Reply(chunks=STREAM_TEXT, chunk_delay=0.03))
    text = await in_thread(lambda: sdk_call(provider, proxy, stream=True))
    assert text == "".join(STREAM_TEXT)
    assert fake.streams[-1].completed
    await ledger.settle()


async def test_the_ledger_notices_a_leak(watched: tuple[Proxy, Ledger], fake: FakeUpstream) -> None:
    """The accounting itself can fail: a socket held open is reported."""
    import socket

    _, ledger = watched
    held = socket.socket()
    try:
        with pytest.raises(AssertionError, match="file descriptors"):
            await ledger.settle(patience=0.5)
    finally:
        held.close()
    await ledger.settle()
