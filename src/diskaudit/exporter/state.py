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

    def _replace(self, spec: RootSpec, **changes: object) -> None:
        self.snapshot = Snapshot(
            tuple(replace(r, **changes) if r.spec == spec else r for r in self.snapshot.roots)  # type: ignore[arg-type]
        )

    def record_success(self, spec: RootSpec, usage: RootUsage) -> None:
        now = time.time()
        self._replace(
            spec,
            usage=usage,
            last_success_s=now,
            last_ok=True,
            last_duration_s=usage.duration_seconds,
            last_error=None,
            last_attempt_s=now,
        )

    def record_failure(self, spec: RootSpec, error: str, duration_s: float) -> None:
        self._replace(
            spec,
            last_ok=False,
            last_duration_s=duration_s,
            last_error=error,
            last_attempt_s=time.time(),
        )
