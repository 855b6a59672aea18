"""An audit as text: disk figures, then git-sizer's metrics as git-sizer lays them out."""

from __future__ import annotations

from typing import Any

from diskaudit.audit.model import AuditResult
from diskaudit.render import display_path, human_bytes


def _value(metric: dict[str, Any]) -> str:
    value = metric.get("value", "")
    if metric.get("unit") == "bytes" and isinstance(value, int):
        return human_bytes(value)
    return f"{value:,}" if isinstance(value, int) else str(value)


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
    if result.sizer:
        rows = [
            (str(m.get("title", name)), _value(m), str(m.get("stars", "")))
            for name, m in result.sizer.items()
            if isinstance(m, dict)
        ]
        width = max(len(r[0]) for r in rows) if rows else 10
        lines += [
            "",
            f"| {'Name':<{width}} | {'Value':>10} | Level of concern",
            f"| {'-' * width} | {'-' * 10} | {'-' * 16}",
        ]
        lines += [f"| {n:<{width}} | {v:>10} | {s}" for n, v, s in rows]
    return "\n".join(lines)
