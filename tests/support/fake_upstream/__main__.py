"""Run the suite's fake provider on its own: ``uv run python -m tests.support.fake_upstream [PORT]``.

It answers OpenAI (Chat Completions, Responses, Completions, embeddings,
moderations, models), Anthropic and Gemini as the tests' default reply does,
until Ctrl-C. Point a proxy at it with ``--openai-upstream URL/v1
--anthropic-upstream URL --gemini-upstream URL`` to try a client or reproduce a
test by hand; ``capsem-proxyd demo`` is the smaller stand-in the product ships.
"""

from __future__ import annotations

import sys

import trio

from tests.support.fake_upstream import run_fake_upstream


async def serve(port: int) -> None:
    async with run_fake_upstream(port=port) as fake:
        print(f"fake provider on {fake.url} (Ctrl-C stops it)", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    try:
        trio.run(serve, int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    except KeyboardInterrupt:
        pass
