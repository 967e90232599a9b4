"""The test suite's fake provider as a bench upstream whose streams come at a model's pace.

``python -m bench.paced_upstream --port P --chunks '["The", " qu", ...]' --chunk-delay 0.025``
serves every provider API the fake speaks; each stream sends those chunks,
one event each, ``--chunk-delay`` seconds apart. With ``--chunk-clock
schedule`` the n-th goes ``n * --chunk-delay`` seconds after the first: a
model's pace, for the latency section, which compares each character's arrival
across runs (a sleep after each send overshoots a little every time, and over a
hundred chunks that adds up differently in each run: it read as the proxy's
delay). The events section keeps the gap: each event its own write, never two
sent back to back because the proxy fell behind.
"""

from __future__ import annotations

import argparse
import json
import sys

import trio

from tests.support.fake_upstream import Reply
from tests.support.fake_upstream.server import FakeUpstream


async def serve(port: int, chunks: list[str], delay: float, clock: str = "gap") -> None:
    fake = FakeUpstream()
    fake.default_reply = Reply(chunks=chunks, chunk_delay=delay, chunk_clock=clock)
    fake.url = f"http://127.0.0.1:{port}"
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    await trio.serve_listeners(fake._serve_connection, listeners)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.paced_upstream")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", required=True, help="JSON list of the text pieces of every stream")
    parser.add_argument("--chunk-delay", type=float, default=0.025)
    parser.add_argument("--chunk-clock", choices=("gap", "schedule"), default="gap")
    args = parser.parse_args(argv)
    trio.run(serve, args.port, json.loads(args.chunks), args.chunk_delay, args.chunk_clock)


if __name__ == "__main__":
    sys.exit(main())
