"""Soak: ``diskaudit serve`` rescanning a 100k-file tree back to back while 100 repository
jobs come in, sampled every second; then RSS drift, open fds, zombies and leftovers.

The duration comes from ``DISKAUDIT_SOAK_SECONDS``: 60 by default (the short form, part of
``make test``), 600 or more with ``make soak``. Figures over time and the summary are written to
``.bench-cache/last-soak.json`` and the summary is printed (``-s`` shows it).

Assertions: all 100 jobs created (none deduplicated) and succeeded; every scrape of /metrics
answered 200; RSS growth (median of the last 10% over the median of the base window) < 10%;
open fds of the daemon, over the second half, max - min <= 5 at quiet samples (no job running,
no child but the scan workers: a running job holds a few pipes to git); no zombie seen twice a
second or more apart; after SIGTERM: exit 0, no process ever seen below the daemon still there,
no git process working in data-dir, data-dir/clones empty.

Windows compared for RSS drift: the second minute ([60 s, 120 s]) against the last 10% of the
run; a run shorter than 3 minutes has no second minute to speak of and uses [20%, 30%] of the
run instead. RSS is the summed VmRSS of the daemon's process tree (the daemon, its scan workers
and whatever git processes run at that moment); a child that has forked but not exec'd yet
shares its parent's pages and counts 0 (as ``bench.scan_bench`` does).

The tree has 100,000 files in both forms: generating it takes about a second (then it is cached
in ``.bench-cache``) and a scan with 2 workers about 0.15 s, so 20,000 files would save nothing.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
from bench.treegen import default_cache_dir, ensure_tree

from tests.daemon import Daemon, running_daemon
from tests.gitservers import add_tags, git_daemon, make_repo


def _soak_seconds() -> float:
    raw = os.environ.get("DISKAUDIT_SOAK_SECONDS", "60")
    try:
        seconds = float(raw)
    except ValueError:
        raise pytest.UsageError(f"DISKAUDIT_SOAK_SECONDS={raw!r} is not a number") from None
    if seconds < 30:
        raise pytest.UsageError(f"DISKAUDIT_SOAK_SECONDS={raw!r}: at least 30 s")
    return seconds


SOAK_SECONDS = _soak_seconds()
TREE_FILES = 100_000
REPOS = 10
JOBS_PER_REPO = 10  # one tag each: every (url, ref) differs, so dedup never collapses two
JOBS = REPOS * JOBS_PER_REPO
TICK_S = 1.0
MAX_DRIFT = 0.10
MAX_FD_SPREAD = 5
ZOMBIE_GRACE_S = 1.0  # a child may be seen dead-but-unreaped once, not a second later
DRAIN_S = 60.0  # after the run, for the last jobs to finish
FINAL = {"succeeded", "failed", "timed_out", "cancelled"}
API = "/api/v1/jobs"


# --- /proc ---------------------------------------------------------------------------------

ProcKey = tuple[int, int]  # (pid, start time in clock ticks): a reused pid is another process


@dataclass(frozen=True)
class ProcInfo:
    ppid: int
    state: str
    start: int


def _stat(pid: int) -> ProcInfo | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5); starttime is field 22
    return ProcInfo(ppid=int(fields[1]), state=fields[0].decode(), start=int(fields[19]))


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _argv(pid: int) -> str:
    return _cmdline(pid).replace(b"\0", b" ").decode(errors="replace").strip()


def _rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0  # zombie


def _table() -> dict[int, ProcInfo]:
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (info := _stat(int(name))) is not None:
            table[int(name)] = info
    return table


def _descendants(root: int, table: dict[int, ProcInfo]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, info in table.items():
        children.setdefault(info.ppid, []).append(pid)
    found: list[int] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _running(key: ProcKey) -> bool:
    """The process ``key`` still exists (zombies included: they are leftovers too)."""
    info = _stat(key[0])
    return info is not None and info.start == key[1]


def _is_git(argv: str) -> bool:
    argv0 = argv.split(" ", 1)[0]
    return argv0.endswith("git") or os.path.basename(argv0).startswith("git-")


# --- sampling ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeSample:
    rss_kib: int  # summed over the daemon and its descendants
    daemon_rss_kib: int
    git_rss_kib: int  # the part of rss_kib in git processes
    children: int
    other_children: int  # children that are not scan workers (git, setpriv, ...)
    descendants: int
    zombies: list[ProcKey]


@dataclass
class Sample:
    t: float  # seconds since the run started
    rss_kib: int
    daemon_rss_kib: int
    git_rss_kib: int
    fds: int
    fd_kinds: str  # e.g. "file:6 pipe:4 socket:3": what the fds are
    jobs_running: float | None  # diskaudit_jobs_running_here, scraped before the fds were read
    quiet: bool  # no job running, no child but the scan workers: fds without work in flight
    children: int
    descendants: int
    zombies: list[ProcKey]
    metrics_status: int
    scanned_entries_total: float | None
    jobs_created: int


@dataclass
class Watch:
    """Every process seen below the daemon, and when each zombie was first seen."""

    pid: int
    seen: dict[ProcKey, str] = field(default_factory=dict)  # -> argv when first seen
    zombie_first_seen: dict[ProcKey, float] = field(default_factory=dict)
    lingering_zombies: dict[ProcKey, float] = field(default_factory=dict)  # -> seconds

    def sample(self, t: float) -> TreeSample:
        table = _table()
        tree = _descendants(self.pid, table)
        daemon_rss = _rss_kib(self.pid)
        rss, git_rss, children, other_children = daemon_rss, 0, 0, 0
        zombies: list[ProcKey] = []
        for pid in tree:
            info = table[pid]
            key = (pid, info.start)
            if key not in self.seen:
                self.seen[key] = _argv(pid)
            if info.ppid == self.pid:
                children += 1
                if "diskaudit.scan.worker" not in self.seen[key]:
                    other_children += 1
            if info.state in ("Z", "X"):
                zombies.append(key)
                first = self.zombie_first_seen.setdefault(key, t)
                if t - first >= ZOMBIE_GRACE_S:
                    self.lingering_zombies[key] = t - first
                continue
            parent = _cmdline(info.ppid)
            if parent and _cmdline(pid) == parent:
                continue  # forked, not exec'd yet: its RSS is its parent's pages
            kib = _rss_kib(pid)
            rss += kib
            if _is_git(self.seen[key]):
                git_rss += kib
        return TreeSample(rss, daemon_rss, git_rss, children, other_children, len(tree), zombies)


def _fds(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with suppress(OSError):
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return out


def _fd_kinds(targets: list[str]) -> str:
    kinds: dict[str, int] = {}
    for target in targets:
        kind = target.split(":", 1)[0] if ":" in target and not target.startswith("/") else "file"
        kinds[kind] = kinds.get(kind, 0) + 1
    return " ".join(f"{k}:{n}" for k, n in sorted(kinds.items()))


def _scrape(d: Daemon) -> tuple[int, str]:
    try:
        status, body = d.get("/metrics")
    except OSError:
        return 0, ""
    return status, body.decode(errors="replace")


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


# --- jobs ----------------------------------------------------------------------------------


def _post(d: Daemon, url: str, ref: str) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"url": url, "ref": ref}).encode()
    req = urllib.request.Request(
        d.url + API, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        return exc.code, {"error": exc.read().decode(errors="replace")}


def _list_jobs(d: Daemon) -> list[dict[str, Any]]:
    status, body = d.get(f"{API}?limit=1000")
    assert status == 200, body
    return list(json.loads(body)["jobs"])


@pytest.fixture(scope="module")
def served_repos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """``REPOS`` small bare repositories with ``JOBS_PER_REPO`` tags each behind git daemon."""
    root = tmp_path_factory.mktemp("soak-repos")
    names = [f"r{i:02}.git" for i in range(REPOS)]
    for name in names:
        add_tags(make_repo(root / name, files=8, size=500, commits=2), JOBS_PER_REPO)
    with git_daemon(root, lifetime_s=SOAK_SECONDS + DRAIN_S + 300) as url:
        yield url, names


# --- the soak ------------------------------------------------------------------------------


def _median_kib(samples: list[Sample], lo: float, hi: float) -> float:
    window = [s.rss_kib for s in samples if lo <= s.t <= hi]
    assert len(window) >= 3, f"only {len(window)} samples in [{lo:.0f}s, {hi:.0f}s]"
    return float(statistics.median(window))


@pytest.mark.timeout(SOAK_SECONDS + DRAIN_S + 120)
@pytest.mark.parametrize("seconds", [SOAK_SECONDS], ids=[f"{SOAK_SECONDS:.0f}s"])
def test_soak(tmp_path: Path, served_repos: tuple[str, list[str]], seconds: float) -> None:
    git_url, names = served_repos
    cache = default_cache_dir()
    tree = ensure_tree(cache, TREE_FILES)
    settings = {
        "analyzed-path": str(tree),
        "scan-interval": "2s",
        "max-procs": 2,
        "data-dir": str(tmp_path / "data"),
        "allowed-schemes": ["git"],
        "job-workers": 2,
        "max-concurrent-clones": 2,
        "repositories": [],
    }
    # Submission k: repository k % REPOS at tag k // REPOS, at (k + 0.5) / JOBS of the run.
    plan = [
        ((k + 0.5) * seconds / JOBS, git_url + names[k % REPOS], f"t{k // REPOS:05}")
        for k in range(JOBS)
    ]
    samples: list[Sample] = []
    created: list[str] = []
    deduplicated = 0
    refused: list[tuple[int, dict[str, Any]]] = []
    quiet_fds: dict[float, list[str]] = {}  # what the fds were, at quiet samples

    with running_daemon(tmp_path, settings) as d:
        pid = d.proc.pid
        watch = Watch(pid)
        start = time.monotonic()
        next_tick = 0.0
        while True:
            now = time.monotonic() - start
            while plan and plan[0][0] <= now:
                _, url, ref = plan.pop(0)
                status, job = _post(d, url, ref)
                if status == 202:
                    created.append(job["id"])
                elif status == 200:
                    deduplicated += 1
                else:
                    refused.append((status, job))
            if now >= next_tick:
                if now > seconds:
                    break
                assert d.proc.poll() is None, f"daemon exited {d.proc.returncode}"
                status, text = _scrape(d)
                fds = _fds(pid)
                proc = watch.sample(now)
                jobs_running = _metric(text, "diskaudit_jobs_running_here")
                samples.append(
                    Sample(
                        t=round(now, 2),
                        rss_kib=proc.rss_kib,
                        daemon_rss_kib=proc.daemon_rss_kib,
                        git_rss_kib=proc.git_rss_kib,
                        fds=len(fds),
                        fd_kinds=_fd_kinds(fds),
                        jobs_running=jobs_running,
                        quiet=jobs_running == 0 and proc.other_children == 0,
                        children=proc.children,
                        descendants=proc.descendants,
                        zombies=proc.zombies,
                        metrics_status=status,
                        scanned_entries_total=_metric(text, "diskaudit_scanned_entries_total"),
                        jobs_created=len(created),
                    )
                )
                if samples[-1].quiet:
                    quiet_fds[samples[-1].t] = sorted(fds)
                next_tick += TICK_S
            upcoming = [next_tick] + ([plan[0][0]] if plan else [])
            time.sleep(max(0.0, min(upcoming) - (time.monotonic() - start)))

        # The last submission came at 99.5% of the run: let the jobs finish.
        deadline = time.monotonic() + DRAIN_S
        while True:
            listed = {j["id"]: j for j in _list_jobs(d)}
            if all(listed.get(i, {}).get("status") in FINAL for i in created):
                break
            assert time.monotonic() < deadline, f"jobs not final after the run:\n{d.log_text()}"
            time.sleep(0.2)
        final_metrics = d.metrics()
        # Everything below the daemon just before the stop, so nothing started since the last
        # sample is missed.
        watch.sample(time.monotonic() - start)
        exit_code = d.stop(signal.SIGTERM, timeout_s=30)
        log = d.log_text()

    # Leftovers: every process ever seen below the daemon, and any git process working under
    # this test's data-dir (a clone started between two samples).
    data_dir = str(tmp_path / "data")
    leftovers: list[str] = []
    deadline = time.monotonic() + 5
    while True:
        left = [key for key in watch.seen if _running(key)]
        stray_git = [
            p
            for p in _table()
            if p not in {k[0] for k in left} and _is_git(a := _argv(p)) and data_dir in a
        ]
        leftovers = [f"{k[0]} {watch.seen[k]}" for k in left] + [
            f"{p} {_argv(p)}" for p in stray_git
        ]
        if not leftovers or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    clones_dir = tmp_path / "data" / "clones"
    clones_left = sorted(p.name for p in clones_dir.iterdir()) if clones_dir.exists() else []

    statuses: dict[str, int] = {}
    for job_id in created:
        status_name = listed[job_id]["status"]
        statuses[status_name] = statuses.get(status_name, 0) + 1
    failures = [listed[i] for i in created if listed[i]["status"] != "succeeded"]

    duration = samples[-1].t
    if seconds >= 180:
        base_lo, base_hi = 60.0, 120.0
    else:
        base_lo, base_hi = 0.2 * seconds, 0.3 * seconds
    rss_base = _median_kib(samples, base_lo, base_hi)
    rss_end = _median_kib(samples, 0.9 * seconds, seconds)
    drift = (rss_end - rss_base) / rss_base
    # Fds: a running job holds pipes to its git processes (up to +7 with two clones), so the
    # check is on the quiet samples, where nothing is in flight; all samples are reported too.
    second_half = [s for s in samples if s.t >= seconds / 2]
    fd_all_min = min(s.fds for s in second_half)
    fd_all_max = max(s.fds for s in second_half)
    quiet = [s for s in second_half if s.quiet] or second_half  # (then the count assert fails)
    enough_quiet = len(quiet) >= len(second_half) // 10 and quiet[0].quiet
    lowest = min(quiet, key=lambda s: s.fds)
    highest = max(quiet, key=lambda s: s.fds)
    fd_min, fd_max = lowest.fds, highest.fds
    low_fds, high_fds = set(quiet_fds.get(lowest.t, [])), set(quiet_fds.get(highest.t, []))
    fd_diff = {
        "only at the highest": sorted(high_fds - low_fds),
        "only at the lowest": sorted(low_fds - high_fds),
    }
    entries = _metric(final_metrics, "diskaudit_scan_entries") or 1.0
    scanned_total = _metric(final_metrics, "diskaudit_scanned_entries_total") or 0.0
    scans = round(scanned_total / entries)
    zombie_sightings = sum(len(s.zombies) for s in samples)
    bad_metrics = [(s.t, s.metrics_status) for s in samples if s.metrics_status != 200]

    summary: dict[str, Any] = {
        "seconds": seconds,
        "sampled_seconds": duration,
        "samples": len(samples),
        "tree_files": TREE_FILES,
        "scans": scans,
        "scanned_entries_total": scanned_total,
        "jobs_created": len(created),
        "jobs_deduplicated": deduplicated,
        "jobs_refused": len(refused),
        "jobs_by_status": statuses,
        "rss_window_s": [base_lo, base_hi],
        "rss_base_mib": round(rss_base / 1024, 1),
        "rss_end_window_s": [0.9 * seconds, seconds],
        "rss_end_mib": round(rss_end / 1024, 1),
        "rss_drift": round(drift, 4),
        "daemon_rss_first_last_mib": [
            round(samples[0].daemon_rss_kib / 1024, 1),
            round(samples[-1].daemon_rss_kib / 1024, 1),
        ],
        "fd_min_max_second_half_quiet": [fd_min, fd_max],
        "quiet_samples_second_half": len(quiet),
        "fd_min_max_second_half_all": [fd_all_min, fd_all_max],
        "fd_first_last_quiet": [next((s.fds for s in samples if s.quiet), None), quiet[-1].fds],
        "max_children": max(s.children for s in samples),
        "processes_seen": len(watch.seen),
        "zombie_sightings": zombie_sightings,
        "lingering_zombies": [
            f"{k[0]} {watch.seen[k]} ({s:.1f}s)" for k, s in watch.lingering_zombies.items()
        ],
        "metrics_not_200": bad_metrics,
        "exit_code": exit_code,
        "leftover_processes": leftovers,
        "leftover_clones": clones_left,
    }
    line = (
        f"soak {seconds:.0f}s: {scans} scans of {TREE_FILES} files, "
        f"jobs {len(created)} created/{statuses.get('succeeded', 0)} succeeded "
        f"({deduplicated} dedup), RSS {rss_base / 1024:.1f} MiB "
        f"[{base_lo:.0f}-{base_hi:.0f}s] -> {rss_end / 1024:.1f} MiB [last 10%] "
        f"drift {drift:+.1%}, fds {fd_min}..{fd_max} (2nd half, quiet; "
        f"all {fd_all_min}..{fd_all_max}), "
        f"max children {summary['max_children']}, zombies seen {zombie_sightings} "
        f"(lingering {len(watch.lingering_zombies)}), exit {exit_code}, "
        f"leftover procs {len(leftovers)}, clone dirs {len(clones_left)}"
    )
    print("\n" + line)
    cache.mkdir(parents=True, exist_ok=True)
    report = {"summary": summary, "line": line, "samples": [asdict(s) for s in samples]}
    (cache / "last-soak.json").write_text(json.dumps(report, indent=1) + "\n")

    assert not refused, refused
    assert len(created) == JOBS, (len(created), deduplicated)
    assert not failures, [(j["url"], j["ref"], j["status"], j["error"]) for j in failures]
    assert not bad_metrics, bad_metrics
    assert drift < MAX_DRIFT, line
    assert enough_quiet, f"{len(quiet)} of {len(second_half)} samples in the 2nd half are quiet"
    assert fd_max - fd_min <= MAX_FD_SPREAD, (line, fd_diff)
    assert not watch.lingering_zombies, summary["lingering_zombies"]
    assert exit_code == 0, log[-4000:]
    assert not leftovers, leftovers
    assert not clones_left, clones_left
