"""deploy/grafana/capsem-proxyd.json queries only what a proxy exposes: after some traffic through the
real app, every metric each panel's query names is in ``/metrics``, with every label the query groups
or filters by, and a filter on a label value finds a sample."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from capsem_proxyd.config import Settings
from capsem_proxyd.exchange import Exchange
from tests.support.fake_upstream import FakeUpstream, Reply
from tests.support.metrics import Scrape, scrape
from tests.support.proxy import OPENAI_AUTH, capture_instances

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "capsem-proxyd.json"
METRIC = re.compile(r"\bcapsem_proxyd_[a-z_]+\b")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows' panels included."""
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner["title"], target["expr"]


def test_the_dashboard_is_grafana_json_with_one_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 30
    (variable,) = dashboard["templating"]["list"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = {title for title, _ in queries(dashboard)}
    for wanted in ("Requests by status", "Blocks by policy and hook", "Redactions by policy and hook",
                   "Stream outcomes", "Policy check latency", "Upstream latency", "Verdict cache hit rate"):
        assert wanted in titles


async def chat(url: str, content: str, *, stream: bool = False) -> int:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], "stream": stream}
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(url + "/v1/chat/completions", json=body, headers=OPENAI_AUTH)
    return response.status_code


@pytest.fixture
async def scraped(
    start_proxy: Callable[..., Any], proxy_settings: Settings, fake: FakeUpstream, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Scrape:
    instances = capture_instances(monkeypatch)
    proxy = await start_proxy(proxy_settings, audit_log=str(tmp_path / "audit.jsonl"))
    assert await chat(proxy.url, "the same question") == 200
    assert await chat(proxy.url, "the same question") == 200  # its verdicts now come from the cache
    assert await chat(proxy.url, "please capsem_block this") == 400
    assert await chat(proxy.url, "a streamed answer", stream=True) == 200
    fake.script(Reply(fault="reset_before_headers"))
    assert await chat(proxy.url, "the upstream resets") == 502
    # Masking (issue 23) will tell the recorders of each redaction; until it exists, the test tells them.
    (instance,) = instances
    instance.recorder.redacted(Exchange.begin("/v1/chat/completions"), "on_model_call", "PII", 2)
    return await scrape(proxy.url)


async def test_every_metric_and_label_the_dashboard_queries_is_exposed(scraped: Scrape) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    labels_of: dict[str, set[str]] = {}
    for name, labels in scraped.samples:
        labels_of.setdefault(name, set()).update(label for label, _ in labels)
    checked = set()
    for title, query in queries(dashboard):
        names = set(METRIC.findall(query))
        assert names, f"{title}: {query} queries no capsem_proxyd metric"
        used = {label.strip() for group in GROUPING.findall(query) for label in group.split(",") if label.strip()}
        matchers = MATCHER.findall(query)
        used |= {label for label, _, _ in matchers}
        for name in names:
            assert name in labels_of, f"{title}: {name} is not in /metrics after traffic"
            missing = used - labels_of[name]
            assert not missing, f"{title}: {name} has no label {sorted(missing)}"
            for label, operator, value in matchers:
                values = {dict(labels)[label] for sample, labels in scraped.samples if sample == name}
                pattern = re.compile(value)
                assert any(bool(pattern.fullmatch(seen)) == (operator in ("=~", "=")) for seen in values), (
                    f"{title}: no {name} sample has {label}{operator}{value!r}")
            checked.add(name)
    assert {"capsem_proxyd_blocks_total", "capsem_proxyd_redactions_total",
            "capsem_proxyd_verdict_cache_hits_total"} <= checked
