"""Side-by-side benchmark of ``du -s -B1`` and ``diskaudit scan``.

For each tree size: build (or reuse) a cached tree, warm the caches with one discarded
``du -s``, then for each ``--procs`` value alternate du and diskaudit ``--repeat`` times.
Every run's wall time and peak RSS summed over its process tree are recorded, diskaudit's
root ``disk_bytes`` is checked against du's, a table and the targets are printed, and the
results are written to ``<cache-dir>/last-bench.json``.

Exit status: 0 when every run succeeded and matched du (even if targets FAIL: this is a
measurement), 1 on a MISMATCH or a crashed run.

Usage: ``python -m bench.scan_bench [--files 100000,1000000] [--procs 1,2] [--repeat 5]
[--cache-dir .bench-cache] [--quick] [--only-du]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.treegen import TreeInfo, default_cache_dir, ensure_tree_info

TARGET_RATIO = 1.2  # du wall / diskaudit wall ...
TARGET_RATIO_FILES = 1_000_000  # ... at this tree size ...
TARGET_RATIO_PROCS = 2  # ... with this many worker processes
TARGET_RSS_MIB = 64.0  # diskaudit peak RSS (whole process tree), any run
TARGET_RSS_GROWTH = 0.10  # peak at TARGET_RATIO_FILES within 10% of the peak at ...
TARGET_RSS_BASE_FILES = 100_000  # ... this size, same procs
DIR_LEVEL = 2


# --------------------------------------------------------------------------- RSS sampling


def _read_ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may contain spaces and parentheses
    fields = data[data.rfind(b")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None


def _read_rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            data = f.read()
    except OSError:
        return 0
    start = data.find(b"\nVmRSS:")
    if start < 0:  # zombie or kernel thread
        return 0
    return int(data[start + 7 : data.index(b"\n", start + 1)].split()[0])


def _cmdline(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return None


def _pre_exec(pid: int) -> bool:
    """A child still running its parent's program: forked (vfork), not yet exec'd."""
    ppid = _read_ppid(pid)
    return ppid is not None and _cmdline(pid) == _cmdline(ppid)


class ProcessTreeSampler(threading.Thread):
    """Samples the summed VmRSS of ``root_pid`` and all its descendants every ``interval``.

    /proc/<pid>/task/<tid>/children needs CONFIG_PROC_CHILDREN, so descendants are found by
    reading the ppid of every pid that appeared in /proc since the previous sample; only new
    pids are read, so one sample costs a listdir of /proc plus a few small reads.
    """

    def __init__(self, root_pid: int, interval: float) -> None:
        super().__init__(name=f"rss-sampler-{root_pid}", daemon=True)
        self.root_pid = root_pid
        self.interval = interval
        self.peak_kib = 0
        #: The same, counting a child that has not exec'd yet as 0: after vfork (which Python's
        #: subprocess uses) it shares its parent's memory (CLONE_VM) and shows the parent's
        #: whole VmRSS as its own until execve; counting it double-counts the same pages.
        self.peak_exec_kib = 0
        self.pre_exec_sightings = 0
        self.peak_nprocs = 0
        self.samples = 0
        self._stop_event = threading.Event()
        self._tree = {root_pid}
        self._classified = {root_pid}

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def run(self) -> None:
        while True:
            self.sample()
            if self._stop_event.wait(self.interval):
                return

    def sample(self) -> None:
        pids = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        # forget pids that went away, so a reused pid number is classified again
        self._tree &= pids
        self._classified &= pids
        new = pids - self._classified
        if new:
            ppids = {pid: _read_ppid(pid) for pid in new}
            changed = True
            while changed:  # a grandchild may be listed before its parent is classified
                changed = False
                for pid, ppid in ppids.items():
                    if pid not in self._tree and ppid in self._tree:
                        self._tree.add(pid)
                        changed = True
            self._classified |= new
        rss = {pid: _read_rss_kib(pid) for pid in self._tree}
        total = sum(rss.values())
        pre_exec = [pid for pid in self._tree if pid != self.root_pid and _pre_exec(pid)]
        self.pre_exec_sightings += len(pre_exec)
        self.samples += 1
        self.peak_kib = max(self.peak_kib, total)
        self.peak_exec_kib = max(self.peak_exec_kib, total - sum(rss[p] for p in pre_exec))
        self.peak_nprocs = max(self.peak_nprocs, len(self._tree))


@dataclass
class Measurement:
    cmd: list[str]
    wall_s: float
    exit_code: int
    stdout: str
    stderr: str
    peak_kib: int  # max over samples of the summed VmRSS of the process tree
    peak_exec_kib: int  # the same, children not yet exec'd counted as 0 (see the sampler)
    pre_exec_sightings: int
    peak_nprocs: int
    samples: int


def measure(cmd: list[str], interval: float) -> Measurement:
    """Run ``cmd``; wall time, RSS of its process tree, stdout and stderr."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        sampler = ProcessTreeSampler(proc.pid, interval)
        sampler.start()
        # wait4's ru_maxrss is not used: it includes the pre-exec copy of this process
        _, status, _usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        sampler.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measurement(
            cmd=cmd,
            wall_s=wall,
            exit_code=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            peak_kib=sampler.peak_kib,
            peak_exec_kib=sampler.peak_exec_kib,
            pre_exec_sightings=sampler.pre_exec_sightings,
            peak_nprocs=sampler.peak_nprocs,
            samples=sampler.samples,
        )


