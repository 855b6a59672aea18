"""The record an audit produces: frozen, JSON-serialisable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diskaudit.audit.sizer import SizerReport
from diskaudit.render import entry_json
from diskaudit.scan.model import DirUsage


@dataclass(frozen=True)
class DiskFigures:
    """What the clone takes on disk."""

    pack_bytes: int  # size-pack of `git count-objects -v`
    packs: int
    loose_objects: int
    loose_bytes: int  # size (loose) of `git count-objects -v`
    git_dir_disk_bytes: int  # .git, like du -s -B1
    worktree_disk_bytes: int  # the checkout without .git
    worktree_apparent_bytes: int
    worktree_files: int
    #: The checkout's per-directory usage down to dir-level (without .git).
    worktree: tuple[DirUsage, ...] = ()


@dataclass(frozen=True)
class AuditResult:
    url: str
    ref: str | None
    head: str  # the commit checked out
    clone_seconds: float
    scan_seconds: float
    sizer_seconds: float
    disk: DiskFigures
    #: git-sizer's metrics.
    sizer: SizerReport

    def to_json(self) -> dict[str, Any]:
        d = self.disk
        return {
            "url": self.url,
            "ref": self.ref,
            "head": self.head,
            "clone_seconds": round(self.clone_seconds, 3),
            "scan_seconds": round(self.scan_seconds, 3),
            "sizer_seconds": round(self.sizer_seconds, 3),
            "disk": {
                "pack_bytes": d.pack_bytes,
                "packs": d.packs,
                "loose_objects": d.loose_objects,
                "loose_bytes": d.loose_bytes,
                "git_dir_disk_bytes": d.git_dir_disk_bytes,
                "worktree_disk_bytes": d.worktree_disk_bytes,
                "worktree_apparent_bytes": d.worktree_apparent_bytes,
                "worktree_files": d.worktree_files,
                "worktree": [entry_json(e) for e in d.worktree],
            },
            "sizer": self.sizer.to_json(),
        }
