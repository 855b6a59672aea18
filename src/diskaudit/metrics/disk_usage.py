"""The disk usage collector: per-directory and per-root metrics from the current snapshot.

Built anew from the snapshot at every scrape, so a directory that is gone from the last scan is
gone from ``/metrics`` (a ``Gauge`` with labels would keep exporting it forever). ``collect()``
reads memory only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from diskaudit.exporter.state import Snapshot
from diskaudit.render import display_path
from diskaudit.scan.pool import PoolStatistics

_CACHED = "Values come from the last completed background scan, not from this scrape."


def label(path: str) -> str:
    """A path as a label value. Label values are UTF-8; a name that is not (held by Python as
    lone surrogates) is shown with ``\\xNN`` escapes for its undecodable bytes (ambiguous with
    a name that really contains a backslash and "xNN", which docs/metrics.md accepts)."""
    if path.isascii():
        return path
    return display_path(path)


def _dir_families() -> tuple[GaugeMetricFamily, ...]:
    labels = ["path", "level"]
    return (
        GaugeMetricFamily(
            "diskaudit_disk_usage_bytes",
            f"Allocated disk space of the directory and everything beneath it (du -B1). {_CACHED}",
            labels=labels,
        ),
        GaugeMetricFamily(
            "diskaudit_apparent_size_bytes",
            f"Apparent size of the directory and everything beneath it (du -b). {_CACHED}",
            labels=labels,
        ),
        GaugeMetricFamily(
            "diskaudit_files",
            f"Non-directory entries beneath the directory. {_CACHED}",
            labels=labels,
        ),
        GaugeMetricFamily(
            "diskaudit_directories",
            f"Subdirectories beneath the directory, recursively. {_CACHED}",
            labels=labels,
        ),
    )


def _root_families() -> tuple[GaugeMetricFamily, ...]:
    labels = ["root"]
    return (
        GaugeMetricFamily(
            "diskaudit_scan_success",
            "1 if the last background scan of the root succeeded, 0 if it failed.",
            labels=labels,
        ),
        GaugeMetricFamily(
            "diskaudit_scan_duration_seconds",
            "Duration of the last background scan of the root, successful or not.",
            labels=labels,
        ),
        GaugeMetricFamily(
            "diskaudit_scan_last_success_timestamp_seconds",
            "Unix time the last successful scan of the root ended.",
            labels=labels,
        ),
        GaugeMetricFamily(
            "diskaudit_scan_entries",
            "Directory entries examined by the last successful scan of the root.",
            labels=labels,
        ),
        GaugeMetricFamily(
            "diskaudit_scan_errors",
            "Entries that could not be read in the last successful scan (counted and skipped).",
            labels=labels,
        ),
    )


def _extra_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "diskaudit_files_by_size",
            "Files beneath the directory whose st_size is at most upper_bytes and above the next "
            f"lower bound (size-buckets roots only). {_CACHED}",
            labels=["path", "level", "upper_bytes"],
        ),
        GaugeMetricFamily(
            "diskaudit_largest_file_bytes",
            f"Apparent size of one of the root's largest files (top-files roots only). {_CACHED}",
            labels=["root", "rank", "path"],
        ),
    )


def _compat_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "node_disk_usage_bytes",
            f"Disk usage of the directory (dundee/disk_usage_exporter compatible). {_CACHED}",
            labels=["path"],
        ),
        GaugeMetricFamily(
            "node_disk_usage_level_1_bytes",
            "Disk usage of the directories at level 1 (dundee/disk_usage_exporter compatible). "
            + _CACHED,
            labels=["path"],
        ),
    )


class DiskUsageCollector(Collector):
    """Yields the per-directory and per-root families of ``snapshot()``."""

    def __init__(self, snapshot: Callable[[], Snapshot], *, compat: str = "none") -> None:
        self._snapshot = snapshot
        self._compat = compat == "dundee"

    def describe(self) -> Iterable[Metric]:
        # Families without samples: registering the collector must not collect.
        yield from _dir_families()
        yield from _root_families()
        yield from _extra_families()
        if self._compat:
            yield from _compat_families()

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        disk, apparent, files, dirs = _dir_families()
        success, duration, last_success, entries, errors = _root_families()
        compat_all, compat_l1 = _compat_families()
        by_size, largest = _extra_families()
        for r in snap.roots:
            root = label(r.spec.path)
            if r.last_ok is not None:
                success.add_metric([root], 1.0 if r.last_ok else 0.0)
            if r.last_duration_s is not None:
                duration.add_metric([root], r.last_duration_s)
            if r.last_success_s is not None:
                last_success.add_metric([root], r.last_success_s)
            if r.usage is None:
                continue
            entries.add_metric([root], r.usage.entries_scanned)
            errors.add_metric([root], r.usage.errors)
            uppers = [str(b) for b in r.usage.size_bounds] + ["+Inf"]
            for rank, (file_path, size) in enumerate(r.usage.largest_files, start=1):
                largest.add_metric([root, str(rank), label(file_path)], size)
            for e in r.usage.entries:
                path = label(e.path)
                labels = [path, str(e.level)]
                disk.add_metric(labels, e.disk_bytes)
                apparent.add_metric(labels, e.apparent_bytes)
                files.add_metric(labels, e.files)
                dirs.add_metric(labels, e.dirs)
                for upper, count in zip(uppers, e.size_buckets, strict=False):
                    by_size.add_metric([*labels, upper], count)
                if self._compat:
                    # dundee's semantics: every directory at the deepest reported level, and
                    # separately those at level 1.
                    if e.level == r.usage.dir_level:
                        compat_all.add_metric([path], e.disk_bytes)
                    if e.level == 1:
                        compat_l1.add_metric([path], e.disk_bytes)
        yield from (disk, apparent, files, dirs, success, duration, last_success, entries, errors)
        yield from (by_size, largest)
        if self._compat:
            yield from (compat_all, compat_l1)


def _pool_families(s: PoolStatistics | None) -> tuple[Metric, ...]:
    """The pool's families, with values from ``s`` (none for ``describe()``)."""

    def v(field: str) -> float | None:
        return None if s is None else float(getattr(s, field))

    return (
        GaugeMetricFamily(
            "diskaudit_scan_workers", "Scan worker slots (max-procs).", value=v("workers")
        ),
        GaugeMetricFamily(
            "diskaudit_scan_workers_busy",
            "Scan workers walking right now.",
            value=v("busy_workers"),
        ),
        GaugeMetricFamily(
            "diskaudit_scan_worker_processes",
            "Scan worker processes alive (an idle one ends after a minute).",
            value=v("running_processes"),
        ),
        GaugeMetricFamily(
            "diskaudit_scan_units_pending",
            "Units of scan work waiting for a worker.",
            value=v("pending_units"),
        ),
        CounterMetricFamily(
            "diskaudit_scanned_entries",
            "Directory entries examined by all scans since the daemon started.",
            value=v("entries_scanned"),
        ),
    )


class ScanPoolCollector(Collector):
    """The scan pool's ``statistics()`` as metrics."""

    def __init__(self, statistics: Callable[[], PoolStatistics]) -> None:
        self._statistics = statistics

    def describe(self) -> Iterable[Metric]:
        return _pool_families(None)

    def collect(self) -> Iterable[Metric]:
        return _pool_families(self._statistics())
