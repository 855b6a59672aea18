"""The directory walk. Runs inside a scan worker process; stdlib only.

A walker is handed a few directories of one root (a *unit*) and walks everything beneath them
depth first, keeping a stack of open directory file descriptors so that every ``stat`` is an
``fstatat(dirfd, name)`` and no path is resolved twice. Every ``chunk_size`` entries it reaches a
*chunk boundary*: it hands its partial totals to its sink, checks the deadline, and, when the pool
asks for it, gives away directories it has not entered yet so that idle workers get a share.

Nothing here grows with the size of the tree: per-directory totals exist only for directories at
levels ``0..dir_level`` (everything deeper is added to its nearest such ancestor), hard-linked
inodes are reported upward instead of remembered (the pool deduplicates them), and the stack is
bounded by the depth of the tree up to ``MAX_OPEN_DIRS``, after which directories are queued
by path.
"""

from __future__ import annotations

import os
import time
from stat import S_ISDIR, S_ISLNK

# Not ``from typing import TYPE_CHECKING``: importing typing (and the re, collections,
# functools it pulls in) costs each worker ~3 MiB. Type checkers treat this name as True.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Iterator
    from typing import Protocol

    class Sink(Protocol):
        """Where a walker sends chunks and learns whether to give work away."""

        def chunk(self, chunk: Chunk) -> None: ...

        def split_requested(self) -> int:
            """How many units idle workers would take now (0: none). Must not block."""
            ...


#: ``time.monotonic()`` has no end; a deadline of "never".
NO_DEADLINE = float("inf")

#: Flags to open a directory we list. O_NOFOLLOW: a directory swapped for a symlink between
#: listing and opening must not lead the walk elsewhere.
O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
O_DIR_NOFOLLOW = O_DIR | os.O_NOFOLLOW

#: Open directory descriptors per walker (each costs two fds: ours and scandir's duplicate).
#: Deeper directories are queued by path and walked after the current subtree.
MAX_OPEN_DIRS = 64

#: Errors kept with their paths per chunk; the rest are only counted.
MAX_ERROR_SAMPLES = 5

#: How many entries a split may read ahead looking for directories to give away.
SPLIT_READ_AHEAD = 1000

#: A directory to walk: (path, level, key, follow). ``key`` is the reported directory its
#: contents count towards (itself when ``level <= dir_level``); ``follow`` opens it even if
#: ``path`` is a symlink (roots and followed links).
DirItem = tuple[str, int, str, bool]

#: A non-directory inode with st_nlink > 1 (or reached through a followed link), reported to the
#: pool for deduplication: (st_dev, st_ino, st_blocks, st_size, key).
LinkedInode = tuple[int, int, int, int, str]

#: A directory reached through a followed symlink: the pool decides whether it was seen before.
#: (item, st_dev, st_ino, st_blocks, st_size, parent_key)
LinkedDir = tuple[DirItem, int, int, int, int, str]

#: Per reported directory: [st_blocks, apparent bytes, files, dirs] contributed directly.
Totals = list[int]


