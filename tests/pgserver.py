"""A throwaway PostgreSQL server for tests: ``initdb`` in a temporary directory, listening on
127.0.0.1 on a free port and on a socket in that directory; stopped and deleted at the end.

PostgreSQL refuses to run as root; when the tests run as root (CI), the server runs as the
``postgres`` user that Debian's package creates (``runuser``), in a directory it owns.

Where no server binary is found, ``pg_server_or_skip`` skips with the reason; with ``CI`` set,
that skip becomes a failure: CI installs PostgreSQL and must run these tests.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

POSTGRES_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found; install Debian's `postgresql` "
    "package (`.ci/run` does) to run the PostgreSQL job store tests"
)


def find_bindir() -> Path | None:
    """The directory with ``initdb``/``pg_ctl``/``postgres``: $PG_BINDIR, the newest
    /usr/lib/postgresql/N/bin (Debian), or PATH."""
    candidates = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(os.environ["PG_BINDIR"])
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    for c in candidates:
        if (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    bindir: Path
    base: Path
    port: int
    run_as: str | None

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}?connect_timeout=5"

    def _cmd(self, *args: str) -> list[str]:
        if self.run_as:
            return ["runuser", "-u", self.run_as, "--", *args]
        return list(args)

    def _run(self, *args: str) -> None:
        subprocess.run(self._cmd(*args), check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.base} -c fsync=off -c max_connections=100 "
            "-c shared_buffers=16MB"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.base / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop")

    def restart(self, down_s: float = 0.0) -> None:
        """Stop (fast: every connection is cut), stay down ``down_s``, start again."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        out = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-A", "-t", "-d", self.dsn(dbname), "-c", sql],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout.strip()

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = (self.base / "server.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


@contextlib.contextmanager
def pg_server() -> Iterator[PgServer]:
    bindir = find_bindir()
    if bindir is None:
        raise FileNotFoundError(POSTGRES_HINT)
    run_as = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise FileNotFoundError(
                "running as root and there is no 'postgres' user to run the server as"
            ) from None
        run_as = "postgres"
    base = Path(tempfile.mkdtemp(prefix="diskaudit-pg-"))
    if run_as:
        shutil.chown(base, user=run_as)
    server = PgServer(bindir=bindir, base=base, port=_free_port(), run_as=run_as)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


def skip_or_fail(reason: str) -> None:
    """Skip, or fail when CI is set: CI installs PostgreSQL, a skip there would hide a gap."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and the PostgreSQL tests cannot run: {reason}")
    pytest.skip(reason)
