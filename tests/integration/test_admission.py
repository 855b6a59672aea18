"""Clone admission with real git: bursts of six audits counted from the server's side under
a fake machine reading; a clone stopped when memory runs short; a repository over
max-repo-bytes through the job runner; the probe inside a real memory cgroup where one can be
made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from diskaudit.audit.admission import Admission, AdmissionConfig, MachineReading
from diskaudit.audit.errors import ResourceShortage
from diskaudit.audit.service import AuditConfig, AuditService, prepare_dirs
from diskaudit.audit.state import AuditState, audit_and_record
from diskaudit.audit.urlpolicy import UrlPolicy
from diskaudit.jobs.memory_store import MemoryJobStore
from diskaudit.jobs.model import Status
from diskaudit.jobs.runner import JobRunner, RunnerConfig
from diskaudit.scan.pool import ScanPool, open_scan_pool
from tests.gitservers import git_daemon, git_processes, http_git_server, make_repo

pytestmark = pytest.mark.anyio

MIB = 1024**2
GIB = 1024**3


class FakeProbe:
    def __init__(self, memory: int, disk: int = 100 * GIB) -> None:
        self.memory = memory
        self.disk = disk

    def read(self) -> MachineReading:
        return MachineReading(self.memory, self.disk)


def config(tmp_path: Path, **kw: object) -> AuditConfig:
    defaults: dict[str, object] = {
        "policy": UrlPolicy(allowed_schemes=frozenset({"http", "git"})),
        "clones_dir": tmp_path / "data" / "clones",
        "git_home": tmp_path / "data" / "git-home",
    }
    cfg = AuditConfig(**{**defaults, **kw})  # type: ignore[arg-type]
    prepare_dirs(cfg, sweep=True)
    return cfg


def admission(probe: FakeProbe, max_clones: int = 4) -> Admission:
    cfg = AdmissionConfig(
        max_clones=max_clones,
        memory_reserve=256 * MIB,
        memory_estimate=128 * MIB,
        disk_reserve=GIB,
        poll_s=0.05,
    )
    return Admission(anyio.CapacityLimiter(max_clones), cfg, probe)


@pytest.fixture
async def pool() -> AsyncIterator[ScanPool]:
    async with open_scan_pool(2) as p:
        yield p


async def burst_of_six(tmp_path: Path, pool: ScanPool, adm: Admission) -> tuple[int, list[int]]:
    """Six audits at once over HTTP (each upload-pack answer delayed, so clones overlap).
    Returns the most clone sessions the server saw at once, and the token totals seen."""
    srv = tmp_path / "srv"
    for i in range(6):
        if not (srv / f"r{i}.git").exists():
            make_repo(srv / f"r{i}.git", files=5)
    service = AuditService(config(tmp_path), pool, adm)
    totals: list[int] = []
    with http_git_server(srv, delay_s=0.4) as server:

        async def sample() -> None:
            while True:
                totals.append(service.slots().total)
                await anyio.sleep(0.01)

        await adm.refresh()
        with anyio.fail_after(120):
            async with anyio.create_task_group() as watch:
                watch.start_soon(sample)
                async with anyio.create_task_group() as tg:
                    for i in range(6):
                        tg.start_soon(service.audit, f"{server.url}r{i}.git")
                watch.cancel_scope.cancel()
        return server.max_active, totals


async def test_six_clones_fewer_when_memory_is_short_more_when_plentiful(
    tmp_path: Path, pool: ScanPool
) -> None:
    short, short_totals = await burst_of_six(tmp_path, pool, admission(FakeProbe(300 * MIB)))
    plenty, plenty_totals = await burst_of_six(tmp_path, pool, admission(FakeProbe(10 * GIB)))
    assert short == 1
    assert set(short_totals) == {1}
    assert 2 < plenty <= 4  # the server saw more than two sessions at once, never over max
    assert all(1 <= t <= 4 for t in plenty_totals)
    assert list((tmp_path / "data" / "clones").iterdir()) == []


async def test_a_clone_is_stopped_when_memory_runs_short(tmp_path: Path, pool: ScanPool) -> None:
    make_repo(tmp_path / "srv" / "r.git", files=5)
    probe = FakeProbe(10 * GIB)
    adm = admission(probe)
    cfg = config(tmp_path)
    service = AuditService(cfg, pool, adm)
    with http_git_server(tmp_path / "srv", delay_s=3) as server:

        async def squeeze() -> None:
            # Once the clone runs (its directory exists), the machine runs short.
            while True:
                if any(cfg.clones_dir.iterdir()):
                    probe.memory = 100 * MIB
                    return
                await anyio.sleep(0.01)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(squeeze)
                with pytest.raises(ResourceShortage) as caught:
                    await service.audit(server.url + "r.git")
    assert "clone-memory-reserve" in str(caught.value)
    assert "100 MiB left" in str(caught.value)
    assert caught.value.transient is True
    assert list(cfg.clones_dir.iterdir()) == []
    assert git_processes(os.getpid()) == []
    assert dict(service.slots().stopped) == {"memory": 1}
    assert service.slots().in_use == 0


async def test_a_repository_over_max_repo_bytes_fails_its_job_with_the_reason(
    tmp_path: Path, pool: ScanPool
) -> None:
    make_repo(tmp_path / "srv" / "big.git", big_blob=8 * 1024 * 1024)
    cfg = config(tmp_path, max_repo_bytes=2 * 1024 * 1024)
    service = AuditService(cfg, pool, admission(FakeProbe(10 * GIB)))
    state = AuditState()
    store = MemoryJobStore()
    with git_daemon(tmp_path / "srv") as base:
        job, _ = await store.submit(base + "big.git", None, now=1.0)
        runner = JobRunner(
            store,
            lambda url, ref: audit_and_record(service, state, url, ref),
            RunnerConfig(poll_s=0.05, job_timeout_s=60),
        )
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                await tg.start(runner.run)
                while True:
                    done = await store.get(job.id)
                    assert done is not None
                    if done.status.final:
                        break
                    await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
    done = await store.get(job.id)
    assert done is not None
    assert done.status == Status.FAILED
    assert done.attempts == 1  # permanent: not retried
    assert done.error is not None
    assert "max-repo-bytes" in done.error
    assert list(cfg.clones_dir.iterdir()) == []
    assert git_processes(os.getpid()) == []
    assert state.finished["failed"] == 1
    assert dict(service.slots().stopped) == {"max_repo_bytes": 1}


# --- a real memory cgroup -------------------------------------------------------------------

_PROBE_IN_CGROUP = """
import json, sys
from diskaudit.audit.admission import MachineProbe
b = bytearray(int(sys.argv[1]))  # memory the cgroup charges to us
print(json.dumps(MachineProbe("/").memory_available()))
"""


def make_memory_cgroup(limit: int) -> tuple[Path, Path] | None:
    """A memory cgroup (v2 where the memory controller is there, else v1) with ``limit``;
    returns (its directory, the file to write a pid into), or None where it cannot be made."""
    name = f"diskaudit-test-{uuid.uuid4().hex[:8]}"
    candidates = [
        (Path("/sys/fs/cgroup"), "memory.max"),
        (Path("/sys/fs/cgroup/unified"), "memory.max"),
        (Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"),
    ]
    for base, limit_file in candidates:
        if not (base / limit_file).exists() and not (base / "cgroup.controllers").exists():
            continue
        controllers = base / "cgroup.controllers"
        if limit_file == "memory.max" and "memory" not in (
            controllers.read_text() if controllers.exists() else ""
        ):
            continue
        try:
            d = base / name
            d.mkdir()
        except OSError:
            continue
        try:
            (d / limit_file).write_text(str(limit))
        except OSError:
            d.rmdir()
            continue
        return d, d / "cgroup.procs"
    return None


def test_the_probe_sees_the_limit_of_a_real_memory_cgroup() -> None:
    limit = 256 * MIB
    made = make_memory_cgroup(limit)
    if made is None:
        pytest.skip(
            "no writable memory cgroup here (needs root and a cgroup v1/v2 memory "
            "controller); the cgroup arithmetic is covered with fake files"
        )
    d, procs = made
    try:
        # The child moves itself into the cgroup before Python starts, then holds 64 MiB.
        code = f'echo $$ > {procs} && exec "$0" -c "$1" {64 * MIB}'
        out = subprocess.run(
            ["sh", "-c", code, sys.executable, _PROBE_IN_CGROUP],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        available = json.loads(out)
    finally:
        d.rmdir()
    assert isinstance(available, int)
    assert available <= limit - 64 * MIB  # the bytearray, charged to the cgroup
    assert available > limit - 200 * MIB  # and not much else (an interpreter, the imports)
