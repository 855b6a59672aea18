"""Repository size metrics the way git-sizer (github/git-sizer) reports them.

``measure_repository`` runs a handful of streaming git commands (concurrently) on a finished
clone and returns a ``SizerReport``; ``table`` renders it like git-sizer's table.

What each metric is computed from:

* object counts and sizes, max commit size, max parents, tree entries, max blob size, tag
  depth: one ``git cat-file --batch-all-objects --unordered --batch=...`` pass. Commit, tree and
  tag contents are parsed one object at a time; blob contents are skipped in 64 KiB chunks.
  (Without a stdin to git, this is the only single-process way to see tree entries; its cost is
  that git inflates every blob once. Memory: the largest single commit/tree/tag object, plus
  one small entry per annotated tag for tag depth.) ``--batch-all-objects`` also counts
  unreachable objects, which git-sizer (walking from references) does not; a fresh clone has
  none.
* max blob path: ``git rev-list --objects --all``, streamed and stopped at the first line for
  that blob.
* references: ``git for-each-ref``, streamed, classified by prefix.
* max history depth: ``git rev-list --topo-order --parents --all`` (children before parents).
  The depth of each commit counted from the tips is carried to its parents; an entry lives
  only between the first child seen and the commit itself, so memory is the width of history
  (commits with a seen child but not yet emitted), not the number of commits. The longest
  tip-to-root chain equals git-sizer's maximum ancestor depth (a root commit has depth 1).
* biggest checkout: ``git ls-tree -r -t -l -z --full-tree HEAD``, streamed. Unlike git-sizer,
  which takes the maximum over every tree in history, this is the checkout of HEAD only.
  Conventions follow git-sizer: the root tree counts as a directory and as one level of path
  depth (``a/b/c`` has depth 4); path length is in bytes; symlinks and submodules are counted
  apart from files, and their sizes are not in the total size of files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import anyio
import anyio.lowlevel
from anyio.streams.buffered import BufferedByteReceiveStream

from diskaudit.audit.gitproc import GitError, open_git, run_git

__all__ = [
    "SCALES",
    "Metric",
    "SizerError",
    "SizerReport",
    "measure_repository",
    "table",
]

# git-sizer's published defaults for the "level of concern": the value of each metric that
# earns one star (sizes/output.go in github/git-sizer; tree entries lowered to 1000 in #30, tag
# depth 1.001 so that the depth 1 every annotated tag has is no concern, #39). The checkout
# scales are git-sizer's "Biggest checkouts" scales, applied here to HEAD's checkout.
SCALES: dict[str, float] = {
    "commit_count": 500e3,
    "commit_size": 250e6,
    "tree_count": 1.5e6,
    "tree_size": 2e9,
    "tree_entries": 50e6,
    "blob_count": 1.5e6,
    "blob_size": 10e9,
    "tag_count": 25e3,
    "reference_count": 25e3,
    "max_commit_size": 50e3,
    "max_parent_count": 10,
    "max_tree_entries": 1000,
    "max_blob_size": 10e6,
    "max_history_depth": 500e3,
    "max_tag_depth": 1.001,
    "checkout_directories": 2000,
    "checkout_path_depth": 10,
    "checkout_path_length": 100,
    "checkout_files": 50e3,
    "checkout_size": 1e9,
    "checkout_symlinks": 25e3,
    "checkout_submodules": 100,
}

MAX_STARS = 30  # git-sizer prints one '*' per whole level up to 30, and 30 '!' beyond
SKIP_CHUNK = 1 << 16  # blob contents are discarded in chunks of this size
HEADER_MAX = 4096  # a cat-file header line: type, two sizes, object name
RECORD_MAX = 1 << 20  # a ref name, an ls-tree record, a rev-list line
YIELD_EVERY = 512  # records between explicit checkpoints (see _Ticker)

_MODE_SYMLINK = b"120000"


class SizerError(Exception):
    """git's output could not be understood (truncated or malformed)."""


