"""The README's "Try it without a key": its two code blocks, run as written, answer, stream and block.

The shell block must be exactly the demo command; it runs as ``python -m
capsem_proxyd`` (what ``uv run capsem-proxyd`` runs) with a port of the test's own
instead of 8000, which the Python block's URL gets too. Nothing else of either
block is changed, so a README edit that breaks the quick start fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import daemon_env

README = Path(__file__).resolve().parents[2] / "README.md"


def quick_start_blocks() -> tuple[str, str]:
    section = README.read_text(encoding="utf-8").split("## Try it without a key", 1)[1].split("\n## ", 1)[0]
    shell = re.search(r"```sh\n(.*?)```", section, re.S)
    python = re.search(r"```python\n(.*?)```", section, re.S)
    assert shell and python, "the quick start lost a code block"
    return shell.group(1).strip(), python.group(1)


async def test_the_readme_quick_start_answers_streams_and_blocks_without_a_key(daemons) -> None:
    shell, python = quick_start_blocks()
    assert shell == "uv run capsem-proxyd demo"
    daemon = daemons(command="demo")
    await daemon.wait_ready()
    assert "127.0.0.1:8000" in python
    script = python.replace("127.0.0.1:8000", f"127.0.0.1:{daemon.port}")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env=daemon_env())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    answer = "Hello! This answer comes from capsem-proxyd's demo provider, through the proxy's checks."
    assert lines[0] == f"answer: {answer}"
    assert lines[1] == f"stream: {answer}"
    assert lines[2].startswith("blocked: ") and "capsem_block" in lines[2] and "Debug" in lines[2], lines
    await daemon.stop()
    log = daemon.log
    assert log.count("status=200") == 2 and "status=400" in log, log


@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/responses"])
async def test_what_the_demo_provider_does_not_answer_is_a_provider_shaped_404(daemons, path: str) -> None:
    daemon = daemons(command="demo")
    await daemon.wait_ready()
    async with httpx.AsyncClient() as client:
        response = await client.post(daemon.url + path, json={"model": "demo", "input": "hi"},
                                     headers={"authorization": "Bearer any-key"})
    assert response.status_code == 404
    assert "demo provider does not answer" in response.json()["error"]["message"]
    await daemon.stop()
