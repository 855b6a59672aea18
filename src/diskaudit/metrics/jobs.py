"""Job queue metrics, from counts refreshed in the background (no store query per scrape)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from diskaudit.jobs.background import QueueCounts


def _families(
    counts: QueueCounts | None, running_here: int | None
) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    by_status = GaugeMetricFamily(
        "diskaudit_jobs", "Jobs in the store by status (refreshed every 5 s).", labels=["status"]
    )
    store_ok = GaugeMetricFamily(
        "diskaudit_job_store_up", "1 if the job store answered the last count, else 0."
    )
    here = GaugeMetricFamily("diskaudit_jobs_running_here", "Jobs this daemon is running.")
    if counts is not None and running_here is not None:
        for status, n in sorted(counts.counts.items()):
            by_status.add_metric([status.value], n)
        store_ok.add_metric([], 1.0 if counts.ok else 0.0)
        here.add_metric([], running_here)
    return by_status, store_ok, here


class JobsCollector(Collector):
    def __init__(self, counts: QueueCounts, running_here: Callable[[], int]) -> None:
        self._counts = counts
        self._running_here = running_here

    def describe(self) -> Iterable[Metric]:
        return _families(None, None)

    def collect(self) -> Iterable[Metric]:
        return _families(self._counts, self._running_here())