@dataclass(frozen=True, slots=True)
class Metric:
    """One row: ``level`` is value / scale; ``stars`` as git-sizer prints it."""

    name: str
    value: int
    scale: float | None  # None: reported for information, no level of concern
    object: str | None = None
    path: str | None = None

    @property
    def level(self) -> float | None:
        return None if self.scale is None else self.value / self.scale

    @property
    def stars(self) -> str:
        level = self.level
        if level is None:
            return ""
        if level > MAX_STARS:
            return "!" * MAX_STARS
        return "*" * int(level)

    def to_json(self) -> dict[str, int | float | str | None]:
        out: dict[str, int | float | str | None] = {
            "value": self.value,
            "scale": self.scale,
            "level": self.level,
            "stars": self.stars,
        }
        if self.object is not None:
            out["object"] = self.object
        if self.path is not None:
            out["path"] = self.path
        return out


@dataclass(frozen=True, slots=True)
class SizerReport:
    """Raw values; ``metrics`` and ``to_json`` add scales, levels and stars."""

    # Overall repository size (every object in the object database).
    commit_count: int = 0
    commit_size: int = 0
    tree_count: int = 0
    tree_size: int = 0
    tree_entries: int = 0
    blob_count: int = 0
    blob_size: int = 0
    tag_count: int = 0
    disk_size: int = 0  # sum of objectsize:disk over all objects (not a git-sizer metric)
    # References.
    reference_count: int = 0
    branch_count: int = 0
    tag_ref_count: int = 0
    remote_ref_count: int = 0
    other_ref_count: int = 0
    # Biggest objects.
    max_commit_size: int = 0
    max_commit_size_commit: str | None = None
    max_parent_count: int = 0
    max_parent_count_commit: str | None = None
    max_tree_entries: int = 0
    max_tree_entries_tree: str | None = None
    max_blob_size: int = 0
    max_blob_size_blob: str | None = None
    max_blob_size_path: str | None = None  # one path where that blob appears, if reachable
    # History structure.
    max_history_depth: int = 0
    max_tag_depth: int = 0
    max_tag_depth_tag: str | None = None
    # Checkout of HEAD (zeros if HEAD is unborn).
    checkout_tree: str | None = None
    checkout_directories: int = 0
    checkout_path_depth: int = 0
    checkout_path_length: int = 0
    checkout_files: int = 0
    checkout_size: int = 0
    checkout_symlinks: int = 0
    checkout_submodules: int = 0

    def metric(self, name: str) -> Metric:
        obj: str | None = None
        path: str | None = None
        if name == "max_commit_size":
            obj = self.max_commit_size_commit
        elif name == "max_parent_count":
            obj = self.max_parent_count_commit
        elif name == "max_tree_entries":
            obj = self.max_tree_entries_tree
        elif name == "max_blob_size":
            obj, path = self.max_blob_size_blob, self.max_blob_size_path
        elif name == "max_tag_depth":
            obj = self.max_tag_depth_tag
        elif name.startswith("checkout_") and self.checkout_tree is not None:
            obj, path = self.checkout_tree, "HEAD^{tree}"
        if name not in _ROWS:
            raise KeyError(name)
        value: int = getattr(self, name)
        return Metric(name, value, SCALES.get(name), obj, path)

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """Every metric, in the table's order."""
        return tuple(self.metric(name) for name in _ROWS)

    def to_json(self) -> dict[str, dict[str, int | float | str | None]]:
        """metric name → {value, scale, level, stars[, object][, path]}."""
        return {m.name: m.to_json() for m in self.metrics}


# --- measuring -------------------------------------------------------------------------------


