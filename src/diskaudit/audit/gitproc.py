"""Running git: its own process group, a hardened environment, and a kill that reaches every
child.

Cancelling ``anyio.run_process`` kills only the direct child; ``git clone`` leaves
``git-remote-https``, ``index-pack`` or ``ssh`` behind. So git runs with
``start_new_session=True`` (it leads a new process group), stdin from /dev/null, and on deadline
or cancellation the whole group gets SIGTERM, then SIGKILL after ``KILL_GRACE_S``, and git is
reaped — all shielded, so the cancellation that asked for it cannot interrupt it. If the daemon
itself is killed, the kernel tells the group's leader, which kills the group (``_GROUP_LEADER``).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

log = logging.getLogger(__name__)

KILL_GRACE_S = 2.0  # between SIGTERM and SIGKILL of a git process group
STDERR_KEEP_BYTES = 16 * 1024  # git's stderr kept for error messages (the end of it)


class GitError(Exception):
    """git exited non-zero. ``stderr`` is already redacted."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        self.args_ = list(args)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"git {args[0] if args else ''} failed ({returncode}): {stderr.strip()}")


#: git configuration that bounds the memory of one clone, passed in the environment
#: (GIT_CONFIG_COUNT/KEY/VALUE: never in argv, never in the clone's .git/config). index-pack
#: resolves deltas with one thread per core by default, each with its own delta base cache.
GIT_MEMORY_CONFIG = {
    "pack.threads": "1",
    "core.deltaBaseCacheLimit": "32m",
    "pack.windowMemory": "64m",
    "core.packedGitLimit": "128m",
    "core.packedGitWindowSize": "16m",
}


def config_env(config: Mapping[str, str], start: int = 0) -> dict[str, str]:
    """``config`` as GIT_CONFIG_COUNT/KEY_n/VALUE_n environment variables, from index
    ``start`` (another caller's entries come first)."""
    env = {"GIT_CONFIG_COUNT": str(start + len(config))}
    for i, (key, value) in enumerate(config.items(), start=start):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def hardened_env(home: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment git runs with: nothing of the user's or the system's git configuration,
    no terminal prompts, a low-speed limit against stalled transfers, no pager, C locale."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,  # an empty directory: no ~/.gitconfig, no ~/.ssh/config surprises
        "LANG": "C",
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ASKPASS": "/bin/false",  # a credential is given only by header, never asked for
        "SSH_ASKPASS": "/bin/false",
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
        "GIT_HTTP_LOW_SPEED_LIMIT": "1000",  # bytes/s ...
        "GIT_HTTP_LOW_SPEED_TIME": "30",  # ... for this many seconds, then give up
        "GIT_PAGER": "cat",
        "GIT_PROTOCOL_FROM_USER": "0",  # no protocol.*.allow=user surprises
        "GIT_NO_REPLACE_OBJECTS": "1",
    }
    if extra:
        env.update(extra)
    # The memory bounds go after any GIT_CONFIG_* entries of ``extra`` (a credential header).
    count = int(env.get("GIT_CONFIG_COUNT", "0"))
    env.update(config_env(GIT_MEMORY_CONFIG, start=count))
    return env


#: git runs in its own session and reads nothing from us, so if the daemon is killed (even by
#: SIGKILL) nothing would tell git or its helpers (git-remote-http waiting on a slow server,
#: index-pack): they would run on, orphaned, outside the clone limit. So git is started by a
#: small shell that leads the process group and gets SIGTERM from the kernel when the daemon
#: dies (``setpriv --pdeathsig``, util-linux); on SIGTERM, from the kernel or from ``_terminate``,
#: it SIGKILLs the whole group.
_GROUP_LEADER = (
    [
        "setpriv",
        "--pdeathsig",
        "TERM",
        "--",
        "sh",
        "-c",
        'trap "kill -KILL 0" TERM; "$@" & wait $!',
        "diskaudit-git",
    ]
    if shutil.which("setpriv")
    else []
)


def kill_group(pid: int, sig: int) -> None:
    with suppress(ProcessLookupError):  # the whole group is gone already
        os.killpg(pid, sig)


async def _terminate(proc: anyio.abc.Process) -> None:
    """SIGTERM the group, SIGKILL it after the grace, reap git. Call shielded."""
    kill_group(proc.pid, signal.SIGTERM)
    with anyio.move_on_after(KILL_GRACE_S):
        await proc.wait()
    # Children may outlive git itself (index-pack finishing a write): kill the group regardless.
    kill_group(proc.pid, signal.SIGKILL)
    await proc.wait()


@dataclass
class GitProcess:
    """A running git whose stdout the caller reads; see ``open_git``."""

    proc: anyio.abc.Process
    stdout: BufferedByteReceiveStream

    async def lines(self) -> AsyncIterator[bytes]:
        """stdout line by line (without the newline), streamed: nothing is held in memory but
        the current line."""
        while True:
            try:
                line = await self.stdout.receive_until(b"\n", 1 << 20)
            except anyio.IncompleteRead:
                return
            yield line


@asynccontextmanager
async def open_git(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None = None,
    redact: Sequence[str] = (),
    on_start: Callable[[int], None] | None = None,
) -> AsyncIterator[GitProcess]:
    """Start ``git ARGS`` in its own process group; yield it to read stdout.

    On leaving the block normally, waits for git and raises ``GitError`` on a non-zero exit.
    On cancellation or an exception, terminates the whole process group first.
    ``redact``: strings (tokens) replaced by ``***`` in the stderr kept for errors.
    ``on_start``: called with the process group id once git runs (for watching its memory).
    """
    # Shielded: a cancellation inside open_process would leave a git nobody kills.
    with anyio.CancelScope(shield=True):
        proc = await anyio.open_process(
            [*_GROUP_LEADER, "git", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    assert proc.stdout is not None
    assert proc.stderr is not None
    if on_start is not None:
        on_start(proc.pid)  # start_new_session: git's leader's pid is the group id
    stderr_tail = bytearray()

    async def drain_stderr(stream: anyio.abc.ByteReceiveStream) -> None:
        async for chunk in stream:
            stderr_tail.extend(chunk)
            del stderr_tail[:-STDERR_KEEP_BYTES]

    ok = False
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drain_stderr, proc.stderr)
            yield GitProcess(proc, BufferedByteReceiveStream(proc.stdout))
            # Read the rest of stdout so git is never blocked writing to a full pipe.
            async for _ in proc.stdout:
                pass
            returncode = await proc.wait()
        ok = True
    finally:
        if not ok:
            with anyio.CancelScope(shield=True):
                await _terminate(proc)
                await proc.aclose()
    await proc.aclose()
    if returncode != 0:
        raise GitError(args, returncode, redact_text(stderr_tail.decode(errors="replace"), redact))


async def run_git(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None = None,
    redact: Sequence[str] = (),
    on_start: Callable[[int], None] | None = None,
) -> bytes:
    """``git ARGS``; its whole stdout (for small outputs). Raises ``GitError``."""
    out = bytearray()
    async with open_git(args, env=env, cwd=cwd, redact=redact, on_start=on_start) as git:
        async for chunk in git.stdout:
            out.extend(chunk)
    return bytes(out)


def redact_text(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
