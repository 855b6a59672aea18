"""Turning scan results into text: tables for people, JSON for programs.

Paths in JSON
    Linux file names are bytes; Python holds undecodable bytes as lone surrogates
    (``surrogateescape``), which are not valid UTF-8. Such a path is written as ``"path"`` with
    each undecodable byte shown as ``\\xNN`` (readable, but ambiguous), plus ``"path_b64"``: the
    exact bytes, base64-encoded. ``path_b64`` is present only for those paths, so a reader
    restores any path exactly with ``b64decode(e["path_b64"]) if "path_b64" in e else
    e["path"].encode()``.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Sequence

from diskaudit.scan.model import DirUsage, RootUsage

_UNITS = ("B", "K", "M", "G", "T", "P", "E")


def human_bytes(n: int) -> str:
    """Like ``du -h``: 1024-based, one decimal below 10, rounded up as du does."""
    value = float(n)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{int(value)}B"
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def display_path(path: str) -> str:
    """A printable form of a path; undecodable bytes shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def path_fields(path: str) -> dict[str, str]:
    raw = os.fsencode(path)
    try:
        return {"path": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {
            "path": raw.decode("utf-8", "backslashreplace"),
            "path_b64": base64.b64encode(raw).decode("ascii"),
        }


def entry_json(e: DirUsage) -> dict[str, object]:
    return {
        **path_fields(e.path),
        "level": e.level,
        "disk_bytes": e.disk_bytes,
        "apparent_bytes": e.apparent_bytes,
        "files": e.files,
        "dirs": e.dirs,
    }


def root_json(r: RootUsage) -> dict[str, object]:
    return {
        **path_fields(r.path),
        "dir_level": r.dir_level,
        "errors": r.errors,
        "entries_scanned": r.entries_scanned,
        "duration_seconds": round(r.duration_seconds, 6),
        "error_samples": [display_path(s) for s in r.error_samples],
        "entries": [entry_json(e) for e in r.entries],
    }


def failed_root_json(path: str, dir_level: int, error: str) -> dict[str, object]:
    return {**path_fields(path), "dir_level": dir_level, "error": error, "entries": []}


def table(results: Sequence[RootUsage]) -> str:
    """Largest first within each root, like ``du -h | sort -rh``."""
    header = f"{'DISK':>7} {'APPARENT':>8} {'FILES':>10} {'DIRS':>8}  PATH"
    lines = [header]
    for r in results:
        lines.extend(_rows(sorted(r.entries, key=lambda e: (-e.disk_bytes, e.path))))
        note = f"  ({r.entries_scanned} entries in {r.duration_seconds:.2f}s"
        note += f", {r.errors} unreadable, skipped)" if r.errors else ")"
        lines.append(note)
    return "\n".join(lines)


def _rows(entries: Iterable[DirUsage]) -> list[str]:
    return [
        f"{human_bytes(e.disk_bytes):>7} {human_bytes(e.apparent_bytes):>8} "
        f"{e.files:>10} {e.dirs:>8}  {display_path(e.path)}"
        for e in entries
    ]