class _Ticker:
    """Explicit checkpoints while streaming: reading a pipe that git keeps full never suspends,
    so without these a long stream would starve other tasks and never see its deadline."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    async def tick(self) -> None:
        self.n += 1
        if self.n % YIELD_EVERY == 0:
            await anyio.lowlevel.checkpoint()


async def _record(stream: BufferedByteReceiveStream, delim: bytes, limit: int) -> bytes | None:
    """The next ``delim``-terminated record, or None at the end of the stream."""
    try:
        return await stream.receive_until(delim, limit)
    except anyio.IncompleteRead:
        if stream.buffer:
            raise SizerError("git's output ends in the middle of a record") from None
        return None


async def _skip(stream: BufferedByteReceiveStream, nbytes: int) -> None:
    while nbytes > 0:
        try:
            chunk = await stream.receive(min(nbytes, SKIP_CHUNK))
        except anyio.EndOfStream:
            raise SizerError("git's output ends in the middle of an object") from None
        nbytes -= len(chunk)
        if nbytes > 0:
            await anyio.lowlevel.checkpoint()


def _count_tree_entries(data: bytes, hash_len: int) -> int:
    """Entries of a tree object: ``mode SP name NUL <hash_len raw bytes>`` repeated. The hash
    may contain NUL bytes, so walk entry by entry rather than counting NULs."""
    count = 0
    pos = 0
    end = len(data)
    while pos < end:
        nul = data.find(b"\0", pos)
        if nul < 0:
            raise SizerError("malformed tree object")
        pos = nul + 1 + hash_len
        count += 1
    if pos != end:
        raise SizerError("malformed tree object")
    return count


def _commit_parents(data: bytes) -> int:
    header = data.split(b"\n\n", 1)[0]
    return sum(1 for line in header.split(b"\n") if line.startswith(b"parent "))


def _tag_target(data: bytes) -> tuple[bytes, bytes]:
    """(object, type) from a tag object's header."""
    obj = kind = b""
    for line in data.split(b"\n\n", 1)[0].split(b"\n"):
        if line.startswith(b"object "):
            obj = line[7:]
        elif line.startswith(b"type "):
            kind = line[5:]
    if not obj or not kind:
        raise SizerError("malformed tag object")
    return obj, kind


def _tag_depths(tags: dict[bytes, bytes | None]) -> tuple[int, bytes | None]:
    """Max tag depth (a tag of a non-tag has depth 1) and the tag that has it."""
    depth: dict[bytes, int] = {}
    best, best_tag = 0, None
    for start in tags:
        chain: list[bytes] = []
        oid: bytes | None = start
        while oid is not None and oid not in depth and oid in tags:
            chain.append(oid)
            oid = tags[oid]
            if len(chain) > len(tags):  # a cycle cannot exist in git; do not loop on garbage
                raise SizerError("tag chain does not end")
        below = depth.get(oid, 0) if oid is not None else 0
        for tag in reversed(chain):
            below += 1
            depth[tag] = below
        if depth[start] > best:
            best, best_tag = depth[start], start
    return best, best_tag


@dataclass
class _Objects:
    commit_count: int = 0
    commit_size: int = 0
    tree_count: int = 0
    tree_size: int = 0
    tree_entries: int = 0
    blob_count: int = 0
    blob_size: int = 0
    tag_count: int = 0
    disk_size: int = 0
    max_commit_size: int = 0
    max_commit_size_commit: bytes | None = None
    max_parent_count: int = 0
    max_parent_count_commit: bytes | None = None
    max_tree_entries: int = 0
    max_tree_entries_tree: bytes | None = None
    max_blob_size: int = 0
    max_blob_size_blob: bytes | None = None
    max_tag_depth: int = 0
    max_tag_depth_tag: bytes | None = None


