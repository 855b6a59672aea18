"""Awkward trees for ``diskaudit scan`` and the daemon, compared with the real du.

1. a chain 50,000 directories deep (paths of 100 KB, far past PATH_MAX), with both walkers;
2. one directory of 1,000,000 entries: the workers' memory stays flat (against 100,000);
3. names with newlines, invalid UTF-8, quotes, backslashes and HTML in them: the JSON, the
   daemon's /metrics (promtool) and its page at /;
4. a writer creating, deleting, renaming and appending while the tree is scanned;
5. directory cycles: a bind mount of an ancestor inside the tree (root only), and symlinks to
   ancestors with --follow-symlinks.

Unreadable directories and files, scanned as an unprivileged user, are covered by
tests/integration/test_scan_vs_du.py::test_unreadable_directories_are_counted_and_skipped_like_du.
Each test prints its measurements (``pytest -rP``); outcomes: RESULTS-trees-config.md.
"""

from __future__ import annotations

import base64
import collections
import html
import json
import math
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from diskaudit.render import display_path
from tests.daemon import running_daemon
from tests.trees import du

DISKAUDIT = [sys.executable, "-m", "diskaudit"]
WALKERS = ["c", "python"]
IN_CI = bool(os.environ.get("CI"))
O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


# Helpers


