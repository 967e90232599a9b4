"""Recorders: what the pipeline and the policy engine tell the outside world.

The engine and the pipeline do not know who listens. They call the recorder
they were built with at named moments, the way mitmproxy calls its addons'
hooks; the request log, the metrics and the audit log each implement the
moments they care about and ignore the rest (``Recorder``'s methods do
nothing). ``Recorders`` fans one call out to several.

The moments:

* ``decision_made``: a policy decided on a hook (ALLOW included). ``mode`` is
  ``enforce``, ``monitor`` (a monitor-mode policy that would have refused: no
  effect) or ``shadow`` (a shadow policy's would-be decision: no effect).
* ``policy_checked``: a hook ran over all active policies, in ``seconds``.
* ``upstream_answered``: the provider's response headers arrived.
* ``stream_started`` / ``stream_finished``: a streamed reply began to flow to
  the client, and ended (``outcome``: completed, blocked, upstream_error,
  client_disconnected...).
* ``request_done``: the last byte of the reply went out (or the client left);
  every request, proxied or not, ends here exactly once.
"""

from __future__ import annotations

from capsem.models import Decision

from capsem_proxyd.exchange import Exchange


class Recorder:
    """Listens to the pipeline and the engine; override the moments you need."""

    def decision_made(self, exchange: Exchange, hook: str, policy: str, decision: Decision, mode: str) -> None:
        """``policy`` is the deciding policy's name (``decision.policy`` may be a shared default)."""

    def policy_checked(self, hook: str, seconds: float) -> None:
        """One hook over all active policies took ``seconds``."""

    def upstream_answered(self, exchange: Exchange, seconds: float) -> None:
        """The provider's response headers came ``seconds`` after the request was sent."""

    def stream_started(self, exchange: Exchange) -> None:
        """A streamed reply starts flowing to the client."""

    def stream_finished(self, exchange: Exchange, outcome: str) -> None:
        """A streamed reply ended, however it ended."""

    def request_done(self, exchange: Exchange, status: int, outcome: str) -> None:
        """The request is over: ``status`` as the client got it, ``outcome`` what happened."""


class Recorders(Recorder):
    """Several recorders as one, called in order."""

    def __init__(self, *recorders: Recorder) -> None:
        self.recorders = recorders

    def decision_made(self, exchange: Exchange, hook: str, policy: str, decision: Decision, mode: str) -> None:
        for recorder in self.recorders:
            recorder.decision_made(exchange, hook, policy, decision, mode)

    def policy_checked(self, hook: str, seconds: float) -> None:
        for recorder in self.recorders:
            recorder.policy_checked(hook, seconds)

    def upstream_answered(self, exchange: Exchange, seconds: float) -> None:
        for recorder in self.recorders:
            recorder.upstream_answered(exchange, seconds)

    def stream_started(self, exchange: Exchange) -> None:
        for recorder in self.recorders:
            recorder.stream_started(exchange)

    def stream_finished(self, exchange: Exchange, outcome: str) -> None:
        for recorder in self.recorders:
            recorder.stream_finished(exchange, outcome)

    def request_done(self, exchange: Exchange, status: int, outcome: str) -> None:
        for recorder in self.recorders:
            recorder.request_done(exchange, status, outcome)
