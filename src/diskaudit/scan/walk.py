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

import errno
import os
import time
from stat import S_ISDIR, S_ISLNK

try:  # the C reader of directories; walk.py works without it, ~2x slower (docs/adr/0002)
    if os.environ.get("DISKAUDIT_PURE_PYTHON_WALK"):
        raise ImportError("DISKAUDIT_PURE_PYTHON_WALK is set")
    from diskaudit.scan import _fastwalk
    from diskaudit.scan._fastwalk import STOP_BIG, STOP_DIR, STOP_END, STOP_LIMIT, STOP_LINK
except ImportError:
    _fastwalk = None  # type: ignore[assignment]
    STOP_END, STOP_LIMIT, STOP_DIR, STOP_LINK, STOP_BIG = 0, 1, 2, 3, 5

#: Which implementation examines entries in this process: "c" or "python".
IMPLEMENTATION = "python" if _fastwalk is None else "c"

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
#: A longer path in an error sample keeps only its beginning and end.
MAX_SAMPLE_PATH = 512

#: Paths at least this long are opened piecewise (the kernel refuses PATH_MAX = 4096 bytes).
LONG_PATH_BYTES = 3800

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

DevIno = tuple[int, int]

#: Per reported directory: [st_blocks, apparent bytes, files, dirs, *size bucket counts]
#: contributed directly (the buckets only when size_bounds is set).
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
        "max_rate",
        "one_file_system",
        "root",
        "root_dev",
        "size_bounds",
        "top_files",
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
        max_rate: float = 0.0,
        size_bounds: tuple[int, ...] = (),
        top_files: int = 0,
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
        #: Entries per second this worker may examine for this root (0: unlimited).
        self.max_rate = max_rate
        #: Upper bounds (bytes, ascending) of the file size buckets counted per reported
        #: directory; () counts none. A file falls in the first bucket whose bound >= its size,
        #: or in the last, unbounded one.
        self.size_bounds = size_bounds
        #: How many of the largest files (by st_size) to report; 0 reports none.
        self.top_files = top_files

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
        "max_rate",
        "size_bounds",
        "top_files",
    )


def open_dir_path(path: str, *, follow: bool) -> int:
    """Open the directory ``path``, even one longer than PATH_MAX (a chain 50,000 directories
    deep): then by pieces of under ``LONG_PATH_BYTES``, each relative to the previous one.
    ``follow``: the last component may be a symlink (roots and followed links)."""
    last_flags = O_DIR if follow else O_DIR_NOFOLLOW
    raw = os.fsencode(path)
    if len(raw) < LONG_PATH_BYTES:
        return os.open(raw, last_flags)
    parts = raw.split(b"/")
    fd = os.open(b"/" if raw.startswith(b"/") else b".", O_DIR)
    piece: list[bytes] = []
    length = 0  # of b"/".join(piece)
    try:
        for part in (p for p in parts if p):
            if piece and length + 1 + len(part) >= LONG_PATH_BYTES:
                next_fd = os.open(b"/".join(piece), O_DIR_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd, piece, length = next_fd, [], 0
            length += len(part) + (1 if piece else 0)
            piece.append(part)
        result = os.open(b"/".join(piece), last_flags, dir_fd=fd)
    finally:
        os.close(fd)
    return result


class DeadlineExceeded(Exception):
    """The unit's deadline passed; raised at a chunk boundary."""


class Chunk:
    """What a walker hands back at each chunk boundary. Plain attributes, cheap to pickle."""

    __slots__ = (
        "big_files",
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
        #: Files that made this walker's top-N so far: (st_size, path). Candidates only: the
        #: pool keeps the N largest of all of them.
        self.big_files: list[tuple[int, str]] = []

    def as_message(self) -> tuple[object, ...]:
        return (
            self.totals,
            self.linked_inodes,
            self.linked_dirs,
            self.spilled,
            self.entries,
            self.errors,
            self.samples,
            self.big_files,
        )


class _Frame:
    """An open directory on the walker's stack: read by the C reader when it is available,
    else by ``os.scandir``."""

    __slots__ = ("devino", "fd", "it", "key", "level", "prefix", "reader", "totals")

    def __init__(
        self, fd: int, path: str, level: int, key: str, devino: DevIno, *, use_c: bool
    ) -> None:
        self.fd = fd
        #: (st_dev, st_ino) of this directory: a subdirectory with the same identity as an open
        #: ancestor is a cycle (a bind mount of an ancestor) and is not entered.
        self.devino = devino
        self.reader: _fastwalk.Dir | None = None
        self.it: Iterator[os.DirEntry[str]] | None = None
        if use_c:
            self.reader = _fastwalk.Dir(fd)
        else:
            self.it = os.scandir(fd)
        self.prefix = path if path.endswith("/") else path + "/"
        self.level = level
        self.key = key
        self.totals: Totals = []

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
        if self.it is not None:
            self.it.close()  # type: ignore[attr-defined]
        os.close(self.fd)


def _compile_globs(globs: tuple[str, ...]) -> re.Pattern[str] | None:
    if not globs:
        return None
    # Imported here, only when there are globs: see the TYPE_CHECKING note above.
    import fnmatch
    import re

    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))


