"""Figures of the exporter daemon: idle memory after a first scan, /metrics latency during a scan.

``python -m bench.daemon_bench`` (also part of ``make bench``):
1. starts ``diskaudit serve`` on the cached 100k-file tree, waits for /readyz, then samples the
   summed VmRSS of its process tree (daemon + scan workers) for a few seconds: idle after the
   first scan, workers still alive; and again after they ended (idle timeout, ~60 s) with
   ``--wait-workers``;
2. starts it on the 1M-file tree with ``chunk-size`` small enough that the scan lasts a while,
   and scrapes /metrics back to back while the scan runs: latency p50/p99/max.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from bench.scan_bench import ProcessTreeSampler
from bench.treegen import default_cache_dir, ensure_tree


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return int(resp.status), bytes(resp.read())


def _start(tree: Path, tmp: Path, **extra: object) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    config = tmp / f"bench-{port}.yaml"
    settings = {
        "analyzed-path": str(tree),
        "dir-level": 2,
        "scan-interval": "1h",
        "bind-address": f"127.0.0.1:{port}",
        "max-procs": 2,
        "data-dir": str(tmp / "data"),
        **extra,
    }
    config.write_text(yaml.safe_dump(settings))
    proc = subprocess.Popen(
        [sys.executable, "-m", "diskaudit", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, f"http://127.0.0.1:{port}"


def _wait(url: str, path: str, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited with {proc.returncode}")
        try:
            if _get(url + path)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{path} not 200 within {timeout_s}s")


def idle_rss(tree: Path, tmp: Path, wait_workers: bool) -> None:
    proc, url = _start(tree, tmp)
    try:
        _wait(url, "/readyz", proc)
        sampler = ProcessTreeSampler(proc.pid, 0.01)
        sampler.start()
        time.sleep(3)
        sampler.stop()
        print(
            f"idle after first scan of {tree.name}, workers alive: peak "
            f"{sampler.peak_kib / 1024:.1f} MiB over {sampler.peak_nprocs} processes"
        )
        if wait_workers:
            time.sleep(65)  # WORKER_IDLE_TIMEOUT_S is 60
            sampler = ProcessTreeSampler(proc.pid, 0.01)
            sampler.start()
            time.sleep(3)
            sampler.stop()
            print(
                f"idle after the workers ended: peak {sampler.peak_kib / 1024:.1f} MiB over "
                f"{sampler.peak_nprocs} processes"
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def scrape_latency(tree: Path, tmp: Path) -> None:
    # chunk-size 100: many chunks merged by the event loop that also serves the scrapes, the
    # worst case for them; scan-interval 1s: after the first scan (so that the snapshot is
    # full), scans follow each other without a pause.
    proc, url = _start(tree, tmp, **{"chunk-size": 100, "scan-interval": "1s"})
    try:
        _wait(url, "/readyz", proc)
        latencies = []
        busy = 0
        t_end = time.monotonic() + 15
        while time.monotonic() < t_end:
            t0 = time.perf_counter()
            _, body = _get(url + "/metrics")
            if b"diskaudit_scan_workers_busy 0.0" not in body:
                latencies.append(time.perf_counter() - t0)
                busy += 1
        lat = sorted(latencies)
        print(
            f"/metrics ({len(body)} bytes) during scans of {tree.name}: {busy} scrapes while "
            f"workers were busy; p50 {statistics.median(lat) * 1000:.1f} ms, p99 "
            f"{lat[int(len(lat) * 0.99) - 1] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wait-workers", action="store_true", help="also measure after 65 s")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        idle_rss(ensure_tree(args.cache_dir, 100_000), Path(tmp), args.wait_workers)
        scrape_latency(ensure_tree(args.cache_dir, 1_000_000), Path(tmp))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