# --------------------------------------------------------------------------- commands


def du_cmd(tree: Path, apparent: bool = False) -> list[str]:
    return ["du", "-s", "-B1", *(["--apparent-size"] if apparent else []), str(tree)]


def diskaudit_cmd(tree: Path, procs: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "diskaudit",
        "scan",
        str(tree),
        "--max-procs",
        str(procs),
        "--format",
        "json",
        "--dir-level",
        str(DIR_LEVEL),
    ]


def parse_du(stdout: str) -> int:
    return int(stdout.split()[0])


def parse_diskaudit_root(stdout: str) -> dict[str, Any]:
    """The level-0 entry (the scanned root) of the first root in diskaudit's JSON."""
    data = json.loads(stdout)
    root = data["roots"][0]
    for entry in root["entries"]:
        if entry["level"] == 0:
            result: dict[str, Any] = dict(entry)
            result["errors"] = root.get("errors")
            return result
    raise ValueError("no level-0 entry in diskaudit output")


class RunFailed(Exception):
    pass


def _check_ok(m: Measurement) -> None:
    if m.exit_code != 0:
        tail = "\n".join(m.stderr.splitlines()[-25:])
        raise RunFailed(f"{' '.join(m.cmd)} exited with {m.exit_code}:\n{tail}")


# --------------------------------------------------------------------------- the benchmark


@dataclass
class Run:
    tool: str
    files: int
    procs: int
    rep: int
    wall_s: float
    peak_rss_kib: int
    peak_exec_rss_kib: int
    peak_nprocs: int
    samples: int
    disk_bytes: int


@dataclass
class Summary:
    files: int
    procs: int
    du_wall_median_s: float
    du_peak_rss_mib: float
    da_wall_median_s: float | None = None
    ratio_median_of_pairs: float | None = None
    ratio_of_medians: float | None = None
    da_peak_rss_mib: float | None = None
    da_peak_rss_median_mib: float | None = None  # median over runs: shows one-off spikes
    da_peak_exec_rss_mib: float | None = None  # pre-exec (vfork) children counted as shared


@dataclass
class Target:
    name: str
    status: str  # PASS / FAIL / SKIP
    detail: str


