"""``Recorders`` fans each moment out to the recorders that implement it, and only to them."""

from __future__ import annotations

from collections.abc import Mapping

from capsem_proxyd.exchange import Exchange
from capsem_proxyd.observe.recorders import Recorder, Recorders


class Done(Recorder):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def request_done(self, exchange: Exchange, status: int, outcome: str) -> None:
        self.calls.append(f"done {status} {outcome}")


class Started(Done):
    reads_usage = True

    def request_started(self, exchange: Exchange, headers: Mapping[str, str]) -> None:
        self.calls.append(f"started {headers.get('traceparent')}")


def test_each_moment_reaches_the_recorders_that_implement_it_in_order() -> None:
    done, started = Done(), Started()
    recorders = Recorders(done, Recorders(started), Recorder())
    exchange = Exchange.begin("/v1/chat/completions")
    recorders.request_started(exchange, {"traceparent": "tp"})
    recorders.request_done(exchange, 200, "200")
    assert done.calls == ["done 200 200"]
    assert started.calls == ["started tp", "done 200 200"]
    assert recorders.recorders[1] in recorders._started  # a nested Recorders implements every moment


def test_usage_is_read_only_when_some_recorder_asks_for_it() -> None:
    assert not Recorders(Done(), Recorder()).reads_usage
    assert Recorders(Done(), Recorders(Started())).reads_usage
