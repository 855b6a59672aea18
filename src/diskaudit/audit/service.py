"""The repository audit use case: clone -> scan -> audit -> cleanup.

Where the deadline is born and enforced
    The caller owns the deadline (``job-timeout``): the CLI and, later, the job queue wrap
    ``audit()`` in ``anyio.fail_after``. Everything below runs under it: waiting for a clone
    slot, the git processes (``gitproc`` kills their process groups on cancellation), every chunk
    of the directory walks (the scan pool carries the caller's deadline into each unit), and the
    git statistics. Nothing here adds a timeout of its own.

The clone limiter
    A clone's slots (``Admission``: an ``anyio.CapacityLimiter`` whose total follows the
    machine's available memory, plus a wait for the memory and disk reserves) are held from
    before the clone starts until the clone directory is deleted, not merely until ``git clone``
    returns: a clone being scanned still takes disk and memory. Waiters are served first come,
    first served (anyio's limiter is FIFO). A repository audited before weighs by its last size.

The cluster gate
    Behind the daemon's own admission, the audit passes the cluster-wide gate (``audit/gate.py``;
    ``cluster-max-concurrent-clones`` with a PostgreSQL job store), held just as long. The local
    slots come first, so a daemon never holds a cluster slot while it waits for its own.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio

from diskaudit.audit.admission import Admission, CloneSlots, Ticket, process_group_rss
from diskaudit.audit.errors import (
    CloneError,
    RefusedError,
    RepoTooLarge,
    ResourceShortage,
    classify_clone_failure,
)
from diskaudit.audit.gate import CloneGate, NoGate
from diskaudit.audit.gitproc import GitError, hardened_env, open_git, redact_text, run_git
from diskaudit.audit.model import AuditResult, DiskFigures
from diskaudit.audit.urlpolicy import RepoUrl, UrlPolicy, UrlRefused, check_ref, check_url
from diskaudit.scan.pool import ScanConfig, ScanPool
from diskaudit.settings import Credential, Settings

log = logging.getLogger(__name__)

#: How often the size of a growing clone is measured (at least; a slow measurement of a large
#: checkout makes the wait longer so that watching never costs more than a third of a core).
SIZE_WATCH_INTERVAL_S = 0.5


@dataclass(frozen=True)
class AuditConfig:
    """The audit's view of the settings."""

    policy: UrlPolicy
    clones_dir: Path
    git_home: Path
    credentials: tuple[Credential, ...] = ()
    clone_depth: int | None = None
    max_repo_bytes: int = 2 * 1024**3
    dir_level: int = 2
    chunk_size: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> AuditConfig:
        data = Path(settings.data_dir)
        return cls(
            policy=UrlPolicy(
                allowed_schemes=frozenset(s.lower() for s in settings.allowed_schemes),
                allowed_hosts=frozenset(h.lower() for h in settings.allowed_hosts),
                allow_local=settings.allow_local_urls,
            ),
            clones_dir=data / "clones",
            git_home=data / "git-home",
            credentials=settings.credentials,
            clone_depth=settings.clone_depth,
            max_repo_bytes=settings.max_repo_bytes,
            dir_level=settings.dir_level,
            chunk_size=settings.chunk_size,
        )


__all__ = ["AuditConfig", "AuditService", "CloneSlots", "disk_usage", "prepare_dirs"]


def disk_usage(path: str) -> int:
    """Allocated bytes beneath ``path`` (du -s -B1), for watching a clone grow. Blocking."""
    total = 0
    stack = [path]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue  # vanished or being written: the next measurement sees it
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += st.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return total


def prepare_dirs(config: AuditConfig, *, sweep: bool) -> int:
    """Create data-dir's directories; with ``sweep``, delete clones left by a crash (only the
    daemon sweeps: a one-shot CLI may share data-dir with a running daemon). Returns how many
    were deleted. Blocking."""
    config.git_home.mkdir(parents=True, exist_ok=True)
    config.clones_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not sweep:
        return 0
    leftovers = list(config.clones_dir.iterdir())
    for path in leftovers:
        log.warning("removing clone left from an earlier run: %s", path)
        shutil.rmtree(path, ignore_errors=True)
    return len(leftovers)


def _never_audited(url: str) -> int | None:
    return None


