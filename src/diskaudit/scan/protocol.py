"""Frames between the pool and its worker processes: a 4-byte big-endian length, then a pickle.

Messages are plain tuples, first element the kind:

pool -> worker
    ("walk", unit_id, items, options)   walk these directories of one root (``WalkOptions.wire()``)
    ("split", n)                        idle workers want up to n directories; answer in the
                                        next chunk (ignored when the worker is idle)
worker -> pool
    ("ready", implementation)           sent once at start: "c" or "python" (walk.IMPLEMENTATION)
    ("chunk", unit_id, *Chunk)          partial totals (see ``walk.Chunk.as_message``)
    ("done", unit_id)                   the unit is walked; its last chunk came before
    ("expired", unit_id)                the unit's deadline passed at a chunk boundary
    ("failed", unit_id, text)           an unexpected exception (a bug), with its traceback

Encoding is ``marshal``: built into the interpreter (a worker imports nothing for it), faster
than pickle, and enough for plain tuples, lists, dicts, strings (lone surrogates included) and
numbers. Both ends are this program on one machine, connected by a private pipe, which is what
marshal requires.
"""

from __future__ import annotations

import marshal
import os

HEADER_BYTES = 4  # big-endian length of the body
MAX_FRAME_BYTES = 1 << 30


class ProtocolError(Exception):
    """The other end sent something that is not a frame, or went away mid-frame."""


def encode(message: tuple[object, ...]) -> bytes:
    body = marshal.dumps(message)  # type: ignore[arg-type]  # plain data by contract
    return len(body).to_bytes(HEADER_BYTES, "big") + body


def decode(body: bytes) -> tuple[object, ...]:
    message = marshal.loads(body)
    if not isinstance(message, tuple) or not message:
        raise ProtocolError(f"not a message: {type(message).__name__}")
    return message


def body_length(header: bytes) -> int:
    length = int.from_bytes(header, "big")
    if length > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {length} bytes")
    return length


class FdReader:
    """Blocking frame reader over a raw file descriptor.

    It never reads past the end of the current frame, so ``select()`` on the descriptor tells
    truthfully whether another frame is waiting (a buffered reader would hide it).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def _exactly(self, n: int) -> bytes | None:
        parts: list[bytes] = []
        while n:
            data = os.read(self.fd, n)
            if not data:
                if parts:
                    raise ProtocolError("end of stream inside a frame")
                return None
            parts.append(data)
            n -= len(data)
        return b"".join(parts)

    def read(self) -> tuple[object, ...] | None:
        """The next message, or None at end of stream."""
        header = self._exactly(HEADER_BYTES)
        if header is None:
            return None
        body = self._exactly(body_length(header))
        if body is None:
            raise ProtocolError("end of stream inside a frame")
        return decode(body)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
