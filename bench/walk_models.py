"""How the per-entry Python walk scales with threads and with processes (for ADR 2).

Walks a tree's top-level subdirectories with ``os.scandir`` + ``DirEntry.stat()`` (the pure-Python
loop the C reader replaces), shared among N threads or N processes, and prints wall times next
to ``du -s``. Not part of ``make bench``: run ``python -m bench.walk_models [TREE]`` (default: the
cached 1M-file tree).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from pathlib import Path

from bench.treegen import default_cache_dir, ensure_tree


def walk(path: str) -> int:
    """Sum st_blocks beneath ``path`` (a directory), iteratively, one thread."""
    total = 0
    stack = [path]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                total += st.st_blocks
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return total


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def shared(executor: Executor, tops: list[str]) -> int:
    return sum(executor.map(walk, tops))


def main() -> None:
    tree = Path(sys.argv[1]) if len(sys.argv) > 1 else ensure_tree(default_cache_dir(), 1_000_000)
    # Units: every directory two levels down, so N workers have enough pieces to share.
    tops = [str(p) for p in tree.glob("*/*") if p.is_dir() and not p.is_symlink()]
    subprocess.run(["du", "-s", str(tree)], capture_output=True, check=True)  # warm the caches
    rows: list[tuple[str, float]] = []
    for _ in range(3):
        rows.append(
            (
                "du -s",
                timed(
                    lambda: subprocess.run(["du", "-s", str(tree)], check=True, capture_output=True)
                ),
            )
        )
        rows.append(("1 thread", timed(lambda: [walk(t) for t in tops])))
        for n in (2, 4):
            with ThreadPoolExecutor(n) as ex:
                rows.append((f"{n} threads", timed(partial(shared, ex, tops))))
        with ProcessPoolExecutor(2) as px:
            px.submit(int).result()  # start the processes outside the timing
            rows.append(("2 processes", timed(partial(shared, px, tops))))
    best: dict[str, float] = {}
    for name, wall in rows:
        best[name] = min(wall, best.get(name, wall))
    print(f"tree: {tree}")
    for name, wall in best.items():
        print(f"{name:12s} {wall:6.2f} s  ({wall / best['du -s']:.2f}x du)")


if __name__ == "__main__":
    main()
