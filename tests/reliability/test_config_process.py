"""``diskaudit serve`` given bad configurations, and scan workers killed from outside.

1. Every bad configuration makes ``serve`` exit 2 (1 for a runtime problem: the port in use)
   with one message naming the problem, having started nothing: no data-dir (so no
   diskaudit.db), no process left behind, the port free. A missing ``analyzed-path`` is not a
   configuration error: the daemon starts, reports the root failed (``diskaudit_scan_success``
   0), turns ready after that first round, and picks the directory up once it exists.
2. A scan worker SIGKILLed in the middle of a scan, in the daemon and in-process with
   ``open_scan_pool``; and idle workers killed between two scans.
3. SIGTERM while a scan and a job run is covered by
   tests/e2e/test_daemon.py::test_sigterm_during_a_scan_stops_everything and
   tests/e2e/test_jobs.py::test_sigterm_gives_running_jobs_back_and_they_succeed_after_restart.

Outcomes: RESULTS-trees-config.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from diskaudit.scan.pool import ScanConfig, WorkerError, open_scan_pool
from tests.daemon import Daemon, free_port, running_daemon
from tests.trees import du, python_for, run_as, unprivileged_user, world_readable_tmpdir

pytestmark = pytest.mark.anyio

#: Set in the environment of every daemon started here (and inherited by its workers), to find
#: whatever it left running.
MARK_VAR = "RELIABILITY_TEST_MARK"


# Helpers


def marked_processes(mark: str) -> list[int]:
    needle = f"{MARK_VAR}={mark}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue
    return found


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of ``pid``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return fields[0].decode(), int(fields[1])


def worker_pids(parent: int) -> set[int]:
    """Live (not zombie) scan worker processes of ``parent``."""
    pids = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        stat = _stat(int(name))
        if b"diskaudit.scan.worker" in cmdline and stat and stat[0] != "Z" and stat[1] == parent:
            pids.add(int(name))
    return pids


def zombies(parent: int) -> list[int]:
    return [
        int(name)
        for name in os.listdir("/proc")
        if name.isdigit() and (_stat(int(name)) or ("", 0)) == ("Z", parent)
    ]


def samples(text: str, name: str, label: str = "root") -> dict[str, float]:
    """{value of ``label`` ("" if unlabelled): value} of one family ({} if absent)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[s.labels.get(label, "")] = s.value
    return out


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(what: str, check: Callable[[], bool], d: Daemon, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert d.proc.poll() is None, (
            f"the daemon exited while waiting for {what}:\n" + (d.log_text()[-4000:])
        )
        assert time.monotonic() < deadline, f"no {what} within {timeout_s}s:\n{d.log_text()}"
        time.sleep(0.05)


# 1. Bad configurations


@dataclass(frozen=True)
class Case:
    """A bad configuration: ``build(dir, settings)`` edits the settings (or returns None for
    no config file at all); ``problem`` must be in the one line of the error."""

    id: str
    #: The key or file the message must name; "CONFIG" for the configuration file itself.
    names: str
    problem: str
    build: Callable[[Path, dict[str, Any]], dict[str, Any] | str | None]
    #: Run as an unprivileged user (root reads chmod 000 files and writes anywhere).
    unprivileged: bool = False


def _with(**extra: Any) -> Callable[[Path, dict[str, Any]], dict[str, Any]]:
    return lambda _d, settings: {**settings, **{k.replace("_", "-"): v for k, v in extra.items()}}


def _raw(text: str) -> Callable[[Path, dict[str, Any]], str]:
    return lambda _d, settings: yaml.safe_dump(settings) + text


def _under_a_file(d: Path, settings: dict[str, Any]) -> dict[str, Any]:
    (d / "file").write_text("not a directory\n")
    return {**settings, "data-dir": str(d / "file" / "data")}


def _read_only_parent(d: Path, settings: dict[str, Any]) -> dict[str, Any]:
    (d / "ro").mkdir()
    (d / "ro").chmod(0o555)
    return {**settings, "data-dir": str(d / "ro" / "data")}


def _web_config_dir(d: Path, settings: dict[str, Any]) -> dict[str, Any]:
    (d / "web.yml").mkdir()
    return {**settings, "web-config-file": str(d / "web.yml")}


def _unreadable(key: str, content: str) -> Callable[[Path, dict[str, Any]], dict[str, Any]]:
    def build(d: Path, settings: dict[str, Any]) -> dict[str, Any]:
        path = d / f"{key}.secret"
        path.write_text(content)
        path.chmod(0o000)
        return {**settings, key: str(path)}

    return build


CASES = [
    Case("broken-yaml", "CONFIG", "invalid YAML at line", _raw("max-procs: [1\n")),
    Case(
        "unknown-key",
        "CONFIG",
        "max-prcs: unknown key (did you mean max-procs?)",
        _raw("max-prcs: 2\n"),
    ),
    Case(
        "wrong-type",
        "max-procs",
        "max-procs: 'many' is not a valid integer",
        _with(max_procs="many"),
    ),
    Case(
        "max-procs-0",
        "max-procs",
        "max-procs: 0 is out of range (must be >= 1)",
        _with(max_procs=0),
    ),
    Case(
        "max-procs--1",
        "max-procs",
        "max-procs: -1 is out of range (must be >= 1)",
        _with(max_procs=-1),
    ),
    Case(
        "chunk-size-0",
        "chunk-size",
        "chunk-size: 0 is out of range (must be >= 1)",
        _with(chunk_size=0),
    ),
    Case(
        "missing-config-file",
        "CONFIG",
        "cannot read config file: No such file or directory",
        lambda _d, _s: None,
    ),
    Case(
        "data-dir-under-proc",
        "data-dir",
        "data-dir: '/proc/diskaudit-reliability/data' cannot be used: No such file or directory",
        _with(data_dir="/proc/diskaudit-reliability/data"),
    ),
    Case("data-dir-under-a-file", "data-dir", "cannot be used: Not a directory", _under_a_file),
    Case(
        "data-dir-read-only-parent",
        "data-dir",
        "cannot be used: Permission denied",
        _read_only_parent,
        unprivileged=True,
    ),
    Case(
        "web-config-file-missing",
        "nope.yml",
        "cannot read web config file: No such file or directory",
        lambda d, s: {**s, "web-config-file": str(d / "nope.yml")},
    ),
    Case(
        "web-config-file-is-a-directory",
        "web.yml",
        "cannot read web config file: Is a directory",
        _web_config_dir,
    ),
    Case(
        "web-config-file-unreadable",
        "web-config-file.secret",
        "cannot read web config file: Permission denied",
        _unreadable("web-config-file", "basic_auth_users: {}\n"),
        unprivileged=True,
    ),
    Case(
        "api-token-file-missing",
        "api-token-file",
        "api-token-file: cannot be read: No such file or directory",
        lambda d, s: {**s, "api-token-file": str(d / "no-token")},
    ),
    Case(
        "api-token-file-unreadable",
        "api-token-file",
        "api-token-file: cannot be read: Permission denied",
        _unreadable("api-token-file", "s3cret\n"),
        unprivileged=True,
    ),
]


def _workdir(unprivileged: bool, tmp_path: Path) -> tuple[str | None, AbstractContextManager[Path]]:
    if not unprivileged:
        return None, nullcontext(tmp_path)
    user = unprivileged_user()
    if user is None and os.geteuid() == 0:
        pytest.skip("root, and no unprivileged user to run as")
    return user, world_readable_tmpdir()


def serve_once(
    config: Path, user: str | None, mark: str, timeout_s: float = 30.0
) -> tuple[subprocess.CompletedProcess[bytes], float]:
    started = time.monotonic()
    proc = run_as(
        [*python_for(user), "-m", "diskaudit", "serve", "--config", str(config)],
        user=user,
        check=False,
        timeout=timeout_s,
        env={**os.environ, MARK_VAR: mark},
    )
    return proc, time.monotonic() - started


def assert_nothing_started(mark: str, data_dir: Path, port: int | None) -> None:
    assert not data_dir.exists(), sorted(p.name for p in data_dir.rglob("*"))
    assert marked_processes(mark) == []
    if port is not None:
        assert port_is_free(port)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_configuration_exits_2_and_starts_nothing(tmp_path: Path, case: Case) -> None:
    user, workdir = _workdir(case.unprivileged, tmp_path)
    with workdir as d:
        (d / "scan").mkdir()
        (d / "data-parent").mkdir()
        (d / "data-parent").chmod(0o1777)  # the unprivileged user could create data-dir here
        port = free_port()
        data_dir = d / "data-parent" / "data"
        settings = {
            "analyzed-path": str(d / "scan"),
            "bind-address": f"127.0.0.1:{port}",
            "data-dir": str(data_dir),
            "scan-interval": "1h",
        }
        config = d / "diskaudit.yaml"
        built = case.build(d, settings)
        if isinstance(built, dict):
            data_dir = Path(built["data-dir"])
            config.write_text(yaml.safe_dump(built))
        elif built is not None:
            config.write_text(built)
        mark = uuid.uuid4().hex
        proc, elapsed = serve_once(config, user, mark)
        stderr = proc.stderr.decode(errors="replace")
        print(f"\n{case.id}: exit {proc.returncode} in {elapsed:.2f}s: {stderr!r}")
        assert proc.returncode == 2, stderr
        assert proc.stdout == b""
        lines = stderr.splitlines()
        assert lines[0] == "diskaudit: configuration error:", stderr
        [problem] = lines[1:]
        assert case.problem in problem
        assert (str(config) if case.names == "CONFIG" else case.names) in problem
        assert_nothing_started(mark, data_dir, port)
        assert elapsed < 10


@pytest.mark.timeout(60)
def test_port_in_use_exits_1_and_starts_nothing(tmp_path: Path) -> None:
    (tmp_path / "scan").mkdir()
    mark = uuid.uuid4().hex
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = tmp_path / "diskaudit.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "analyzed-path": str(tmp_path / "scan"),
                    "bind-address": f"127.0.0.1:{port}",
                    "data-dir": str(tmp_path / "data"),
                }
            )
        )
        proc, elapsed = serve_once(config, None, mark)
    stderr = proc.stderr.decode(errors="replace")
    print(f"\nport in use: exit {proc.returncode} in {elapsed:.2f}s: {stderr!r}")
    assert proc.returncode == 1, stderr
    assert stderr == f"diskaudit: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert_nothing_started(mark, tmp_path / "data", None)


