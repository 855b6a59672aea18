"""The walk in-process (no worker processes): totals, chunking, splitting, deadlines."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from diskaudit.scan import walk
from diskaudit.scan.aggregate import RootAccumulator
from diskaudit.scan.model import RootUsage
from diskaudit.scan.walk import Chunk, DeadlineExceeded, DirItem, Walker, WalkOptions
from tests.trees import build_awkward_tree, du


@pytest.fixture(params=["c", "python"])
def pure_python(request: pytest.FixtureRequest) -> bool:
    """Every walk test runs with the C reader and with os.scandir."""
    if request.param == "c" and walk.IMPLEMENTATION != "c":
        pytest.fail("the C reader is not built: run `make install` (setup.py build_ext)")
    return bool(request.param == "python")


class ListSink:
    """Collects chunks; asks for a split at chosen boundaries."""

    def __init__(self, split_at: set[int] | None = None, wanted: int = 2) -> None:
        self.chunks: list[Chunk] = []
        self.split_at = split_at or set()
        self.wanted = wanted
        self.boundaries = 0

    def chunk(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)

    def split_requested(self) -> int:
        self.boundaries += 1
        return self.wanted if self.boundaries in self.split_at else 0


def walk_all(
    root: Path, dir_level: int, chunk_size: int, split_at: set[int], pure_python: bool
) -> RootUsage:
    """Walk like the pool does, but in this process: spilled units are walked afterwards."""
    st = os.stat(root)
    opts = WalkOptions(root=str(root), dir_level=dir_level, chunk_size=chunk_size)
    acc = RootAccumulator(str(root), dir_level, st)
    queue: list[list[DirItem]] = [[(str(root), 0, str(root), True)]]
    while queue:
        sink = ListSink(split_at)
        Walker(opts, sink, pure_python=pure_python).run(queue.pop())
        for c in sink.chunks:
            accepted = acc.add_chunk(
                c.totals, c.linked_inodes, c.linked_dirs, c.entries, c.errors, c.samples
            )
            queue.extend([*c.spilled, *([item] for item in accepted)])
    return acc.result(0.0)


@pytest.mark.parametrize(
    ("chunk_size", "split_at"),
    [(1000, set()), (1, set()), (3, {1, 2, 5, 8}), (7, set(range(1, 200)))],
)
def test_walk_equals_du_however_the_work_is_split(
    tmp_path: Path, chunk_size: int, split_at: set[int], pure_python: bool
) -> None:
    root = build_awkward_tree(tmp_path / "t")
    usage = walk_all(root, 2, chunk_size, split_at, pure_python)
    got_disk = {e.path: e.disk_bytes for e in usage.entries}
    got_apparent = {e.path: e.apparent_bytes for e in usage.entries}
    assert got_disk == du(root, depth=2, apparent=False)
    assert got_apparent == du(root, depth=2, apparent=True)
    assert usage.errors == 0


def test_counts_files_and_dirs_recursively(tmp_path: Path, pure_python: bool) -> None:
    root = tmp_path / "r"
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "f1").write_bytes(b"1")
    (root / "a" / "b" / "c" / "f2").write_bytes(b"2")
    (root / "a" / "b" / "l").symlink_to("nowhere")
    usage = walk_all(root, 1, 1000, set(), pure_python)
    by_path = {e.path: e for e in usage.entries}
    assert (by_path[str(root)].files, by_path[str(root)].dirs) == (3, 3)
    assert (by_path[str(root / "a")].files, by_path[str(root / "a")].dirs) == (3, 2)
    assert [e.level for e in usage.entries] == [0, 1]


def test_chunks_are_bounded_by_chunk_size(tmp_path: Path, pure_python: bool) -> None:
    root = build_awkward_tree(tmp_path / "t")
    sink = ListSink()
    opts = WalkOptions(root=str(root), dir_level=2, chunk_size=5)
    Walker(opts, sink, pure_python=pure_python).run([(str(root), 0, str(root), True)])
    assert len(sink.chunks) > 10
    assert all(c.entries <= 5 for c in sink.chunks)
    assert sum(c.entries for c in sink.chunks) == sum(
        len(os.listdir(d)) for d, _, _ in os.walk(root)
    )


def test_split_gives_away_unentered_directories(tmp_path: Path, pure_python: bool) -> None:
    root = tmp_path / "wide"
    for i in range(20):
        (root / f"d{i:02}").mkdir(parents=True)
        (root / f"d{i:02}" / "f").write_bytes(b"x" * 100)
    sink = ListSink(split_at={1}, wanted=2)
    opts = WalkOptions(root=str(root), dir_level=1, chunk_size=8)
    Walker(opts, sink, pure_python=pure_python).run([(str(root), 0, str(root), True)])
    units = [unit for c in sink.chunks for unit in c.spilled]
    assert len(units) == 2  # as many units as asked for
    spilled = {path for unit in units for path, *_ in unit}
    # About half of what one chunk's read-ahead (8 entries) found.
    assert 2 <= len(spilled) <= 5
    for unit in units:
        assert all(level == 1 and key == path for path, level, key, _ in unit)
    # Given away means not walked here: their files were not counted by this walker...
    files = {k: sum(c.totals.get(k, [0, 0, 0, 0])[2] for c in sink.chunks) for k in spilled}
    assert set(files.values()) == {0}
    # ...and everything else was.
    walked = sum(
        c.totals.get(str(root / f"d{i:02}"), [0, 0, 0, 0])[2]
        for c in sink.chunks
        for i in range(20)
    )
    assert walked == 20 - len(spilled)


def test_deadline_stops_the_walk_at_a_chunk_boundary(tmp_path: Path, pure_python: bool) -> None:
    root = build_awkward_tree(tmp_path / "t")
    sink = ListSink()
    opts = WalkOptions(root=str(root), dir_level=2, chunk_size=3, deadline=time.monotonic() - 1)
    with pytest.raises(DeadlineExceeded):
        Walker(opts, sink, pure_python=pure_python).run([(str(root), 0, str(root), True)])
    assert len(sink.chunks) == 1
    assert sink.chunks[0].entries == 3


def test_ignore_dirs_exact_and_glob(tmp_path: Path, pure_python: bool) -> None:
    root = build_awkward_tree(tmp_path / "t")
    opts = WalkOptions(
        root=str(root),
        dir_level=1,
        chunk_size=1000,
        ignore_paths=frozenset({str(root / "a0")}),
        ignore_globs=(str(root / "a1" / "b*"),),
    )
    sink = ListSink()
    Walker(opts, sink, pure_python=pure_python).run([(str(root), 0, str(root), True)])
    keys = {k for c in sink.chunks for k in c.totals}
    assert str(root / "a0") not in keys
    assert str(root / "a1") in keys
    expected = du(root, depth=1, apparent=True)
    total = {k: sum(c.totals.get(k, [0, 0])[1] for c in sink.chunks) for k in keys}
    # a1 lost its b* subtrees: less than du says, more than its own files.
    assert 0 < total[str(root / "a1")] < expected[str(root / "a1")]


def test_follow_symlinks_never_loops_and_walks_each_target_once(
    tmp_path: Path, pure_python: bool
) -> None:
    """Each linked directory target is walked once per scan (no loops); a target also reached
    without a link counts under both paths (unlike du -L, which would need a set of every
    inode seen: see docs/adr/0005)."""
    root = build_awkward_tree(tmp_path / "t")
    (root / "a0" / "back-to-root").symlink_to(root)
    (root / "a0" / "to-a2-again").symlink_to(root / "a2")
    st = os.stat(root)
    opts = WalkOptions(root=str(root), dir_level=2, chunk_size=4, follow_symlinks=True)
    acc = RootAccumulator(str(root), 2, st)
    queue: list[list[DirItem]] = [[(str(root), 0, str(root), True)]]
    accepted: list[DirItem] = []
    while queue:
        assert len(accepted) < 10, "follow-symlinks is looping"
        sink = ListSink()
        Walker(opts, sink, pure_python=pure_python).run(queue.pop())
        for c in sink.chunks:
            new = acc.add_chunk(
                c.totals, c.linked_inodes, c.linked_dirs, c.entries, c.errors, c.samples
            )
            accepted.extend(new)
            queue.extend([i] for i in new)
    assert [os.path.realpath(p) for p, *_ in accepted] == [str(root / "a2")]
    dir_links = ["a1/to-dir", "a2/b2/up", "a0/back-to-root", "a0/to-a2-again"]
    expected = (
        du(root, depth=0, apparent=True)[str(root)]
        - sum(os.lstat(root / p).st_size for p in [*dir_links, "a1/to-file"])
        + du(root / "a2", depth=0, apparent=True)[str(root / "a2")]
        - os.lstat(root / "a2/b2/up").st_size  # inside a2, walked twice, a link both times
        + os.stat(root / "a1" / "small").st_size
    )
    assert acc.result(0.0).total.apparent_bytes == expected


def expected_buckets(directory: Path, bounds: tuple[int, ...]) -> list[int]:
    """Size buckets of every non-directory beneath ``directory``, by lstat, like the walk."""
    counts = [0] * (len(bounds) + 1)
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            size = os.lstat(os.path.join(dirpath, name)).st_size
            counts[next((i for i, b in enumerate(bounds) if size <= b), len(bounds))] += 1
    return counts


def test_size_buckets_and_largest_files(tmp_path: Path, pure_python: bool) -> None:
    root = build_awkward_tree(tmp_path / "t")
    bounds = (100, 5000, 1 << 20)
    st = os.stat(root)
    opts = WalkOptions(root=str(root), dir_level=1, chunk_size=7, size_bounds=bounds, top_files=3)
    acc = RootAccumulator(str(root), 1, st, size_bounds=bounds, top_files=3)
    queue: list[list[DirItem]] = [[(str(root), 0, str(root), True)]]
    while queue:
        sink = ListSink(split_at={1, 3})
        Walker(opts, sink, pure_python=pure_python).run(queue.pop())
        for c in sink.chunks:
            queue.extend(c.spilled)
            acc.add_chunk(
                c.totals,
                c.linked_inodes,
                c.linked_dirs,
                c.entries,
                c.errors,
                c.samples,
                c.big_files,
            )
    usage = acc.result(0.0)
    assert usage.size_bounds == bounds
    for e in usage.entries:
        assert list(e.size_buckets) == expected_buckets(Path(e.path), bounds), e.path
        assert sum(e.size_buckets) == e.files
    sizes = sorted(
        (os.lstat(os.path.join(d, f)).st_size, os.path.join(d, f))
        for d, _, fs in os.walk(root)
        for f in fs
    )
    assert [size for _, size in usage.largest_files] == [s for s, _ in sizes[-3:]][::-1]
    assert usage.largest_files[0] == (str(root / "a1" / "sparse"), 50 * 1024 * 1024)
