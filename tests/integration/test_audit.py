"""The repository audit use case with real git, against servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from diskaudit.audit.errors import CloneError, RefusedError, RepoTooLarge
from diskaudit.audit.service import AuditConfig, AuditService, prepare_dirs
from diskaudit.audit.urlpolicy import UrlPolicy
from diskaudit.scan.pool import ScanPool, open_scan_pool
from diskaudit.settings import Credential
from tests.gitservers import (
    git_daemon,
    git_processes,
    hanging_server,
    http_git_server,
    isolated_git_env,
    make_repo,
    wait_git_processes_gone,
)
from tests.unit.test_urlpolicy import HOSTILE

pytestmark = pytest.mark.anyio

TOKEN = "tok-3f9a1c0e7d2b"  # a token to look for everywhere it must not be


def config(tmp_path: Path, **kw: object) -> AuditConfig:
    schemes = frozenset({"https", "http", "git", "ssh"})
    defaults: dict[str, object] = {
        "policy": UrlPolicy(allowed_schemes=schemes, allow_local=False),
        "clones_dir": tmp_path / "data" / "clones",
        "git_home": tmp_path / "data" / "git-home",
    }
    cfg = AuditConfig(**{**defaults, **kw})  # type: ignore[arg-type]
    prepare_dirs(cfg, sweep=True)
    return cfg


@pytest.fixture
async def pool() -> AsyncIterator[ScanPool]:
    async with open_scan_pool(2) as p:
        yield p


def git_out(repo: Path, *args: str) -> str:
    env = isolated_git_env(repo.parent / "home-check")
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env
    ).stdout


def all_cmdlines() -> list[bytes]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):  # the process ended meanwhile
                out.append(Path(f"/proc/{pid}/cmdline").read_bytes())
    return out


def count_objects(repo: Path) -> int:
    counts = dict(line.split(": ") for line in git_out(repo, "count-objects", "-v").splitlines())
    return int(counts["count"]) + int(counts["in-pack"])


async def test_audit_over_git_daemon_matches_git(tmp_path: Path, pool: ScanPool) -> None:
    repo = make_repo(tmp_path / "srv" / "r.git", files=30, commits=4)
    service = AuditService(config(tmp_path), pool, anyio.CapacityLimiter(2))
    with git_daemon(tmp_path / "srv") as base:
        with anyio.fail_after(60):
            result = await service.audit(base + "r.git")
    s = result.sizer
    total = s.commit_count + s.tree_count + s.blob_count + s.tag_count
    assert total == count_objects(repo)
    assert total == len(git_out(repo, "rev-list", "--objects", "--all").splitlines())
    assert s.commit_count == int(git_out(repo, "rev-list", "--count", "--all"))
    assert result.head == git_out(repo, "rev-parse", "HEAD").strip()
    assert result.disk.worktree_files == 30
    assert result.disk.pack_bytes > 0
    assert list((tmp_path / "data" / "clones").iterdir()) == []  # removed


async def test_private_repository_over_http_with_a_token_that_leaks_nowhere(
    tmp_path: Path, pool: ScanPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    make_repo(tmp_path / "srv" / "p.git", files=10)
    os.environ["DISKAUDIT_TEST_TOKEN"] = TOKEN
    seen_configs: list[str] = []
    cmdlines: list[bytes] = []
    try:
        with http_git_server(tmp_path / "srv", token=TOKEN, delay_s=0.3) as server:
            host = server.url.split("//")[1].rstrip("/")
            cfg = config(
                tmp_path, credentials=(Credential(host=host, token_env="DISKAUDIT_TEST_TOKEN"),)
            )
            service = AuditService(cfg, pool, anyio.CapacityLimiter(2))
            original = service._disk_figures

            async def spy(clone_dir: Path, env: object) -> object:
                seen_configs.append((clone_dir / ".git" / "config").read_text())
                return await original(clone_dir, env)  # type: ignore[arg-type]

            service._disk_figures = spy  # type: ignore[assignment,method-assign]

            async def watch_cmdlines() -> None:
                while True:
                    cmdlines.extend(all_cmdlines())
                    await anyio.sleep(0.02)

            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_cmdlines)
                with anyio.fail_after(60):
                    result = await service.audit(server.url + "p.git")
                tg.cancel_scope.cancel()
            assert any(r.auth for r in server.requests)
    finally:
        del os.environ["DISKAUDIT_TEST_TOKEN"]
    assert result.sizer.blob_count > 0
    assert seen_configs
    assert all(TOKEN not in c for c in seen_configs)  # not in the clone's .git/config
    assert any(b"git" in c for c in cmdlines)  # the watcher did see git running
    assert all(TOKEN.encode() not in c for c in cmdlines)  # nor in any process's argv
    assert TOKEN not in json.dumps(result.to_json())  # nor in the stored result
    assert TOKEN not in caplog.text  # nor in logs


async def test_wrong_token_is_a_permanent_failure_without_the_token_in_it(
    tmp_path: Path, pool: ScanPool
) -> None:
    make_repo(tmp_path / "srv" / "p.git")
    token_file = tmp_path / "token"
    token_file.write_text("wrong-" + TOKEN)
    with http_git_server(tmp_path / "srv", token=TOKEN) as server:
        host = server.url.split("//")[1].rstrip("/")
        cfg = config(tmp_path, credentials=(Credential(host=host, token_file=str(token_file)),))
        service = AuditService(cfg, pool, anyio.CapacityLimiter(2))
        with pytest.raises(CloneError) as caught, anyio.fail_after(60):
            await service.audit(server.url + "p.git")
    assert caught.value.transient is False
    assert TOKEN not in str(caught.value)
    assert list(cfg.clones_dir.iterdir()) == []


async def test_a_server_that_never_answers_times_out_and_leaves_nothing(
    tmp_path: Path, pool: ScanPool
) -> None:
    cfg = config(tmp_path)
    service = AuditService(cfg, pool, anyio.CapacityLimiter(2))
    deadline_s = 2.0
    with hanging_server() as url:
        started = time.monotonic()
        with pytest.raises(TimeoutError), anyio.fail_after(deadline_s):
            await service.audit(url)
        elapsed = time.monotonic() - started
    assert elapsed < deadline_s + 5
    assert wait_git_processes_gone(os.getpid()) == []
    assert list(cfg.clones_dir.iterdir()) == []
    assert service.slots().in_use == 0


async def test_six_audits_never_hold_more_than_two_clones(tmp_path: Path, pool: ScanPool) -> None:
    for i in range(6):
        make_repo(tmp_path / "srv" / f"r{i}.git", files=5)
    service = AuditService(config(tmp_path), pool, anyio.CapacityLimiter(2))
    in_use: list[int] = []
    with http_git_server(tmp_path / "srv", delay_s=0.4) as server:

        async def sample() -> None:
            while True:
                in_use.append(service.slots().in_use)
                await anyio.sleep(0.01)

        async def one(i: int) -> None:
            await service.audit(f"{server.url}r{i}.git")

        with anyio.fail_after(120):
            async with anyio.create_task_group() as watch:
                watch.start_soon(sample)
                async with anyio.create_task_group() as tg:
                    for i in range(6):
                        tg.start_soon(one, i)
                watch.cancel_scope.cancel()
        max_active = server.max_active
    assert max(in_use) == 2  # the limiter's view
    assert max_active == 2  # the server's view
    assert service.slots() == service.slots().__class__(2, 0, 0)


async def test_hostile_urls_are_refused_before_any_git_process(
    tmp_path: Path, pool: ScanPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[object] = []

    async def no_process(*args: object, **kw: object) -> None:
        started.append(args)
        raise AssertionError("a process was started")

    monkeypatch.setattr(anyio, "open_process", no_process)  # what gitproc starts git with
    cfg = config(tmp_path, policy=UrlPolicy())  # the shipped default policy
    service = AuditService(cfg, pool, anyio.CapacityLimiter(2))
    for url, _ in HOSTILE:
        with pytest.raises(RefusedError):
            await service.audit(url)
    for ref in ("-x", "--upload-pack=x", "a b", "a..b"):
        with pytest.raises(RefusedError):
            await service.audit("https://example.com/r.git", ref)
    assert started == []
    assert list(cfg.clones_dir.iterdir()) == []


async def test_a_repository_over_max_repo_bytes_is_stopped(tmp_path: Path, pool: ScanPool) -> None:
    make_repo(tmp_path / "srv" / "big.git", big_blob=8 * 1024 * 1024)
    cfg = config(tmp_path, max_repo_bytes=2 * 1024 * 1024)
    service = AuditService(cfg, pool, anyio.CapacityLimiter(2))
    with (
        git_daemon(tmp_path / "srv") as base,
        pytest.raises(RepoTooLarge, match="max-repo-bytes"),
        anyio.fail_after(60),
    ):
        await service.audit(base + "big.git")
    assert list(cfg.clones_dir.iterdir()) == []
    assert git_processes(os.getpid()) == []


async def test_missing_repository_is_permanent_unreachable_is_transient(
    tmp_path: Path, pool: ScanPool
) -> None:
    make_repo(tmp_path / "srv" / "r.git")
    service = AuditService(config(tmp_path), pool, anyio.CapacityLimiter(2))
    with http_git_server(tmp_path / "srv") as server:
        with pytest.raises(CloneError) as missing, anyio.fail_after(60):
            await service.audit(server.url + "nope.git")
        port = server.port
    with pytest.raises(CloneError) as refused, anyio.fail_after(60):
        await service.audit(f"http://127.0.0.1:{port}/r.git")  # the server is gone
    assert missing.value.transient is False
    assert refused.value.transient is True


async def test_cancellation_mid_clone_kills_git_and_removes_the_clone(
    tmp_path: Path, pool: ScanPool
) -> None:
    make_repo(tmp_path / "srv" / "r.git")
    cfg = config(tmp_path)
    service = AuditService(cfg, pool, anyio.CapacityLimiter(1))
    with http_git_server(tmp_path / "srv", delay_s=5) as server:
        with anyio.move_on_after(1) as scope:
            await service.audit(server.url + "r.git")
        assert scope.cancelled_caught
    assert wait_git_processes_gone(os.getpid()) == []
    assert list(cfg.clones_dir.iterdir()) == []
    assert service.slots().in_use == 0
