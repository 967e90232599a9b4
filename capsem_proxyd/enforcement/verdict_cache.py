"""Decisions already made on exactly this content: the verdict cache.

Coding agents resend their whole conversation every turn (system prompt,
tool definitions, every earlier tool result), so without memory the proxy
analyses each turn everything the turns before already analysed, and a
session costs the square of its length. The engine asks a policy about a
piece of content only when this cache holds no decision on exactly that
piece, by that policy of that policy set, on that hook, for that tenant.

**Keys.** ``digest(text)`` is a keyed hash of the piece, 16 bytes: BLAKE2b
(``digest_size=16``), in the standard library and faster than SHA-256 on
64-bit machines without SHA extensions (~1 GB/s); on a CPU with them, SHA-256
of a secret first block and the piece, truncated (about twice as fast
there: a turn digests the whole 230 kB it resends). ``keyed_hash`` times
both when the cache is built and keeps the faster. Either is collision
resistant and keyed with random bytes drawn when the cache is built and
never written anywhere, so nobody outside the process can compute a digest,
let alone search offline for two pieces (one harmless, one not) that share
one. 128 bits keep a digest at 16 bytes, and an accidental collision among
even 10^12 entries at about 10^-15. ``key(scope, digest)`` is the scope's
number in this cache (a scope: the engine's own random salt, the policy's
place in its set, the hook, the tenant id; numbered once, never reused) and
the digest: 24 bytes.

**Per tenant.** The tenant id is part of every key: a piece one tenant sent
is analysed again when another sends it, so nobody learns from a fast reply
what someone else sent.

**What an entry holds.** A policy's result on one piece as the decision step
folds it (``combining.Combined``: the decision and the spans the policy
reported), so that a piece taken from the cache folds in exactly as it did
when it was decided.

**Bounded.** An LRU of at most ``size`` entries (``--verdict-cache-size``;
0 turns caching, and the splitting it pays for, off). An entry holds its key
and a reference to that result: an ALLOW is one shared object
(``combining.decided``), a refusal its own small one; about 155 bytes each
(measured with tracemalloc at the default size, ``tests/policy/test_verdict_cache.py``'s
bound test), so the default 100,000 entries is about 15 MiB at most.

**Owned by the configuration.** ``TenantPolicies`` builds one per
configuration and a reload builds a new one: decisions made under old
policies are never reused under new ones.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Iterable
from hashlib import blake2b, sha256
from typing import Any

from capsem_proxyd.enforcement.combining import Combined

DIGEST_SIZE = 16
# Scopes (engine, policy, hook, tenant) numbered at most, before the table and the entries are dropped.
MAX_SCOPES = 65_536


def keyed_hash(secret: bytes) -> Any:
    """The faster, on this machine, of BLAKE2b keyed with ``secret`` and SHA-256 of ``secret`` (64 bytes: one
    block, so the state copied per digest holds the key's compression already) then the content, truncated
    to ``DIGEST_SIZE``: SHA-256 where the CPU computes it (SHA extensions: about twice BLAKE2b's speed,
    and a turn digests the whole 230 kB it resends), BLAKE2b elsewhere. Both collision resistant, both keyed
    with a secret that never leaves the process; digests never leave it either, so which one a process uses
    changes nothing but its speed."""
    sample = bytes(65_536)
    candidates: list[Any] = [blake2b(digest_size=DIGEST_SIZE, key=secret[:32]), sha256(secret)]
    costs = []
    for hasher in candidates:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            probe = hasher.copy()
            probe.update(sample)
            probe.digest()
            best = min(best, time.perf_counter() - started)
        costs.append(best)
    return candidates[costs.index(min(costs))]


class VerdictCache:
    """An LRU map from keyed digests to a piece's combined result; not thread-safe (the event loop's own)."""

    def __init__(self, size: int) -> None:
        self.size = max(0, size)
        self._secret = os.urandom(64)
        # The hash keyed with the secret, copied for each digest: keying a new hash costs a compression of
        # the key's block each time, and a turn digests hundreds of pieces (the same digests either way).
        self._keyed = keyed_hash(self._secret)
        self._entries: OrderedDict[bytes, Combined] = OrderedDict()
        self._scopes: dict[bytes, bytes] = {}  # each scope's number, the first 8 bytes of its keys
        self._next_scope = 0

    def __len__(self) -> int:
        return len(self._entries)

    def digest(self, content: str | bytes, kind: bytes = b"") -> bytes:
        """The keyed digest of one piece of content (``kind``: what it is, a prefix that keeps a system
        piece and a prompt piece of the same text apart)."""
        hasher = self._keyed.copy()
        hasher.update(kind)
        hasher.update(content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content)
        return hasher.digest()[:DIGEST_SIZE]

    def key(self, scope: bytes, digest: bytes) -> bytes:
        """The entry's key: who decided, where, for whom (``scope``), on what (``digest``)."""
        return self._scope_id(scope) + digest

    def keys(self, scope: bytes, digests: Iterable[bytes]) -> list[bytes]:
        """``key(scope, digest)`` for each of ``digests``."""
        prefix = self._scope_id(scope)
        return [prefix + digest for digest in digests]

    def _scope_id(self, scope: bytes) -> bytes:
        """``scope``'s number in this cache, as the 8 bytes a key starts with.

        A key used to be the keyed hash of the scope and the digest: a second hash per piece and policy,
        hundreds a turn, for what a number does as well. The digest is keyed already (nobody outside can
        compute one), and numbering scopes is exact: two scopes never share a number. Numbers are never
        reused: when the table holds ``MAX_SCOPES`` (tenants come and go), it and the entries are dropped
        and numbering goes on, so a key computed before (by a check that awaited a policy meanwhile) can
        only land under a number nobody is given again: it is never served."""
        number = self._scopes.get(scope)
        if number is None:
            if len(self._scopes) >= MAX_SCOPES:
                self._scopes.clear()
                self._entries.clear()
            number = self._scopes[scope] = self._next_scope.to_bytes(8, "big")
            self._next_scope += 1
        return number

    def get(self, key: bytes) -> Combined | None:
        result = self._entries.get(key)
        if result is not None:
            self._entries.move_to_end(key)
        return result

    def put(self, key: bytes, result: Combined) -> None:
        entries = self._entries
        entries[key] = result
        entries.move_to_end(key)
        while len(entries) > self.size:
            entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
