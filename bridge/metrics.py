"""Prometheus metrics, in a registry owned by the app (no process-global collectors).

With several processes (``bridge serve --processes N``: HTTP in the children, job workers in the
supervisor) every process writes its counters to ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's
multiprocess mode, set by ``bridge serve`` before any metric exists) and a scrape of any process
renders the sum over all of them, so the job counters of the supervisor's workers are seen too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
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
        self._jobs = _JobsByStatus(job_counts) if job_counts is not None else None
        if self._jobs is not None:
            self.registry.register(self._jobs)
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        """Where every process's values live (prometheus_client read the same variable when imported)."""

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()  # every process's counters and histograms, summed
        MultiProcessCollector(merged, path=self.multiprocess_dir)
        if self._jobs is not None:
            merged.register(self._jobs)  # read from the shared store: the same in every process
        return generate_latest(merged)
