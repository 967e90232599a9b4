"""Canary for the Hypercorn subclass and serve loop (``capsem_proxyd/_compat/hypercorn.py``).

``ClosingTCPServer`` overrides two private methods of Hypercorn's trio
``TCPServer`` (``_read_data``, ``_idle_timeout``), calls a third
(``_initiate_server_close``), and reads ``idle_task``, the private
``_task_group`` and that task group's private ``_nursery``; the serve loop
composes Hypercorn's ``Lifespan`` and ``WorkerContext``. A Hypercorn release
that renames or reshapes any of them must fail here first. What the subclass
is for is tested by behaviour elsewhere: a hang-up closes the upstream
(``tests/hardening/test_faults.py``), reset connections leave no socket behind
and idle ones are timed out (``tests/hardening/test_timeouts.py``).
"""

from __future__ import annotations

import inspect

import hypercorn.trio.tcp_server as tcp_server
import trio
import trio.testing
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.worker_context import TrioSingleTask, WorkerContext
from packaging.version import Version

from capsem_proxyd._compat.hypercorn import ClosingTCPServer
from tests._compat.pins import assert_below_next_minor

# Every private name of Hypercorn that _compat/hypercorn.py reads or sets (READ: attributes, checked below).
OVERRIDDEN = ("_read_data", "_idle_timeout")  # TCPServer methods ClosingTCPServer replaces (and calls via super)
CALLED = ("_initiate_server_close",)  # a TCPServer method ClosingTCPServer calls
READ = ("_task_group", "_nursery")  # TCPServer's task group (set in run), the task group's trio nursery


def test_the_private_methods_the_subclass_overrides_and_calls_still_exist() -> None:
    server = tcp_server.TCPServer
    for method in (*OVERRIDDEN, *CALLED, "run"):
        assert inspect.iscoroutinefunction(getattr(server, method)), method
        assert list(inspect.signature(getattr(server, method)).parameters) == ["self"], method
    assert set(OVERRIDDEN) <= set(vars(ClosingTCPServer))  # what the subclass replaces is what is listed
    assert issubclass(ClosingTCPServer, server)


def test_the_private_attributes_the_subclass_reads_are_still_set_where_it_expects() -> None:
    server = tcp_server.TCPServer
    assert "self.idle_task = TrioSingleTask()" in inspect.getsource(server.__init__)
    assert inspect.iscoroutinefunction(TrioSingleTask.stop)
    run = inspect.getsource(server.run)
    assert "async with TaskGroup() as task_group:" in run and "self._task_group = task_group" in run
    assert tcp_server.TaskGroup is TaskGroup
    assert "self._nursery = await self._nursery_manager.__aenter__()" in inspect.getsource(TaskGroup.__aenter__)


async def test_the_task_group_runs_its_tasks_in_a_trio_nursery_the_subclass_can_cancel() -> None:
    async with TaskGroup() as group:
        nursery = group._nursery
        assert isinstance(nursery, trio.Nursery)
        ran_to_the_end = []

        async def request() -> None:
            await trio.sleep_forever()
            ran_to_the_end.append(True)  # pragma: no cover - cancelled

        group.spawn(request)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()  # what ClosingTCPServer does when its client is gone
    assert not ran_to_the_end


def test_every_write_of_a_connection_still_passes_through_protocol_send_as_raw_data() -> None:
    """``ClosingTCPServer.protocol_send`` holds a whole reply's head for the body's write: Hypercorn's
    HTTP/1.1 protocol must still send through it, each write one ``RawData``, the head its own."""
    from hypercorn.events import RawData
    from hypercorn.protocol import h11 as h11_protocol

    assert inspect.iscoroutinefunction(tcp_server.TCPServer.protocol_send)
    assert list(inspect.signature(tcp_server.TCPServer.protocol_send).parameters) == ["self", "event"]
    assert "self.protocol_send," in inspect.getsource(tcp_server.TCPServer.run)  # the protocol's send
    assert "await self.send(RawData(data=data))" in inspect.getsource(h11_protocol.H11Protocol._send_h11_event)
    assert h11_protocol.RawData is RawData


def test_the_serve_loop_parts_keep_their_shape() -> None:
    assert list(inspect.signature(Lifespan.__init__).parameters) == ["self", "app", "config", "state"]
    for method in ("handle_lifespan", "wait_for_startup", "wait_for_shutdown"):
        assert inspect.iscoroutinefunction(getattr(Lifespan, method)), method
    context = WorkerContext(None)
    assert inspect.iscoroutinefunction(context.terminated.set)
    assert list(inspect.signature(tcp_server.TCPServer.__init__).parameters) == [
        "self", "app", "config", "context", "state", "stream"]


def test_hypercorn_is_the_release_the_subclass_was_written_for_and_pinned_below_the_next_minor() -> None:
    assert Version("0.18") <= assert_below_next_minor("hypercorn") < Version("0.19")
