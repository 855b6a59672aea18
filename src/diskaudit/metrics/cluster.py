"""The cluster-wide clone limit, as this daemon last saw it (no database query per scrape)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from diskaudit.audit.gate import CloneGate, GateState


def _families(state: GateState | None) -> list[GaugeMetricFamily]:
    total = GaugeMetricFamily(
        "diskaudit_cluster_clone_slots",
        "cluster-max-concurrent-clones: clones at once across the daemons sharing the job store.",
    )
    in_use = GaugeMetricFamily(
        "diskaudit_cluster_clones_in_progress",
        "Cluster clone slots held by any daemon (refreshed every few seconds).",
    )
    here = GaugeMetricFamily(
        "diskaudit_cluster_clone_slots_held_here", "Cluster clone slots held by this daemon."
    )
    waiting = GaugeMetricFamily(
        "diskaudit_cluster_clones_waiting_here",
        "Audits of this daemon waiting for a cluster clone slot.",
    )
    if state is not None:
        total.add_metric([], state.total)
        in_use.add_metric([], state.in_use)
        here.add_metric([], state.held_here)
        waiting.add_metric([], state.waiting_here)
    return [total, in_use, here, waiting]


class ClusterCollector(Collector):
    """Registered only when there is a cluster limit."""

    def __init__(self, gate: CloneGate) -> None:
        self._gate = gate

    def describe(self) -> Iterable[Metric]:
        return _families(None)

    def collect(self) -> Iterable[Metric]:
        return _families(self._gate.state())