@pytest.mark.timeout(60)
def test_missing_analyzed_path_starts_reports_failure_and_recovers(tmp_path: Path) -> None:
    """Decision (RESULTS-trees-config.md): not a configuration error. A root may be a mount
    that is not there yet; refusing to start would turn that into a restart loop, and
    ``diskaudit_scan_success 0`` is what an alert should watch."""
    root = tmp_path / "not-yet"
    settings = {"analyzed-path": str(root), "dir-level": 1, "max-procs": 1, "scan-interval": "1s"}
    with running_daemon(tmp_path, settings, wait_ready=False) as d:
        d.wait_ready()  # raises if the daemon exits instead
        assert d.get("/readyz") == (200, b"ready\n")
        text = d.metrics()
        assert samples(text, "diskaudit_scan_success") == {str(root): 0.0}
        assert samples(text, "diskaudit_disk_usage_bytes", "path") == {}
        assert f"scan of {root} failed: {root}: No such file or directory" in d.log_text()
        status, page = d.get("/")
        assert status == 200
        assert "failed" in page.decode()
        assert d.get("/healthz")[0] == 200

        (root / "sub").mkdir(parents=True)
        (root / "sub" / "f").write_bytes(b"x" * 12345)
        d.wait_for_scan_after(time.time())
        text = d.metrics()
        assert samples(text, "diskaudit_scan_success") == {str(root): 1.0}
        expected = {p: float(v) for p, v in du(root, depth=1, apparent=False).items()}
        assert samples(text, "diskaudit_disk_usage_bytes", "path") == expected
        assert d.stop() == 0