@dataclass
class Results:
    started: str
    args: dict[str, Any]
    environment: dict[str, Any]
    trees: list[dict[str, Any]] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    summaries: list[Summary] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _mismatch(results: Results, msg: str) -> None:
    results.mismatches.append(msg)
    banner = "!" * 78
    _say(f"{banner}\n!!! MISMATCH: {msg}\n{banner}")


def preflight(cache_dir: Path, interval: float) -> None:
    """Fail fast (before building big trees) if ``diskaudit scan`` cannot run at all."""
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        (Path(tmp) / "f").write_bytes(b"x" * 5000)
        m = measure(diskaudit_cmd(Path(tmp), 1), interval)
        _check_ok(m)
        parse_diskaudit_root(m.stdout)


def bench_tree(
    results: Results, info: TreeInfo, procs_list: list[int], repeat: int, args: argparse.Namespace
) -> None:
    tree = info.root
    files = info.requested_files
    _say(f"bench: warming caches: du -s {tree}")
    warm = measure(du_cmd(tree), args.interval)
    _check_ok(warm)
    du_bytes = parse_du(warm.stdout)
    tree_entry: dict[str, Any] = {
        "info": json.loads(info.to_json()),
        "du_disk_bytes": du_bytes,
    }
    results.trees.append(tree_entry)
    if not args.only_du:
        du_app = measure(du_cmd(tree, apparent=True), args.interval)
        _check_ok(du_app)
        tree_entry["du_apparent_bytes"] = parse_du(du_app.stdout)
    for procs in procs_list:
        du_runs: list[Run] = []
        da_runs: list[Run] = []
        for rep in range(repeat):
            # alternate the order so neither tool always runs right after the other
            order = ["du", "diskaudit"] if rep % 2 == 0 else ["diskaudit", "du"]
            for tool in order:
                if tool == "du":
                    m = measure(du_cmd(tree), args.interval)
                    _check_ok(m)
                    disk = parse_du(m.stdout)
                    if disk != du_bytes:
                        _mismatch(results, f"du itself changed: {disk} != {du_bytes} on {tree}")
                elif args.only_du:
                    continue
                else:
                    m = measure(diskaudit_cmd(tree, procs), args.interval)
                    _check_ok(m)
                    entry = parse_diskaudit_root(m.stdout)
                    disk = int(entry["disk_bytes"])
                    if disk != du_bytes:
                        _mismatch(
                            results,
                            f"{files} files, procs={procs}, rep={rep}: diskaudit disk_bytes="
                            f"{disk} but du -s -B1={du_bytes} (diff {disk - du_bytes:+d})",
                        )
                    if entry.get("errors"):
                        results.notes.append(
                            f"{files} files procs={procs} rep={rep}: {entry['errors']} errors"
                        )
                    app = tree_entry.get("du_apparent_bytes")
                    if rep == 0 and app is not None and entry.get("apparent_bytes") != app:
                        results.notes.append(
                            f"{files} files procs={procs}: apparent_bytes="
                            f"{entry.get('apparent_bytes')} vs du --apparent-size={app} (info)"
                        )
                run = Run(
                    tool=tool,
                    files=files,
                    procs=procs,
                    rep=rep,
                    wall_s=round(m.wall_s, 4),
                    peak_rss_kib=m.peak_kib,
                    peak_exec_rss_kib=m.peak_exec_kib,
                    peak_nprocs=m.peak_nprocs,
                    samples=m.samples,
                    disk_bytes=disk,
                )
                (du_runs if tool == "du" else da_runs).append(run)
                results.runs.append(run)
                _say(
                    f"bench: {files} files procs={procs} rep={rep} {tool:9s} "
                    f"{m.wall_s:7.3f}s  peak RSS {_mib(m.peak_kib):6.1f} MiB "
                    f"({m.peak_nprocs} procs, {m.samples} samples; "
                    f"{_mib(m.peak_exec_kib):.1f} MiB with {m.pre_exec_sightings} "
                    "pre-exec child sightings counted as shared)"
                )
        summary = Summary(
            files=files,
            procs=procs,
            du_wall_median_s=round(statistics.median(r.wall_s for r in du_runs), 4),
            du_peak_rss_mib=_mib(max(r.peak_rss_kib for r in du_runs)),
        )
        if da_runs:
            da_med = statistics.median(r.wall_s for r in da_runs)
            summary.da_wall_median_s = round(da_med, 4)
            summary.ratio_of_medians = round(summary.du_wall_median_s / da_med, 3)
            pairs = [d.wall_s / a.wall_s for d, a in zip(du_runs, da_runs, strict=True)]
            summary.ratio_median_of_pairs = round(statistics.median(pairs), 3)
            summary.da_peak_rss_mib = _mib(max(r.peak_rss_kib for r in da_runs))
            summary.da_peak_exec_rss_mib = _mib(max(r.peak_exec_rss_kib for r in da_runs))
            summary.da_peak_rss_median_mib = _mib(
                round(statistics.median(r.peak_rss_kib for r in da_runs))
            )
        results.summaries.append(summary)


