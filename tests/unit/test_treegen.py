"""Tests for the benchmark tree generator (bench/treegen.py)."""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import replace
from pathlib import Path

import pytest

# bench/ lives at the repository root, which `pytest` (unlike `python -m pytest`) does not put
# on sys.path.
_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from bench import treegen  # noqa: E402

FILES = 500

Listing = list[tuple[str, int, bool]]


def _listing(root: Path) -> Listing:
    """Sorted (relative path, size, is-link) of every entry below root."""
    out: Listing = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            is_link = stat.S_ISLNK(st.st_mode)
            size = st.st_size if stat.S_ISREG(st.st_mode) else 0
            out.append((path.relative_to(root).as_posix(), size, is_link))
    return sorted(out)


def _regular_files(root: Path) -> list[Path]:
    return [
        Path(dirpath, name)
        for dirpath, _dirs, names in os.walk(root)
        for name in names
        if stat.S_ISREG(Path(dirpath, name).lstat().st_mode)
    ]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, treegen.TreeInfo]:
    root = tmp_path_factory.mktemp("treegen") / "tree"
    return root, treegen.generate(root, FILES, seed=7)


def test_deterministic(tree: tuple[Path, treegen.TreeInfo], tmp_path: Path) -> None:
    root, info = tree
    again = treegen.generate(tmp_path / "again", FILES, seed=7)
    assert _listing(root) == _listing(tmp_path / "again")
    # everything but where and how fast it was built is seed-determined
    assert replace(info, root=Path(), build_seconds=0) == replace(again, root=Path())


def test_other_seed_differs(tree: tuple[Path, treegen.TreeInfo], tmp_path: Path) -> None:
    root, _info = tree
    treegen.generate(tmp_path / "other", FILES, seed=8)
    assert _listing(root) != _listing(tmp_path / "other")


def test_file_count_within_ten_percent(tree: tuple[Path, treegen.TreeInfo]) -> None:
    root, info = tree
    count = len(_regular_files(root))
    assert abs(count - FILES) <= FILES // 10
    assert count == info.files


def test_hard_links_including_across_directories(tree: tuple[Path, treegen.TreeInfo]) -> None:
    root, info = tree
    dirs_by_inode: dict[int, set[Path]] = {}
    for path in _regular_files(root):
        st = path.lstat()
        if st.st_nlink > 1:
            dirs_by_inode.setdefault(st.st_ino, set()).add(path.parent)
    assert dirs_by_inode
    assert info.hardlinks >= 1
    assert any(len(dirs) > 1 for dirs in dirs_by_inode.values())


def test_symlinks_to_files_dirs_and_dangling(tree: tuple[Path, treegen.TreeInfo]) -> None:
    root, info = tree
    links = [p for p in root.rglob("*") if p.is_symlink()]
    assert len(links) == info.symlinks
    assert any(p.is_file() for p in links)
    assert any(p.is_dir() for p in links)
    assert any(not p.exists() for p in links)  # dangling


def test_sparse_file(tree: tuple[Path, treegen.TreeInfo]) -> None:
    root, info = tree
    sparse = [p for p in _regular_files(root) if p.stat().st_blocks * 512 < p.stat().st_size]
    assert info.sparse_files >= 1
    assert len(sparse) >= info.sparse_files


def test_sizes_varied(tree: tuple[Path, treegen.TreeInfo]) -> None:
    root, _info = tree
    sizes = [p.stat().st_size for p in _regular_files(root)]
    assert 0 in sizes
    assert any(0 < s <= 4096 for s in sizes)
    assert len(set(sizes)) > FILES // 4


def test_refuses_non_empty_root(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    with pytest.raises(FileExistsError):
        treegen.generate(tmp_path, 10)


def test_ensure_tree_reuses_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    path = treegen.ensure_tree(cache, FILES, seed=3)
    assert path == cache / f"tree-{FILES}-s3"
    marker = treegen.marker_path(cache, FILES, seed=3)
    assert marker.is_file()
    assert not any(p.name.startswith(".") for p in cache.iterdir())  # no temp dir left
    mtime = marker.stat().st_mtime_ns
    listing = _listing(path)

    def fail(*_args: object, **_kwargs: object) -> treegen.TreeInfo:
        raise AssertionError("ensure_tree rebuilt a complete cached tree")

    monkeypatch.setattr(treegen, "generate", fail)
    assert treegen.ensure_tree(cache, FILES, seed=3) == path
    assert marker.stat().st_mtime_ns == mtime
    assert _listing(path) == listing


def test_ensure_tree_rebuilds_without_marker(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = treegen.ensure_tree(cache, FILES, seed=3)
    listing = _listing(path)
    marker = treegen.marker_path(cache, FILES, seed=3)
    marker.unlink()
    (path / "partial-leftover").write_text("x")
    assert treegen.ensure_tree(cache, FILES, seed=3) == path
    assert marker.is_file()
    assert _listing(path) == listing
