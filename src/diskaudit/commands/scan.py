"""``diskaudit scan``: scan roots once with the worker pool and print the result."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from dataclasses import dataclass

import anyio

from diskaudit.exporter.scheduler import scan_config
from diskaudit.render import display_path, failed_root_json, root_json, table
from diskaudit.scan.model import RootUsage
from diskaudit.scan.pool import ScanError, ScanPool, WorkerError, open_scan_pool
from diskaudit.settings import RootSpec, Settings

log = logging.getLogger(__name__)

PROGRESS_AFTER_S = 1.0  # a scan shorter than this prints no progress line
PROGRESS_EVERY_S = 0.25


@dataclass
class _Outcome:
    spec: RootSpec
    usage: RootUsage | None = None
    error: str | None = None


async def _scan_one(pool: ScanPool, settings: Settings, outcome: _Outcome) -> None:
    spec = outcome.spec
    try:
        outcome.usage = await pool.scan(spec.path, scan_config(settings, spec))
    except (ScanError, WorkerError) as exc:
        outcome.error = str(exc)
    except TimeoutError:
        outcome.error = f"{spec.path}: scan passed its deadline"
    for sample in outcome.usage.error_samples if outcome.usage else ():
        log.warning("skipped %s", display_path(sample))


async def _progress(pool: ScanPool) -> None:
    await anyio.sleep(PROGRESS_AFTER_S)
    try:
        while True:
            s = pool.statistics()
            print(
                f"\r{s.entries_scanned:>12,} entries, {s.busy_workers}/{s.workers} workers busy",
                end="",
                file=sys.stderr,
                flush=True,
            )
            await anyio.sleep(PROGRESS_EVERY_S)
    finally:
        print("\r\033[K", end="", file=sys.stderr, flush=True)


async def _scan_all(settings: Settings, outcomes: list[_Outcome], timeout_s: float) -> None:
    with anyio.fail_after(timeout_s):
        async with open_scan_pool(settings.max_procs) as pool, anyio.create_task_group() as tg:
            if sys.stderr.isatty():
                tg.start_soon(_progress, pool)
            async with anyio.create_task_group() as scans:
                for outcome in outcomes:
                    scans.start_soon(_scan_one, pool, settings, outcome)
            tg.cancel_scope.cancel()


def run_scan(
    settings: Settings, paths: list[str], *, output_format: str, timeout: float | None
) -> int:
    specs = (
        [RootSpec(os.path.abspath(p), settings.dir_level) for p in paths]
        if paths
        else settings.roots()
    )
    outcomes = [_Outcome(spec) for spec in specs]
    try:
        anyio.run(_scan_all, settings, outcomes, math.inf if timeout is None else timeout)
    except TimeoutError:
        for o in outcomes:
            if o.usage is None and o.error is None:
                o.error = f"{o.spec.path}: scan passed its deadline ({timeout}s)"
    for o in outcomes:
        if o.error is not None:
            print(f"diskaudit: {display_path(o.error)}", file=sys.stderr)
    done = [o.usage for o in outcomes if o.usage is not None]
    if output_format == "json":
        doc = {
            "roots": [
                root_json(o.usage)
                if o.usage is not None
                else failed_root_json(o.spec.path, o.spec.dir_level, o.error or "")
                for o in outcomes
            ]
        }
        json.dump(doc, sys.stdout, indent=1)
        print()
    else:
        print(table(done))
    return 0 if all(o.error is None for o in outcomes) else 1
