"""The composition root and lifecycle of ``diskaudit serve``.

One task group owns everything: the scan pool (its worker slots), the scheduler and the HTTP
server. Shutdown is staged: on SIGTERM/SIGINT stop scheduling and cancel scans in progress (their
worker processes are killed), stop the server, end the pool; all of it within
``shutdown-timeout``, after which whatever is left is cancelled. A second signal exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import uuid
from functools import partial
from typing import TYPE_CHECKING

import anyio
import anyio.abc
from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.process_collector import ProcessCollector

from diskaudit.audit.admission import Admission
from diskaudit.audit.service import AuditConfig, AuditService, prepare_dirs
from diskaudit.audit.state import AuditState, audit_and_record
from diskaudit.exporter.scheduler import run_scheduler, scan_all
from diskaudit.exporter.state import ExporterState
from diskaudit.jobs.background import QueueCounts, enqueue_on_interval, prune_forever
from diskaudit.jobs.runner import JobRunner, RunnerConfig
from diskaudit.jobs.store import JobStore, StoreError
from diskaudit.metrics.disk_usage import DiskUsageCollector, ScanPoolCollector
from diskaudit.scan.pool import ScanPool, open_scan_pool
from diskaudit.settings import ConfigError, Settings, is_postgresql

if TYPE_CHECKING:
    from diskaudit.adapters.postgres_slots import PostgresCloneSlots
    from diskaudit.http.webconfig import WebConfig

log = logging.getLogger("diskaudit.daemon")

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_SECOND_SIGNAL = 130
PAGE_JOBS = 20  # jobs listed on the page at /


def build_registry(
    state: ExporterState,
    pool: ScanPool | None,
    settings: Settings,
    *,
    process: bool,
    audits: tuple[AuditState, AuditService] | None = None,
) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(DiskUsageCollector(lambda: state.snapshot, compat=settings.metrics_compat))
    if pool is not None:
        registry.register(ScanPoolCollector(pool.statistics))
    if audits is not None:
        from diskaudit.metrics.audit import AuditCollector

        audit_state, service = audits
        registry.register(AuditCollector(audit_state, service.slots))
    if process:
        ProcessCollector(registry=registry)
    return registry


async def _watch_signals(
    stop: anyio.Event, pool: ScanPool, *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            if not stop.is_set():
                log.info("%s: stopping (again to exit at once)", signal.Signals(signum).name)
                stop.set()
                continue
            log.warning("second signal: exiting at once")
            pool.kill_now()
            os._exit(EXIT_SECOND_SIGNAL)


def _owner_id() -> str:
    """Who claims jobs and clone slots in the store: readable (host, pid) and unique."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def _open_store(settings: Settings) -> JobStore:
    owner = _owner_id()
    if is_postgresql(settings.job_store):
        from diskaudit.adapters.postgres_store import PostgresJobStore

        try:
            return await PostgresJobStore.open(
                settings.job_store,
                owner=owner,
                lease_s=settings.job_lease,
                # Job workers, lease keepers, the queue counts, API requests.
                pool_size=settings.job_workers + 4,
            )
        except StoreError as exc:
            raise ConfigError([f"job-store: {exc}"]) from None

    from diskaudit.adapters.sqlite_store import SQLiteJobStore

    path = os.path.join(settings.data_dir, "diskaudit.db")
    try:
        return await SQLiteJobStore.open(path, owner=owner, lease_s=settings.job_lease)
    except (OSError, StoreError) as exc:
        raise ConfigError([f"data-dir: the job store {path!r} cannot be opened: {exc}"]) from None


async def _open_gate(settings: Settings, store: JobStore) -> PostgresCloneSlots | None:
    """The cluster-wide clone limit, when there is one (a PostgreSQL store; settings check)."""
    if not settings.cluster_max_concurrent_clones:
        return None
    from diskaudit.adapters.postgres_slots import PostgresCloneSlots
    from diskaudit.adapters.postgres_store import PostgresJobStore

    assert isinstance(store, PostgresJobStore)  # settings refuse the limit without one
    gate = PostgresCloneSlots(store, settings.cluster_max_concurrent_clones)
    try:
        await gate.prepare()
    except StoreError as exc:
        raise ConfigError([f"cluster-max-concurrent-clones: {exc}"]) from None
    return gate


async def serve_http(settings: Settings) -> int:
    from diskaudit.http.server import bind
    from diskaudit.http.webconfig import load_web_config

    web = load_web_config(settings.web_config_file) if settings.web_config_file else None
    try:
        api_token = settings.read_api_token()
    except OSError as exc:
        raise ConfigError([f"api-token-file: cannot be read: {exc.strerror or exc}"]) from None
    host, port = settings.bind_host_port()
    sock = bind(host, port)  # BindError before anything starts
    audit_config = AuditConfig.from_settings(settings)
    try:
        # Clones left by a crash go before anything else starts.
        swept = await anyio.to_thread.run_sync(partial(prepare_dirs, audit_config, sweep=True))
    except OSError as exc:
        raise ConfigError(
            [f"data-dir: {settings.data_dir!r} cannot be used: {exc.strerror or exc}"]
        ) from None
    if swept:
        log.warning("removed %d clone directories left by an earlier run", swept)
    store = await _open_store(settings)
    try:
        gate = await _open_gate(settings, store)
        return await _serve(settings, web, api_token, sock, audit_config, store, gate)
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()


