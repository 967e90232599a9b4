"""The processes a proxy started, read from ``/proc`` (Linux), so tests can kill or count them."""

from __future__ import annotations

from pathlib import Path


def _table() -> dict[int, tuple[int, bytes]]:
    """Every live process: pid -> (parent pid, command line). Zombies are left out."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), cmdline)
    return table


def policy_worker_pids(root: int) -> set[int]:
    """The policy worker processes below ``root`` (a proxy's pid, or this test process's).

    Workers are forked by multiprocessing's forkserver, so each one runs the forkserver's command line
    and is the forkserver's child; the forkserver itself (a child of the proxy, alive as long as the
    proxy is) is not a worker, and neither is the resource tracker.
    """
    table = _table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            parent = table[child][0]
            if b"forkserver" in table[child][1] and parent in table and b"forkserver" in table[parent][1]:
                found.add(child)
    return found
