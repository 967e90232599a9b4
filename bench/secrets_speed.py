"""Secrets policy scan speed on first-seen content, on one core: the rules alone, no proxy around them.

``uv run python bench/secrets_speed.py [--repeat N]``

Runs the Secrets policy's default rules (``SecretsPolicy().find``: the keyword
sieve, then RE2 on the rules it lets through) over four corpora and prints MB/s
of CPU time (``time.process_time``: what one core spends, whatever else the
machine runs), best of ``--repeat``:

* ``agent``: the agent workload's conversation as the policy reads it
  (``bench/pii_corpora.agent_text``: system prompt, tools, asks, arguments,
  tool results; the target is >= 20 MB/s);
* ``agent+credentials``: the same with an ``env`` dump holding an AWS key pair,
  a GitHub token and a private key after every 250th line (11 dumps, 44 findings);
* ``keywords``: text dense in the sieve's keywords without credentials
  (``aws``, ``://``, ``eyJ``, ``-us``...): the sieve's worst case, RE2 on most rules;
  and the same in Chinese (``keywords, CJK``: every character three bytes for RE2 and the sieve).

And what a process spends to start the policy (``startup_cpu``, in a fresh
interpreter): importing and compiling the rules, then building the stream
hold-back's DFAs (the engine asks for it at every start, ``check`` and reload).

Each measurement builds a fresh policy (the compiled rules are per process, as in
the proxy), so nothing of the corpus was seen before (no verdict cache is involved).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CREDENTIALS = (
    "AWS_ACCESS_KEY_ID=AKIAQ3EGRVX5KZTW7Y2M\nAWS_SECRET_ACCESS_KEY=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\n"
    "GH_TOKEN=ghp_R8vK2mQ9xT4wL7nB3pY6cZ1hF5jD0sGa2eUq\n-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n-----END RSA PRIVATE KEY-----\n"
)


def corpora() -> dict[str, str]:
    from bench import pii_corpora

    agent = pii_corpora.agent_text()
    parts = agent.split("\n")
    with_credentials = "\n".join(part + ("\n" + CREDENTIALS if index % 250 == 0 else "") for index, part in
                                 enumerate(parts))
    dense = ("see https://docs.aws.example/guide?x=1 and eyJ is base64 for {\" while ab-us1 or sg.v2 "
             "say ://host and PRIVATE KEY in prose; sk_live_ is documented\n") * (len(agent) // 150)
    dense_cjk = ("这是一个测试 https://例子.com/x aws 密钥 eyJ 文本 -us1 说明 ://主机\n") * (len(agent) // 120)
    return {"agent": agent, "agent+credentials": with_credentials, "keywords": dense, "keywords, CJK": dense_cjk}


def measure(texts: dict[str, str], repeat: int) -> dict[str, dict[str, float]]:
    from capsem_proxyd.policies.secrets import SecretsPolicy

    SecretsPolicy().find("warm-up AKIAQ3EGRVX5KZTW7Y2M")  # the process's one-time costs: reading the rules
    out = {}
    for name, text in texts.items():
        best, found = float("inf"), 0
        for _ in range(repeat):
            policy = SecretsPolicy()
            started = time.process_time()
            found = len(policy.find(text))
            best = min(best, time.process_time() - started)
        out[name] = {"kb": round(len(text) / 1000, 1), "seconds": round(best, 4),
                     "mb_per_s": round(len(text) / best / 1e6, 1), "findings": found}
    return out


_STARTUP = """
import json, time
started = time.process_time()
from capsem_proxyd.policies.secrets import SecretsPolicy
policy = SecretsPolicy()
rules = time.process_time() - started
policy.stream_holdback
print(json.dumps({"rules_s": round(rules, 3), "holdback_s": round(time.process_time() - started - rules, 3)}))
"""


def startup_cpu() -> dict[str, float]:
    """CPU seconds a fresh process spends on the Secrets policy: its rules (imports included), its hold-back."""
    done = subprocess.run([sys.executable, "-c", _STARTUP], cwd=ROOT, capture_output=True, text=True, check=True,
                          timeout=120)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="fresh scans per corpus; the best counts")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    texts = corpora()
    rows = measure(texts, args.repeat)
    print("| corpus | size | MB/s per core | findings |\n|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['kb']} kB | {row['mb_per_s']} | {row['findings']} |")
    startup = startup_cpu()
    print(f"start-up CPU: rules {startup['rules_s']} s, stream hold-back {startup['holdback_s']} s")
    print(json.dumps({**rows, "startup": startup}))


if __name__ == "__main__":
    main()
