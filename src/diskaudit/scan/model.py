"""Frozen records of the scan engine. Stdlib only: worker processes unpickle ``WalkOptions``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

BLOCK_BYTES = 512  # st_blocks is counted in 512-byte units on Linux, whatever the fs block size


@dataclass(frozen=True, slots=True)
class WalkOptions:
    """What a worker needs to know to walk part of one root. Sent with every unit."""

    root: str
    dir_level: int
    chunk_size: int
    follow_symlinks: bool = False
    one_file_system: bool = False
    #: st_dev of the root, for ``one_file_system``.
    root_dev: int = 0
    #: Absolute paths never entered (exact match).
    ignore_paths: frozenset[str] = frozenset()
    #: Glob patterns (fnmatch syntax) matched against a directory's absolute path.
    ignore_globs: tuple[str, ...] = ()
    #: ``time.monotonic()`` value after which the walk must stop; inf for none.
    deadline: float = math.inf


@dataclass(frozen=True, slots=True)
class DirUsage:
    """Usage of one directory, everything beneath it included."""

    path: str
    level: int
    disk_bytes: int
    apparent_bytes: int
    files: int
    dirs: int


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

    @property
    def total(self) -> DirUsage:
        return self.entries[0]