class Walker:
    """Walks the directories of units of one root. Not thread-safe; one per worker and root."""

    def __init__(self, opts: WalkOptions, sink: Sink, *, pure_python: bool = False) -> None:
        """``pure_python`` forces ``os.scandir`` even where the C reader is built (tests)."""
        self._opts = opts
        self._sink = sink
        self._ignore_re = _compile_globs(opts.ignore_globs)
        self._chunk = Chunk()
        self._frames: list[_Frame] = []
        self._todo: list[DirItem] = []
        self._entries = 0  # entries examined since the last boundary
        #: (st_dev, st_ino) of the open frames, with counts (for cycle detection).
        self._ancestors: dict[DevIno, int] = {}
        self._use_c = _fastwalk is not None and not pure_python
        self._scan = self._scan_c if self._use_c else self._scan_py
        # Optional per-file work (size buckets, top-N files); None/-1 when off, which keeps the
        # hot loops as they are.
        self._bounds = opts.size_bounds or None
        self._width = 4 + (len(opts.size_bounds) + 1 if opts.size_bounds else 0)
        self._top: list[int] = []  # min-heap of the top_files largest sizes seen by this walker
        self._big = 0 if opts.top_files > 0 else -1  # report files of st_size >= _big

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
                    self._pop()
                if self._entries >= self._opts.chunk_size:
                    self._boundary()
        finally:
            while frames:
                self._pop()
        self._flush()

    # -- the hot loops: one entry at a time, in C or in Python ---------------------------------

    def _scan_c(self, frame: _Frame) -> bool:
        """Examine entries of the top frame until it is exhausted (True), a subdirectory was
        entered, or a chunk is full (False)."""
        reader = frame.reader
        assert reader is not None
        t = frame.totals
        linked = self._chunk.linked_inodes
        follow = self._opts.follow_symlinks
        limit = self._opts.chunk_size
        bounds = self._bounds
        while True:
            n, blocks, size, files, kind, name, a, b, c = reader.scan(
                limit - self._entries,
                follow,
                linked,
                frame.key,
                t if bounds else None,
                bounds,
                self._big,
            )
            self._entries += n
            t[0] += blocks
            t[1] += size
            t[2] += files
            if kind == STOP_DIR:
                if c in self._ancestors:
                    self._cycle(frame.prefix + name)
                    continue
                item = self._dir_entry(frame, name, a, b, c[0])
                if item is not None:
                    t[3] += 1
                    if self._descend(frame, item, c):
                        return False
            elif kind == STOP_END:
                return True
            elif kind == STOP_LIMIT:
                return False
            elif kind == STOP_BIG:
                self._big_file(frame.prefix + name, a)
            elif kind == STOP_LINK:
                self._follow_link(frame, name, a, b)
            else:  # STOP_ERROR; an empty name is an error reading the directory itself
                path = frame.prefix + name if name else frame.prefix.rstrip("/") or "/"
                self._error(path, OSError(a, os.strerror(a)))
                if not name:
                    return True
            if self._entries >= limit:
                return False

    def _scan_py(self, frame: _Frame) -> bool:
        """The same as ``_scan_c`` with ``os.scandir``, where the C reader is not built."""
        it = frame.it
        assert it is not None
        blocks = size = files = dirs = 0
        n = self._entries
        limit = self._opts.chunk_size
        linked = self._chunk.linked_inodes
        follow = self._opts.follow_symlinks
        key = frame.key
        extras = self._bounds is not None or self._big >= 0
        exhausted = True
        for entry in it:
            n += 1
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                self._error(frame.prefix + entry.name, exc)
            else:
                mode = st.st_mode
                if S_ISDIR(mode):
                    devino = (st.st_dev, st.st_ino)
                    if devino in self._ancestors:
                        self._cycle(frame.prefix + entry.name)
                        item = None
                    else:
                        item = self._dir_entry(
                            frame, entry.name, st.st_blocks, st.st_size, st.st_dev
                        )
                    if item is not None:
                        dirs += 1
                        if self._descend(frame, item, devino):
                            exhausted = False
                            break
                elif follow and S_ISLNK(mode):
                    self._follow_link(frame, entry.name, st.st_blocks, st.st_size)
                else:
                    files += 1
                    if st.st_nlink > 1:
                        linked.append((st.st_dev, st.st_ino, st.st_blocks, st.st_size, key))
                    else:
                        blocks += st.st_blocks
                        size += st.st_size
                    if extras:
                        self._file_extras(frame, entry.name, st.st_size)
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

    def _skip_dir(self, path: str, dev: int) -> bool:
        opts = self._opts
        if path in opts.ignore_paths:
            return True
        if self._ignore_re is not None and self._ignore_re.match(path):
            return True
        return opts.one_file_system and dev != opts.root_dev

    def _dir_entry(
        self, frame: _Frame, name: str, blocks: int, size: int, dev: int
    ) -> DirItem | None:
        """Account a subdirectory's own inode; return it as a walkable item, or None if it is
        ignored (then it does not count at all, like an excluded directory in du)."""
        path = frame.prefix + name
        if self._skip_dir(path, dev):
            return None
        level = frame.level + 1
        key = path if level <= self._opts.dir_level else frame.key
        totals = frame.totals if key is frame.key else self._totals(key)
        totals[0] += blocks
        totals[1] += size
        return (path, level, key, False)

    def _cycle(self, path: str) -> None:
        """A subdirectory that is one of its own ancestors (a bind mount of an ancestor): like
        du, neither entered nor counted; reported as an error."""
        self._error(path, OSError(errno.ELOOP, "directory cycle (a bind mount?)"))

    def _descend(self, parent: _Frame, item: DirItem, devino: DevIno) -> bool:
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
        return self._push(fd, path, level, key, devino)

    def _open_next(self) -> bool:
        """Open the next queued directory by path. False when nothing is left."""
        while self._todo:
            path, level, key, follow = self._todo.pop()
            try:
                fd = open_dir_path(path, follow=follow)
                st = os.fstat(fd)
            except OSError as exc:
                self._error(path, exc)
                continue
            if self._push(fd, path, level, key, (st.st_dev, st.st_ino)):
                return True
        return False

    def _push(self, fd: int, path: str, level: int, key: str, devino: DevIno) -> bool:
        try:
            frame = _Frame(fd, path, level, key, devino, use_c=self._use_c)
        except OSError as exc:
            os.close(fd)
            self._error(path, exc)
            return False
        frame.totals = self._totals(key)
        self._frames.append(frame)
        self._ancestors[devino] = self._ancestors.get(devino, 0) + 1
        return True

    def _pop(self) -> None:
        frame = self._frames.pop()
        frame.close()
        n = self._ancestors[frame.devino] - 1
        if n:
            self._ancestors[frame.devino] = n
        else:
            del self._ancestors[frame.devino]

    # -- symlinks (follow-symlinks only) -----------------------------------------------------

    def _follow_link(self, frame: _Frame, name: str, lblocks: int, lsize: int) -> None:
        """Count what a symlink points to. Directories go to the pool, which walks each target
        (st_dev, st_ino) at most once: that is what makes loops impossible. The parent's
        ``dirs`` count for a linked directory is added by the pool if it accepts it."""
        path = frame.prefix + name
        try:
            st = os.stat(name, dir_fd=frame.fd)
        except OSError:
            # Dangling, a loop of links, or unreadable: count the link itself, as without follow.
            frame.totals[0] += lblocks
            frame.totals[1] += lsize
            frame.totals[2] += 1
            return
        if S_ISDIR(st.st_mode):
            if self._skip_dir(path, st.st_dev):
                return
            level = frame.level + 1
            key = path if level <= self._opts.dir_level else frame.key
            item: DirItem = (path, level, key, True)
            self._chunk.linked_dirs.append(
                (item, st.st_dev, st.st_ino, st.st_blocks, st.st_size, frame.key)
            )
            return
        # A followed file may be reached under several names: always deduplicate.
        frame.totals[2] += 1
        self._chunk.linked_inodes.append(
            (st.st_dev, st.st_ino, st.st_blocks, st.st_size, frame.key)
        )

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
            # At most one chunk's worth: what a worker holds stays bounded by chunk-size.
            budget = self._opts.chunk_size
            for frame in self._frames:
                budget -= self._read_ahead(frame, budget, found)
                if found or budget <= 0:
                    break
            half = (len(found) + 1) // 2
            give = found[:half]
            todo.extend(reversed(found[half:]))
        units = [give[i::wanted] for i in range(min(wanted, len(give)))]
        self._chunk.spilled.extend(units)

    def _read_ahead(self, frame: _Frame, budget: int, found: list[DirItem]) -> int:
        """Examine up to ``budget`` more entries of ``frame``, counting them as ``_scan`` would
        but collecting subdirectories in ``found`` instead of entering them. Returns how many
        entries were examined."""
        t = frame.totals
        examined = 0
        while examined < budget:
            if frame.reader is not None:
                n, blocks, size, files, kind, name, a, b, c = frame.reader.scan(
                    budget - examined,
                    self._opts.follow_symlinks,
                    self._chunk.linked_inodes,
                    frame.key,
                    t if self._bounds else None,
                    self._bounds,
                    self._big,
                )
                examined += n
                t[0] += blocks
                t[1] += size
                t[2] += files
                if kind in (STOP_END, STOP_LIMIT):
                    break
                if kind == STOP_DIR:
                    if c in self._ancestors:
                        self._cycle(frame.prefix + name)
                        continue
                    item = self._dir_entry(frame, name, a, b, c[0])
                elif kind == STOP_BIG:
                    self._big_file(frame.prefix + name, a)
                    continue
                elif kind == STOP_LINK:
                    self._follow_link(frame, name, a, b)
                    continue
                else:
                    self._error(frame.prefix + name, OSError(a, os.strerror(a)))
                    if not name:
                        break
                    continue
            else:
                assert frame.it is not None
                entry = next(frame.it, None)
                if entry is None:
                    break
                examined += 1
                item = self._read_ahead_py(frame, entry)
            if item is not None:
                t[3] += 1
                found.append(item)
        self._entries += examined
        return examined

    def _read_ahead_py(self, frame: _Frame, entry: os.DirEntry[str]) -> DirItem | None:
        """The slow, general form of one step of ``_scan_py``, for a split's read-ahead."""
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            self._error(frame.prefix + entry.name, exc)
            return None
        t = frame.totals
        if S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) in self._ancestors:
                self._cycle(frame.prefix + entry.name)
                return None
            return self._dir_entry(frame, entry.name, st.st_blocks, st.st_size, st.st_dev)
        if self._opts.follow_symlinks and S_ISLNK(st.st_mode):
            self._follow_link(frame, entry.name, st.st_blocks, st.st_size)
            return None
        t[2] += 1
        if st.st_nlink > 1:
            self._chunk.linked_inodes.append(
                (st.st_dev, st.st_ino, st.st_blocks, st.st_size, frame.key)
            )
        else:
            t[0] += st.st_blocks
            t[1] += st.st_size
        if self._bounds is not None or self._big >= 0:
            self._file_extras(frame, entry.name, st.st_size)
        return None

    # -- optional per-file work: size buckets and the largest files ---------------------------

    def _file_extras(self, frame: _Frame, name: str, size: int) -> None:
        """The Python form of what the C reader does per file when extras are on."""
        bounds = self._bounds
        if bounds is not None:
            i = 0
            while i < len(bounds) and size > bounds[i]:
                i += 1
            frame.totals[4 + i] += 1
        if 0 <= self._big <= size:
            self._big_file(frame.prefix + name, size)

    def _big_file(self, path: str, size: int) -> None:
        import heapq  # only with top-files

        top, n = self._top, self._opts.top_files
        if len(top) < n:
            heapq.heappush(top, size)
        elif size > top[0]:
            heapq.heapreplace(top, size)
        else:
            return
        self._chunk.big_files.append((size, path))
        if len(top) == n:
            self._big = top[0] + 1  # only strictly larger files can still enter

    # -- bookkeeping -------------------------------------------------------------------------

    def _totals(self, key: str) -> Totals:
        totals = self._chunk.totals.get(key)
        if totals is None:
            totals = self._chunk.totals[key] = [0] * self._width
        return totals

    def _error(self, path: str, exc: OSError) -> None:
        chunk = self._chunk
        chunk.errors += 1
        if len(chunk.samples) < MAX_ERROR_SAMPLES:
            if len(path) > MAX_SAMPLE_PATH:  # a path 50,000 directories deep is 100 KB
                half = MAX_SAMPLE_PATH // 2
                path = f"{path[:half]}...{path[-half:]}"
            chunk.samples.append(f"{path}: {exc.strerror or exc}")
