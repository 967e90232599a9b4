"""Reading a proxy's ``/metrics`` the way Prometheus would."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

SampleKey = tuple[str, tuple[tuple[str, str], ...]]
CHAT = {"provider": "openai", "endpoint": "chat.completions"}


class Scrape:
    """One parsed /metrics answer: look samples up by name and labels (absent means 0)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[SampleKey, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(labels)[label] for sample, labels in self.samples if sample == name and label in dict(labels)}


async def scrape(url: str) -> Scrape:
    async with httpx.AsyncClient() as client:
        response = await client.get(url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return Scrape(response.text)


def requests_total(metrics: Scrape, status: str, **route: str) -> float:
    return metrics("capsem_proxyd_requests_total", **(route or CHAT), status=status)
