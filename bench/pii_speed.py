"""PII analysis speed on first-seen content, on one core: the analyzer alone, no proxy around it.

``uv run python bench/pii_speed.py [--baseline REF] [--repeat N] [--profile]``

Runs the PII policy's analyzer (the agent section's ``pii.toml``: pattern
entities, ``ner = false``) over each corpus of ``bench/pii_corpora.py`` (the
agent conversation's text, a digit-heavy one) and prints MB/s of CPU time
(``time.process_time``: what one core spends, whatever else the machine runs).
Each measurement builds a fresh policy (its own warm-up only), so nothing of the
corpus was seen before, and collects the build's garbage before the clock starts
(the hundred thousand objects a build leaves young made the first full collection,
~0.1 s, fall inside the analysis; a worker builds once), then moves what is left
out of the collector's reach (``gc.freeze``) as a pool worker does after building
its policies (``enforcement/workers.py``: else each full collection the analysis
triggers walks the ~160,000 objects of spaCy, Presidio and phonenumbers, ~0.1 s
of the context corpus's 0.5 s); the best of ``--repeat`` is reported. ``--baseline
REF`` measures ``capsem_proxyd`` at a git ref too, in the same run (``git
archive`` of its package, imported first in a child process), so before and
after share the machine's load. The bench's agent section measures the same
through the proxy (``first_seen`` in ``bench/agent.py``: request bytes per
second of added latency). ``--profile`` prints the work tree's top entries
(cProfile, own time and cumulative) per corpus.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # run as a script: bench/profile.py must not shadow the standard library's profile
ROOT = Path(__file__).resolve().parents[1]
PII_TOML = """\
ner = false
[entity_decisions]
EMAIL_ADDRESS = "BLOCK"
CREDIT_CARD = "BLOCK"
US_SSN = "BLOCK"
IBAN_CODE = "BLOCK"
CRYPTO = "BLOCK"
PHONE_NUMBER = "LOG"
IP_ADDRESS = "LOG"
US_BANK_NUMBER = "LOG"
"""  # bench/agent.py's (not imported: the child imports only capsem_proxyd, from the baseline)


def measure(corpora: dict[str, str], repeat: int, profile: bool) -> dict[str, dict[str, float]]:
    """Per corpus: the best MB/s of ``repeat`` first-seen analyses, and what was found."""
    import tomllib

    from capsem_proxyd.policies.pii import OfflinePIIPolicy

    warm = OfflinePIIPolicy.from_config(tomllib.loads(PII_TOML))  # the process's one-time costs (phonenumbers
    assert warm is not None  # loads a region's metadata on first use), on other text than the corpora's
    warm.analyze_text(corpora["warm-up"])
    out = {}
    for name, text in corpora.items():
        if name == "warm-up":
            continue
        best = float("inf")
        found = 0
        for _ in range(repeat):
            policy = OfflinePIIPolicy.from_config(tomllib.loads(PII_TOML))
            assert policy is not None
            gc.collect()  # the build's own garbage: a worker builds once, then analyses text after text
            gc.freeze()  # as init_worker does
            started = time.process_time()
            found = len(policy.analyze_text(text))
            best = min(best, time.process_time() - started)
            gc.unfreeze()
        out[name] = {"kb": round(len(text) / 1000, 1), "seconds": round(best, 3),
                     "mb_per_s": round(len(text) / best / 1e6, 3), "findings": found}
        if profile:
            import cProfile
            import pstats

            policy = OfflinePIIPolicy.from_config(tomllib.loads(PII_TOML))
            gc.collect()
            gc.freeze()
            profiler = cProfile.Profile()
            profiler.runcall(policy.analyze_text, text)
            gc.unfreeze()
            print(f"\n== profile: {name}", file=sys.stderr)
            stats = pstats.Stats(profiler, stream=sys.stderr)
            stats.sort_stats("tottime").print_stats(12)
            stats.sort_stats("cumulative").print_stats(14)
    return out


def baseline(ref: str, corpora_file: Path, repeat: int) -> dict[str, dict[str, float]]:
    """``measure`` with ``capsem_proxyd`` as it is at ``ref``, in a child process."""
    with tempfile.TemporaryDirectory(prefix="pii-speed-") as folder:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "capsem_proxyd"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        env = {**os.environ, "PYTHONPATH": folder}
        child = subprocess.run([sys.executable, __file__, "--child", str(corpora_file), "--repeat", str(repeat)],
                               env=env, check=True, capture_output=True, text=True, cwd=folder)
        result: dict[str, dict[str, float]] = json.loads(child.stdout)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", metavar="REF", help="also measure capsem_proxyd at this git ref")
    parser.add_argument("--repeat", type=int, default=2, help="fresh analyses per corpus; the best counts")
    parser.add_argument("--profile", action="store_true", help="cProfile the work tree's analyzer per corpus")
    parser.add_argument("--child", metavar="CORPORA", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import capsem_proxyd

        assert str(Path(capsem_proxyd.__file__).resolve()).startswith(os.environ["PYTHONPATH"]), capsem_proxyd.__file__
        print(json.dumps(measure(json.loads(Path(args.child).read_text()), args.repeat, profile=False)))
        return
    sys.path.insert(0, str(ROOT))
    from bench import pii_corpora

    corpora = {"agent": pii_corpora.agent_text(), "digits": pii_corpora.digit_text(),
               "context": pii_corpora.context_text(),
               "warm-up": pii_corpora.agent_text(seed=1, turns=2) + pii_corpora.digit_text(20_000, seed=1)}
    rows = {"work tree": measure(corpora, args.repeat, args.profile)}
    if args.baseline:
        with tempfile.NamedTemporaryFile("w", suffix=".json") as corpora_file:
            json.dump(corpora, corpora_file)
            corpora_file.flush()
            rows[args.baseline] = baseline(args.baseline, Path(corpora_file.name), args.repeat)
    measured = [name for name in corpora if name != "warm-up"]
    print("| capsem_proxyd | " + " | ".join(f"{name} ({len(corpora[name]) / 1000:.0f} kB)" for name in measured)
          + " |\n|---|" + "---|" * len(measured))
    for label, row in rows.items():
        print(f"| {label} | " + " | ".join(f"{row[name]['mb_per_s']} MB/s ({row[name]['findings']} found)"
                                           for name in measured) + " |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
