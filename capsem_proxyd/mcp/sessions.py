"""Session ids bound to the client that opened them, and each session's approved tools.

A server's ``Mcp-Session-Id`` is a bearer token: whoever presents it speaks in
that session, with what the server granted it. The hop never hands it out
bare: the client gets ``<server's id>.<tag>``, the tag a keyed hash of the
server's id, the server's name and the client's *owner* (the tenant its proof
header names, or else a keyed hash of the credential headers it forwards).
A request presenting an id whose tag does not match its own owner is refused
as an unknown session (404, what the protocol answers for a session the
server does not know: the client starts a new one), before anything is sent.
Nothing is stored to check it, so it holds across restarts of a process
whose key is kept (the state directory's placeholder key when there is one).

The approved tools of a session are the names its last ``tools/list`` reply
kept after the checks: a ``tools/call`` for any other name is refused. They
are kept in this process's memory, bounded (the oldest sessions forgotten
first): a session whose listing this process never saw has no approved tool.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Iterable, Mapping

_TAG_HEX = 32
MAX_SESSIONS = 10_000


def owner_of(key: bytes, tenant: str | None, headers: Mapping[str, str], forwarded: Iterable[str]) -> str:
    """Who a request speaks for: ``tenant:<id>`` when a proof header named one, else a keyed hash of the
    credential headers it forwards (their names and values; never logged)."""
    if tenant is not None:
        return f"tenant:{tenant}"
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for name in sorted(forwarded):
        if name in ("accept", "content-type", "mcp-protocol-version", "last-event-id"):
            continue
        value = headers.get(name)
        if value is not None:
            mac.update(name.encode("latin-1") + b"\0" + value.encode("latin-1") + b"\0")
    return "credentials:" + mac.hexdigest()[:_TAG_HEX]


class SessionIds:
    """Wraps the server's session ids for clients, and unwraps (verifying) what clients present."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _tag(self, server: str, owner: str, session: str) -> str:
        message = f"{server}\0{owner}\0{session}".encode("latin-1", "replace")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:_TAG_HEX]

    def wrap(self, server: str, owner: str, session: str) -> str:
        return f"{session}.{self._tag(server, owner, session)}"

    def unwrap(self, server: str, owner: str, presented: str) -> str | None:
        """The server's id inside ``presented``, None when it was not given to this owner for this server."""
        session, dot, tag = presented.rpartition(".")
        if not dot or not session:
            return None
        return session if hmac.compare_digest(tag, self._tag(server, owner, session)) else None


def hashed(session: str) -> str:
    """A session id as log lines name it: never the bearer token itself."""
    return hashlib.sha256(session.encode("latin-1", "replace")).hexdigest()[:12] if session else "-"


class ApprovedTools:
    """The tools each session may call: those its last checked listing kept."""

    def __init__(self, capacity: int = MAX_SESSIONS) -> None:
        self.capacity = capacity
        self._sessions: OrderedDict[str, frozenset[str]] = OrderedDict()

    def approve(self, session: str, names: Iterable[str], *, add: bool = False) -> None:
        known = self._sessions.get(session, frozenset()) if add else frozenset()
        self._sessions[session] = known | frozenset(names)
        self._sessions.move_to_end(session)
        while len(self._sessions) > self.capacity:
            self._sessions.popitem(last=False)

    def allows(self, session: str, name: str) -> bool:
        return name in self._sessions.get(session, frozenset())

    def listed(self, session: str) -> bool:
        return session in self._sessions

    def forget(self, session: str) -> None:
        self._sessions.pop(session, None)


class RefusalCounts:
    """How often each session had each tool refused: an agent that retries a refused call is told apart,
    in the log, from one that took the refusal (the refusal says not to retry)."""

    def __init__(self, capacity: int = MAX_SESSIONS) -> None:
        self.capacity = capacity
        self._counts: OrderedDict[tuple[str, str], int] = OrderedDict()

    def add(self, session: str, tool: str) -> int:
        """Count one more refusal of ``tool`` in ``session``; the count so far."""
        key = (session, tool)
        count = self._counts.pop(key, 0) + 1
        self._counts[key] = count
        while len(self._counts) > self.capacity:
            self._counts.popitem(last=False)
        return count