class AuditService:
    """``admission``: an ``Admission`` (the daemon's, following the machine), or a plain
    ``CapacityLimiter`` for a fixed number of slots. ``last_size(url)``: the repository's size
    at its last audit, if any, which sets its weight in slots and the disk it waits for."""

    def __init__(
        self,
        config: AuditConfig,
        pool: ScanPool,
        admission: Admission | anyio.CapacityLimiter,
        gate: CloneGate | None = None,
        *,
        last_size: Callable[[str], int | None] = _never_audited,
    ) -> None:
        self.config = config
        self.pool = pool
        if isinstance(admission, anyio.CapacityLimiter):
            admission = Admission.fixed(admission)
        self.admission = admission
        self.gate: CloneGate = gate or NoGate()
        self.last_size = last_size

    def slots(self) -> CloneSlots:
        return self.admission.slots()

    # -- the use case ------------------------------------------------------------------------

    async def audit(self, url: str, ref: str | None = None) -> AuditResult:
        """Clone ``url`` at ``ref``, measure it, delete it. Under the caller's deadline.

        Raises ``RefusedError`` before any git runs, ``CloneError`` / ``RepoTooLarge`` /
        ``GitError`` for failures, ``TimeoutError`` from the caller's ``fail_after``.
        """
        try:
            repo = check_url(url, self.config.policy)
            ref = check_ref(ref)
        except UrlRefused as exc:
            raise RefusedError(str(exc)) from None
        secrets, extra_env = self._credentials_for(repo)
        env = hardened_env(str(self.config.git_home), extra_env)
        size = self.last_size(repo.url)
        weight = self.admission.weight_for(size)
        async with self.admission.admit(weight, size or 0) as ticket, self.gate.slot():
            clone_dir = self.config.clones_dir / uuid.uuid4().hex
            try:
                return await self._audit_clone(repo, ref, clone_dir, env, secrets, ticket)
            finally:
                # Shielded: a cancelled or timed-out audit must still leave no clone behind,
                # and the slot is given back only after this.
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(shutil.rmtree, clone_dir, True)

    async def _audit_clone(
        self,
        repo: RepoUrl,
        ref: str | None,
        clone_dir: Path,
        env: Mapping[str, str],
        secrets: list[str],
        ticket: Ticket,
    ) -> AuditResult:
        t0 = time.monotonic()
        await self._clone(repo, ref, clone_dir, env, secrets, ticket)
        t1 = time.monotonic()
        disk = await self._disk_figures(clone_dir, env)
        t2 = time.monotonic()
        from diskaudit.audit.sizer import measure_repository

        report = await measure_repository(str(clone_dir), env=env)
        head = await anyio.to_thread.run_sync(_read_head, str(clone_dir))
        t3 = time.monotonic()
        return AuditResult(
            url=repo.url,
            ref=ref,
            head=head,
            clone_seconds=t1 - t0,
            scan_seconds=t2 - t1,
            sizer_seconds=t3 - t2,
            disk=disk,
            sizer=report,
        )

    # -- clone -------------------------------------------------------------------------------

    def _credentials_for(self, repo: RepoUrl) -> tuple[list[str], dict[str, str]]:
        """The token for the repository's host, as an http.extraHeader scoped to that host in
        git's environment (GIT_CONFIG_COUNT/KEY/VALUE): not in argv, not in .git/config."""
        if repo.scheme not in ("https", "http"):
            return [], {}
        name = repo.host.split(":", 1)[0]
        for cred in self.config.credentials:
            if cred.host.lower() in (repo.host, name):
                try:
                    token = cred.token()
                except (OSError, KeyError) as exc:
                    raise CloneError(
                        f"the token for {cred.host} cannot be read: {type(exc).__name__}",
                        transient=False,
                    ) from None
                basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
                return [token, basic], {
                    "GIT_CONFIG_COUNT": "1",
                    "GIT_CONFIG_KEY_0": f"http.{repo.scheme}://{repo.host}/.extraHeader",
                    "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
                }
        return [], {}

    def _clone_args(self, repo: RepoUrl, ref: str | None, clone_dir: Path) -> list[str]:
        args = []
        if repo.scheme == "file":
            # GIT_PROTOCOL_FROM_USER=0 forbids file:// by default; the policy allowed it.
            args += ["-c", "protocol.file.allow=always"]
        args += ["clone", "--quiet", "--no-checkout", "--no-recurse-submodules", "--template="]
        if self.config.clone_depth is not None:
            args += [f"--depth={self.config.clone_depth}"]
        if ref is not None:
            args += [f"--branch={ref}"]
        return [*args, "--", repo.url, str(clone_dir)]

    async def _clone(
        self,
        repo: RepoUrl,
        ref: str | None,
        clone_dir: Path,
        env: Mapping[str, str],
        secrets: list[str],
        ticket: Ticket,
    ) -> None:
        too_large: list[int] = []
        refused: list[RepoTooLarge] = []
        short: list[str] = []
        groups: list[int] = []  # the process group of the git running now
        limit = self.config.max_repo_bytes

        async def watch(scope: anyio.CancelScope) -> None:
            """Measure the clone's directory and its git processes' memory; stop the clone
            past max-repo-bytes or when admission says the machine is running short."""
            while True:
                started = time.monotonic()
                size = await anyio.to_thread.run_sync(
                    disk_usage, str(clone_dir), abandon_on_cancel=True
                )
                if size > limit:
                    too_large.append(size)
                    scope.cancel()
                    return
                rss = 0
                if groups:
                    rss = await anyio.to_thread.run_sync(
                        process_group_rss, groups[-1], abandon_on_cancel=True
                    )
                reason = await self.admission.check(ticket, rss=rss, disk_bytes=size)
                if reason is not None:
                    short.append(reason)
                    scope.cancel()
                    return
                await anyio.sleep(max(SIZE_WATCH_INTERVAL_S, 2 * (time.monotonic() - started)))

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch, tg.cancel_scope)
                await run_git(
                    self._clone_args(repo, ref, clone_dir),
                    env=env,
                    redact=secrets,
                    on_start=groups.append,
                )
                # The checkout comes second, once we know what it would take: a "git bomb" (a
                # few KB of objects, GBs of files) is refused before writing the files, rather
                # than caught by the watcher hundreds of MB too late.
                try:
                    await self._check_checkout_size(clone_dir, env)
                except RepoTooLarge as exc:
                    refused.append(exc)
                else:
                    await run_git(
                        ["reset", "--hard", "--quiet"],
                        env=env,
                        cwd=str(clone_dir),
                        on_start=groups.append,
                    )
                tg.cancel_scope.cancel()  # the clone is done: stop watching
        except* GitError as group:
            err = group.exceptions[0]
            assert isinstance(err, GitError)
            message = redact_text(err.stderr.strip(), secrets) or f"exit status {err.returncode}"
            raise CloneError(
                f"git clone failed: {_last_lines(message)}",
                transient=classify_clone_failure(message),
            ) from None
        finally:
            ticket.cloning = False
        if short:
            raise ResourceShortage(short[0])
        if refused:
            self.admission.record_stop("max_repo_bytes")
            raise refused[0]
        if not too_large:
            size = await anyio.to_thread.run_sync(disk_usage, str(clone_dir))
            if size > limit:
                too_large.append(size)
        if too_large:
            self.admission.record_stop("max_repo_bytes")
            raise RepoTooLarge(
                f"the clone grew past max-repo-bytes ({limit} bytes): {too_large[0]} bytes "
                "when it was stopped"
            )

    async def _check_checkout_size(self, clone_dir: Path, env: Mapping[str, str]) -> None:
        """Raise ``RepoTooLarge`` if .git plus the checkout of HEAD would pass max-repo-bytes.
        The checkout is estimated from ``git ls-tree -r -l`` (blob sizes rounded up to 4 KiB
        blocks), streamed and stopped as soon as the estimate is over the budget."""
        git_bytes = await anyio.to_thread.run_sync(disk_usage, str(clone_dir))
        budget = self.config.max_repo_bytes - git_bytes
        estimate = 0
        async with open_git(
            ["ls-tree", "-r", "-l", "-z", "--full-tree", "HEAD"], env=env, cwd=str(clone_dir)
        ) as git:
            while True:
                try:
                    record = await git.stdout.receive_until(b"\0", 1 << 20)
                except anyio.IncompleteRead:
                    break
                fields = record.split(b"\t", 1)[0].split()
                if len(fields) == 4 and fields[3].isdigit():
                    estimate += -(-int(fields[3]) // 4096) * 4096
                if estimate > budget:
                    break  # leaving the block kills git: no need to read the rest
        if estimate > budget:
            raise RepoTooLarge(
                f"the checkout would pass max-repo-bytes ({self.config.max_repo_bytes} bytes): "
                f".git takes {git_bytes} bytes and the files more than {estimate}"
            )

    # -- measure -----------------------------------------------------------------------------

    async def _disk_figures(self, clone_dir: Path, env: Mapping[str, str]) -> DiskFigures:
        git_dir = str(clone_dir / ".git")
        # Both walks run on the scan pool, under the caller's deadline.
        worktree = await self.pool.scan(
            str(clone_dir),
            ScanConfig(
                dir_level=self.config.dir_level,
                chunk_size=self.config.chunk_size,
                ignore_dirs=(git_dir,),
            ),
        )
        git_usage = await self.pool.scan(
            git_dir, ScanConfig(dir_level=0, chunk_size=self.config.chunk_size)
        )
        counts = _parse_count_objects(
            (await run_git(["count-objects", "-v"], env=env, cwd=str(clone_dir))).decode()
        )
        return DiskFigures(
            pack_bytes=counts.get("size-pack", 0) * 1024,
            packs=counts.get("packs", 0),
            loose_objects=counts.get("count", 0),
            loose_bytes=counts.get("size", 0) * 1024,
            git_dir_disk_bytes=git_usage.total.disk_bytes,
            worktree_disk_bytes=worktree.total.disk_bytes,
            worktree_apparent_bytes=worktree.total.apparent_bytes,
            worktree_files=worktree.total.files,
            worktree=worktree.entries,
        )


def _parse_count_objects(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if value.strip().isdigit():
            out[key.strip()] = int(value)
    return out


def _read_head(path: str) -> str:
    """The checked-out commit, read with GitPython from the finished clone. The ``with`` block
    closes the Repo: GitPython otherwise keeps ``git cat-file`` children alive (its issues
    #1208, #1333), which a daemon would accumulate."""
    from git import Repo

    with Repo(path) as repo:
        return str(repo.head.commit.hexsha)


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line for line in re.split(r"[\r\n]+", text) if line.strip()]
    return " / ".join(lines[-n:])
