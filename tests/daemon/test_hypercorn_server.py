"""Canary for the Hypercorn subclass and serve loop (``capsem_proxyd/_compat/hypercorn.py``).

``ClosingTCPServer`` overrides two private methods of Hypercorn's trio
``TCPServer`` and reads three private attributes; the serve loop composes
Hypercorn's ``Lifespan`` and ``WorkerContext``. A Hypercorn release that
renames or reshapes any of them must fail here first. What the subclass is
for is tested by behaviour elsewhere: a hang-up closes the upstream
(``tests/hardening/test_faults.py``), reset connections leave no socket behind
and idle ones are timed out (``tests/hardening/test_timeouts.py``).
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

import hypercorn.trio.tcp_server as tcp_server
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.worker_context import TrioSingleTask, WorkerContext
from packaging.version import Version

from capsem_proxyd._compat.hypercorn import ClosingTCPServer


def test_the_private_names_the_subclass_relies_on_still_exist() -> None:
    server = tcp_server.TCPServer
    for method in ("_read_data", "_idle_timeout", "_initiate_server_close", "run"):
        assert inspect.iscoroutinefunction(getattr(server, method)), method
    init = inspect.getsource(server.__init__)
    assert "self.idle_task = TrioSingleTask()" in init
    assert "self._task_group = task_group" in inspect.getsource(server.run)
    assert inspect.iscoroutinefunction(TrioSingleTask.stop)
    assert issubclass(ClosingTCPServer, server)


def test_the_serve_loop_parts_keep_their_shape() -> None:
    assert list(inspect.signature(Lifespan.__init__).parameters) == ["self", "app", "config", "state"]
    for method in ("handle_lifespan", "wait_for_startup", "wait_for_shutdown"):
        assert inspect.iscoroutinefunction(getattr(Lifespan, method)), method
    context = WorkerContext(None)
    assert inspect.iscoroutinefunction(context.terminated.set)
    assert list(inspect.signature(tcp_server.TCPServer.__init__).parameters) == [
        "self", "app", "config", "context", "state", "stream"]


def test_hypercorn_is_the_release_the_subclass_was_written_for() -> None:
    assert Version("0.18") <= Version(version("hypercorn")) < Version("0.19")
