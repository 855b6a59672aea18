"""``diskaudit scan`` as a user runs it, compared with the real du on the same trees."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.trees import (
    NON_UTF8,
    build_awkward_tree,
    du,
    python_for,
    run_as,
    unprivileged_user,
    world_readable_tmpdir,
)

DISKAUDIT = [sys.executable, "-m", "diskaudit"]


def scan_json(
    *args: str, user: str | None = None, pure_python: bool = False
) -> tuple[int, dict[str, Any]]:
    cmd = [*python_for(user), "-m", "diskaudit", "scan", "--format", "json", *args]
    if pure_python:
        cmd = ["env", "DISKAUDIT_PURE_PYTHON_WALK=1", *cmd]
    proc = run_as(cmd, user=user, check=False)
    assert proc.returncode in (0, 1), proc.stderr.decode()
    return proc.returncode, json.loads(proc.stdout)


def entry_path(e: dict[str, Any]) -> str:
    if "path_b64" in e:
        return os.fsdecode(base64.b64decode(e["path_b64"]))
    return str(e["path"])


def by_path(root_doc: dict[str, Any], field: str) -> dict[str, int]:
    return {entry_path(e): e[field] for e in root_doc["entries"]}


@pytest.mark.parametrize("walker", ["c", "python"])
@pytest.mark.parametrize("dir_level", [0, 1, 3])
@pytest.mark.parametrize(("max_procs", "chunk_size"), [(1, 1000), (2, 3), (3, 1)])
def test_every_directory_equals_du(
    tmp_path: Path, dir_level: int, max_procs: int, chunk_size: int, walker: str
) -> None:
    root = build_awkward_tree(tmp_path / "tree")
    rc, doc = scan_json(
        str(root),
        f"--dir-level={dir_level}",
        f"--max-procs={max_procs}",
        f"--chunk-size={chunk_size}",
        "--ignore-dir=/nonexistent-only",
        pure_python=walker == "python",
    )
    assert rc == 0
    [r] = doc["roots"]
    assert r["errors"] == 0
    assert r["dir_level"] == dir_level
    assert by_path(r, "disk_bytes") == du(root, depth=dir_level, apparent=False)
    assert by_path(r, "apparent_bytes") == du(root, depth=dir_level, apparent=True)
    levels = {entry_path(e): e["level"] for e in r["entries"]}
    assert levels[str(root)] == 0
    assert max(levels.values()) == dir_level


def test_hard_links_across_directories_count_once_in_the_root(tmp_path: Path) -> None:
    root = build_awkward_tree(tmp_path / "tree", cross_dir_hardlinks=True)
    _, doc = scan_json(str(root), "--max-procs=2", "--chunk-size=2")
    total = doc["roots"][0]["entries"][0]
    assert total["disk_bytes"] == du(root, depth=0, apparent=False)[str(root)]
    assert total["apparent_bytes"] == du(root, depth=0, apparent=True)[str(root)]


def test_non_utf8_names_round_trip_through_json(tmp_path: Path) -> None:
    root = build_awkward_tree(tmp_path / "tree")
    _, doc = scan_json(str(root), "--dir-level=1")
    odd = [e for e in doc["roots"][0]["entries"] if "path_b64" in e]
    assert [base64.b64decode(e["path_b64"]) for e in odd] == [os.fsencode(root) + b"/" + NON_UTF8]
    assert odd[0]["path"].endswith("caf\\xe9-latin1")


@pytest.mark.parametrize("walker", ["c", "python"])
def test_unreadable_directories_are_counted_and_skipped_like_du(walker: str) -> None:
    user = unprivileged_user()
    with world_readable_tmpdir() as tmp:
        root = build_awkward_tree(tmp / "tree")
        unstattable = len(os.listdir(root / "a2" / "b0"))
        (root / "a0" / "b1").chmod(0o000)  # cannot be listed at all
        (root / "a2" / "b0").chmod(0o644)  # listed, but its entries cannot be stat'ed
        if user is None and os.access(root / "a0" / "b1", os.R_OK):
            pytest.skip("this user reads chmod 000 directories and no other user to run as")
        rc, doc = scan_json(
            str(root), "--dir-level=2", "--max-procs=2", user=user, pure_python=walker == "python"
        )
        assert rc == 0
        [r] = doc["roots"]
        # b1 itself, and every entry of b0.
        assert r["errors"] == 1 + unstattable
        assert r["error_samples"]
        assert all("/a0/b1" in s or "/a2/b0/" in s for s in r["error_samples"])
        assert by_path(r, "disk_bytes") == du(root, depth=2, apparent=False, user=user)
        assert by_path(r, "apparent_bytes") == du(root, depth=2, apparent=True, user=user)


def test_missing_root_exits_1_and_still_reports_the_others(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    rc, doc = scan_json(str(tmp_path / "missing"), str(good))
    assert rc == 1
    assert doc["roots"][0]["error"].endswith("No such file or directory")
    assert doc["roots"][1]["entries"][0]["path"] == str(good)


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    bad = subprocess.run([*DISKAUDIT, "scan", "--max-procs", "0", str(tmp_path)], check=False)
    assert bad.returncode == 2
    typo = tmp_path / "typo.yaml"
    typo.write_text("chunk-sise: 5\n")
    proc = subprocess.run(
        [*DISKAUDIT, "scan", "--config", str(typo), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "chunk-sise" in proc.stderr
    assert str(typo) in proc.stderr


def test_table_lists_largest_first(tmp_path: Path) -> None:
    root = build_awkward_tree(tmp_path / "tree")
    (root / "a0" / "big").write_bytes(b"b" * 300_000)
    out = subprocess.run(
        [*DISKAUDIT, "scan", str(root), "--dir-level=1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0].split() == ["DISK", "APPARENT", "FILES", "DIRS", "PATH"]
    _, doc = scan_json(str(root), "--dir-level=1")
    entries = sorted(doc["roots"][0]["entries"], key=lambda e: (-e["disk_bytes"], e["path"]))
    rows = [line for line in out[1:] if not line.startswith("  (")]
    assert [row.split("  ")[-1] for row in rows[:3]] == [e["path"] for e in entries[:3]]
    assert rows[0].endswith(str(root))
    assert rows[1].endswith("/a0")


def test_one_file_system_skips_mounted_directories(tmp_path: Path) -> None:
    root = build_awkward_tree(tmp_path / "tree")
    mnt = root / "a0" / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "none", str(mnt)], check=False
    )
    if mounted.returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        (mnt / "inside").write_bytes(b"z" * 4096)
        _, everything = scan_json(str(root), "--dir-level=1")
        _, one_fs = scan_json(str(root), "--dir-level=1", "--one-file-system")
        files = {
            r: {entry_path(e): e["files"] for e in d["roots"][0]["entries"]}
            for r, d in (("all", everything), ("one", one_fs))
        }
        assert files["all"][str(root / "a0")] == files["one"][str(root / "a0")] + 1
        assert (
            by_path(one_fs["roots"][0], "disk_bytes")[str(root)]
            == du(root, depth=0, apparent=False, one_file_system=True)[str(root)]
        )
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