# 2. Scan workers killed from outside

TREE_DIRS = 100
TREE_FILES = 1000


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """100,000 empty files in 100 directories."""
    root = tmp_path_factory.mktemp("kill")
    for i in range(TREE_DIRS):
        d = root / f"d{i:03}"
        d.mkdir()
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for j in range(TREE_FILES):
                os.mknod(f"f{j}", dir_fd=fd)
        finally:
            os.close(fd)
    yield root
    shutil.rmtree(root)


@pytest.mark.timeout(120)
def test_worker_killed_mid_scan_in_the_daemon(tmp_path: Path, tree: Path) -> None:
    settings = {
        "analyzed-path": str(tree),
        "dir-level": 1,
        "max-procs": 2,
        "chunk-size": 10,
        # 100,000 entries take ~0.1 s even in chunks of 10: a budget makes the scan last ~5 s.
        "io-budget": 20000,
        "scan-interval": "1s",
        "shutdown-timeout": "5s",
    }
    with running_daemon(tmp_path, settings, wait_ready=False) as d:
        pid = d.proc.pid

        def both_busy() -> bool:
            try:
                text = d.metrics()
            except OSError:
                return False
            return samples(text, "diskaudit_scan_workers_busy") == {"": 2.0}

        wait_until("a scan with both workers busy", both_busy, d, 30)
        before = worker_pids(pid)
        victim = min(before)
        killed_at = time.time()
        os.kill(victim, signal.SIGKILL)

        def failure_seen() -> bool:
            assert d.proc.poll() is None, f"the daemon died:\n{d.log_text()[-4000:]}"
            assert d.get("/healthz")[0] == 200
            text = d.metrics()
            return (
                "scan worker" in d.log_text()
                or samples(text, "diskaudit_scan_success").get(str(tree)) == 0.0
            )

        time.sleep(0.5)
        wait_until("the failed round", failure_seen, d, 20)
        log = d.log_text()
        assert f"scan of {tree} failed: scan worker" in log, log
        assert "Traceback" not in log

        d.wait_for_scan_after(killed_at, timeout_s=40)
        text = d.metrics()
        assert samples(text, "diskaudit_scan_success") == {str(tree): 1.0}
        expected = {p: float(v) for p, v in du(tree, depth=1, apparent=False).items()}
        assert samples(text, "diskaudit_disk_usage_bytes", "path") == expected

        def replaced_and_full() -> bool:
            text = d.metrics()
            busy = samples(text, "diskaudit_scan_workers_busy").get("", 0)
            procs = samples(text, "diskaudit_scan_worker_processes").get("", 0)
            return busy >= 1 and procs == 2 and bool(worker_pids(pid) - before)

        wait_until("a replaced worker in a later scan", replaced_and_full, d, 30)
        assert victim not in worker_pids(pid)
        assert zombies(pid) == []
        assert d.stop() == 0