async def _scan_objects(repo: str, env: Mapping[str, str]) -> _Objects:
    o = _Objects()
    # Only annotated tags are kept: tag → the tag it points to (None if it points elsewhere).
    tags: dict[bytes, bytes | None] = {}
    ticker = _Ticker()
    fmt = "%(objecttype) %(objectsize) %(objectsize:disk) %(objectname)"
    args = ["cat-file", "--batch-all-objects", "--unordered", f"--batch={fmt}"]
    async with open_git(args, env=env, cwd=repo) as git:
        out = git.stdout
        while (header := await _record(out, b"\n", HEADER_MAX)) is not None:
            try:
                kind, size_s, disk_s, oid = header.split(b" ")
                size, disk = int(size_s), int(disk_s)
            except ValueError:
                raise SizerError(f"unexpected cat-file header {header[:200]!r}") from None
            o.disk_size += disk
            if kind == b"blob":
                o.blob_count += 1
                o.blob_size += size
                if size > o.max_blob_size:
                    o.max_blob_size, o.max_blob_size_blob = size, oid
                await _skip(out, size + 1)  # contents and the LF after them
                await ticker.tick()
                continue
            try:
                data = await out.receive_exactly(size + 1)
            except anyio.IncompleteRead:
                raise SizerError("git's output ends in the middle of an object") from None
            data = data[:-1]
            if kind == b"commit":
                o.commit_count += 1
                o.commit_size += size
                if size > o.max_commit_size:
                    o.max_commit_size, o.max_commit_size_commit = size, oid
                parents = _commit_parents(data)
                if parents > o.max_parent_count:
                    o.max_parent_count, o.max_parent_count_commit = parents, oid
            elif kind == b"tree":
                entries = _count_tree_entries(data, len(oid) // 2)
                o.tree_count += 1
                o.tree_size += size
                o.tree_entries += entries
                if entries > o.max_tree_entries:
                    o.max_tree_entries, o.max_tree_entries_tree = entries, oid
            elif kind == b"tag":
                o.tag_count += 1
                target, target_kind = _tag_target(data)
                tags[oid] = target if target_kind == b"tag" else None
            else:
                raise SizerError(f"unexpected object type {kind!r}")
            del data
            await ticker.tick()
    o.max_tag_depth, o.max_tag_depth_tag = _tag_depths(tags)
    return o


@dataclass
class _Refs:
    total: int = 0
    branches: int = 0
    tags: int = 0
    remotes: int = 0
    other: int = 0


async def _scan_refs(repo: str, env: Mapping[str, str]) -> _Refs:
    r = _Refs()
    ticker = _Ticker()
    async with open_git(["for-each-ref", "--format=%(refname)"], env=env, cwd=repo) as git:
        while (ref := await _record(git.stdout, b"\n", RECORD_MAX)) is not None:
            r.total += 1
            if ref.startswith(b"refs/heads/"):
                r.branches += 1
            elif ref.startswith(b"refs/tags/"):
                r.tags += 1
            elif ref.startswith(b"refs/remotes/"):
                r.remotes += 1
            else:
                r.other += 1
            await ticker.tick()
    return r


async def _history_depth(repo: str, env: Mapping[str, str]) -> int:
    """Longest chain of commits (in commits). rev-list --topo-order shows every commit after
    all of its children; ``pending`` holds, for commits with a child seen but not yet shown
    themselves, the longest chain from a tip down to that child."""
    pending: dict[bytes, int] = {}
    best = 0
    ticker = _Ticker()
    args = ["rev-list", "--topo-order", "--parents", "--all"]
    async with open_git(args, env=env, cwd=repo) as git:
        while (line := await _record(git.stdout, b"\n", RECORD_MAX)) is not None:
            commit, *parents = line.split(b" ")
            depth = pending.pop(commit, 0) + 1
            best = max(best, depth)
            for parent in parents:
                if pending.get(parent, 0) < depth:
                    pending[parent] = depth
            await ticker.tick()
    return best


@dataclass
class _Checkout:
    tree: str | None = None
    directories: int = 0
    path_depth: int = 0
    path_length: int = 0
    files: int = 0
    size: int = 0
    symlinks: int = 0
    submodules: int = 0


async def _scan_checkout(repo: str, env: Mapping[str, str]) -> _Checkout:
    c = _Checkout()
    try:
        tree = await run_git(["rev-parse", "--verify", "--quiet", "HEAD^{tree}"], env=env, cwd=repo)
    except GitError:
        return c  # unborn HEAD: an empty checkout
    c.tree = tree.decode("ascii").strip()
    c.directories = 1  # the root tree, as git-sizer counts it
    ticker = _Ticker()
    args = ["ls-tree", "-r", "-t", "-l", "-z", "--full-tree", c.tree]
    async with open_git(args, env=env, cwd=repo) as git:
        while (rec := await _record(git.stdout, b"\0", RECORD_MAX)) is not None:
            meta, sep, path = rec.partition(b"\t")
            parts = meta.split()
            if not sep or len(parts) != 4:
                raise SizerError(f"unexpected ls-tree record {rec[:200]!r}")
            mode, kind, _oid, size = parts
            # Depth counts the root tree too (git-sizer): "a/b" is 3 deep.
            c.path_depth = max(c.path_depth, path.count(b"/") + 2)
            c.path_length = max(c.path_length, len(path))
            if kind == b"tree":
                c.directories += 1
            elif kind == b"commit":
                c.submodules += 1
            elif mode == _MODE_SYMLINK:
                c.symlinks += 1
            else:
                c.files += 1
                c.size += int(size)
            await ticker.tick()
    return c


async def _blob_path(repo: str, env: Mapping[str, str], blob: bytes) -> str | None:
    """One path where ``blob`` appears in history, or None if no reference reaches it."""
    prefix = blob + b" "
    found: bytes | None = None
    ticker = _Ticker()
    with anyio.CancelScope() as stop:
        async with open_git(["rev-list", "--objects", "--all"], env=env, cwd=repo) as git:
            while (line := await _record(git.stdout, b"\n", RECORD_MAX)) is not None:
                if line.startswith(prefix):
                    found = line[len(prefix) :]
                    # Stop here: open_git kills rev-list rather than reading the rest.
                    stop.cancel()
                    break
                await ticker.tick()
    return None if found is None else _decode(found)


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _hex(oid: bytes | None) -> str | None:
    return None if oid is None else oid.decode("ascii")


def _leaf_exceptions(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            leaves.extend(_leaf_exceptions(exc))
        else:
            leaves.append(exc)
    return leaves


async def measure_repository(repo: str, *, env: Mapping[str, str]) -> SizerReport:
    """git-sizer's metrics for the (non-bare) clone at ``repo``; see the module docstring.

    Cancellable at any point (every git is killed with its process group). Raises
    ``GitError`` if a git command fails and ``SizerError`` on output it cannot parse.
    """
    objects = _Objects()
    refs = _Refs()
    checkout = _Checkout()
    depth = 0

    async def scan_objects() -> None:
        nonlocal objects
        objects = await _scan_objects(repo, env)

    async def scan_refs() -> None:
        nonlocal refs
        refs = await _scan_refs(repo, env)

    async def history_depth() -> None:
        nonlocal depth
        depth = await _history_depth(repo, env)

    async def scan_checkout() -> None:
        nonlocal checkout
        checkout = await _scan_checkout(repo, env)

    try:
        async with anyio.create_task_group() as tg:  # four gits at once
            for task in (scan_objects, scan_refs, history_depth, scan_checkout):
                tg.start_soon(task)
    except ExceptionGroup as group:
        # Give callers the GitError / SizerError itself rather than a group of one.
        leaves = _leaf_exceptions(group)
        raise leaves[0] from (group if len(leaves) > 1 else None)

    blob_path = None
    if objects.max_blob_size_blob is not None:
        blob_path = await _blob_path(repo, env, objects.max_blob_size_blob)

    return SizerReport(
        commit_count=objects.commit_count,
        commit_size=objects.commit_size,
        tree_count=objects.tree_count,
        tree_size=objects.tree_size,
        tree_entries=objects.tree_entries,
        blob_count=objects.blob_count,
        blob_size=objects.blob_size,
        tag_count=objects.tag_count,
        disk_size=objects.disk_size,
        reference_count=refs.total,
        branch_count=refs.branches,
        tag_ref_count=refs.tags,
        remote_ref_count=refs.remotes,
        other_ref_count=refs.other,
        max_commit_size=objects.max_commit_size,
        max_commit_size_commit=_hex(objects.max_commit_size_commit),
        max_parent_count=objects.max_parent_count,
        max_parent_count_commit=_hex(objects.max_parent_count_commit),
        max_tree_entries=objects.max_tree_entries,
        max_tree_entries_tree=_hex(objects.max_tree_entries_tree),
        max_blob_size=objects.max_blob_size,
        max_blob_size_blob=_hex(objects.max_blob_size_blob),
        max_blob_size_path=blob_path,
        max_history_depth=depth,
        max_tag_depth=objects.max_tag_depth,
        max_tag_depth_tag=_hex(objects.max_tag_depth_tag),
        checkout_tree=checkout.tree,
        checkout_directories=checkout.directories,
        checkout_path_depth=checkout.path_depth,
        checkout_path_length=checkout.path_length,
        checkout_files=checkout.files,
        checkout_size=checkout.size,
        checkout_symlinks=checkout.symlinks,
        checkout_submodules=checkout.submodules,
    )


# --- rendering -------------------------------------------------------------------------------

_COUNT, _BYTES = " ", "B"

# name → (label, unit, extra indent) in git-sizer's wording.
_ROWS: dict[str, tuple[str, str, int]] = {
    "commit_count": ("Count", _COUNT, 0),
    "commit_size": ("Total size", _BYTES, 0),
    "tree_count": ("Count", _COUNT, 0),
    "tree_size": ("Total size", _BYTES, 0),
    "tree_entries": ("Total tree entries", _COUNT, 0),
    "blob_count": ("Count", _COUNT, 0),
    "blob_size": ("Total size", _BYTES, 0),
    "tag_count": ("Count", _COUNT, 0),
    "reference_count": ("Count", _COUNT, 0),
    "branch_count": ("Branches", _COUNT, 1),
    "tag_ref_count": ("Tags", _COUNT, 1),
    "remote_ref_count": ("Remote-tracking refs", _COUNT, 1),
    "other_ref_count": ("Other", _COUNT, 1),
    "disk_size": ("Size on disk", _BYTES, 0),
    "max_commit_size": ("Maximum size", _BYTES, 0),
    "max_parent_count": ("Maximum parents", _COUNT, 0),
    "max_tree_entries": ("Maximum entries", _COUNT, 0),
    "max_blob_size": ("Maximum size", _BYTES, 0),
    "max_history_depth": ("Maximum history depth", _COUNT, 0),
    "max_tag_depth": ("Maximum tag depth", _COUNT, 0),
    "checkout_directories": ("Number of directories", _COUNT, 0),
    "checkout_path_depth": ("Maximum path depth", _COUNT, 0),
    "checkout_path_length": ("Maximum path length", _BYTES, 0),
    "checkout_files": ("Number of files", _COUNT, 0),
    "checkout_size": ("Total size of files", _BYTES, 0),
    "checkout_symlinks": ("Number of symlinks", _COUNT, 0),
    "checkout_submodules": ("Number of submodules", _COUNT, 0),
}

# Sections → subsections (None: rows directly under the section) → rows.
_LAYOUT: tuple[tuple[str, tuple[tuple[str | None, tuple[str, ...]], ...]], ...] = (
    (
        "Overall repository size",
        (
            ("Commits", ("commit_count", "commit_size")),
            ("Trees", ("tree_count", "tree_size", "tree_entries")),
            ("Blobs", ("blob_count", "blob_size")),
            ("Annotated tags", ("tag_count",)),
            (
                "References",
                (
                    "reference_count",
                    "branch_count",
                    "tag_ref_count",
                    "remote_ref_count",
                    "other_ref_count",
                ),
            ),
            ("Objects", ("disk_size",)),
        ),
    ),
    (
        "Biggest objects",
        (
            ("Commits", ("max_commit_size", "max_parent_count")),
            ("Trees", ("max_tree_entries",)),
            ("Blobs", ("max_blob_size",)),
        ),
    ),
    ("History structure", ((None, ("max_history_depth", "max_tag_depth")),)),
    (
        "Biggest checkout (HEAD)",
        (
            (
                None,
                (
                    "checkout_directories",
                    "checkout_path_depth",
                    "checkout_path_length",
                    "checkout_files",
                    "checkout_size",
                    "checkout_symlinks",
                    "checkout_submodules",
                ),
            ),
        ),
    ),
)

_METRIC_PREFIXES = (("", 1), ("k", 10**3), ("M", 10**6), ("G", 10**9), ("T", 10**12))
_BINARY_PREFIXES = (("", 1), ("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("Ti", 1 << 40))


def human(value: int, unit: str) -> tuple[str, str]:
    """(number, unit) with three significant digits, as git-sizer prints them: metric
    prefixes for counts (unit " "), binary prefixes for bytes (unit "B")."""
    prefixes = _BINARY_PREFIXES if unit == _BYTES else _METRIC_PREFIXES
    name, mult = prefixes[0]
    for p_name, p_mult in prefixes:
        if value >= p_mult:
            name, mult = p_name, p_mult
    if mult == 1:
        return str(value), unit
    whole = value // mult
    digits = 0 if whole >= 100 else 1 if whole >= 10 else 2
    return f"{value / mult:.{digits}f}", name + unit


def _row(name: str, indent: int, citation: str, value: str, unit: str, concern: str) -> str:
    prefix = "" if indent == 0 else "  " * (indent - 1) + "* "
    left = prefix + name
    spacer = " " * max(0, 28 - len(left) - len(citation))
    return f"| {left}{spacer}{citation} | {value:>5} {unit:<3} | {concern:<30} |"


def table(report: SizerReport, *, threshold: float = 0.0) -> str:
    """git-sizer's table (Name | Value | Level of concern) with footnotes naming objects.

    Rows below ``threshold`` levels are left out, as with git-sizer's ``--threshold``; the
    default 0 shows every row (git-sizer's ``--verbose``). Rows without a scale are shown
    only at threshold 0."""
    footnotes: list[str] = []
    cited: dict[str, int] = {}
    blocks: list[list[str]] = []
    for section, subsections in _LAYOUT:
        block: list[str] = []
        for subsection, names in subsections:
            rows: list[str] = []
            base = 1 if subsection is None else 2
            for name in names:
                m = report.metric(name)
                level = m.level
                if (level is None and threshold > 0) or (level is not None and level < threshold):
                    continue
                label, unit, extra = _ROWS[name]
                citation = ""
                if m.object is not None:
                    note = m.object if m.path is None else f"{m.object} ({m.path})"
                    if note not in cited:
                        footnotes.append(note)
                        cited[note] = len(footnotes)
                    citation = f"[{cited[note]}]"
                value, unit_s = human(m.value, unit)
                rows.append(_row(label, base + extra, citation, value, unit_s, m.stars))
            if rows and subsection is not None:
                rows.insert(0, _row(subsection, 1, "", "", "", ""))
            block.extend(rows)
        if block:
            blocks.append([_row(section, 0, "", "", "", ""), *block])
    if not blocks:
        return "No problems above the current threshold were found\n"
    lines = [
        "| Name                         | Value     | Level of concern               |",
        "| ---------------------------- | --------- | ------------------------------ |",
    ]
    for i, block in enumerate(blocks):
        if i:
            lines.append(_row("", 0, "", "", "", ""))
        lines.extend(block)
    if footnotes:
        lines.append("")
        lines.extend(f"{f'[{i}]':<4} {note}" for i, note in enumerate(footnotes, 1))
    return "\n".join(lines) + "\n"


def _check_tables() -> None:
    laid_out = [n for _, subs in _LAYOUT for _, names in subs for n in names]
    if laid_out != list(_ROWS) or not set(SCALES) <= set(_ROWS):
        raise AssertionError("sizer tables disagree: _LAYOUT, _ROWS and SCALES")
    if any(not math.isfinite(s) or s <= 0 for s in SCALES.values()):
        raise AssertionError("sizer scales must be positive")


_check_tables()
