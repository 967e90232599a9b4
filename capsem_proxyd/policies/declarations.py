"""What a policy declares so that the engine may check content in pieces, remember, and run it elsewhere.

Both are class attributes, read by the engine; a policy that declares neither
is called exactly as CAPSEM calls it (the whole view, every time, in the
proxy's event loop), which is always correct.

``splittable = True`` promises that the policy's decision on a whole is the
strictest of its decisions on the whole's pieces, joined by ``"\\n"``: a
message's text, a tool result, a tool definition, a media item. The engine
then asks the policy about each piece it has not decided on before (the
verdict cache, ``enforcement/verdict_cache.py``) and about the *seams* between
pieces: the text around each place where two pieces meet, at least the
policy's widest match on each side, so that a match across two pieces (which
in the joined text contains the ``"\\n"``) is still seen whole. How wide:
``split_holdback`` when declared (a ``policies/holdback.py`` declaration or
an ``int``: the widest match of the request-side hooks, minus one), else the
policy's ``stream_holdback``; unbounded or undeclared means
``--stream-holdback`` characters, the same cap streams use. Debug, Rules and
PII are splittable; what a piece decides must depend on the piece alone.
A policy that also looks at the request as a whole (its size, its model)
implements ``whole_prompt_decision(model_name, system_instructions, prompt)
-> Decision | None``: called once per request on the whole texts, never
cached; when it refuses (CONFIRM or BLOCK), the pieces are not asked (Rules:
``max_prompt_chars`` and the model globs).

``reply_terms = LiteralTerms(terms)`` (or a tuple of them) promises that the
policy's ``on_model_response`` allows a reply (ALLOW, nothing recorded
otherwise) unless one of ``terms`` is in its text or in its thoughts, each read
alone, compared as ``LiteralTerms`` compares (Debug: its marker; Rules: its
reply rules, when they are all terms of one word). A stream then reads each new
piece of a channel once (``term_screen.py``) instead of asking the policy about
the whole text at every check; the policy is asked where a term is found, and
about the complete text at the end of the stream. A policy may instead give a
``reply_screen()`` method (Secrets: its keywords; PII: its recognizers' regexes,
``pattern_screen.py``); for one run in worker processes, the maker travels in
its manifest (``enforcement/workers.py``), so it must pickle.

``cpu_heavy = True`` says that the policy's hooks compute for long (the PII
analysis): the engine runs them in worker processes beside the event loop
(``enforcement/workers.py``), each worker building its own copy of the policy from
the same policy file, so nothing of the policy needs to pickle, only the hook
arguments and the ``Decision``. Inside a worker, ``in_worker()`` is true: a
policy that would otherwise hand its work to a thread should compute in line.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from capsem_proxyd.policies.holdback import LiteralTerms, declared
from capsem_proxyd.policies.term_screen import ChannelScreens, Screen, TermScreen

_IN_WORKER = False


def splittable(policy: object) -> bool:
    return getattr(policy, "splittable", False) is True


def reply_screen(policy: object) -> Callable[[], Screen] | None:
    """What makes a channel's screen for the policy's ``reply_terms`` (None: it declares none, or one a
    screen cannot read). ``reply_terms`` is a ``LiteralTerms`` or a tuple of them (case-sensitive terms
    beside the others). A policy whose refusals are not literal terms as ``LiteralTerms`` folds them may
    give its own: a ``reply_screen()`` method answering the maker (or None), with the same promise: its
    ``on_model_response`` returns ALLOW unless the screen of the text or of the thoughts, each read alone,
    flagged a piece."""
    make = getattr(policy, "reply_screen", None)  # a policy's own screen (Secrets: its keyword sieve)
    if callable(make):
        return make()
    declared_terms = getattr(policy, "reply_terms", None)
    groups = declared_terms if isinstance(declared_terms, tuple) else (declared_terms,)
    screens = [group.screen() if isinstance(group, LiteralTerms) else None for group in groups]
    if any(screen is None for screen in screens):
        return None
    makers = [partial(TermScreen, screen.terms, keep_case=screen.keep_case) for screen in screens if screen]
    if len(makers) == 1:
        return makers[0]
    return partial(_screens, tuple(makers))  # picklable: a policy described in a worker process hands it over


def _screens(makers: tuple[Callable[[], Screen], ...]) -> ChannelScreens:
    return ChannelScreens(make() for make in makers)


def masks(policy: object) -> bool:
    """Whether the policy may answer with a ``MaskingDecision`` (``masking = True``, issue 23): the engine
    asks such policies first."""
    return getattr(policy, "masking", False) is True


def cpu_heavy(policy: object) -> bool:
    return getattr(policy, "cpu_heavy", False) is True


def seam_width(policy: object, cap: int) -> int:
    """Characters on each side of a seam this policy needs: its widest request-side match."""
    holdback = declared(_Split(policy)) if hasattr(policy, "split_holdback") else declared(policy)
    bound = holdback.bound if holdback is not None else None
    return (cap if bound is None else bound) + 1


class _Split:
    """A policy's ``split_holdback`` seen as the ``stream_holdback`` ``declared`` reads."""

    def __init__(self, policy: Any) -> None:
        self.stream_holdback = policy.split_holdback


def mark_worker() -> None:
    """Called once in each worker process, before any policy is built there."""
    global _IN_WORKER
    _IN_WORKER = True


def in_worker() -> bool:
    """True inside a policy worker process: compute in line, the process itself is the worker."""
    return _IN_WORKER
