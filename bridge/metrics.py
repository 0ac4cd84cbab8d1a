"""Prometheus metrics, in a registry owned by the app (no process-global collectors)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bridge.jobs.models import STATUSES


class _JobsByStatus(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]):
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("bridge_jobs", "Jobs in the store by status", labels=["status"])
        try:
            counts = self._counts()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the DB blinked
            counts = {}
        for status in STATUSES:
            g.add_metric([status], counts.get(status, 0))
        yield g


class BridgeMetrics:
    def __init__(self, job_counts: Callable[[], dict[str, int]] | None = None):
        self.registry = CollectorRegistry()
        self.webhooks = Counter("bridge_webhooks_total", "Webhook deliveries by route, event and outcome",
                                ["route", "event", "outcome"], registry=self.registry)
        self.ack_seconds = Histogram("bridge_webhook_ack_seconds", "Time to answer a webhook",
                                     ["outcome"], registry=self.registry,
                                     buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5))
        self.jobs_finished = Counter("bridge_job_attempts_total", "Finished job attempts by pipeline and outcome",
                                     ["pipeline", "outcome"], registry=self.registry)
        self.job_seconds = Histogram("bridge_job_duration_seconds", "Job attempt duration",
                                     ["pipeline", "outcome"], registry=self.registry,
                                     buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600))
        self.rejected = Counter("bridge_requests_rejected_total",
                                "Requests refused before any route ran (oversized, bad query) by reason",
                                ["reason"], registry=self.registry)
        if job_counts is not None:
            self.registry.register(_JobsByStatus(job_counts))

    def render(self) -> bytes:
        return generate_latest(self.registry)
