"""Repository audit metrics: the clone limiter and admission, finished audits, and per
repository the figures of its latest audit (``diskaudit_repo_*{repo}``).
Read from memory; no I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from diskaudit.audit.model import AuditResult
from diskaudit.audit.service import CloneSlots
from diskaudit.audit.state import CLONE_DURATION_BUCKETS, AuditState

_LATEST = "From the latest successful audit of the repository."


def _families() -> dict[str, Metric]:
    repo = ["repo"]
    families: list[Metric] = [
        GaugeMetricFamily(
            "diskaudit_clone_slots",
            "Clone slots now: max-concurrent-clones, fewer while memory is short (at least 1).",
        ),
        GaugeMetricFamily(
            "diskaudit_clones_in_progress", "Clone slots taken (clone, scan or cleanup running)."
        ),
        GaugeMetricFamily("diskaudit_clones_waiting", "Audits waiting for a clone slot."),
        GaugeMetricFamily(
            "diskaudit_clone_admissions_waiting",
            "Audits holding their slots but waiting for the memory or disk reserve.",
        ),
        GaugeMetricFamily(
            "diskaudit_clone_memory_headroom_bytes",
            "Available memory less clone-memory-reserve and the estimates running clones have "
            "not taken yet (negative: under the reserve). From the latest reading.",
        ),
        GaugeMetricFamily(
            "diskaudit_clone_disk_headroom_bytes",
            "Free space in data-dir less clone-disk-reserve and the sizes running clones are "
            "expected to reach (negative: under the reserve). From the latest reading.",
        ),
        CounterMetricFamily(
            "diskaudit_clones_stopped",
            "Clones stopped while running, by reason (memory, disk, max_repo_bytes).",
            labels=["reason"],
        ),
        CounterMetricFamily("diskaudit_audits", "Audits finished, by status.", labels=["status"]),
        HistogramMetricFamily(
            "diskaudit_clone_duration_seconds", "Duration of git clone in successful audits."
        ),
        GaugeMetricFamily(
            "diskaudit_repo_pack_bytes", f"Size of the pack files. {_LATEST}", labels=repo
        ),
        GaugeMetricFamily("diskaudit_repo_loose_objects", f"Loose objects. {_LATEST}", labels=repo),
        GaugeMetricFamily(
            "diskaudit_repo_git_dir_bytes", f"Disk usage of .git (du -B1). {_LATEST}", labels=repo
        ),
        GaugeMetricFamily(
            "diskaudit_repo_worktree_bytes",
            f"Disk usage of the checkout without .git (du -B1). {_LATEST}",
            labels=repo,
        ),
        GaugeMetricFamily(
            "diskaudit_repo_objects", f"Objects by type. {_LATEST}", labels=["repo", "type"]
        ),
        GaugeMetricFamily(
            "diskaudit_repo_objects_size_bytes",
            f"Uncompressed size of the objects by type. {_LATEST}",
            labels=["repo", "type"],
        ),
        GaugeMetricFamily("diskaudit_repo_references", f"References. {_LATEST}", labels=repo),
        GaugeMetricFamily(
            "diskaudit_repo_sizer_value",
            f"git-sizer's metrics, by name (counts, bytes). {_LATEST}",
            labels=["repo", "metric"],
        ),
        GaugeMetricFamily(
            "diskaudit_repo_concern_level",
            "git-sizer's level of concern (value / reference scale; 1 = one star). " + _LATEST,
            labels=["repo", "metric"],
        ),
        GaugeMetricFamily(
            "diskaudit_repo_last_audit_timestamp_seconds",
            "Unix time the latest successful audit of the repository ended.",
            labels=repo,
        ),
    ]
    return {f.name: f for f in families}


def _gauge(f: dict[str, Metric], name: str, labels: list[str], value: float) -> None:
    family = f[name]
    assert isinstance(family, GaugeMetricFamily)
    family.add_metric(labels, value)


class AuditCollector(Collector):
    def __init__(self, state: AuditState, slots: Callable[[], CloneSlots]) -> None:
        self._state = state
        self._slots = slots

    def describe(self) -> Iterable[Metric]:
        return _families().values()

    def collect(self) -> Iterator[Metric]:
        f = _families()
        slots = self._slots()
        _gauge(f, "diskaudit_clone_slots", [], slots.total)
        _gauge(f, "diskaudit_clones_in_progress", [], slots.in_use)
        _gauge(f, "diskaudit_clones_waiting", [], slots.waiting)
        _gauge(f, "diskaudit_clone_admissions_waiting", [], slots.waiting_for_resources)
        if slots.memory_headroom is not None:
            _gauge(f, "diskaudit_clone_memory_headroom_bytes", [], slots.memory_headroom)
        if slots.disk_headroom is not None:
            _gauge(f, "diskaudit_clone_disk_headroom_bytes", [], slots.disk_headroom)
        stopped = f["diskaudit_clones_stopped"]
        assert isinstance(stopped, CounterMetricFamily)
        for reason, n in slots.stopped:
            stopped.add_metric([reason], n)
        audits = f["diskaudit_audits"]
        assert isinstance(audits, CounterMetricFamily)
        for status, n in sorted(self._state.finished.items()):
            audits.add_metric([status], n)
        hist = f["diskaudit_clone_duration_seconds"]
        assert isinstance(hist, HistogramMetricFamily)
        cumulative = list(accumulate(self._state.clone_buckets))
        bounds = [str(b) for b in CLONE_DURATION_BUCKETS] + ["+Inf"]
        hist.add_metric(
            [], list(zip(bounds, cumulative, strict=True)), self._state.clone_seconds_sum
        )
        for url, (result, ended) in sorted(self._state.latest.items()):
            _repo(f, url, result, ended)
        yield from f.values()


def _repo(f: dict[str, Metric], url: str, result: AuditResult, ended: float) -> None:
    d, sizer = result.disk, result.sizer
    _gauge(f, "diskaudit_repo_pack_bytes", [url], d.pack_bytes)
    _gauge(f, "diskaudit_repo_loose_objects", [url], d.loose_objects)
    _gauge(f, "diskaudit_repo_git_dir_bytes", [url], d.git_dir_disk_bytes)
    _gauge(f, "diskaudit_repo_worktree_bytes", [url], d.worktree_disk_bytes)
    _gauge(f, "diskaudit_repo_last_audit_timestamp_seconds", [url], ended)
    _gauge(f, "diskaudit_repo_references", [url], sizer.reference_count)
    for kind, count, size in (
        ("commit", sizer.commit_count, sizer.commit_size),
        ("tree", sizer.tree_count, sizer.tree_size),
        ("blob", sizer.blob_count, sizer.blob_size),
        ("tag", sizer.tag_count, None),
    ):
        _gauge(f, "diskaudit_repo_objects", [url, kind], count)
        if size is not None:
            _gauge(f, "diskaudit_repo_objects_size_bytes", [url, kind], size)
    for metric in sizer.metrics:
        _gauge(f, "diskaudit_repo_sizer_value", [url, metric.name], metric.value)
        if metric.level is not None:
            _gauge(f, "diskaudit_repo_concern_level", [url, metric.name], metric.level)