def my_workers() -> set[int]:
    return worker_pids(os.getpid())


@pytest.mark.timeout(60)
async def test_worker_killed_mid_pool_scan_is_a_worker_error(tree: Path) -> None:
    before = my_workers()
    slow = ScanConfig(dir_level=1, chunk_size=10, io_budget=20000)
    victims: list[int] = []
    with anyio.fail_after(50):
        async with open_scan_pool(2) as pool:
            mine = my_workers() - before

            async def kill_when_busy() -> None:
                while pool.statistics().busy_workers < 2:  # noqa: ASYNC110 (polling the pool)
                    await anyio.sleep(0.001)
                await anyio.sleep(0.2)
                victims.append(min(mine))
                os.kill(victims[0], signal.SIGKILL)

            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_when_busy)
                with pytest.raises(WorkerError):
                    await pool.scan(str(tree), slow)
            usage = await pool.scan(str(tree), ScanConfig(dir_level=1))
            assert usage.total.disk_bytes == du(tree, depth=0, apparent=False)[str(tree)]
            assert usage.errors == 0
            assert pool.statistics().running_processes == 2
            assert victims[0] not in my_workers()
    assert my_workers() - before == set()
    assert zombies(os.getpid()) == []


@pytest.mark.timeout(60)
async def test_idle_workers_killed_between_scans_are_replaced(tree: Path) -> None:
    before = my_workers()
    with anyio.fail_after(50):
        async with open_scan_pool(2) as pool:
            await pool.scan(str(tree / "d000"), ScanConfig(dir_level=0))
            victims = my_workers() - before
            assert len(victims) == 2
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            await anyio.sleep(0.2)
            usage = await pool.scan(str(tree), ScanConfig(dir_level=1))
            assert usage.total.disk_bytes == du(tree, depth=0, apparent=False)[str(tree)]
            assert not victims & my_workers()
    assert my_workers() - before == set()