async def _serve(
    settings: Settings,
    web: WebConfig | None,
    api_token: str | None,
    sock: socket.socket,
    audit_config: AuditConfig,
    store: JobStore,
    gate: PostgresCloneSlots | None,
) -> int:
    from diskaudit.http.app import build_app
    from diskaudit.http.jobs_api import job_routes
    from diskaudit.http.server import make_server
    from diskaudit.http.webconfig import BasicAuth
    from diskaudit.metrics.cluster import ClusterCollector
    from diskaudit.metrics.jobs import JobsCollector

    for spec in settings.roots():
        # Not fatal: a root may be a mount that appears later; its scans fail until then
        # (diskaudit_scan_success 0), and the daemon keeps serving.
        if not await anyio.Path(spec.path).is_dir():
            log.warning("root %s is not a directory (yet?): its scans will fail", spec.path)
    state = ExporterState(settings.roots())
    stop = anyio.Event()
    server_done = anyio.Event()
    scans = anyio.CancelScope()
    background = anyio.CancelScope()
    counts = QueueCounts()
    async with open_scan_pool(settings.max_procs) as pool, anyio.create_task_group() as tg:
        audit_state = AuditState()
        service = AuditService(
            audit_config,
            pool,
            Admission.from_settings(settings),
            gate,
            last_size=audit_state.last_size,
        )
        runner = JobRunner(
            store,
            partial(audit_and_record, service, audit_state),
            RunnerConfig(
                workers=settings.job_workers,
                max_attempts=settings.max_attempts,
                job_timeout_s=settings.job_timeout,
                backoff_s=settings.retry_backoff,
            ),
        )
        registry = build_registry(
            state, pool, settings, process=True, audits=(audit_state, service)
        )
        registry.register(JobsCollector(counts, lambda: runner.running_jobs))
        if gate is not None:
            registry.register(ClusterCollector(gate))
        app = build_app(
            lambda: state.snapshot,
            registry,
            BasicAuth(web.users if web else {}),
            implementation=pool.implementation,
            api_routes=job_routes(store, runner, audit_config.policy),
            api_token=api_token,
            recent_jobs=partial(store.list, limit=PAGE_JOBS),
        )
        server = make_server(app, web)

        async def run_scans() -> None:
            with scans:
                await run_scheduler(pool, state, settings)

        async def run_background() -> None:
            with background:
                async with anyio.create_task_group() as btg:
                    btg.start_soon(counts.refresh_forever, store)
                    btg.start_soon(prune_forever, store, settings.job_retention)
                    if gate is not None:
                        btg.start_soon(gate.keep_leases)
                    btg.start_soon(service.admission.refresh_forever)  # headroom metrics
                    for repo in settings.repositories:
                        btg.start_soon(enqueue_on_interval, store, runner, repo)

        async def run_server() -> None:
            try:
                await server.serve([sock])
            finally:
                server_done.set()
                stop.set()  # a server that died takes the daemon with it

        await tg.start(_watch_signals, stop, pool)
        await tg.start(runner.run)  # recovers jobs a dead daemon left running
        tg.start_soon(run_scans)
        tg.start_soon(run_background)
        tg.start_soon(run_server)
        log.info(
            "serving on %s://%s/ (%d roots, %d scan workers, %s reader, %d job workers)",
            "https" if web and web.cert_file else "http",
            settings.bind_address,
            len(settings.roots()),
            settings.max_procs,
            pool.implementation,
            settings.job_workers,
        )
        await stop.wait()
        with anyio.move_on_after(settings.shutdown_timeout) as graceful:
            # In this order: no new jobs, running ones finish within shutdown-grace or go back
            # to the queue (their clones removed); scans end (workers killed); the server stops.
            await runner.shutdown(settings.shutdown_grace)
            background.cancel()
            scans.cancel()
            server.request_stop()
            await server_done.wait()
        if graceful.cancelled_caught:
            log.warning(
                "shutdown-timeout (%gs) passed: cancelling the rest", settings.shutdown_timeout
            )
        tg.cancel_scope.cancel()
    log.info("stopped")
    return EXIT_OK


async def write_textfile_once(settings: Settings, output: str) -> int:
    """Scan every root once and write the exposition atomically (temporary file in the same
    directory, then rename). On any failed root the previous file is left in place."""
    state = ExporterState(settings.roots())
    async with open_scan_pool(settings.max_procs) as pool:
        ok = await scan_all(pool, state, settings)
    if not ok:
        failed = [r.spec.path for r in state.snapshot.roots if not r.last_ok]
        print(
            f"diskaudit: not writing {output}: scan failed for {', '.join(failed)}",
            file=sys.stderr,
        )
        return EXIT_RUNTIME
    write_to_textfile(output, build_registry(state, None, settings, process=False))
    log.info("wrote %s", output)
    return EXIT_OK


async def serve_textfile(settings: Settings, output: str) -> int:
    """``mode: file`` as a daemon: after every round of scans, rewrite ``output`` atomically. A
    failed root keeps its last good values, with ``diskaudit_scan_success`` 0."""
    state = ExporterState(settings.roots())
    stop = anyio.Event()
    scans = anyio.CancelScope()
    rounds_send, rounds = anyio.create_memory_object_stream[bool](1)
    async with open_scan_pool(settings.max_procs) as pool, anyio.create_task_group() as tg:
        registry = build_registry(state, pool, settings, process=False)

        async def run_scans() -> None:
            with scans:
                await run_scheduler(pool, state, settings, after_round=rounds_send)

        async def write_after_rounds() -> None:
            async for _ in rounds:
                await anyio.to_thread.run_sync(write_to_textfile, output, registry)
                log.info("wrote %s", output)

        await tg.start(_watch_signals, stop, pool)
        tg.start_soon(run_scans)
        tg.start_soon(write_after_rounds)
        log.info("writing %s every %gs", output, settings.scan_interval_seconds())
        await stop.wait()
        scans.cancel()
        tg.cancel_scope.cancel()
    log.info("stopped")
    return EXIT_OK
