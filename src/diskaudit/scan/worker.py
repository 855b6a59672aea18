"""A scan worker process: ``python -m diskaudit.scan.worker``.

Reads ``walk`` messages on stdin, walks, writes ``chunk`` messages on stdout. Started with
``python -S`` and importing only a few builtin-backed modules, so each worker costs little more
than a bare interpreter (about 9 MiB); keep it that way (``make bench`` measures it).
It exits when stdin reaches end of file, which is also what happens when the pool dies.
"""

from __future__ import annotations

import os
import select
import time

from diskaudit.scan.protocol import FdReader, encode, write_all
from diskaudit.scan.walk import (
    IMPLEMENTATION,
    Chunk,
    DeadlineExceeded,
    DirItem,
    Walker,
    WalkOptions,
)


class PoolGone(Exception):
    """stdin closed while walking: the pool is gone, stop at once."""


class Throttle:
    """Keeps this worker's pace on one root at ``rate`` entries per second (io-budget), across
    units: it sleeps at chunk boundaries when it is ahead of its budget."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._start = time.monotonic()
        self._entries = 0

    def account(self, entries: int, deadline: float) -> None:
        self._entries += entries
        now = time.monotonic()
        if now - self._start > 60.0:  # forget old history: a pause must not buy a burst
            self._start, self._entries = now, entries
        ahead = self._entries / self.rate - (now - self._start)
        if ahead > 0:
            time.sleep(min(ahead, max(0.0, deadline - now)))


#: One throttle per root this worker walks with an io-budget.
_throttles: dict[str, Throttle] = {}


class _PipeSink:
    def __init__(self, reader: FdReader, out_fd: int, unit_id: int, opts: WalkOptions) -> None:
        self._reader = reader
        self._out = out_fd
        self._unit = unit_id
        self._deadline = opts.deadline
        self._throttle: Throttle | None = None
        if opts.max_rate > 0:
            self._throttle = _throttles.get(opts.root)
            if self._throttle is None or self._throttle.rate != opts.max_rate:
                self._throttle = _throttles[opts.root] = Throttle(opts.max_rate)

    def chunk(self, chunk: Chunk) -> None:
        write_all(self._out, encode(("chunk", self._unit, *chunk.as_message())))
        if self._throttle is not None:
            self._throttle.account(chunk.entries, self._deadline)

    def split_requested(self) -> int:
        wanted = 0
        while select.select([self._reader.fd], [], [], 0)[0]:
            message = self._reader.read()
            if message is None:
                raise PoolGone
            if message[0] == "split":
                wanted += int(message[1])  # type: ignore[call-overload]
        return wanted


def serve(in_fd: int, out_fd: int) -> None:
    write_all(out_fd, encode(("ready", IMPLEMENTATION)))
    reader = FdReader(in_fd)
    while (message := reader.read()) is not None:
        if message[0] != "walk":
            continue  # a split request that arrived after the unit ended
        _, unit_id, items, options = message
        assert isinstance(unit_id, int)
        opts = WalkOptions.from_wire(options)  # type: ignore[arg-type]
        sink = _PipeSink(reader, out_fd, unit_id, opts)
        try:
            Walker(opts, sink).run(items)  # type: ignore[arg-type]
        except DeadlineExceeded:
            write_all(out_fd, encode(("expired", unit_id)))
            continue
        except PoolGone:
            return
        except Exception:
            import traceback  # a bug's report: not worth its memory in every worker

            write_all(out_fd, encode(("failed", unit_id, traceback.format_exc())))
            continue
        write_all(out_fd, encode(("done", unit_id)))


def main() -> None:
    # Frames go to the original stdout; anything printed by accident goes to stderr instead.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    # The pool went away (broken pipe) or an interrupt: either way, just stop. Not
    # contextlib.suppress: contextlib is not worth its memory in every worker.
    try:
        serve(0, out_fd)
    except (BrokenPipeError, KeyboardInterrupt):
        return


__all__ = ["DirItem", "main", "serve"]

if __name__ == "__main__":
    main()