class WalkOptions:
    """What a worker needs to know to walk part of one root. Sent with every unit, as a tuple
    (``wire()``): the worker protocol is ``marshal``, which carries only plain data."""

    __slots__ = (
        "chunk_size",
        "deadline",
        "dir_level",
        "follow_symlinks",
        "ignore_globs",
        "ignore_paths",
        "one_file_system",
        "root",
        "root_dev",
    )

    def __init__(
        self,
        root: str,
        dir_level: int,
        chunk_size: int,
        follow_symlinks: bool = False,
        one_file_system: bool = False,
        root_dev: int = 0,
        ignore_paths: frozenset[str] = frozenset(),
        ignore_globs: tuple[str, ...] = (),
        deadline: float = NO_DEADLINE,
    ) -> None:
        self.root = root
        self.dir_level = dir_level
        self.chunk_size = chunk_size
        self.follow_symlinks = follow_symlinks
        self.one_file_system = one_file_system
        #: st_dev of the root, for ``one_file_system``.
        self.root_dev = root_dev
        #: Absolute paths never entered (exact match).
        self.ignore_paths = ignore_paths
        #: Glob patterns (fnmatch syntax) matched against a directory's absolute path.
        self.ignore_globs = ignore_globs
        #: ``time.monotonic()`` value after which the walk must stop.
        self.deadline = deadline

    def wire(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    @classmethod
    def from_wire(cls, fields: tuple[object, ...]) -> WalkOptions:
        return cls(**dict(zip(cls._FIELDS, fields, strict=True)))  # type: ignore[arg-type]

    _FIELDS = (
        "root",
        "dir_level",
        "chunk_size",
        "follow_symlinks",
        "one_file_system",
        "root_dev",
        "ignore_paths",
        "ignore_globs",
        "deadline",
    )


class DeadlineExceeded(Exception):
    """The unit's deadline passed; raised at a chunk boundary."""


class Chunk:
    """What a walker hands back at each chunk boundary. Plain attributes, cheap to pickle."""

    __slots__ = (
        "entries",
        "errors",
        "linked_dirs",
        "linked_inodes",
        "samples",
        "spilled",
        "totals",
    )

    def __init__(self) -> None:
        self.totals: dict[str, Totals] = {}
        self.linked_inodes: list[LinkedInode] = []
        self.linked_dirs: list[LinkedDir] = []
        self.spilled: list[list[DirItem]] = []
        self.entries = 0
        self.errors = 0
        self.samples: list[str] = []

    def as_message(self) -> tuple[object, ...]:
        return (
            self.totals,
            self.linked_inodes,
            self.linked_dirs,
            self.spilled,
            self.entries,
            self.errors,
            self.samples,
        )


class _Frame:
    __slots__ = ("fd", "it", "key", "level", "prefix", "totals")

    def __init__(
        self, fd: int, it: Iterator[os.DirEntry[str]], path: str, level: int, key: str
    ) -> None:
        self.fd = fd
        self.it = it
        self.prefix = path if path.endswith("/") else path + "/"
        self.level = level
        self.key = key
        self.totals: Totals = []

    @property
    def path(self) -> str:
        return self.prefix[:-1] if len(self.prefix) > 1 else self.prefix


def _compile_globs(globs: tuple[str, ...]) -> re.Pattern[str] | None:
    if not globs:
        return None
    # Imported here, only when there are globs: see the TYPE_CHECKING note above.
    import fnmatch
    import re

    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))


