"""Deterministic directory-tree generator for the scan benchmark.

The same ``(files, seed)`` always yields the same tree: same directory layout, same names,
same file sizes, same hard links and symlinks.  Only timestamps and inode numbers differ.

Shape (see bench/README.md): nested directories up to ``MAX_DEPTH`` deep with varied fan-out,
one top-level subtree holding roughly half of all files, a few "wide" directories with
thousands of entries, mostly tiny files (many empty) so that a 1M-file tree stays around
3 GB on a 4 KiB-block filesystem, a few files up to 1 MiB, sparse files, hard links (within
and across directories), symlinks to files and directories and one dangling symlink.

Usage: ``python -m bench.treegen DIR --files N [--seed S]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import posixpath
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Bump whenever the generated tree changes: cached trees built by another version are rebuilt.
GENERATOR_VERSION = 2

MAX_DEPTH = 6
DOMINANT_SHARE = (0.45, 0.60)  # share of the non-wide files in the dominant top-level subtree
WIDE_SHARE = 0.08  # share of all files living in "wide" directories
WIDE_SIZE = (2000, 5000)  # entries per wide directory
HARDLINK_SHARE = 0.005  # extra names for existing files, counted in ``files``

# File size classes (probabilities must sum to 1).  Expected disk use on 4 KiB blocks is
# ~2.8 KiB per file, i.e. ~2.8 GB for 1M files.
P_ZERO = 0.45
P_SMALL = 0.51  # 1 B .. 4 KiB
P_MEDIUM = 0.039  # 4 KiB .. 16 KiB
P_LARGE = 0.001  # 16 KiB .. 1 MiB, log-uniform
SPARSE_APPARENT = (1 << 20, 64 << 20)

_CHUNK = (b"diskaudit-bench\n" * 4096)[: 1 << 20]  # 1 MiB of cheap, constant content
_DIR_WORDS = (
    "src",
    "lib",
    "data",
    "cache",
    "logs",
    "build",
    "docs",
    "assets",
    "home",
    "backup",
    "tmp",
    "share",
    "pkg",
    "vendor",
    "media",
    "node_modules",
    "site-packages",
    "objects",
    "reports",
    "archive",
)
_FILE_STEMS = ("file", "index", "part", "chunk", "note", "module", "record", "img", "entry")
_FILE_EXTS = (".txt", ".py", ".json", ".log", ".dat", ".md", ".c", ".h", ".png", "", ".gz")
_PROGRESS_EVERY = 50_000


@dataclass
class TreeInfo:
    """Summary of a generated tree (everything except ``root`` is seed-determined)."""

    root: Path
    requested_files: int
    seed: int
    files: int = 0  # regular-file names, hard-link names included
    inodes: int = 0  # distinct regular files
    dirs: int = 0  # directories, root included
    hardlinks: int = 0  # extra names created with link()
    symlinks: int = 0  # all symlinks, the dangling one included
    symlinks_to_dirs: int = 0
    sparse_files: int = 0
    apparent_bytes: int = 0  # sum of st_size over distinct regular files
    max_depth: int = 0
    largest_dir_entries: int = 0
    dominant_subtree: str = ""
    dominant_subtree_files: int = 0
    generator_version: int = GENERATOR_VERSION
    build_seconds: float = field(default=0.0, compare=False)

    def to_json(self) -> str:
        data = asdict(self)
        data["root"] = str(self.root)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TreeInfo:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("tree info must be a JSON object")
        data["root"] = Path(data["root"])
        return cls(**data)


@dataclass
class _Dir:
    rel: str  # "" for the root, "a-1/b-2" below it
    depth: int
    nfiles: int


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def _split(total: int, weights: list[float]) -> list[int]:
    """Split ``total`` into ``len(weights)`` integer parts proportional to ``weights``."""
    scale = total / sum(weights)
    parts = [int(w * scale) for w in weights]
    for i in range(total - sum(parts)):
        parts[i % len(parts)] += 1
    return parts


def _build(rng: random.Random, out: list[_Dir], rel: str, depth: int, budget: int) -> None:
    leaf_cap = rng.randint(8, 250)
    if depth >= MAX_DEPTH or budget <= leaf_cap:
        out.append(_Dir(rel, depth, budget))
        return
    own = min(int(budget * rng.uniform(0.0, 0.15)), rng.randint(0, 400))
    out.append(_Dir(rel, depth, own))
    rest = budget - own
    nsub = rng.randint(2, 10)
    if depth == MAX_DEPTH - 1:  # last level that may branch: keep leaves below ~thousands
        nsub = max(nsub, math.ceil(rest / 400))
    weights = [rng.lognormvariate(0.0, 1.0) for _ in range(nsub)]
    for i, part in enumerate(_split(rest, weights)):
        _build(rng, out, _join(rel, f"{rng.choice(_DIR_WORDS)}-{i}"), depth + 1, part)


def _plan_dirs(rng: random.Random, files: int) -> tuple[list[_Dir], str]:
    """Directory layout (parents before children) and the dominant top-level subtree."""
    n_wide = max(1, round(files * WIDE_SHARE / sum(WIDE_SIZE) * 2))
    wide = [min(rng.randint(*WIDE_SIZE), max(1, files // 10)) for _ in range(n_wide)]
    budget = files - sum(wide)
    root_own = min(budget, rng.randint(3, 20))
    out = [_Dir("", 0, root_own)]
    rest = budget - root_own
    n_top = rng.randint(6, 12)
    dominant = rng.randrange(n_top)
    dom_files = round(rest * rng.uniform(*DOMINANT_SHARE))
    weights = [rng.lognormvariate(0.0, 1.0) for _ in range(n_top - 1)]
    others = _split(rest - dom_files, weights)
    others.insert(dominant, dom_files)
    dominant_name = ""
    for i, part in enumerate(others):
        name = f"{rng.choice(_DIR_WORDS)}-{i}"
        if i == dominant:
            dominant_name = name
        _build(rng, out, name, 1, part)
    for k, size in enumerate(wide):
        parent = rng.choice([d for d in out if d.depth < MAX_DEPTH])
        out.append(_Dir(_join(parent.rel, f"wide-{k}"), parent.depth + 1, size))
    return out, dominant_name


def _file_size(rng: random.Random) -> int:
    r = rng.random()
    if r < P_ZERO:
        return 0
    if r < P_ZERO + P_SMALL:
        return rng.randint(1, 4096)
    if r < P_ZERO + P_SMALL + P_MEDIUM:
        return rng.randint(4097, 16384)
    return int(math.exp(rng.uniform(math.log(16384), math.log(1 << 20))))


def _write_file(dfd: int, name: str, size: int) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dfd)
    try:
        if size:
            os.write(fd, memoryview(_CHUNK)[:size])
    finally:
        os.close(fd)


def _write_sparse(dfd: int, name: str, apparent: int, data_at: int | None) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dfd)
    try:
        if data_at is not None:
            os.pwrite(fd, _CHUNK[:4096], data_at)
        os.ftruncate(fd, apparent)
    finally:
        os.close(fd)


class _Pool:
    """Deterministic reservoir sample of created regular files: (dir index, relative path)."""

    def __init__(self, rng: random.Random, cap: int = 4096) -> None:
        self.rng = rng
        self.cap = cap
        self.seen = 0
        self.items: list[tuple[int, str]] = []

    def add(self, item: tuple[int, str]) -> None:
        self.seen += 1
        if len(self.items) < self.cap:
            self.items.append(item)
        else:
            j = self.rng.randrange(self.seen)
            if j < self.cap:
                self.items[j] = item

    def pick(self, avoid_dir: int | None = None) -> tuple[int, str] | None:
        if not self.items:
            return None
        for _ in range(16):
            item = self.rng.choice(self.items)
            if item[0] != avoid_dir:
                return item
        return self.rng.choice(self.items)


def generate(root: Path, files: int, seed: int = 1, *, progress: bool = False) -> TreeInfo:
    """Create the tree for ``(files, seed)`` under ``root`` (created; must be empty)."""
    if files < 1:
        raise ValueError("files must be >= 1")
    started = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    rng = random.Random(f"diskaudit-treegen-v{GENERATOR_VERSION}-{files}-{seed}")
    dirs, dominant = _plan_dirs(rng, files)
    total = sum(d.nfiles for d in dirs)
    n_links = max(3, round(files * HARDLINK_SHARE))
    n_sparse = max(2, files // 20_000)
    special = rng.sample(range(total // 5, total), min(n_links + n_sparse, total - total // 5))
    link_at = set(special[:n_links])
    sparse_at = set(special[n_links:])
    info = TreeInfo(root=root, requested_files=files, seed=seed, dominant_subtree=dominant)
    info.dirs = len(dirs)
    info.max_depth = max(d.depth for d in dirs)
    info.largest_dir_entries = max(d.nfiles for d in dirs)
    info.dominant_subtree_files = sum(
        d.nfiles for d in dirs if d.rel == dominant or d.rel.startswith(dominant + "/")
    )
    pool = _Pool(rng)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for d in dirs[1:]:
            os.mkdir(d.rel, 0o755, dir_fd=root_fd)
        index = 0
        for di, d in enumerate(dirs):
            dfd = os.open(d.rel or ".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=root_fd)
            try:
                local: list[tuple[int, str]] = []
                for j in range(d.nfiles):
                    name = f"{rng.choice(_FILE_STEMS)}-{j:05d}{rng.choice(_FILE_EXTS)}"
                    rel = _join(d.rel, name)
                    target = None
                    if index in link_at:
                        # alternate cross-directory and same-directory links
                        if len(link_at) % 2 == 0 or not local:
                            target = pool.pick(avoid_dir=di)
                        else:
                            target = rng.choice(local)
                        link_at.discard(index)
                    if target is not None:
                        os.link(target[1], name, src_dir_fd=root_fd, dst_dir_fd=dfd)
                        info.hardlinks += 1
                    elif index in sparse_at:
                        apparent = rng.randint(*SPARSE_APPARENT)
                        data_at = rng.randrange(apparent // 4096) * 4096 if j % 2 else None
                        _write_sparse(dfd, name, apparent, data_at)
                        info.sparse_files += 1
                        info.inodes += 1
                        info.apparent_bytes += apparent
                    else:
                        size = _file_size(rng)
                        _write_file(dfd, name, size)
                        info.inodes += 1
                        info.apparent_bytes += size
                        if size:
                            pool.add((di, rel))
                            local.append((di, rel))
                    info.files += 1
                    index += 1
                    if progress and index % _PROGRESS_EVERY == 0:
                        elapsed = time.monotonic() - started
                        print(
                            f"treegen: {index}/{total} files ({elapsed:.1f}s)",
                            file=sys.stderr,
                            flush=True,
                        )
            finally:
                os.close(dfd)
        _make_symlinks(rng, root_fd, dirs, pool, files, info)
    finally:
        os.close(root_fd)
    info.build_seconds = round(time.monotonic() - started, 3)
    if progress:
        print(
            f"treegen: done, {info.files} files in {info.dirs} dirs under {root} "
            f"({info.build_seconds:.1f}s)",
            file=sys.stderr,
            flush=True,
        )
    return info


def _make_symlinks(
    rng: random.Random,
    root_fd: int,
    dirs: list[_Dir],
    pool: _Pool,
    files: int,
    info: TreeInfo,
) -> None:
    def place(k: int, target_rel: str) -> None:
        parent = rng.choice(dirs).rel
        target = posixpath.relpath(target_rel, parent or ".")
        os.symlink(target, _join(parent, f"link-{k}"), dir_fd=root_fd)
        info.symlinks += 1

    k = 0
    for _ in range(max(2, files // 2000)):
        item = pool.pick()
        if item is not None:
            place(k, item[1])
            k += 1
    candidates = [d.rel for d in dirs[1:]]
    for _ in range(max(1, files // 20_000) if candidates else 0):
        # never an ancestor of the link (no loops even for a scanner that follows links)
        parent = rng.choice(dirs).rel
        target_rel = rng.choice(candidates)
        if parent == target_rel or parent.startswith(target_rel + "/"):
            continue
        os.symlink(
            posixpath.relpath(target_rel, parent or "."),
            _join(parent, f"link-{k}"),
            dir_fd=root_fd,
        )
        info.symlinks += 1
        info.symlinks_to_dirs += 1
        k += 1
    os.symlink("does-not-exist/nowhere.txt", "dangling-link", dir_fd=root_fd)
    info.symlinks += 1


def tree_name(files: int, seed: int = 1) -> str:
    return f"tree-{files}-s{seed}"


def marker_path(cache_dir: Path, files: int, seed: int = 1) -> Path:
    """Completion marker, next to (not inside) the tree so scans never see it."""
    return cache_dir / f"{tree_name(files, seed)}.complete.json"


def default_cache_dir() -> Path:
    return Path(__file__).resolve().parent.parent / ".bench-cache"


def load_cached(cache_dir: Path, files: int, seed: int = 1) -> TreeInfo | None:
    """TreeInfo of a complete cached tree built by this generator version, else None."""
    tree = cache_dir / tree_name(files, seed)
    try:
        info = TreeInfo.from_json(marker_path(cache_dir, files, seed).read_text())
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if info.generator_version != GENERATOR_VERSION or not tree.is_dir():
        return None
    info.root = tree
    return info


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ensure_tree_info(cache_dir: Path, files: int, seed: int = 1) -> TreeInfo:
    """Like ensure_tree() but returns the TreeInfo."""
    cached = load_cached(cache_dir, files, seed)
    if cached is not None:
        return cached
    name = tree_name(files, seed)
    final = cache_dir / name
    marker = marker_path(cache_dir, files, seed)
    cache_dir.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    stale = [final] if final.exists() or final.is_symlink() else []
    for tmp in cache_dir.glob(f".{name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and _pid_alive(int(pid))):
            stale.append(tmp)
    for path in stale:
        print(f"treegen: removing stale {path}", file=sys.stderr, flush=True)
        shutil.rmtree(path)
    tmp = cache_dir / f".{name}.tmp-{os.getpid()}"
    print(f"treegen: building {final} ({files} files, seed {seed})", file=sys.stderr, flush=True)
    try:
        info = generate(tmp, files, seed, progress=True)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    info.root = final
    tmp_marker = marker.with_name(marker.name + ".tmp")
    tmp_marker.write_text(info.to_json() + "\n")
    os.replace(tmp_marker, marker)
    return info


def ensure_tree(cache_dir: Path, files: int, seed: int = 1) -> Path:
    """Return ``cache_dir/tree-{files}-s{seed}``, building it only if not complete yet."""
    return ensure_tree_info(cache_dir, files, seed).root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.treegen", description=__doc__)
    parser.add_argument("dir", type=Path, help="directory to create (must be empty or absent)")
    parser.add_argument("--files", type=int, required=True, help="approximate number of files")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    info = generate(args.dir, args.files, args.seed, progress=True)
    print(info.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