def evaluate_targets(summaries: list[Summary]) -> list[Target]:
    da = [s for s in summaries if s.da_wall_median_s is not None]
    if not da:
        return [Target("diskaudit targets", "SKIP", "diskaudit not measured (--only-du)")]
    by_key = {(s.files, s.procs): s for s in da}
    targets: list[Target] = []

    name = (
        f"du/diskaudit >= {TARGET_RATIO} at {TARGET_RATIO_FILES} files, {TARGET_RATIO_PROCS} procs"
    )
    s = by_key.get((TARGET_RATIO_FILES, TARGET_RATIO_PROCS))
    if s is not None and s.ratio_median_of_pairs is not None:
        ok = s.ratio_median_of_pairs >= TARGET_RATIO
        detail = f"median of pair ratios {s.ratio_median_of_pairs}, ratio of medians "
        detail += f"{s.ratio_of_medians}"
        targets.append(Target(name, "PASS" if ok else "FAIL", detail))
    else:
        best = max(da, key=lambda x: (x.files, x.procs))
        targets.append(
            Target(
                name,
                "SKIP",
                f"not measured; largest measured: {best.files} files, {best.procs} procs: "
                f"ratio {best.ratio_median_of_pairs}",
            )
        )

    peak = max(da, key=lambda x: x.da_peak_rss_mib or 0.0)
    sizes = sorted({x.files for x in da})
    targets.append(
        Target(
            f"diskaudit peak RSS <= {TARGET_RSS_MIB:g} MiB",
            "PASS" if (peak.da_peak_rss_mib or 0.0) <= TARGET_RSS_MIB else "FAIL",
            f"max {peak.da_peak_rss_mib} MiB ({peak.files} files, {peak.procs} procs); "
            f"sizes measured: {sizes}",
        )
    )
    peak_x = max(da, key=lambda x: x.da_peak_exec_rss_mib or 0.0)
    targets.append(
        Target(
            f"diskaudit peak RSS <= {TARGET_RSS_MIB:g} MiB, a vforked child counted with its "
            "parent until it execs",
            "PASS" if (peak_x.da_peak_exec_rss_mib or 0.0) <= TARGET_RSS_MIB else "FAIL",
            f"max {peak_x.da_peak_exec_rss_mib} MiB ({peak_x.files} files, {peak_x.procs} procs)",
        )
    )

    name = (
        f"peak RSS at {TARGET_RATIO_FILES} within {TARGET_RSS_GROWTH:.0%} "
        f"of peak at {TARGET_RSS_BASE_FILES}"
    )
    compared = False
    for procs in sorted({x.procs for x in da}):
        big = by_key.get((TARGET_RATIO_FILES, procs))
        base = by_key.get((TARGET_RSS_BASE_FILES, procs))
        if big is None or base is None or not big.da_peak_rss_mib or not base.da_peak_rss_mib:
            continue
        compared = True
        growth = big.da_peak_rss_mib / base.da_peak_rss_mib - 1
        targets.append(
            Target(
                f"{name} (procs={procs})",
                "PASS" if growth <= TARGET_RSS_GROWTH else "FAIL",
                f"{base.da_peak_rss_mib} -> {big.da_peak_rss_mib} MiB ({growth:+.1%})",
            )
        )
    if not compared:
        targets.append(Target(name, "SKIP", f"needs both sizes; measured {sizes}"))
    return targets


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_report(results: Results) -> None:
    header = (
        f"{'files':>9} {'procs':>5} {'du wall':>9} {'da wall':>9} {'ratio':>6} "
        f"{'ratio':>6} {'da peak':>9} {'(median)':>9} {'du peak':>9}"
    )
    sub = (
        f"{'':>9} {'':>5} {'median s':>9} {'median s':>9} {'pairs':>6} "
        f"{'medns':>6} {'RSS MiB':>9} {'RSS MiB':>9} {'RSS MiB':>9}"
    )
    print()
    print(header)
    print(sub)
    print("-" * len(header))
    for s in results.summaries:
        print(
            f"{s.files:>9} {s.procs:>5} {s.du_wall_median_s:>9.3f} "
            f"{_fmt(s.da_wall_median_s, '9.3f'):>9} {_fmt(s.ratio_median_of_pairs, '6.2f'):>6} "
            f"{_fmt(s.ratio_of_medians, '6.2f'):>6} {_fmt(s.da_peak_rss_mib, '9.1f'):>9} "
            f"{_fmt(s.da_peak_rss_median_mib, '9.1f'):>9} "
            f"{s.du_peak_rss_mib:>9.1f}"
        )
    print("(ratio = du wall / diskaudit wall: median of per-pair ratios, ratio of medians;")
    print(" peak RSS = max over runs of the sampled peak of VmRSS summed over the process tree;")
    print(" (median) = median over runs of that peak, to tell one-off spikes from the norm)")
    print()
    print("targets:")
    for t in results.targets:
        print(f"  [{t.status}] {t.name}: {t.detail}")
    for note in results.notes:
        print(f"  note: {note}")
    for msg in results.mismatches:
        print(f"  MISMATCH: {msg}")
    if results.error:
        print(f"  ERROR: {results.error}")


