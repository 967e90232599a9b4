"""The stream hold-back of a policy set: what the enforcing policies that check replies need held.

A stream releases a checked text only up to what no enforcing policy could
still match at its end (``policies/holdback.py`` holds each policy's
declaration). Gathered once per engine; summarised for the start-up line and
the ``policies`` command.
"""

from __future__ import annotations

from collections.abc import Callable

from capsem.policies import Policy

from capsem_proxyd.enforcement.loader import implemented_hooks
from capsem_proxyd.policies.declarations import reply_screen
from capsem_proxyd.policies.holdback import (
    Fixed,
    HeldMatcher,
    Holdback,
    LiteralTerms,
    Matcher,
    NoMatcher,
    declared,
    holds_only_pending,
)
from capsem_proxyd.policies.term_screen import ChannelScreens, Screen


def stream_holdbacks(policies: list[Policy], monitored: frozenset[str], cap: int) -> list[tuple[str, Holdback]]:
    """Each enforcing policy that checks replies, with what it needs held: its declaration, or the
    cap (``--stream-holdback``) when it declares none or declares it unbounded; a bounded
    declaration is honoured even beyond the cap, and so is one that holds only while a match is
    pending (``holds_only_pending``: regexes of any width, ``pattern_holdback.Patterns``). Monitor-mode policies never refuse: nothing is
    held for them."""
    holdbacks: list[tuple[str, Holdback]] = []
    for policy in policies:
        if policy.name in monitored or "on_model_response" not in implemented_hooks(policy):
            continue
        holdback = declared(policy)
        kept = holdback is not None and (holdback.bound is not None or holds_only_pending(holdback))
        holdbacks.append((policy.name, holdback if kept and holdback is not None else Fixed(cap)))
    return holdbacks


def holdback_summary(holdbacks: list[tuple[str, Holdback]]) -> str:
    """The effective hold-back and the policy that sets it, for the start-up line and ``policies``."""
    if not holdbacks:
        return "stream hold-back: none (no policy checks replies)"
    unbounded = [(name, holdback) for name, holdback in holdbacks if holdback.bound is None]
    if unbounded:
        return f"stream hold-back: only while a match is pending, of any length (regexes; set by {unbounded[0][0]})"
    name, widest = max(holdbacks, key=lambda item: item[1].bound or 0)
    if isinstance(widest, LiteralTerms):
        how = f"up to {widest.bound} characters, only while they may still become a term"
    else:
        how = f"{widest.bound} characters"
    return f"stream hold-back: {how} (set by {name})"


def channel_matchers(holdbacks: list[tuple[str, Holdback]]) -> Callable[[], Matcher]:
    """What makes one stream channel's matcher for a policy set's hold-backs (``PolicyEngine.holdbacks``):
    the most any enforcing policy holds at the end of the channel's text, nothing when none checks replies."""
    declarations = [holdback for _, holdback in holdbacks]
    if not declarations:
        return NoMatcher
    return lambda: HeldMatcher(declarations)


def channel_screens(policies: list[Policy]) -> Callable[[], Screen] | None:
    """What makes one stream channel's screen (``policies/term_screen.py``) when every policy that checks
    replies declares the terms it refuses them for (``reply_terms``: Debug); None when one does not (it
    is asked about the whole text at every check, as CAPSEM would). Monitor-mode policies are screened
    too: where a term is found they are asked, and log what they would have refused, as before."""
    makers = []
    for policy in policies:
        if "on_model_response" not in implemented_hooks(policy):
            continue
        make = reply_screen(policy)
        if make is None:
            return None
        makers.append(make)
    if len(makers) == 1:  # one policy (Debug alone, the default set): its screen, no loop around it per read
        return makers[0]
    return lambda: ChannelScreens(make() for make in makers)
