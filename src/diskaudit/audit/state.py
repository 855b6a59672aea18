"""What the daemon remembers of audits for its metrics: the latest result per repository, how
many audits ended in each status, and a histogram of clone durations."""

from __future__ import annotations

import bisect
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from diskaudit.audit.model import AuditResult

if TYPE_CHECKING:
    from diskaudit.audit.service import AuditService

#: Upper bounds of the clone duration histogram, in seconds.
CLONE_DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0)


@dataclass
class AuditState:
    #: The latest successful audit of each repository URL, and when it ended (unix time).
    latest: dict[str, tuple[AuditResult, float]] = field(default_factory=dict)
    #: Finished audits by status: succeeded, failed, timed_out, refused, cancelled.
    finished: Counter[str] = field(default_factory=Counter)
    #: Clone durations: counts per bucket (non-cumulative; the last is +Inf), sum, count.
    clone_buckets: list[int] = field(
        default_factory=lambda: [0] * (len(CLONE_DURATION_BUCKETS) + 1)
    )
    clone_seconds_sum: float = 0.0

    def record_success(self, result: AuditResult) -> None:
        self.latest[result.url] = (result, time.time())
        self.finished["succeeded"] += 1
        self.clone_buckets[bisect.bisect_left(CLONE_DURATION_BUCKETS, result.clone_seconds)] += 1
        self.clone_seconds_sum += result.clone_seconds

    def record_end(self, status: str) -> None:
        self.finished[status] += 1

    def last_size(self, url: str) -> int | None:
        """Disk the repository took (``.git`` plus checkout) at its latest successful audit,
        or None if it has none: the clone admission weighs the next audit by it."""
        latest = self.latest.get(url)
        if latest is None:
            return None
        disk = latest[0].disk
        return disk.git_dir_disk_bytes + disk.worktree_disk_bytes

    def forget(self, url: str) -> None:
        self.latest.pop(url, None)


async def audit_and_record(
    service: AuditService, state: AuditState, url: str, ref: str | None
) -> AuditResult:
    """``service.audit`` that also counts how it ended, for the daemon's metrics."""
    import anyio

    from diskaudit.audit.errors import AuditError, RefusedError

    try:
        result = await service.audit(url, ref)
    except RefusedError:
        state.record_end("refused")
        raise
    except TimeoutError:
        state.record_end("timed_out")
        raise
    except AuditError:
        state.record_end("failed")
        raise
    except anyio.get_cancelled_exc_class():
        state.record_end("cancelled")
        raise
    state.record_success(result)
    return result
