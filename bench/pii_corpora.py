"""The texts PII analysis is measured on (``bench/pii_speed.py``) and compared with Presidio on
(``tests/policy/test_pii_speed.py``): the agent workload's conversation, and a digit-heavy corpus.

* ``agent_text``: what the agent section's 50-turn conversation (``bench/agent.py``) gives PII to
  read: the system prompt, the tools' descriptions, each ask, each call's arguments and each tool
  result (numbered source lines with dates: digits everywhere), one after the other.
* ``digit_text``: logs (time stamps, ids, IP addresses and ports, durations, byte counts), CSV rows
  (ids, amounts, dates, a phone number in one column) and contact lines (some with a context word: call, phone) holding phone numbers of every
  configured region (and of a few more) written every way phonenumbers formats them: two lines in
  three hold a real number, the worst case for the phone recognizer.
* ``context_text``: the same kinds of lines under a label holding one of the phone recognizer's context words
  (a contact list's ``phone:``/``mobile``/``tel`` field, a CSV with a ``phone`` column named on every row, a
  log's ``caller number=``): every number has a context word within the enhancer's reach, so nothing can be
  skipped for lack of one, the worst case for context enhancement and the phone decisions.
"""

from __future__ import annotations

import json
import random

from bench import agent

EXTRA_REGIONS = ("IT", "JP", "AU", "ES", "NL")


def agent_text(seed: int = 7, turns: int = 50, result_bytes: int = 4000) -> str:
    """The agent section's conversation, as the texts PII reads, joined by newlines."""
    parts = [agent.SYSTEM, *(f"{name}: {text}" for name, text, _ in agent.TOOLS)]
    for turn in agent.session(seed, turns, result_bytes):
        parts += [turn.ask, json.dumps({"path": turn.path}), turn.result]
    return "\n".join(parts)


def region_numbers(regions: tuple[str, ...]) -> list[str]:
    """Example numbers of ``regions`` (fixed line, mobile, toll free), each written every way phonenumbers
    writes it (national, international, E.164, RFC 3966)."""
    import phonenumbers

    written = []
    for region in regions:
        for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE,
                     phonenumbers.PhoneNumberType.TOLL_FREE):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is None:
                continue
            for style in (phonenumbers.PhoneNumberFormat.NATIONAL, phonenumbers.PhoneNumberFormat.INTERNATIONAL,
                          phonenumbers.PhoneNumberFormat.E164, phonenumbers.PhoneNumberFormat.RFC3966):
                written.append(phonenumbers.format_number(number, style))
    return written


def digit_text(size: int = 250_000, seed: int = 3) -> str:
    """Logs, CSV rows and contact lines, ``size`` characters (module docstring)."""
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    rng = random.Random(seed)
    numbers = region_numbers((*PhoneRecognizer.DEFAULT_SUPPORTED_REGIONS, *EXTRA_REGIONS))
    lines, total = [], 0
    while total < size:
        kind = rng.randrange(3)
        if kind == 0:
            line = (f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:"
                    f"{rng.randrange(60):02d}:{rng.randrange(60):02d}.{rng.randrange(1000):03d}Z INFO "
                    f"worker[{rng.randrange(99999)}] req={rng.getrandbits(48):012x} 10.{rng.randrange(256)}."
                    f"{rng.randrange(256)}.{rng.randrange(256)}:{rng.randrange(1024, 65536)} took "
                    f"{rng.randrange(10000)} ms bytes={rng.randrange(10 ** 7)}")
        elif kind == 1:
            line = (f"{rng.randrange(10 ** 6)},{rng.randrange(10 ** 4)}.{rng.randrange(100):02d},"
                    f"{rng.randrange(1, 13):02d}/{rng.randrange(1, 29):02d}/2024,{rng.randrange(10 ** 9)},"
                    f"{rng.choice(numbers)}")
        else:
            line = (f"{rng.choice(('contact', 'call', 'phone:'))} {rng.choice(numbers)} or {rng.choice(numbers)}; order {rng.randrange(10 ** 8)} "
                    f"qty {rng.randrange(100)}")
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)[:size]


CONTEXT_LABELS = ("phone", "phone:", "mobile", "tel", "cell", "telephone", "number", "phone,")


def context_text(size: int = 250_000, seed: int = 5) -> str:
    """Contact lists, CSV rows and log lines each with a context word of the phone recognizer (module docstring),
    ``size`` characters."""
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    rng = random.Random(seed)
    numbers = region_numbers((*PhoneRecognizer.DEFAULT_SUPPORTED_REGIONS, *EXTRA_REGIONS))
    lines, total = [], 0
    while total < size:
        kind = rng.randrange(4)
        if kind == 0:  # a contact list
            line = (f"{rng.choice(('name', 'contact', 'id'))}={rng.randrange(10 ** 5)} {rng.choice(CONTEXT_LABELS)} "
                    f"{rng.choice(numbers)} {rng.choice(CONTEXT_LABELS)} {rng.choice(numbers)} "
                    f"updated {rng.randrange(1, 13):02d}/{rng.randrange(1, 29):02d}/2024")
        elif kind == 1:  # a CSV naming its phone column on every row
            line = (f"{rng.randrange(10 ** 6)},phone,{rng.choice(numbers)},{rng.randrange(10 ** 4)}."
                    f"{rng.randrange(100):02d},{rng.randrange(1, 13):02d}/{rng.randrange(1, 29):02d}/2024,"
                    f"{rng.randrange(10 ** 9)}")
        elif kind == 2:  # a log line about a call
            line = (f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:"
                    f"{rng.randrange(60):02d}:{rng.randrange(60):02d}Z INFO worker[{rng.randrange(99999)}] caller "
                    f"number={rng.choice(numbers)} took {rng.randrange(10000)} ms bytes={rng.randrange(10 ** 7)}")
        else:  # a digit-corpus line under a label
            line = (f"{rng.choice(CONTEXT_LABELS)} {rng.choice(numbers)} or {rng.choice(numbers)}; order "
                    f"{rng.randrange(10 ** 8)} qty {rng.randrange(100)}")
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)[:size]
