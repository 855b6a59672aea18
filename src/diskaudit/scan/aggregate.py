"""Merging the chunks of one root's walk into per-directory totals. Runs in the pool's process."""

from __future__ import annotations

import os
from collections.abc import Iterable

from diskaudit.scan.model import BLOCK_BYTES, DirUsage, RootUsage
from diskaudit.scan.walk import DirItem, LinkedDir, LinkedInode, Totals

#: Error paths kept per root for logs and reports; the rest are only counted.
MAX_ROOT_ERROR_SAMPLES = 20


class RootAccumulator:
    """Totals of one root's scan while its chunks arrive, in any order, from any worker.

    Holds one record per reported directory, the (dev, ino) of hard-linked inodes seen (so
    each counts once per scan, like du) and, with follow-symlinks, of directories entered
    through links (so each is walked once and loops end).
    """

    def __init__(
        self,
        root: str,
        dir_level: int,
        root_stat: os.stat_result,
        *,
        size_bounds: tuple[int, ...] = (),
        top_files: int = 0,
    ) -> None:
        self.root = root
        self.dir_level = dir_level
        self._size_bounds = size_bounds
        self._width = 4 + (len(size_bounds) + 1 if size_bounds else 0)
        self._top_files = top_files
        self._big: list[tuple[int, str]] = []  # min-heap of the largest files seen
        self._own: dict[str, Totals] = {root: self._zero()}
        self._own[root][0:2] = [root_stat.st_blocks, root_stat.st_size]
        self._inodes: set[tuple[int, int]] = set()
        self._dirs: set[tuple[int, int]] = {(root_stat.st_dev, root_stat.st_ino)}
        self.entries = 0
        self.errors = 0
        self.samples: list[str] = []

    def _zero(self) -> Totals:
        return [0] * self._width

    def _slot(self, key: str) -> Totals:
        totals = self._own.get(key)
        if totals is None:
            totals = self._own[key] = self._zero()
        return totals

    def add_chunk(
        self,
        totals: dict[str, Totals],
        linked_inodes: Iterable[LinkedInode],
        linked_dirs: Iterable[LinkedDir],
        entries: int,
        errors: int,
        samples: Iterable[str],
        big_files: Iterable[tuple[int, str]] = (),
    ) -> list[DirItem]:
        """Merge one chunk; return the linked directories accepted for walking."""
        for key, values in totals.items():
            t = self._slot(key)
            for i, v in enumerate(values):
                t[i] += v
        if self._top_files:
            import heapq

            for candidate in big_files:
                if len(self._big) < self._top_files:
                    heapq.heappush(self._big, candidate)
                elif candidate > self._big[0]:
                    heapq.heapreplace(self._big, candidate)
        seen = self._inodes
        for dev, ino, blocks, size, key in linked_inodes:
            if (dev, ino) not in seen:
                seen.add((dev, ino))
                t = self._slot(key)
                t[0] += blocks
                t[1] += size
        accepted: list[DirItem] = []
        for item, dev, ino, blocks, size, parent_key in linked_dirs:
            if (dev, ino) in self._dirs:
                continue
            self._dirs.add((dev, ino))
            self._slot(parent_key)[3] += 1
            t = self._slot(item[2])
            t[0] += blocks
            t[1] += size
            accepted.append(item)
        self.entries += entries
        self.errors += errors
        room = MAX_ROOT_ERROR_SAMPLES - len(self.samples)
        if room > 0:
            self.samples.extend(list(samples)[:room])
        return accepted

    def _level(self, key: str) -> int:
        if key == self.root:
            return 0
        rel = key[len(self.root) :].lstrip("/")
        return rel.count("/") + 1

    def result(self, duration_seconds: float) -> RootUsage:
        """Roll each directory's own totals up into its ancestors and freeze them."""
        rolled = {key: list(t) for key, t in self._own.items()}
        levels = {key: self._level(key) for key in rolled}
        parents: dict[str, str] = {}
        for key in list(rolled):
            # Every parent was entered before its children, so it has a record; the loop only
            # guards against a chunk lost to a failed worker leaving a hole.
            while levels[key] > 0 and key not in parents:
                parent = self.root if levels[key] == 1 else os.path.dirname(key)
                parents[key] = parent
                if parent not in rolled:
                    rolled[parent] = self._zero()
                    levels[parent] = levels[key] - 1
                key = parent
        for key in sorted(parents, key=levels.__getitem__, reverse=True):
            p, t = rolled[parents[key]], rolled[key]
            for i, v in enumerate(t):
                p[i] += v
        entries = tuple(
            DirUsage(
                path=key,
                level=levels[key],
                disk_bytes=t[0] * BLOCK_BYTES,
                apparent_bytes=t[1],
                files=t[2],
                dirs=t[3],
                size_buckets=tuple(t[4:]),
            )
            for key, t in sorted(rolled.items(), key=lambda kv: (levels[kv[0]], kv[0]))
        )
        return RootUsage(
            path=self.root,
            dir_level=self.dir_level,
            errors=self.errors,
            entries_scanned=self.entries,
            duration_seconds=duration_seconds,
            entries=entries,
            error_samples=tuple(self.samples),
            largest_files=tuple((path, size) for size, path in sorted(self._big, reverse=True)),
            size_bounds=self._size_bounds,
        )