class Walker:
    """Walks the directories of units of one root. Not thread-safe; one per worker and root."""

    def __init__(self, opts: WalkOptions, sink: Sink) -> None:
        self._opts = opts
        self._sink = sink
        self._ignore_re = _compile_globs(opts.ignore_globs)
        self._chunk = Chunk()
        self._frames: list[_Frame] = []
        self._todo: list[DirItem] = []
        self._entries = 0  # entries examined since the last boundary

    # -- public ------------------------------------------------------------------------------

    def run(self, items: list[DirItem]) -> None:
        """Walk ``items`` and everything below them; the last chunk is flushed before returning.

        Raises ``DeadlineExceeded`` at the first chunk boundary past ``opts.deadline``.
        """
        self._todo = list(reversed(items))
        frames = self._frames
        try:
            while True:
                if not frames and not self._open_next():
                    break
                if self._scan(frames[-1]):
                    self._close(frames.pop())
                if self._entries >= self._opts.chunk_size:
                    self._boundary()
        finally:
            while frames:
                self._close(frames.pop())
        self._flush()

    # -- the hot loop ------------------------------------------------------------------------

    def _scan(self, frame: _Frame) -> bool:
        """Examine entries of the top frame until it is exhausted (True), a subdirectory was
        entered, or a chunk is full (False)."""
        blocks = size = files = dirs = 0
        n = self._entries
        limit = self._opts.chunk_size
        linked = self._chunk.linked_inodes
        follow = self._opts.follow_symlinks
        key = frame.key
        exhausted = True
        for entry in frame.it:
            n += 1
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                self._error(frame.prefix + entry.name, exc)
            else:
                mode = st.st_mode
                if S_ISDIR(mode):
                    item = self._dir_entry(frame, entry.name, st)
                    if item is not None:
                        dirs += 1
                        if self._descend(frame, item):
                            exhausted = False
                            break
                elif follow and S_ISLNK(mode):
                    dirs += self._follow_link(frame, entry.name, st)
                else:
                    files += 1
                    if st.st_nlink > 1:
                        linked.append((st.st_dev, st.st_ino, st.st_blocks, st.st_size, key))
                    else:
                        blocks += st.st_blocks
                        size += st.st_size
            if n >= limit:
                exhausted = False
                break
        self._entries = n
        t = frame.totals
        t[0] += blocks
        t[1] += size
        t[2] += files
        t[3] += dirs
        return exhausted

    # -- directories -------------------------------------------------------------------------

    def _skip_dir(self, path: str, st: os.stat_result) -> bool:
        opts = self._opts
        if path in opts.ignore_paths:
            return True
        if self._ignore_re is not None and self._ignore_re.match(path):
            return True
        return opts.one_file_system and st.st_dev != opts.root_dev

    def _dir_entry(self, frame: _Frame, name: str, st: os.stat_result) -> DirItem | None:
        """Account a subdirectory's own inode; return it as a walkable item, or None if it is
        ignored (then it does not count at all, like an excluded directory in du)."""
        path = frame.prefix + name
        if self._skip_dir(path, st):
            return None
        level = frame.level + 1
        key = path if level <= self._opts.dir_level else frame.key
        totals = frame.totals if key is frame.key else self._totals(key)
        totals[0] += st.st_blocks
        totals[1] += st.st_size
        return (path, level, key, False)

    def _descend(self, parent: _Frame, item: DirItem) -> bool:
        """Enter ``item`` (a child of ``parent``) now if the stack allows; else queue it."""
        if len(self._frames) >= MAX_OPEN_DIRS:
            self._todo.append(item)
            return False
        path, level, key, _ = item
        try:
            fd = os.open(path[len(parent.prefix) :], O_DIR_NOFOLLOW, dir_fd=parent.fd)
        except OSError as exc:
            self._error(path, exc)
            return False
        return self._push(fd, path, level, key)

    def _open_next(self) -> bool:
        """Open the next queued directory by path. False when nothing is left."""
        while self._todo:
            path, level, key, follow = self._todo.pop()
            try:
                fd = os.open(path, O_DIR if follow else O_DIR_NOFOLLOW)
            except OSError as exc:
                self._error(path, exc)
                continue
            if self._push(fd, path, level, key):
                return True
        return False

    def _push(self, fd: int, path: str, level: int, key: str) -> bool:
        try:
            it = os.scandir(fd)
        except OSError as exc:
            os.close(fd)
            self._error(path, exc)
            return False
        frame = _Frame(fd, it, path, level, key)
        frame.totals = self._totals(key)
        self._frames.append(frame)
        return True

    @staticmethod
    def _close(frame: _Frame) -> None:
        close = getattr(frame.it, "close", None)
        if close is not None:
            close()
        os.close(frame.fd)

    # -- symlinks (follow-symlinks only) -----------------------------------------------------

    def _follow_link(self, frame: _Frame, name: str, lst: os.stat_result) -> int:
        """Count what a symlink points to. Directories go to the pool, which walks each target
        (st_dev, st_ino) at most once: that is what makes loops impossible. Returns 0: the
        parent's ``dirs`` count for a linked directory is added by the pool if it accepts it."""
        path = frame.prefix + name
        try:
            st = os.stat(name, dir_fd=frame.fd)
        except OSError:
            # Dangling, a loop of links, or unreadable: count the link itself, as without follow.
            frame.totals[0] += lst.st_blocks
            frame.totals[1] += lst.st_size
            frame.totals[2] += 1
            return 0
        if S_ISDIR(st.st_mode):
            if self._skip_dir(path, st):
                return 0
            level = frame.level + 1
            key = path if level <= self._opts.dir_level else frame.key
            item: DirItem = (path, level, key, True)
            self._chunk.linked_dirs.append(
                (item, st.st_dev, st.st_ino, st.st_blocks, st.st_size, frame.key)
            )
            return 0
        # A followed file may be reached under several names: always deduplicate.
        frame.totals[2] += 1
        self._chunk.linked_inodes.append(
            (st.st_dev, st.st_ino, st.st_blocks, st.st_size, frame.key)
        )
        return 0

    # -- chunk boundaries --------------------------------------------------------------------

    def _boundary(self) -> None:
        wanted = self._sink.split_requested()
        if wanted > 0:
            self._split(wanted)
        self._flush()
        if time.monotonic() >= self._opts.deadline:
            raise DeadlineExceeded

    def _flush(self) -> None:
        chunk = self._chunk
        chunk.entries = self._entries
        self._sink.chunk(chunk)
        self._chunk = Chunk()
        self._entries = 0
        # Open frames keep adding to the new chunk's totals.
        for frame in self._frames:
            frame.totals = self._totals(frame.key)

    def _split(self, wanted: int) -> None:
        """Give away about half of the directories not entered yet, as ``wanted`` units.

        Queued directories go first. Otherwise read ahead in the shallowest open directory that
        has entries left (shallow subtrees tend to be the large ones, so the receiver gets a
        share worth the round trip): half of the subdirectories found are given away, the other
        half queued here.
        """
        todo = self._todo
        if todo:
            half = (len(todo) + 1) // 2
            give, self._todo = todo[:half], todo[half:]
        else:
            found: list[DirItem] = []
            budget = SPLIT_READ_AHEAD
            for frame in self._frames:
                while budget > 0:
                    entry = next(frame.it, None)
                    if entry is None:
                        break
                    budget -= 1
                    self._entries += 1
                    item = self._read_ahead(frame, entry)
                    if item is not None:
                        found.append(item)
                if found:
                    break
            half = (len(found) + 1) // 2
            give = found[:half]
            todo.extend(reversed(found[half:]))
        units = [give[i::wanted] for i in range(min(wanted, len(give)))]
        self._chunk.spilled.extend(units)

    def _read_ahead(self, frame: _Frame, entry: os.DirEntry[str]) -> DirItem | None:
        """The slow, general form of one step of ``_scan``, for entries examined by a split."""
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            self._error(frame.prefix + entry.name, exc)
            return None
        t = frame.totals
        if S_ISDIR(st.st_mode):
            item = self._dir_entry(frame, entry.name, st)
            if item is not None:
                t[3] += 1
            return item
        if self._opts.follow_symlinks and S_ISLNK(st.st_mode):
            self._follow_link(frame, entry.name, st)
            return None
        t[2] += 1
        if st.st_nlink > 1:
            self._chunk.linked_inodes.append(
                (st.st_dev, st.st_ino, st.st_blocks, st.st_size, frame.key)
            )
        else:
            t[0] += st.st_blocks
            t[1] += st.st_size
        return None

    # -- bookkeeping -------------------------------------------------------------------------

    def _totals(self, key: str) -> Totals:
        totals = self._chunk.totals.get(key)
        if totals is None:
            totals = self._chunk.totals[key] = [0, 0, 0, 0]
        return totals

    def _error(self, path: str, exc: OSError) -> None:
        chunk = self._chunk
        chunk.errors += 1
        if len(chunk.samples) < MAX_ERROR_SAMPLES:
            chunk.samples.append(f"{path}: {exc.strerror or exc}")
