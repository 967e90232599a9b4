"""Placeholders for a tenant's values, and the memory of what was masked for it.

One ``Masker`` per process, owned by the pipeline (so it outlives policy
reloads): it makes placeholders with the state directory's key
(``proxy/placeholder_key.py``) and remembers, per tenant and in memory only,
a keyed hash of each value it masked, so that the value is still masked when
it comes back bare, without the context that made a policy find it (a key
quoted without its ``AWS_SECRET_ACCESS_KEY=`` label, a compaction summary).
Only hashes are kept, never values; another process (``--workers``) or a
restart starts with an empty memory, and the README says so.

The memory is asked about each token (``rewrite.TOKEN``: a run of the
characters credentials are made of) of each string of a tenant's requests, a
hash per token, and only for tenants it remembers something for: a bare value
is found again when it is such a token (most keys and tokens are); the memory
also keeps a value's placeholder (kind label included) the same in every turn.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Callable, Mapping
from itertools import compress
from typing import Any

from capsem_proxyd.redaction.placeholder import placeholder, tag
from capsem_proxyd.redaction.rewrite import TOKEN, Masked, Unmaskable, mask_body, mask_text

# Values remembered per tenant; the oldest is forgotten first.
MEMORY_PER_TENANT = 10_000
# ``recalled_in``: the bytes of a token (``rewrite.TOKEN``: a run of them, at least 12, then up to two ``=``)
# kept, every other byte a space; the letters of the escapes that stand for a character no token holds.
_TOKEN_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_.~-"
_RUNS = bytes(byte if byte in _TOKEN_BYTES else 0x20 for byte in range(256))
_SHORTEST_TOKEN = 12
_ESCAPE_LETTERS = (b"b", b"f", b"n", b"r", b"t")


class Masker:
    """Placeholders under one key (``key_id`` names it; the secret is never shown) and the tenants' memory."""

    def __init__(self, secret: bytes, key_id: str, per_tenant: int = MEMORY_PER_TENANT) -> None:
        self._secret = secret
        self.key_id = key_id
        self.per_tenant = per_tenant
        self._memory: dict[str, OrderedDict[bytes, str]] = {}
        # The lengths of the values remembered per tenant (a forgotten value's length stays: a superset only
        # costs a hash). A token of another length cannot be one of them, and most tokens of a 200 kB
        # agent turn are not of a credential's length: they are turned away before any keyed hash.
        self._lengths: dict[str, set[int]] = {}

    def __repr__(self) -> str:
        return f"Masker(key_id={self.key_id!r})"

    def placeholder(self, tenant: str, value: str, kind: str) -> str:
        return placeholder(tag(self._secret, self.key_id, tenant, value), kind)

    def remembers(self, tenant: str) -> bool:
        return bool(self._memory.get(tenant))

    def recalled_in(self, tenant: str, body: bytes) -> frozenset[str] | None:
        """The values remembered for ``tenant`` that may be tokens of a string of the JSON text ``body`` (or of
        JSON inside one of its strings): empty when none is, so that a turn whose body holds none of the
        tenant's values is not walked string by string for them (``mask(..., recall=False)``), and only the
        strings holding one are read token by token otherwise (``mask(..., present=...)``). None: the raw
        bytes cannot tell (every string is read).

        Read from the raw bytes in C: every byte no token holds becomes a space (``bytes.translate``), the
        runs left (``split``) are the body's tokens and more (keys, numbers), and only a run of a remembered
        length, give or take a token's ``=`` padding, is hashed (a 230 kB agent turn: ~1 ms, against ~3 ms
        for the token pattern). An escape that decodes to a token character (``\\uXXXX``, ``\\/``) could
        join or hide a token in the raw text: with one of those, None. Every other escape decodes to a
        character no token holds (a line break, a tab, a quote, a backslash), but its letter sticks to the
        run after it (``\\nAKIA...``): a run is also read without its first letter."""
        memory = self._memory.get(tenant)
        if not memory:
            return frozenset()
        if b"\\u" in body or b"\\/" in body:
            return None
        lengths = self._lengths[tenant]
        wanted = {length - pad + letter for length in lengths for pad in (0, 1, 2) for letter in (0, 1)
                  if length >= _SHORTEST_TOKEN}
        runs = body.translate(_RUNS).split()
        found: set[str] = set()
        for run in compress(runs, map(wanted.__contains__, map(len, runs))):  # in C: the few of those lengths
            for token in (run, run[1:]) if run[:1] in _ESCAPE_LETTERS else (run,):
                for padded in (token, token + b"=", token + b"=="):
                    if len(padded) in lengths and self._digest_bytes(tenant, padded) in memory:
                        found.add(padded.decode("ascii"))
        return frozenset(found)

    def recalls(self, tenant: str, text: str) -> bool:
        """Whether ``text`` holds a token (``rewrite.TOKEN``) remembered as masked for ``tenant``."""
        memory = self._memory.get(tenant)
        if not memory:
            return False
        return any(self._digest(tenant, match.group()) in memory for match in TOKEN.finditer(text))

    def mask(
        self, tenant: str, raw: str, parsed: Any, findings: Mapping[str, str], *, recall: bool = True,
        present: frozenset[str] | None = None,
    ) -> tuple[Masked, dict[str, str]]:
        """``raw`` with ``findings`` (value -> kind) and the values remembered for ``tenant`` masked, and
        each finding's placeholder (value -> placeholder); the values masked are remembered. A value
        masked before keeps the placeholder it had then (its kind label too, whichever policy finds it
        now). ``recall=False``: the remembered values are not looked for (a reply: the model was only
        ever given their placeholders). ``present`` (``recalled_in``): the remembered values the body may
        hold; only a string holding one of them is read token by token (None: every string). Raises
        ``Unmaskable``."""
        memory = self._memory.get(tenant)
        values: dict[str, str] = {}
        owners: dict[str, str] = {}
        for value, kind in findings.items():
            made = self._made(tenant, value, kind)
            tag_ = made.rsplit("-", 1)[1]
            if owners.setdefault(tag_, value) != value:
                raise Unmaskable("two values of the request have the same placeholder")
            values[value] = made
        masked = mask_body(raw, parsed, values, self._known(tenant) if memory and recall else None, present)
        for value, made in values.items():
            self._remember(tenant, value, made)
        return masked, values

    def view(self, tenant: str, findings: Mapping[str, str]) -> Callable[[str], str] | None:
        """What masks a text as the body will be masked: ``findings`` (value -> kind, the values found so far
        in the request) and the values remembered for ``tenant`` replaced by their placeholders (the ones
        ``mask`` will write); None when there is nothing to mask. The masked view that the policies which
        cannot mask are given (issue 23): they never see a value the masking policies found. Nothing is
        remembered here: only ``mask``, when the body is forwarded, remembers."""
        memory = self._memory.get(tenant)
        if not findings and not memory:
            return None
        values = {
            value: (memory.get(self._digest(tenant, value)) if memory else None) or self.placeholder(tenant, value, kind)
            for value, kind in findings.items()
        }
        known = self._known(tenant) if memory else None
        if known is not None:  # the same token recurs across a prompt's pieces: one keyed hash each
            lookup, seen = known, dict[str, str | None]()

            def remembered(token: str) -> str | None:
                if token not in seen:
                    seen[token] = lookup(token)
                return seen[token]

            known = remembered

        def masked(text: str) -> str:
            return mask_text(text, values, known)

        return masked

    def placeholder_for(self, tenant: str, value: str, kind: str) -> str:
        """The placeholder ``value`` has for ``tenant`` (the one it had before, if it was masked before),
        remembered as masked: a value a model streams is masked in place, not through ``mask``."""
        made = self._made(tenant, value, kind)
        self._remember(tenant, value, made)
        return made

    def _made(self, tenant: str, value: str, kind: str) -> str:
        memory = self._memory.get(tenant)
        made = memory.get(self._digest(tenant, value)) if memory else None
        return made or self.placeholder(tenant, value, kind)

    def _digest(self, tenant: str, value: str) -> bytes:
        return self._digest_bytes(tenant, value.encode("utf-8", "surrogatepass"))

    def _digest_bytes(self, tenant: str, value: bytes) -> bytes:
        message = b"memory\0" + tenant.encode() + b"\0" + value
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:16]

    def _remember(self, tenant: str, value: str, made: str) -> None:
        memory = self._memory.setdefault(tenant, OrderedDict())
        digest = self._digest(tenant, value)
        memory[digest] = made
        memory.move_to_end(digest)
        self._lengths.setdefault(tenant, set()).add(len(value))
        while len(memory) > self.per_tenant:
            memory.popitem(last=False)

    def _known(self, tenant: str) -> Callable[[str], str | None]:
        memory, lengths = self._memory[tenant], self._lengths[tenant]

        def known(token: str) -> str | None:
            return memory.get(self._digest(tenant, token)) if len(token) in lengths else None

        return known
