"""Optional sampling profile of capsem-proxyd under the N-connection load (py-spy).

py-spy is not a project dependency: it is taken from PATH or installed into a
throwaway venv under ``bench/.work/tools``. It samples from the load core at
250 Hz, pausing the proxy for each sample (``--nonblocking`` tears stacks,
which makes inclusive shares wrong); the collapsed stacks are summarised into
the functions and the packages that hold the most samples.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.processes import Child, Children, tail

TOP = 15


@dataclass
class Recorder:
    child: Child
    output: Path


def py_spy(work: Path) -> str:
    found = shutil.which("py-spy")
    if found:
        return found
    venv = work / "tools"
    binary = venv / "bin" / "py-spy"
    if not binary.exists():
        uv = shutil.which("uv") or "uv"
        subprocess.run([uv, "venv", "-q", str(venv)], check=True)
        subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "py-spy"], check=True)
    return str(binary)


def start(binary: str, pid: int, duration: int, prefix: Path, children: Children, core: int | None) -> Recorder:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    output = prefix.with_suffix(".collapsed.txt")
    command = [binary, "record", "--pid", str(pid), "--duration", str(duration),
               "--rate", "250", "--function", "--format", "raw", "--output", str(output)]
    child = children.start("py-spy", command, core=core, log=prefix.with_suffix(".py-spy.log"))
    return Recorder(child, output)


def finish(recorder: Recorder, children: Children) -> dict:
    try:
        recorder.child.process.wait(60)
    except subprocess.TimeoutExpired:
        children.stop(recorder.child)
    children.stop(recorder.child)
    if not recorder.output.exists():
        return {"error": f"py-spy wrote nothing: {tail(recorder.child.log)}"}
    return summarise(recorder.output)


def summarise(collapsed: Path) -> dict:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count

    def share(counter: Counter[str], top: int = TOP) -> list[dict]:
        return [{"function": frame, "percent": round(100 * count / total, 1)} for frame, count in counter.most_common(top)]

    # Frames on (nearly) every stack -- the CLI, trio.run -- say nothing; drop them.
    below_root = Counter({frame: count for frame, count in inclusive.items() if count < 0.98 * total})
    return {"file": str(collapsed), "samples": total, "self": share(own), "inclusive": share(below_root, 25),
            "self_by_package": share(packages)}


def _package(frame: str) -> str:
    """``func (trio/_core/_run.py:12)`` -> ``trio``; a bare ``contextlib.py`` -> ``contextlib``."""
    where = frame.rpartition(" (")[2].rstrip(")").rpartition(":")[0]
    first = where.lstrip("/").split("/")[0] or "?"
    return first.removesuffix(".py")
