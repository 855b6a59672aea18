"""Frozen records a scan returns (in the pool's process; workers never import this)."""

from __future__ import annotations

from dataclasses import dataclass, field

BLOCK_BYTES = 512  # st_blocks is counted in 512-byte units on Linux, whatever the fs block size


@dataclass(frozen=True, slots=True)
class DirUsage:
    """Usage of one directory, everything beneath it included."""

    path: str
    level: int
    disk_bytes: int
    apparent_bytes: int
    files: int
    dirs: int
    #: Files beneath the directory per size bucket (see ``RootUsage.size_bounds``); empty when
    #: size buckets are off for the root.
    size_buckets: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class RootUsage:
    """The result of scanning one root: every directory down to ``dir_level``."""

    path: str
    dir_level: int
    #: Entries that could not be read (permission, vanished, ELOOP, ESTALE...), counted and skipped.
    errors: int
    #: Directory entries examined (files, directories, links).
    entries_scanned: int
    duration_seconds: float
    #: Level 0 (the root) first, then by level and path.
    entries: tuple[DirUsage, ...]
    #: The first few errors, as "path: reason".
    error_samples: tuple[str, ...] = field(default=())
    #: The largest files, largest first, as (path, st_size); empty unless top-files is on.
    largest_files: tuple[tuple[str, int], ...] = field(default=())
    #: Upper bounds in bytes of the size buckets (the last bucket is unbounded).
    size_bounds: tuple[int, ...] = field(default=())

    @property
    def total(self) -> DirUsage:
        return self.entries[0]
