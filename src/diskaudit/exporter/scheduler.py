"""Background scans: every ``scan-interval``, each root under its own ``scan-timeout``."""

from __future__ import annotations

import logging
import time

import anyio
import anyio.abc

from diskaudit.exporter.state import ExporterState
from diskaudit.render import display_path
from diskaudit.scan.pool import ScanConfig, ScanError, ScanPool, WorkerError
from diskaudit.settings import RootSpec, Settings

log = logging.getLogger(__name__)


def scan_config(settings: Settings, spec: RootSpec) -> ScanConfig:
    """The scan engine's view of the settings, for one root."""
    return ScanConfig(
        dir_level=spec.dir_level,
        size_buckets=spec.size_buckets,
        top_files=spec.top_files,
        chunk_size=settings.chunk_size,
        follow_symlinks=settings.follow_symlinks,
        one_file_system=settings.one_file_system,
        ignore_dirs=tuple(settings.ignore_dirs),
        io_budget=settings.io_budget,
    )


async def scan_root(
    pool: ScanPool, state: ExporterState, settings: Settings, spec: RootSpec
) -> bool:
    """Scan one root under its deadline and record the outcome. True on success."""
    started = time.monotonic()
    try:
        # The deadline of this root's scan is born here; the pool carries it to every unit.
        with anyio.fail_after(settings.scan_timeout):
            usage = await pool.scan(spec.path, scan_config(settings, spec))
    except TimeoutError:
        error = f"did not finish within scan-timeout ({settings.scan_timeout:g}s)"
    except (ScanError, WorkerError) as exc:
        error = str(exc)
    else:
        state.record_success(spec, usage)
        log.info(
            "scanned %s: %d entries in %.2fs, %d unreadable",
            display_path(spec.path),
            usage.entries_scanned,
            usage.duration_seconds,
            usage.errors,
        )
        for sample in usage.error_samples[:5]:
            log.warning("skipped %s", display_path(sample))
        return True
    state.record_failure(spec, error, time.monotonic() - started)
    log.error("scan of %s failed: %s", display_path(spec.path), display_path(error))
    return False


async def scan_all(pool: ScanPool, state: ExporterState, settings: Settings) -> bool:
    """One round: every root at once (they share the pool's workers). True if all succeeded."""
    results: list[bool] = []

    async def one(spec: RootSpec) -> None:
        results.append(await scan_root(pool, state, settings, spec))

    async with anyio.create_task_group() as tg:
        for spec in settings.roots():
            tg.start_soon(one, spec)
    return all(results)


async def run_scheduler(
    pool: ScanPool,
    state: ExporterState,
    settings: Settings,
    *,
    after_round: anyio.abc.ObjectSendStream[bool] | None = None,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Scan all roots now, then every ``scan-interval`` (measured from the start of a round; a
    round longer than the interval is followed by the next at once). Runs until cancelled."""
    interval = settings.scan_interval_seconds()
    task_status.started()
    while True:
        started = anyio.current_time()
        ok = await scan_all(pool, state, settings)
        if after_round is not None:
            await after_round.send(ok)
        await anyio.sleep_until(started + interval)
