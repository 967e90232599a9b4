"""Cost of the matchers' normalization (capsem_proxyd/policies/normalize.py) on agent-sized text.

    uv run python bench/fold.py

Prints the best of 20 runs per case, in milliseconds, beside ``str.lower`` on the
same text (the floor for ASCII). 200 kB is the upper end of what agents send per
request. Not part of the side-by-side benchmark: a micro-benchmark of one function.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from capsem_proxyd.policies.normalize import fold, fold_with_offsets, visible

SIZE = 200_000
SENTENCE = "The agent read config.yaml, ran `pytest -q` and found 3 failures in tests/test_api.py. "
NON_ASCII = "éèàçüößñÉ日本語€—’“”…🎉"


def texts() -> dict[str, str]:
    rng = random.Random(7)
    ascii_text = (SENTENCE * (SIZE // len(SENTENCE) + 1))[:SIZE]
    chars = list(ascii_text)
    for index in rng.sample(range(SIZE), SIZE // 20):
        chars[index] = rng.choice(NON_ASCII)
    japanese = "".join(rng.choice("日本語のテキストですアイウエオカキクケコ、。") for _ in range(SIZE))
    return {"ascii": ascii_text, "5% non-ASCII": "".join(chars), "Japanese": japanese}


def best_ms(function: Callable[[str], object], text: str, runs: int = 20) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        function(text)
        best = min(best, time.perf_counter() - start)
    return best * 1000


def main() -> None:
    for name, text in texts().items():
        fold(text), visible(text)  # fill the per-character tables first, as a running proxy has
        row = {
            "str.lower": best_ms(str.lower, text),
            "fold": best_ms(fold, text),
            "fold_with_offsets": best_ms(fold_with_offsets, text),
            "visible": best_ms(visible, text),
        }
        print(f"{name:>14} ({len(text):,} chars): " + ", ".join(f"{key} {value:.3f} ms" for key, value in row.items()))


if __name__ == "__main__":
    main()
