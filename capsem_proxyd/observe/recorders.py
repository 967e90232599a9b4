"""Recorders: what the pipeline and the policy engine tell the outside world.

The engine and the pipeline do not know who listens. They call the recorder
they were built with at named moments, the way mitmproxy calls its addons'
hooks; the request log, the metrics, the audit log and (when enabled) the
OpenTelemetry spans each implement the moments they care about and ignore the
rest (``Recorder``'s methods do nothing). ``Recorders`` fans one call out to
the recorders that implement it.

The moments:

* ``request_started``: a request's head arrived (every request, proxied or
  not); its headers are there for recorders that need them (the client's
  trace context). Which plane serves it is not known yet.
* ``decision_made``: a policy decided on a hook (ALLOW included). ``mode`` is
  ``enforce``, ``monitor`` (a monitor-mode policy that would have refused: no
  effect) or ``shadow`` (a shadow policy's would-be decision: no effect).
  ``cache`` (``CacheUse``), when the content was checked in pieces: how many,
  how many of their verdicts came from the verdict cache, and whether the
  decision itself did.
* ``refused``: a policy's decision stopped the content (a BLOCK, or a
  CONFIRM under ``--confirm-action block``): ``decision_made`` told of it
  first; this says it took effect.
* ``redacted``: a policy's finding was masked in the content instead of
  refusing it (``count`` places), the REDACT rank of ``verdicts.py``. The
  masking of content calls it; nothing in the proxy masks yet.
* ``forwarding``: the request is about to be sent upstream. A recorder that
  cannot record it may refuse it by raising ``ProxyError`` (the audit log,
  failing under ``--audit-failure block``): the one moment that can refuse.
* ``policy_checked``: a hook ran over all active policies, in ``seconds``.
* ``upstream_answered``: the provider's response headers arrived.
* ``stream_started`` / ``stream_finished``: a streamed reply began to flow to
  the client, and ended (``outcome``: completed, blocked, upstream_error,
  client_disconnected...).
* ``stored_content``: a request referred to content stored at the provider
  (``reference``), and ``--stored-content`` decided: ``allowed`` (mode
  ``allow``, unchecked), ``admitted`` (a reply this proxy delivered to the
  tenant) or ``refused``.
* ``policy_workers``: how many of the CPU-heavy policies' worker processes
  are ready (``ready``) of the ``configured`` count, told by the pool at its
  start and whenever one is lost or replaced.
* ``reply_memory_changed``: the bytes of non-streamed replies the process
  holds (``--reply-memory``) changed to ``held``.
* ``mcp_message``: a JSON-RPC message passed the MCP hop (``McpNote``: its
  direction, server, method, tool, the hop's ``decision``: ALLOW, BLOCK,
  FILTERED or REFUSED, and the session hashed; ``label`` is the method as
  the metrics count it, ``other`` for one the hop does not name).
* ``mcp_pins``: a server's listing was compared with its pins: ``pending``
  tools are held until accepted (the gauge of pending pins).
* ``mcp_pin_accepted``: an operator accepted a server's pending change of a
  tool through the daemon (``capsem-proxyd mcp-pins accept``): the audit log
  records the hashes and who asked.
* ``request_done``: the last byte of the reply went out (or the client left);
  every request, proxied or not, ends here exactly once.

A recorder that sets ``reads_usage`` asks the pipeline to read the token
usage and answering model each reply states into the ``Exchange``; without
one, the pipeline does not look.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from capsem.models import Decision

from capsem_proxyd.exchange import Exchange
from capsem_proxyd.outcomes import StreamOutcome
from capsem_proxyd.views import StoredReference


@dataclass(frozen=True, slots=True)
class CacheUse:
    """How a decision on content checked in pieces was made: ``pieces`` asked for (seams included),
    ``hits`` of them answered by the verdict cache, ``cached``: the decision recorded is one the
    cache held (for an ALLOW: every piece's was)."""

    pieces: int
    hits: int
    cached: bool

    @property
    def misses(self) -> int:
        return self.pieces - self.hits


@dataclass(frozen=True, slots=True)
class McpNote:
    """One JSON-RPC message on the MCP hop, as its log line, its count and its audit record name it: never
    its content, a header value or the session id itself (``session`` is its hash)."""

    direction: str  # "client" (to the server) or "server" (to the client)
    server: str
    method: str  # "tools/list", or for a response "tools/list response" ("response": a request not seen)
    label: str  # the method as the metrics count it: a method the hop names, "response" or "other"
    tool: str  # the tool a tools/call (or its response) names, else ""
    decision: str
    session: str


class Recorder:
    """Listens to the pipeline and the engine; override the moments you need."""

    reads_usage = False

    def request_started(self, exchange: Exchange, headers: Mapping[str, str]) -> None:
        """A request arrived; ``headers`` by lower-case name. Never keep them: they carry keys."""

    def decision_made(
        self, exchange: Exchange, hook: str, policy: str, decision: Decision, mode: str, cache: CacheUse | None = None
    ) -> None:
        """``policy`` is the deciding policy's name (``decision.policy`` may be a shared default)."""

    def refused(self, exchange: Exchange, hook: str, decision: Decision) -> None:
        """``decision`` (already told to ``decision_made``) stopped the content on ``hook``."""

    def redacted(
        self, exchange: Exchange, hook: str, policy: str, count: int, kind: str = "", placeholder: str = "",
        key_id: str = "",
    ) -> None:
        """``policy``'s findings on ``hook`` were masked in ``count`` places; the content went on.
        ``kind`` is the rule or entity, ``placeholder`` what replaced the value (never the value), ``key_id``
        the placeholder key's id."""

    def policy_checked(self, hook: str, seconds: float) -> None:
        """One hook over all active policies took ``seconds``."""

    def forwarding(self, exchange: Exchange) -> None:
        """The request goes upstream next; raise ``ProxyError`` to refuse it (nothing sent)."""

    def upstream_answered(self, exchange: Exchange, seconds: float) -> None:
        """The provider's response headers came ``seconds`` after the request was sent."""

    def stream_started(self, exchange: Exchange) -> None:
        """A streamed reply starts flowing to the client."""

    def stream_finished(self, exchange: Exchange, outcome: StreamOutcome) -> None:
        """A streamed reply ended, however it ended."""

    def stored_content(self, exchange: Exchange, reference: StoredReference, decision: str) -> None:
        """A reference to stored content, and what ``--stored-content`` made of it."""

    def policy_workers(self, ready: int, configured: int) -> None:
        """The policy worker processes: ``ready`` of ``configured`` serve now."""

    def reply_memory_changed(self, held: int) -> None:
        """The process now holds ``held`` bytes of non-streamed replies."""

    def mcp_message(self, exchange: Exchange, note: McpNote) -> None:
        """A JSON-RPC message crossed the MCP hop in ``exchange`` (an HTTP request on ``/mcp/NAME``)."""

    def mcp_pins(self, server: str, pending: int) -> None:
        """``server``'s last listing held ``pending`` tools that its pins do not know."""

    def mcp_pin_accepted(self, server: str, tool: str, change: Mapping[str, Any], accepted_by: Mapping[str, Any]) -> None:
        """An operator accepted ``server``'s pending ``change`` of ``tool`` (``mcp-pins accept``):
        ``change`` has its kind and the hashes replaced and pinned, ``accepted_by`` who asked."""

    def request_done(self, exchange: Exchange, status: int, outcome: str) -> None:
        """The request is over: ``status`` as the client got it, ``outcome`` what happened."""


class Recorders(Recorder):
    """Several recorders as one, called in order.

    Each moment goes only to the recorders that implement it: a moment nobody
    listens to (``request_started`` without tracing) costs one empty loop.
    """

    def __init__(self, *recorders: Recorder) -> None:
        self.recorders = recorders
        self.reads_usage = any(recorder.reads_usage for recorder in recorders)
        self._started = _implementing(recorders, "request_started")
        self._decision = _implementing(recorders, "decision_made")
        self._checked = _implementing(recorders, "policy_checked")
        self._refused = _implementing(recorders, "refused")
        self._redacted = _implementing(recorders, "redacted")
        self._forwarding = _implementing(recorders, "forwarding")
        self._answered = _implementing(recorders, "upstream_answered")
        self._stream_started = _implementing(recorders, "stream_started")
        self._stream_finished = _implementing(recorders, "stream_finished")
        self._stored = _implementing(recorders, "stored_content")
        self._done = _implementing(recorders, "request_done")
        self._workers = _implementing(recorders, "policy_workers")
        self._reply_memory = _implementing(recorders, "reply_memory_changed")
        self._mcp = _implementing(recorders, "mcp_message")
        self._mcp_pins = _implementing(recorders, "mcp_pins")
        self._mcp_accepted = _implementing(recorders, "mcp_pin_accepted")

    def request_started(self, exchange: Exchange, headers: Mapping[str, str]) -> None:
        for recorder in self._started:
            recorder.request_started(exchange, headers)

    def decision_made(
        self, exchange: Exchange, hook: str, policy: str, decision: Decision, mode: str, cache: CacheUse | None = None
    ) -> None:
        for recorder in self._decision:
            recorder.decision_made(exchange, hook, policy, decision, mode, cache)

    def refused(self, exchange: Exchange, hook: str, decision: Decision) -> None:
        for recorder in self._refused:
            recorder.refused(exchange, hook, decision)

    def redacted(
        self, exchange: Exchange, hook: str, policy: str, count: int, kind: str = "", placeholder: str = "",
        key_id: str = "",
    ) -> None:
        for recorder in self._redacted:
            recorder.redacted(exchange, hook, policy, count, kind, placeholder, key_id)

    def policy_checked(self, hook: str, seconds: float) -> None:
        for recorder in self._checked:
            recorder.policy_checked(hook, seconds)

    def forwarding(self, exchange: Exchange) -> None:
        for recorder in self._forwarding:
            recorder.forwarding(exchange)

    def upstream_answered(self, exchange: Exchange, seconds: float) -> None:
        for recorder in self._answered:
            recorder.upstream_answered(exchange, seconds)

    def stream_started(self, exchange: Exchange) -> None:
        for recorder in self._stream_started:
            recorder.stream_started(exchange)

    def stream_finished(self, exchange: Exchange, outcome: StreamOutcome) -> None:
        for recorder in self._stream_finished:
            recorder.stream_finished(exchange, outcome)

    def stored_content(self, exchange: Exchange, reference: StoredReference, decision: str) -> None:
        for recorder in self._stored:
            recorder.stored_content(exchange, reference, decision)

    def policy_workers(self, ready: int, configured: int) -> None:
        for recorder in self._workers:
            recorder.policy_workers(ready, configured)

    def reply_memory_changed(self, held: int) -> None:
        for recorder in self._reply_memory:
            recorder.reply_memory_changed(held)

    def mcp_message(self, exchange: Exchange, note: McpNote) -> None:
        for recorder in self._mcp:
            recorder.mcp_message(exchange, note)

    def mcp_pins(self, server: str, pending: int) -> None:
        for recorder in self._mcp_pins:
            recorder.mcp_pins(server, pending)

    def mcp_pin_accepted(self, server: str, tool: str, change: Mapping[str, Any], accepted_by: Mapping[str, Any]) -> None:
        for recorder in self._mcp_accepted:
            recorder.mcp_pin_accepted(server, tool, change, accepted_by)

    def request_done(self, exchange: Exchange, status: int, outcome: str) -> None:
        for recorder in self._done:
            recorder.request_done(exchange, status, outcome)


def _implementing(recorders: tuple[Recorder, ...], moment: str) -> tuple[Recorder, ...]:
    """The recorders whose class overrides ``moment`` (a ``Recorders`` inside counts as all of them)."""
    base = getattr(Recorder, moment)
    return tuple(recorder for recorder in recorders if getattr(type(recorder), moment) is not base)
