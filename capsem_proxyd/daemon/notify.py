"""systemd's notify protocol (sd_notify) without libsystemd.

READY=1 once listening, RELOADING=1/READY=1 around a reload, STOPPING=1 on
shutdown and WATCHDOG=1 pings when ``WATCHDOG_USEC`` is set; all no-ops when
``NOTIFY_SOCKET`` is absent. Abstract sockets (``@name``) are supported.
"""

from __future__ import annotations

import os
import socket
import time

import trio


def _address() -> str | None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return None
    return "\0" + address[1:] if address.startswith("@") else address


def notify(*states: str) -> bool:
    """Send ``states`` (e.g. "READY=1"); returns False when not under systemd."""
    address = _address()
    if address is None:
        return False
    message = "\n".join(states).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message, address)
        except OSError:
            return False
    return True


def ready(status: str = "") -> bool:
    return notify("READY=1", f"STATUS={status}" if status else "STATUS=ready", f"MAINPID={os.getpid()}")


def reloading() -> bool:
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")


def stopping() -> bool:
    return notify("STOPPING=1")


def watchdog_interval() -> float | None:
    """Half the watchdog timeout, as systemd recommends; None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None


async def run_watchdog() -> None:
    """Ping the watchdog forever (the event loop being alive is what it proves)."""
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        notify("WATCHDOG=1")
        await trio.sleep(interval)