def walker_env(walker: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DISKAUDIT_PURE_PYTHON_WALK"}
    if walker == "python":
        env["DISKAUDIT_PURE_PYTHON_WALK"] = "1"
    return env


def scan(
    root: Path, *flags: str, walker: str = "c", timeout_s: float = 60.0
) -> tuple[dict[str, Any], float]:
    """``diskaudit scan --format json FLAGS ROOT`` (exit status 0): (the root's JSON, wall s)."""
    started = time.monotonic()
    proc = subprocess.run(
        [*DISKAUDIT, "scan", "--format", "json", *flags, str(root)],
        capture_output=True,
        env=walker_env(walker),
        timeout=timeout_s,
        check=False,
    )
    elapsed = time.monotonic() - started
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    [r] = json.loads(proc.stdout)["roots"]
    return r, elapsed


def entry_path(e: dict[str, Any]) -> str:
    if "path_b64" in e:
        return os.fsdecode(base64.b64decode(e["path_b64"]))
    return str(e["path"])


def by_path(root_doc: dict[str, Any], field: str) -> dict[str, int]:
    return {entry_path(e): e[field] for e in root_doc["entries"]}


def du_total(root: Path, *, apparent: bool, follow: bool = False) -> int:
    return du(root, depth=0, apparent=apparent, follow=follow)[str(root)]


def timed_du_total(root: Path, *, apparent: bool) -> tuple[int, float]:
    started = time.monotonic()
    total = du_total(root, apparent=apparent)
    return total, time.monotonic() - started


def unavailable(reason: str) -> None:
    """Skip on a developer's machine; fail in CI, where the environment must allow it."""
    if IN_CI:
        pytest.fail(f"{reason} (CI is set: this must run)")
    pytest.skip(reason)


def remove_tree(path: Path) -> None:
    """Delete a tree of any depth. ``shutil.rmtree`` recurses once per level (RecursionError
    past ~1,000 levels on Python 3.11); ``rm -rf`` works but took ~9 s for the chain. This
    holds one directory descriptor at a time plus the names on the way down."""
    names: list[str] = []
    fd = os.open(path, O_DIR | os.O_NOFOLLOW)
    try:
        while True:
            sub = None
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        sub = entry.name
                        break
                    os.unlink(entry.name, dir_fd=fd)
            if sub is not None:
                child = os.open(sub, O_DIR | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = child
                names.append(sub)
                continue
            if not names:
                break
            parent = os.open("..", O_DIR, dir_fd=fd)
            os.close(fd)
            fd = parent
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


# 1. A chain 50,000 directories deep

CHAIN_DEPTH = 50_000
FILE_EVERY = 1000


def make_chain(root: Path, depth: int, file_every: int) -> None:
    """root/d/d/.../d, ``depth`` directories, made relative to an open descriptor (a path
    would pass PATH_MAX); a file of ``level`` bytes every ``file_every`` levels."""
    root.mkdir()
    fd = os.open(root, O_DIR)
    try:
        for level in range(1, depth + 1):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", O_DIR | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
            if level % file_every == 0:
                f = os.open("f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
                try:
                    os.write(f, b"x" * level)
                finally:
                    os.close(f)
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def deep_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("deep") / "chain"
    started = time.monotonic()
    make_chain(root, CHAIN_DEPTH, FILE_EVERY)
    created_s = time.monotonic() - started
    disk, du_disk_s = timed_du_total(root, apparent=False)
    apparent, du_apparent_s = timed_du_total(root, apparent=True)
    facts = {
        "disk": disk,
        "apparent": apparent,
        "du_s": du_disk_s,
        "du_b_s": du_apparent_s,
        "levels": du(root, depth=2, apparent=False),
    }
    print(f"\nchain of {CHAIN_DEPTH:,}: created in {created_s:.2f}s")
    yield root, facts
    started = time.monotonic()
    remove_tree(root)
    assert not root.exists()
    print(f"chain removed in {time.monotonic() - started:.2f}s")


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("walker", WALKERS)
def test_chain_deeper_than_path_max_equals_du(
    deep_chain: tuple[Path, dict[str, Any]], walker: str
) -> None:
    root, facts = deep_chain
    r, wall = scan(root, "--dir-level=2", walker=walker, timeout_s=100)
    print(
        f"\nchain {CHAIN_DEPTH:,} deep, {walker} walker: {wall:.2f}s wall "
        f"(scan {r['duration_seconds']:.2f}s); du -s -B1 {facts['du_s']:.2f}s, "
        f"du -s -b {facts['du_b_s']:.2f}s"
    )
    assert r["errors"] == 0, r["error_samples"]
    total = r["entries"][0]
    assert entry_path(total) == str(root)
    assert total["disk_bytes"] == facts["disk"]
    assert total["apparent_bytes"] == facts["apparent"]
    assert total["dirs"] == CHAIN_DEPTH
    assert total["files"] == CHAIN_DEPTH // FILE_EVERY
    assert by_path(r, "disk_bytes") == facts["levels"]


# 2. One directory with 1,000,000 entries

# The full million runs with `make soak` (DISKAUDIT_SOAK set); `make test` uses 300,000 to keep
# the suite short: the point (flat worker memory) shows at that size too.
FLAT_BIG = 1_000_000 if os.environ.get("DISKAUDIT_SOAK") else 300_000
FLAT_FALLBACK = 300_000
FLAT_BASE = 100_000
#: Creating the entries may take this long; past it, the directory stays at what it has (at
#: least FLAT_FALLBACK). ext4's pace varies a lot: 1,000,000 took 19 to 29 s here.
CREATE_BUDGET_S = 60.0
RSS_GROWTH = 0.10


def add_entries(root: Path, start: int, stop: int, *, budget_s: float = math.inf) -> int:
    """Empty files ``f{start}``.. in ``root``, up to ``stop`` or until ``budget_s`` has passed
    (checked every 10,000). Returns how many entries ``root`` holds then."""
    fd = os.open(root, O_DIR)
    started = time.monotonic()
    try:
        for i in range(start, stop):
            if i % 10_000 == 0 and time.monotonic() - started > budget_s:
                return i
            os.mknod(f"f{i:07}", dir_fd=fd)
    finally:
        os.close(fd)
    return stop


@pytest.fixture
def flat_dir(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "flat"
    root.mkdir()
    yield root
    started = time.monotonic()
    remove_tree(root)
    print(f"flat directory removed in {time.monotonic() - started:.2f}s")


def _status_kib(pid: int, field: bytes) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            data = f.read()
    except OSError:
        return None
    start = data.find(b"\n" + field + b":")
    if start < 0:
        return None
    return int(data[start + len(field) + 2 : data.index(b"\n", start + 1)].split()[0])


def _is_worker_of(pid: int, parent: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/stat", "rb") as f:
            ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return False
    return ppid == parent and b"diskaudit.scan.worker" in cmdline


class WorkerMemory(threading.Thread):
    """Polls the peak RSS (VmHWM: the kernel's own high-water mark, so nothing between two
    polls is missed) of every scan worker process of ``parent``, and of ``parent`` itself."""

    def __init__(self, parent: int) -> None:
        super().__init__(daemon=True)
        self.parent = parent
        self.worker_peak_kib: dict[int, int] = {}
        self.parent_peak_kib = 0
        self._done = threading.Event()
        self._workers: set[int] = set()

    def run(self) -> None:
        while True:
            self.sample()
            if self._done.wait(0.005):
                return

    def sample(self) -> None:
        for name in os.listdir("/proc"):
            pid = int(name) if name.isdigit() else 0
            if pid and pid not in self._workers and _is_worker_of(pid, self.parent):
                self._workers.add(pid)
        for pid in self._workers:
            hwm = _status_kib(pid, b"VmHWM")
            if hwm is not None:
                self.worker_peak_kib[pid] = max(self.worker_peak_kib.get(pid, 0), hwm)
        self.parent_peak_kib = max(self.parent_peak_kib, _status_kib(self.parent, b"VmHWM") or 0)

    def stop(self) -> None:
        self._done.set()
        self.join()


def scan_with_memory(root: Path, chunk_size: int) -> tuple[dict[str, Any], WorkerMemory, float]:
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            *DISKAUDIT,
            "scan",
            "--format=json",
            "--dir-level=0",
            "--max-procs=2",
            f"--chunk-size={chunk_size}",
            str(root),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=walker_env("c"),
    )
    memory = WorkerMemory(proc.pid)
    memory.start()
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        memory.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")
    [r] = json.loads(out)["roots"]
    return r, memory, time.monotonic() - started


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_million_entries_in_one_directory_keep_worker_memory_flat(flat_dir: Path) -> None:
    """The same directory is scanned at 100,000 entries, then grown to 1,000,000 and scanned
    again, with chunk-size 1000 and 100 each time."""
    chunk_sizes = (1000, 100)
    started = time.monotonic()
    add_entries(flat_dir, 0, FLAT_BASE)
    base_s = time.monotonic() - started
    base = {c: scan_with_memory(flat_dir, c) for c in chunk_sizes}
    base_disk = du_total(flat_dir, apparent=False)

    started = time.monotonic()
    n = add_entries(flat_dir, FLAT_BASE, FLAT_BIG, budget_s=CREATE_BUDGET_S - base_s)
    big_s = base_s + time.monotonic() - started
    print(
        f"\nflat: {FLAT_BASE:,} entries created in {base_s:.2f}s, {n:,} in {big_s:.2f}s"
        + ("" if n == FLAT_BIG else f" (budget of {CREATE_BUDGET_S:g}s spent: not {FLAT_BIG:,})")
    )
    if n < FLAT_FALLBACK:
        unavailable(f"only {n:,} entries created in {CREATE_BUDGET_S:g}s on this machine")
    big = {c: scan_with_memory(flat_dir, c) for c in chunk_sizes}
    disk, du_s = timed_du_total(flat_dir, apparent=False)
    apparent = du_total(flat_dir, apparent=True)

    for c in chunk_sizes:
        (r0, mem0, s0), (r1, mem1, s1) = base[c], big[c]
        peak0, peak1 = max(mem0.worker_peak_kib.values()), max(mem1.worker_peak_kib.values())
        print(
            f"chunk-size {c}: {FLAT_BASE:,} entries {s0:.2f}s, worker peak RSS "
            f"{peak0 / 1024:.2f} MiB (each {sorted(mem0.worker_peak_kib.values())} KiB), CLI "
            f"{mem0.parent_peak_kib / 1024:.1f} MiB; {n:,} entries {s1:.2f}s, worker peak "
            f"{peak1 / 1024:.2f} MiB (each {sorted(mem1.worker_peak_kib.values())} KiB), CLI "
            f"{mem1.parent_peak_kib / 1024:.1f} MiB; du -s -B1 {du_s:.2f}s"
        )
        assert len(mem0.worker_peak_kib) == len(mem1.worker_peak_kib) == 2
        assert r0["errors"] == r1["errors"] == 0
        assert r0["entries"][0]["disk_bytes"] == base_disk
        total = r1["entries"][0]
        assert total["files"] == n
        assert total["disk_bytes"] == disk
        assert total["apparent_bytes"] == apparent
        assert peak1 <= peak0 * (1 + RSS_GROWTH), (c, peak0, peak1)


# 3. Names with newlines, invalid UTF-8, quotes, backslashes and HTML

NASTY_NAMES = [
    b"new\nline",
    b"caf\xe9-latin1",
    b"\xff\xfe",
    b'q"uote',
    b"it's",
    b"back\\slash",
    b"<script>&\"'",
    b"tab\there",
    b"sp ace",
    b"&amp;",
]


def build_nasty_tree(root: Path) -> set[str]:
    """Every nasty name at level 1, and again inside each of them at level 2, each holding a
    file. Returns the paths of every directory down to level 2."""
    root.mkdir()
    raw_root = os.fsencode(root)
    paths = {str(root)}
    for i, a in enumerate(NASTY_NAMES):
        level1 = raw_root + b"/" + a
        os.mkdir(level1)
        paths.add(os.fsdecode(level1))
        for j, b in enumerate(NASTY_NAMES):
            level2 = level1 + b"/" + b
            os.mkdir(level2)
            paths.add(os.fsdecode(level2))
            with open(level2 + b"/" + a + b, "wb") as f:
                f.write(b"n" * (100 * i + 4000 * j))
    return paths


@pytest.mark.timeout(60)
def test_nasty_names_in_json_metrics_and_the_page(tmp_path: Path) -> None:
    root = tmp_path / "r<script>&\"'"
    expected = build_nasty_tree(root)

    r, _ = scan(root, "--dir-level=2")  # scan() parses stdout as JSON: it is valid UTF-8 JSON
    assert r["errors"] == 0, r["error_samples"]
    assert {entry_path(e) for e in r["entries"]} == expected
    for e in r["entries"]:
        raw = os.fsencode(entry_path(e))
        try:
            assert e["path"] == raw.decode("utf-8")
            assert "path_b64" not in e
        except UnicodeDecodeError:
            assert "path_b64" in e
    assert by_path(r, "disk_bytes") == du(root, depth=2, apparent=False)
    assert by_path(r, "apparent_bytes") == du(root, depth=2, apparent=True)

    missing = tmp_path / "gone<script>&\"'"
    settings = {
        "multi-paths": {str(root): 2, str(missing): 1},
        "max-procs": 1,
        "scan-interval": "1h",
    }
    with running_daemon(tmp_path, settings) as d:
        status, page_bytes = d.get("/")
        assert status == 200
        page = page_bytes.decode()
        assert html.escape(str(root)) in page
        # The failed root is named in its card and in its error message (the page may name it
        # more often; what matters is that every occurrence is escaped).
        assert page.count(html.escape(str(missing))) >= 2
        assert str(missing) not in page
        assert "<script>" not in page
        assert "&\"'" not in page

        status, body = d.get("/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        labels = {s.labels["path"] for s in families["diskaudit_disk_usage_bytes"].samples}
        assert labels == {display_path(p) for p in expected}
        assert d.stop() == 0

    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool is not installed")
        return
    check = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, check=False
    )
    print(f"\npromtool check metrics: exit {check.returncode} {check.stdout!r} {check.stderr!r}")
    assert check.returncode == 0, check.stdout + check.stderr


# 4. A writer changing the tree while it is scanned

WRITER_DIRS = 100
WRITER_FILES = 1000
#: What a scan may meet when an entry vanishes or changes kind between listing and opening.
VANISHED = ("No such file or directory", "Not a directory", "Too many levels of symbolic links")


@pytest.fixture(scope="module")
def busy_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("busy")
    for i in range(WRITER_DIRS):
        d = root / f"d{i:03}"
        d.mkdir()
        fd = os.open(d, O_DIR)
        try:
            for j in range(WRITER_FILES):
                os.mknod(f"f{j}", dir_fd=fd)
        finally:
            os.close(fd)
    yield root
    shutil.rmtree(root)


class TreeWriter(threading.Thread):
    """Changes ``root`` without pause: creates, deletes, renames and appends to files, makes and
    removes subtrees, renames whole directories away and back, and swaps a directory for a file
    or a symlink of the same name. Its own failures (it races with nothing but itself) count
    as ``ops["oserror"]``; anything else it raises is kept in ``crashed``."""

    KINDS = ("create", "delete", "rename", "append", "mkdir", "rmtree", "mvdir", "swap")

    def __init__(self, root: Path, seed: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.rnd = random.Random(seed)
        self.ops: collections.Counter[str] = collections.Counter()
        self.crashed: BaseException | None = None
        self._done = threading.Event()
        self._n = 0

    def run(self) -> None:
        try:
            while not self._done.is_set():
                self.step()
        except BaseException as exc:
            self.crashed = exc

    def stop(self) -> None:
        self._done.set()
        self.join()

    def step(self) -> None:
        rnd, self._n = self.rnd, self._n + 1
        n = self._n
        d = self.root / f"d{rnd.randrange(WRITER_DIRS):03}"
        kind = rnd.choice(self.KINDS)
        try:
            if kind == "create":
                (d / f"new{n}").write_bytes(b"c" * rnd.randrange(20000))
            elif kind == "delete":
                (d / f"f{rnd.randrange(WRITER_FILES)}").unlink()
            elif kind == "rename":
                other = self.root / f"d{rnd.randrange(WRITER_DIRS):03}"
                (d / f"f{rnd.randrange(WRITER_FILES)}").rename(
                    other / f"f{rnd.randrange(WRITER_FILES)}"
                )
            elif kind == "append":
                with open(d / f"f{rnd.randrange(WRITER_FILES)}", "ab") as f:
                    f.write(b"a" * 4096)
            elif kind == "mkdir":
                (d / f"sub{n}" / "inner").mkdir(parents=True)
                (d / f"sub{n}" / "inner" / "f").write_bytes(b"m" * 100)
            elif kind == "rmtree":
                subs = [p for p in d.iterdir() if p.name.startswith("sub")]
                if subs:
                    shutil.rmtree(subs[0])
            elif kind == "mvdir":
                d.rename(d.with_name(d.name + ".away"))
                d.with_name(d.name + ".away").rename(d)
            else:  # swap: a directory becomes a file, then a symlink, then a directory again
                s = d / "swap"
                s.mkdir(exist_ok=True)
                s.rmdir()
                s.write_bytes(b"s")
                s.unlink()
                s.symlink_to("..")
                s.unlink()
                s.mkdir()
            self.ops[kind] += 1
        except OSError:
            self.ops["oserror"] += 1


@pytest.mark.timeout(90)
@pytest.mark.parametrize("walker", WALKERS)
def test_scans_survive_a_concurrent_writer(busy_tree: Path, walker: str) -> None:
    writer = TreeWriter(busy_tree, seed=len(walker))
    writer.start()
    try:
        for run in range(3):
            before = sum(writer.ops.values())
            r, wall = scan(
                busy_tree,
                "--dir-level=1",
                "--max-procs=2",
                "--chunk-size=50",
                walker=walker,
                timeout_s=60,
            )
            during = sum(writer.ops.values()) - before
            print(
                f"\n{walker} run {run}: {wall:.2f}s, {r['entries_scanned']:,} entries, "
                f"{during} changes during the scan, errors {r['errors']}: {r['error_samples']}"
            )
            assert writer.is_alive(), writer.crashed
            assert during > 0
            assert r["errors"] >= 0
            assert bool(r["errors"]) == bool(r["error_samples"])
            assert len(r["error_samples"]) <= r["errors"]
            for sample in r["error_samples"]:
                assert sample.startswith(f"{busy_tree}/"), sample
                assert sample.endswith(VANISHED), sample
            total = r["entries"][0]
            assert entry_path(total) == str(busy_tree)
            assert (
                0.9 * WRITER_DIRS * WRITER_FILES
                < total["files"]
                < 1.2 * WRITER_DIRS * (WRITER_FILES)
            )
    finally:
        writer.stop()
    assert writer.crashed is None
    print(f"writer: {dict(writer.ops)}")
    # Once the tree is still, the scan is exact again.
    r, _ = scan(busy_tree, "--dir-level=1", "--max-procs=2", "--chunk-size=50", walker=walker)
    assert r["errors"] == 0, r["error_samples"]
    assert by_path(r, "disk_bytes") == du(busy_tree, depth=1, apparent=False)
    assert by_path(r, "apparent_bytes") == du(busy_tree, depth=1, apparent=True)


# 5. Directory cycles


@contextmanager
def bind_mounts(*pairs: tuple[Path, Path]) -> Iterator[None]:
    """``mount --bind SOURCE TARGET`` for each pair; all unmounted on the way out."""
    if os.geteuid() != 0:
        unavailable("bind mounts need root")
    with ExitStack() as stack:
        for source, target in pairs:
            proc = subprocess.run(
                ["mount", "--bind", str(source), str(target)],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                unavailable(f"mount --bind is not allowed here: {proc.stderr.strip()}")
            stack.callback(_umount, target)
        yield


def _umount(target: Path) -> None:
    if subprocess.run(["umount", str(target)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(target)], check=True)


def loop_tree(root: Path) -> Path:
    """root/{a/{f,loop/},b/{g,c/h}}; returns root/a/loop, the future mount point."""
    (root / "a" / "loop").mkdir(parents=True)
    (root / "b" / "c").mkdir(parents=True)
    (root / "a" / "f").write_bytes(b"f" * 10000)
    (root / "b" / "g").write_bytes(b"g" * 5000)
    (root / "b" / "c" / "h").write_bytes(b"h" * 70000)
    return root / "a" / "loop"


def du_says(root: Path) -> str:
    proc = subprocess.run(["du", "-s", "-B1", str(root)], capture_output=True, text=True)
    return f"du exit {proc.returncode}, stdout {proc.stdout.strip()!r}, stderr {proc.stderr!r}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("walker", WALKERS)
def test_bind_mount_of_an_ancestor_terminates_and_is_counted(tmp_path: Path, walker: str) -> None:
    root = tmp_path / "tree"
    loop = loop_tree(root)
    with bind_mounts((root, loop)):
        r, wall = scan(root, "--dir-level=1", "--max-procs=2", walker=walker, timeout_s=30)
        print(f"\n{walker}: {wall:.2f}s, {r}\n{du_says(root)}")
    assert r["errors"] == 1
    [sample] = r["error_samples"]
    assert sample.startswith(f"{loop}: ")
    assert "cycle" in sample
    # Walked once: 2 + 2 + 2 + 1 entries below the root, the loop among them.
    assert r["entries_scanned"] == 7


@pytest.mark.timeout(60)
def test_bind_mount_of_an_ancestor_totals_equal_du(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    loop = loop_tree(root)
    with bind_mounts((root, loop)):
        r, _ = scan(root, "--dir-level=1", "--max-procs=2", timeout_s=30)
        expected_disk = du(root, depth=1, apparent=False)
        expected_apparent = du(root, depth=1, apparent=True)
    print(f"\n{by_path(r, 'disk_bytes')} vs du {expected_disk}")
    assert r["errors"] == 1
    assert by_path(r, "disk_bytes") == expected_disk
    assert by_path(r, "apparent_bytes") == expected_apparent
    assert r["entries"][0]["dirs"] == 3  # a, b, b/c and nothing for a/loop (skipped, like du)


LOOPS = 30


@pytest.mark.xfail(
    # Not strict: whether a loop is seen depends on where the splits happen (a loop found by
    # the giver's read-ahead is caught; one below a handed-off unit is not), so some runs pass.
    strict=False,
    reason="src: cycles are detected against the walker's open frames only; a directory handed "
    "to another worker by a split starts with no ancestors, so the cycle below it is entered "
    "and the tree walked again (here up to 6x du's total, errors still 30)",
)
@pytest.mark.timeout(60)
def test_bind_mount_cycles_in_units_split_off_to_other_workers(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for i in range(LOOPS):
        (root / f"x{i:02}" / "loop").mkdir(parents=True)
        for j in range(20):
            (root / f"x{i:02}" / f"f{j}").write_bytes(b"x" * (100 * j))
    with bind_mounts(*[(root, root / f"x{i:02}" / "loop") for i in range(LOOPS)]):
        r, _ = scan(root, "--dir-level=0", "--max-procs=2", "--chunk-size=5", timeout_s=30)
        expected = du_total(root, apparent=False)
    print(
        f"\n{r['entries_scanned']} entries, {r['errors']} errors, {r['entries']} vs du {expected}"
    )
    assert r["errors"] == LOOPS
    assert r["entries_scanned"] == LOOPS * (20 + 2)  # each x, its files and its loop, once
    assert r["entries"][0]["disk_bytes"] == expected


@pytest.mark.xfail(
    strict=True,
    reason="src: past MAX_OPEN_DIRS (64) directories are queued by path and reopened with no "
    "ancestors, so a cycle 100 levels below its target is not seen: errors 0 and the tree "
    "walked twice (the second time the non-recursive bind shows an empty mount point)",
)
@pytest.mark.timeout(60)
def test_bind_mount_cycle_deeper_than_the_open_directory_limit(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    bottom = root.joinpath(*["d"] * 100)
    (bottom / "loop").mkdir(parents=True)
    (bottom / "f").write_bytes(b"f" * 3000)
    with bind_mounts((root, bottom / "loop")):
        r, _ = scan(root, "--dir-level=0", "--max-procs=1", timeout_s=30)
        expected = du_total(root, apparent=False)
    print(f"\n{r['errors']} errors, {r['entries']} vs du {expected}")
    assert r["errors"] == 1
    assert r["entries"][0]["disk_bytes"] == expected


def symlink_tree(root: Path) -> None:
    """loop_tree plus, with --follow-symlinks in mind: a/up -> .., b/c/top -> the root by its
    absolute path, and 30 directories x?? with a file and up -> .. each."""
    loop_tree(root)
    (root / "a" / "loop").rmdir()
    (root / "a" / "up").symlink_to("..")
    (root / "b" / "c" / "top").symlink_to(root)
    for i in range(LOOPS):
        (root / f"x{i:02}").mkdir()
        (root / f"x{i:02}" / "up").symlink_to("..")
        (root / f"x{i:02}" / "f").write_bytes(b"x" * 100 * i)


def scan_following(root: Path, walker: str = "c") -> dict[str, Any]:
    r, wall = scan(
        root,
        "--dir-level=1",
        "--follow-symlinks",
        "--max-procs=2",
        "--chunk-size=5",
        walker=walker,
        timeout_s=30,
    )
    print(f"\n{walker}: {wall:.2f}s, {r['entries_scanned']} entries, {r['errors']} errors")
    return r


@pytest.mark.timeout(60)
@pytest.mark.parametrize("walker", WALKERS)
def test_symlinks_to_the_root_with_follow_symlinks(tmp_path: Path, walker: str) -> None:
    root = tmp_path / "tree"
    symlink_tree(root)
    r = scan_following(root, walker)
    assert r["errors"] == 0, r["error_samples"]
    # Each directory once: the root's own links lead nowhere new (du -L agrees).
    assert r["entries_scanned"] == 2 + 3 + 3 + LOOPS * 3
    assert by_path(r, "disk_bytes") == du(root, depth=1, apparent=False, follow=True)
    assert by_path(r, "apparent_bytes") == du(root, depth=1, apparent=True, follow=True)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("walker", WALKERS)
def test_symlinks_to_inner_ancestors_terminate_without_errors(tmp_path: Path, walker: str) -> None:
    root = tmp_path / "tree"
    symlink_tree(root)
    for i in range(LOOPS):
        (root / f"x{i:02}" / "self").symlink_to(".")
        (root / f"x{i:02}" / "deeper").mkdir()
        (root / f"x{i:02}" / "deeper" / "back").symlink_to("..")
    r = scan_following(root, walker)
    assert r["errors"] == 0, r["error_samples"]
    # No storm: each x?? walked twice at most (see the xfail below), not once per link.
    assert r["entries_scanned"] <= 3 * (2 + 3 + 3 + LOOPS * 5)


@pytest.mark.xfail(
    strict=True,
    reason="src: with follow-symlinks the pool dedups only the root and directories reached "
    "through links (aggregate.py RootAccumulator._dirs); a link to a directory walked the "
    "ordinary way (x/self -> ., x/deeper/back -> ..) walks and counts it a second time; "
    "du -L counts every directory once",
)
@pytest.mark.timeout(60)
def test_symlinks_to_inner_ancestors_count_once_like_du(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "x" / "y").mkdir(parents=True)
    (root / "x" / "f").write_bytes(b"f" * 5000)
    (root / "x" / "y" / "up").symlink_to("..")
    r = scan_following(root)
    assert r["errors"] == 0, r["error_samples"]
    assert by_path(r, "disk_bytes") == du(root, depth=1, apparent=False, follow=True)
