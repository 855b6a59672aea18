"""What the exporter knows: per root, the last completed scan and how the last attempt went.

A ``Snapshot`` is immutable; the scheduler replaces the current one after each scan, and readers
(``/metrics``, the page, ``/readyz``) take whichever is current. A scrape never waits for a scan
and never sees a half-merged one: that is the whole concurrency story.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from diskaudit.scan.model import RootUsage
from diskaudit.settings import RootSpec

#: Scans remembered per root for the page's history (oldest dropped first).
HISTORY_LIMIT = 50


@dataclass(frozen=True, slots=True)
class ScanRecord:
    """One finished scan attempt of a root, as the page's history shows it."""

    #: Unix time the attempt ended.
    ended_s: float
    duration_s: float
    ok: bool
    #: The root's total disk usage; None for a failed attempt.
    disk_bytes: int | None = None
    #: Directory entries examined; None for a failed attempt.
    entries_scanned: int | None = None
    #: Unreadable entries skipped (successful attempts) — 0 for a failed one.
    errors: int = 0


def _appended(history: tuple[ScanRecord, ...], record: ScanRecord) -> tuple[ScanRecord, ...]:
    return (*history, record)[-HISTORY_LIMIT:]


@dataclass(frozen=True, slots=True)
class RootStatus:
    spec: RootSpec
    #: The last successful scan; kept when a later one fails, replaced when one succeeds (so a
    #: deleted directory disappears with the next successful scan).
    usage: RootUsage | None = None
    #: Unix time the last successful scan ended.
    last_success_s: float | None = None
    #: Whether the last finished attempt succeeded; None before any attempt finished.
    last_ok: bool | None = None
    last_duration_s: float | None = None
    last_error: str | None = None
    #: Unix time the last attempt (success or failure) ended.
    last_attempt_s: float | None = None
    #: The last ``HISTORY_LIMIT`` finished attempts, oldest first.
    history: tuple[ScanRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    roots: tuple[RootStatus, ...]

    @property
    def ready(self) -> bool:
        """Every root has finished a first scan (successfully or not)."""
        return all(r.last_ok is not None for r in self.roots)


class ExporterState:
    """Holds the current snapshot. Used from the event loop thread only."""

    def __init__(self, roots: list[RootSpec]) -> None:
        self.snapshot = Snapshot(tuple(RootStatus(spec) for spec in roots))

    def _replace(self, spec: RootSpec, record: ScanRecord, **changes: object) -> None:
        self.snapshot = Snapshot(
            tuple(
                replace(r, history=_appended(r.history, record), **changes)  # type: ignore[arg-type]
                if r.spec == spec
                else r
                for r in self.snapshot.roots
            )
        )

    def record_success(self, spec: RootSpec, usage: RootUsage) -> None:
        now = time.time()
        record = ScanRecord(
            ended_s=now,
            duration_s=usage.duration_seconds,
            ok=True,
            disk_bytes=usage.total.disk_bytes if usage.entries else None,
            entries_scanned=usage.entries_scanned,
            errors=usage.errors,
        )
        self._replace(
            spec,
            record,
            usage=usage,
            last_success_s=now,
            last_ok=True,
            last_duration_s=usage.duration_seconds,
            last_error=None,
            last_attempt_s=now,
        )

    def record_failure(self, spec: RootSpec, error: str, duration_s: float) -> None:
        now = time.time()
        self._replace(
            spec,
            ScanRecord(ended_s=now, duration_s=duration_s, ok=False),
            last_ok=False,
            last_duration_s=duration_s,
            last_error=error,
            last_attempt_s=now,
        )