def _int_list(text: str) -> list[int]:
    values = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected comma-separated positive integers")
    return values


def _du_version() -> str:
    try:
        out = subprocess.run(["du", "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return "unknown"
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scan_bench", description=__doc__)
    parser.add_argument("--files", type=_int_list, default=[100_000, 1_000_000])
    parser.add_argument("--procs", type=_int_list, default=[1, 2])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("--quick", action="store_true", help="smoke run: 20000 files, repeat 3")
    parser.add_argument("--only-du", action="store_true", help="measure du only")
    parser.add_argument(
        "--interval", type=float, default=0.005, help="RSS sampling interval in seconds"
    )
    parser.add_argument("--output", type=Path, help="default: <cache-dir>/last-bench.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.files = [20_000]
        args.repeat = 3
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    args.cache_dir = args.cache_dir.resolve()
    if args.output is None:
        args.output = args.cache_dir / "last-bench.json"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = Results(
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        environment={
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "du": _du_version(),
        },
    )
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        if not args.only_du:
            preflight(args.cache_dir, args.interval)
        for files in args.files:
            info = ensure_tree_info(args.cache_dir, files, args.seed)
            bench_tree(results, info, args.procs, args.repeat, args)
    except (RunFailed, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        results.error = f"{type(exc).__name__}: {exc}"
        _say(f"bench: FAILED: {results.error}")
    results.targets = evaluate_targets(results.summaries)
    print_report(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(asdict(results), indent=2, default=str) + "\n")
    print(f"\nresults written to {args.output}")
    return 1 if results.mismatches or results.error else 0


if __name__ == "__main__":
    sys.exit(main())
