"""An audit as text: disk figures, then git-sizer's metrics as git-sizer lays them out."""

from __future__ import annotations

from diskaudit.audit.model import AuditResult
from diskaudit.audit.sizer import table
from diskaudit.render import display_path, human_bytes


def audit_table(result: AuditResult) -> str:
    d = result.disk
    lines = [
        f"Repository  {result.url}" + (f" ({result.ref})" if result.ref else ""),
        f"HEAD        {result.head}",
        f"Timing      clone {result.clone_seconds:.2f}s, scan {result.scan_seconds:.2f}s, "
        f"git statistics {result.sizer_seconds:.2f}s",
        "",
        "On disk",
        f"  .git                  {human_bytes(d.git_dir_disk_bytes):>8}",
        f"  packs                 {human_bytes(d.pack_bytes):>8}  ({d.packs} packs)",
        f"  loose objects         {human_bytes(d.loose_bytes):>8}  ({d.loose_objects} objects)",
        f"  worktree              {human_bytes(d.worktree_disk_bytes):>8}  "
        f"({d.worktree_files} files, {human_bytes(d.worktree_apparent_bytes)} apparent)",
    ]
    lines += [
        f"    {human_bytes(e.disk_bytes):>8}  {display_path(e.path)}"
        for e in sorted(d.worktree, key=lambda e: -e.disk_bytes)[1:6]
    ]
    lines += ["", table(result.sizer)]
    return "\n".join(lines)
