"""Git servers for tests, on 127.0.0.1 only, and the repositories they serve.

- ``make_repo`` / ``make_repo_of_size`` / ``add_tags``: deterministic bare repositories made
  with real git (same arguments, same bytes and the same commit ids).
- ``git_daemon``: ``git daemon`` on a free port.
- ``http_git_server``: smart HTTP (``git http-backend`` as CGI) in a threaded server in this
  process: optional token, a delay before each upload-pack POST, transient 503s, a request log
  and a count of concurrent clone sessions.
- ``hanging_server``: accepts connections and never answers; ``stalling_server``: answers the
  ref advertisement, then sends part of the pack and stalls.
- ``git_processes`` / ``all_git_processes``: git processes below a pid, or anywhere (from /proc).

Every server picks a free port, lives at most ``lifetime_s`` (then stops itself: clients see
the connection close) and stops cleanly on leaving its ``with`` block, even when the test
failed: threads joined, subprocesses killed by process group and reaped.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import os
import random
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast

LOOPBACK = "127.0.0.1"
DEFAULT_LIFETIME_S = 600.0  # the longest any server here runs, whatever the test does
EPOCH = 1_600_000_000  # commit and tag dates count from here: same inputs, same object ids
IDENTITY = ["-c", "user.name=t", "-c", "user.email=t@t"]
_DONE_PKT = b"0009done\n"  # the client's last negotiation line: the pack comes in this answer


# --- repositories ---------------------------------------------------------------------------


def isolated_git_env(home: str | os.PathLike[str], **extra: str) -> dict[str, str]:
    """An environment for git that reads no user or system configuration and never prompts."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.fspath(home),
        "LANG": "C",
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        **extra,
    }


def _git(args: Sequence[str], env: dict[str, str], *, stdin: bytes | None = None) -> str:
    proc = subprocess.run(
        ["git", *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")
        raise RuntimeError(f"git {' '.join(args)} failed ({proc.returncode}): {err}")
    return proc.stdout.decode()


def _text(seed: str, size: int) -> bytes:
    """``size`` bytes of seeded hex text in 64-byte lines (compresses about 2:1)."""
    raw = random.Random(seed).randbytes(size // 2 + 1).hex()
    lines = [raw[i : i + 63] + "\n" for i in range(0, len(raw), 63)]
    return "".join(lines).encode()[:size]


def make_repo(
    path: Path, *, files: int = 20, size: int = 1000, commits: int = 3, big_blob: int = 0
) -> Path:
    """A bare repository at ``path`` (branch ``main``, HEAD on it), fully packed.

    Commit 0 adds ``files`` text files of ``size`` bytes (``d{i%4}/f{i:04}.txt``) and, if
    ``big_blob`` > 0, ``big.bin``: ``big_blob`` seeded random (incompressible) bytes. Each later
    commit rewrites every other file. Contents, dates and identities are fixed, so the same
    arguments give the same commit ids. Returns ``path``.
    """
    if commits < 1 or files < 0 or size < 0 or big_blob < 0:
        raise ValueError("commits >= 1; files, size, big_blob >= 0")
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} exists and is not empty")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="make_repo-") as tmp:
        work = Path(tmp, "work")
        work.mkdir()
        env = isolated_git_env(tmp, GIT_INDEX_FILE=str(Path(tmp, "index")))
        _git(["init", "-q", "--bare", "--initial-branch=main", str(path)], env)
        gd = ["--git-dir", str(path), "--work-tree", str(work)]
        for c in range(commits):
            for i in range(files):
                if c == 0 or (i + c) % 2 == 0:
                    f = work / f"d{i % 4}" / f"f{i:04}.txt"
                    f.parent.mkdir(exist_ok=True)
                    f.write_bytes(_text(f"{c}/{i}/{size}", size))
            if c == 0 and big_blob:
                (work / "big.bin").write_bytes(random.Random(f"big/{big_blob}").randbytes(big_blob))
            _git([*gd, "add", "-A"], env)
            date = f"{EPOCH + c * 60} +0000"
            _git(
                [*IDENTITY, *gd, "commit", "-q", "--allow-empty", "-m", f"commit {c}"],
                {**env, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date},
            )
        _git(["--git-dir", str(path), "repack", "-a", "-d", "-q"], env)
    return path


def add_tags(path: Path, count: int, *, prefix: str = "t") -> None:
    """Add ``count`` annotated tags (distinct objects, all on HEAD) to the bare repo ``path``:
    many refs, many wants. A clone's fetch request is ~50 bytes a want: past 1 KiB git gzips it;
    past http.postBuffer (1 MiB; ~20,000 tags) it sends it chunked (after a probe POST)."""
    env = isolated_git_env(path)
    head = _git(["--git-dir", str(path), "rev-parse", "HEAD"], env).strip()
    stream = "".join(
        f"tag {prefix}{i:05}\nfrom {head}\ntagger t <t@t> {EPOCH} +0000\ndata 4\ntag\n\n"
        for i in range(count)
    )
    _git(["--git-dir", str(path), "fast-import", "--quiet"], env, stdin=stream.encode())


def repo_size(path: Path) -> int:
    """Apparent size of every regular file under ``path``."""
    return sum(
        (Path(d) / f).lstat().st_size
        for d, _, names in os.walk(path)
        for f in names
        if not (Path(d) / f).is_symlink()
    )


def make_repo_of_size(path: Path, target_bytes: int) -> Path:
    """``make_repo`` with defaults and a big blob chosen so ``repo_size(path)`` is close to
    ``target_bytes`` (within a few KiB; never below the ~70 KB of the small repo itself)."""
    with tempfile.TemporaryDirectory(prefix="make_repo_of_size-") as tmp:
        base = repo_size(make_repo(Path(tmp, "base.git")))
    # A packed incompressible blob costs its size plus a few dozen bytes of zlib framing.
    return make_repo(path, big_blob=max(0, target_bytes - base))


# --- processes ------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, str, bool]]:
    """pid -> (ppid, argv[0], alive) for every process; ``alive`` is False for zombies (dead,
    waiting to be reaped: nothing runs, nothing is held), whose argv[0] is their comm name."""
    table: dict[int, tuple[int, str, bool]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_bytes()
            cmdline = Path(entry.path, "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        close = stat.rindex(b")")
        state, ppid = stat[close + 2 :].split()[:2]
        argv0 = cmdline.split(b"\0", 1)[0] or stat[stat.index(b"(") + 1 : close]
        table[int(entry.name)] = (int(ppid), os.fsdecode(argv0), state not in (b"Z", b"X"))
    return table


def _is_git(argv0: str) -> bool:
    return argv0.endswith("git") or os.path.basename(argv0).startswith("git-")


def git_processes(parent_pid: int, *, zombies: bool = False) -> list[int]:
    """Sorted pids of live git processes (argv[0] ends with "git" or its basename starts with
    "git-") descending from ``parent_pid`` (children, grandchildren, ...). Zombies only with
    ``zombies=True``: a killed process is one at once, and orphans are reaped by init when it
    gets to it. A process whose parent died was re-parented and is no longer found here:
    compare ``all_git_processes()`` before and after for those."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = list(children.get(parent_pid, []))
    while todo:
        pid = todo.pop()
        _, argv0, alive = table[pid]
        if _is_git(argv0) and (alive or zombies):
            found.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(found)


def all_git_processes(*, zombies: bool = False) -> set[int]:
    """Pids of every live git process on the machine (see ``git_processes``)."""
    return {
        pid
        for pid, (_, argv0, alive) in _proc_table().items()
        if _is_git(argv0) and (alive or zombies)
    }


def wait_git_processes_gone(parent_pid: int, timeout_s: float = 5.0) -> list[int]:
    """Poll ``git_processes(parent_pid)`` until it is empty or ``timeout_s`` passed (a process
    sent SIGKILL by another thread may take a moment to die); returns what is left."""
    deadline = time.monotonic() + timeout_s
    while (left := git_processes(parent_pid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def kill_process_group(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGKILL) -> None:
    """Signal the process group ``proc`` leads (started with ``start_new_session=True``)."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _stop_group(proc: subprocess.Popen[bytes], *, term_grace_s: float = 0.0) -> None:
    """Stop the process group ``proc`` leads and reap ``proc``.

    With ``term_grace_s``: SIGTERM the leader alone first and give it that long — ``git daemon``
    forwards it to the ``git-daemon`` it runs and reaps it, which leaves no zombie for init.
    Then SIGKILL the whole group (the leader is unreaped at that point, or was reaped just now,
    so its pgid has not been reused) and reap the leader. Nothing if it was reaped before.
    """
    if proc.returncode is not None:
        return
    if term_grace_s > 0 and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(term_grace_s)
    kill_process_group(proc)
    proc.wait()


# --- git daemon -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _wait_accepting(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """True once 127.0.0.1:port accepts; False if ``proc`` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket() as s:
            s.settimeout(1.0)
            if s.connect_ex((LOOPBACK, port)) == 0:
                return True
        time.sleep(0.02)
    raise TimeoutError(f"git daemon not accepting on port {port} after {timeout_s}s")


@contextmanager
def git_daemon(root: Path, *, lifetime_s: float = DEFAULT_LIFETIME_S) -> Iterator[str]:
    """``git daemon`` exporting every repository under ``root``; yields "git://127.0.0.1:PORT/"
    (so ``url + "repo.git"`` is ``root/repo.git``). Killed by process group on exit."""
    root = Path(root).resolve()
    with (
        tempfile.TemporaryDirectory(prefix="git-daemon-") as home,
        tempfile.TemporaryFile() as log,
    ):
        for _ in range(5):  # the free port can be taken before git daemon binds it
            port = _free_port()
            proc = subprocess.Popen(
                [
                    "git",
                    "daemon",
                    "--reuseaddr",
                    f"--base-path={root}",
                    "--export-all",
                    f"--listen={LOOPBACK}",
                    f"--port={port}",
                    str(root),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=isolated_git_env(home),
                start_new_session=True,
            )
            try:
                accepting = _wait_accepting(port, proc, 15.0)
            except BaseException:
                _stop_group(proc)
                raise
            if accepting:
                break
            _stop_group(proc)
        else:
            log.seek(0)
            raise RuntimeError(f"git daemon did not start: {log.read().decode(errors='replace')}")
        timer = threading.Timer(lifetime_s, _stop_group, args=(proc,), kwargs={"term_grace_s": 3})
        timer.daemon = True
        timer.start()
        try:
            yield f"git://{LOOPBACK}:{port}/"
        finally:
            timer.cancel()
            timer.join()
            _stop_group(proc, term_grace_s=3.0)


# --- smart HTTP -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GitRequest:
    """One request as the HTTP server saw it."""

    method: str
    path: str  # URL path, decoded, e.g. "/repo.git/info/refs"
    query: str  # e.g. "service=git-upload-pack"
    auth: bool  # an Authorization header was present (valid or not)
    status: int  # the status answered
    content_encoding: str = ""  # of the request body ("gzip" for larger negotiations)
    chunked: bool = False  # request body sent with Transfer-Encoding: chunked


class GitHTTPServer:
    """Smart HTTP git server: ``git http-backend`` run as CGI per request by a
    ``ThreadingHTTPServer`` in a background thread. Use through ``http_git_server`` /
    ``stalling_server``.

    ``requests``: every request, in the order answered (a status is recorded when it is sent).
    ``active``: clone sessions in progress — one starts with a 200 answer to
    ``info/refs?service=git-upload-pack`` and ends when an upload-pack POST whose request
    contains "done" (the one answered with the pack) has been answered or aborted.
    ``max_active``: the highest ``active`` seen.
    """

    def __init__(
        self,
        root: Path,
        *,
        token: str | None = None,
        delay_s: float = 0.0,
        fail_first: int = 0,
        stall_pack: bool = False,
        lifetime_s: float = DEFAULT_LIFETIME_S,
    ) -> None:
        self.root = Path(root).resolve()
        self.token = token
        self.delay_s = delay_s
        self.fail_first = fail_first
        self.stall_pack = stall_pack
        self.requests: list[GitRequest] = []
        self.active = 0
        self.max_active = 0
        self.backend_errors: list[str] = []  # non-empty stderr of http-backend runs
        self._lock = threading.Lock()
        self._stop_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = False
        self._seen = 0
        self._conns: set[socket.socket] = set()
        self._backends: set[subprocess.Popen[bytes]] = set()  # running, unreaped http-backends
        self._home = tempfile.TemporaryDirectory(prefix="git-http-")
        self._httpd = _HTTPServer((LOOPBACK, 0), _Handler)
        self._httpd.git = self
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://{LOOPBACK}:{self.port}/"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"git-http-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._timer = threading.Timer(lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()

    def stop(self) -> None:
        """Stop serving: wake delayed and stalled answers, cut open connections, kill running
        backends, join every thread. Idempotent; returns once everything has stopped."""
        if threading.current_thread() is not self._timer:
            self._timer.cancel()
            self._timer.join()  # if it fired, its stop() is over when this returns
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            self._stopping.set()
            self._httpd.shutdown()  # no more accepts once this returns
            with self._lock:
                for conn in self._conns:
                    with suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
                for proc in self._backends:  # unreaped: their handlers reap after discarding
                    kill_process_group(proc)
            self._httpd.server_close()  # joins the handler threads
            self._thread.join()
            self._home.cleanup()

    # -- used by the handler --

    def _record(self, request: GitRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_is_failure(self) -> bool:
        with self._lock:
            self._seen += 1
            return self._seen <= self.fail_first

    def _session(self, delta: int) -> None:
        with self._lock:
            self.active = max(0, self.active + delta)
            self.max_active = max(self.max_active, self.active)

    def _authorized(self, header: str | None) -> bool:
        if self.token is None:
            return True
        if header is None:
            return False
        scheme, _, credentials = header.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer":
            return credentials == self.token
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            return decoded == f"x-access-token:{self.token}"
        return False


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # handler threads are joined by server_close()
    block_on_close = True
    git: GitHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # answers Expect: 100-continue; every answer closes
    timeout = 60.0  # socket timeout: a silent client cannot hold a thread for longer

    @property
    def git(self) -> GitHTTPServer:
        return cast(_HTTPServer, self.server).git

    def setup(self) -> None:
        super().setup()
        with self.git._lock:
            self.git._conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.git._lock:
                self.git._conns.discard(self.connection)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        self.close_connection = True
        with suppress(OSError):  # the client went away, or stop() cut the connection
            self._serve()

    def _reply(self, status: int, text: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        body = text.encode()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self, chunked: bool) -> bytes:
        if chunked:
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline(1024).split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)  # the CRLF after the chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        git = self.git
        url = urllib.parse.urlsplit(self.path)
        path, query = urllib.parse.unquote(url.path), url.query
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        auth = self.headers.get("Authorization")

        refs_for_clone = path.endswith("/info/refs") and query == "service=git-upload-pack"

        def record(status: int) -> None:
            git._record(
                GitRequest(self.command, path, query, auth is not None, status, encoding, chunked)
            )
            if status == 200 and refs_for_clone:
                git._session(+1)

        # Read the body before any answer: closing with unread data would reset the connection
        # and the client would see that instead of our status.
        body = self._read_body(chunked) if self.command == "POST" else b""
        if encoding in ("gzip", "x-gzip"):
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError, zlib.error):
                record(400)
                self._reply(400, "bad gzip body\n")
                return
        elif encoding not in ("", "identity"):
            record(415)
            self._reply(415, f"unsupported Content-Encoding {encoding}\n")
            return
        upload_pack = self.command == "POST" and path.endswith("/git-upload-pack")
        final = upload_pack and _DONE_PKT in body
        try:
            if git._stopping.is_set():
                record(503)
                self._reply(503, "stopping\n")
            elif git._next_is_failure():
                record(503)
                self._reply(503, "transient failure (fail_first)\n", [("Retry-After", "0")])
            elif not git._authorized(auth):
                record(401)
                challenge = ("WWW-Authenticate", 'Basic realm="git"')
                self._reply(401, "authentication required\n", [challenge])
            elif upload_pack and git.delay_s > 0 and git._stopping.wait(git.delay_s):
                record(503)
                self._reply(503, "stopping\n")
            else:
                self._run_backend(path, query, body, record, stall=final and git.stall_pack)
        finally:
            if final:  # the clone is over, whether it got its pack or not
                git._session(-1)

    def _run_backend(
        self,
        path: str,
        query: str,
        body: bytes,
        record: Callable[[int], None],
        *,
        stall: bool,
    ) -> None:
        """Run http-backend for this request and relay its answer."""
        git = self.git
        env = isolated_git_env(
            git._home.name,
            GIT_PROJECT_ROOT=str(git.root),
            GIT_HTTP_EXPORT_ALL="1",
            GATEWAY_INTERFACE="CGI/1.1",
            SERVER_PROTOCOL="HTTP/1.1",
            SERVER_SOFTWARE="tests.gitservers",
            SERVER_NAME=LOOPBACK,
            SERVER_PORT=str(git.port),
            REQUEST_METHOD=self.command,
            PATH_INFO=path,
            QUERY_STRING=query,
            REMOTE_ADDR=self.client_address[0],
            CONTENT_TYPE=self.headers.get("Content-Type", ""),
        )
        if self.command == "POST":
            env["CONTENT_LENGTH"] = str(len(body))
        if protocol := self.headers.get("Git-Protocol"):
            env["HTTP_GIT_PROTOCOL"] = protocol
        with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stderr:
            stdin.write(body)
            stdin.seek(0)
            proc = subprocess.Popen(
                ["git", "http-backend"],
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                start_new_session=True,
            )
            assert proc.stdout is not None
            with git._lock:
                git._backends.add(proc)
            relayed = False
            try:
                self._relay(cast(io.BufferedReader, proc.stdout), record, stall=stall)
                relayed = True
            finally:
                with git._lock:  # from here on stop() leaves this one to us
                    git._backends.discard(proc)
                proc.stdout.close()
                if relayed:
                    try:
                        proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        _stop_group(proc)
                else:
                    _stop_group(proc)
                stderr.seek(0)
                if err := stderr.read().decode(errors="replace").strip():
                    with git._lock:
                        git.backend_errors.append(err)

    def _relay(self, out: io.BufferedReader, record: Callable[[int], None], *, stall: bool) -> None:
        """Parse the CGI headers from ``out``, answer with them and stream the rest. With
        ``stall``: send only part of the body, then wait until the server stops."""
        status, headers = 200, []
        while True:
            line = out.readline(65536)
            if not line:
                record(502)
                self._reply(502, "http-backend ended without headers\n")
                return
            line = line.rstrip(b"\r\n")
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "status":
                status = int(value.split()[0])
            else:
                headers.append((name.strip(), value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        record(status)
        if stall:
            rest = out.read()
            self.wfile.write(rest[: max(1, min(len(rest) // 2, 32 * 1024))])
            self.git._stopping.wait()
            return
        while chunk := out.read1(65536):
            self.wfile.write(chunk)


@contextmanager
def http_git_server(
    root: Path,
    *,
    token: str | None = None,
    delay_s: float = 0.0,
    fail_first: int = 0,
    lifetime_s: float = DEFAULT_LIFETIME_S,
) -> Iterator[GitHTTPServer]:
    """Smart HTTP for every repository under ``root``; yields the ``GitHTTPServer``
    (``.url`` = "http://127.0.0.1:PORT/", so ``url + "repo.git"`` is ``root/repo.git``).

    ``token``: require ``Authorization: Basic base64("x-access-token:" + token)`` or
    ``Authorization: Bearer token``, else 401 with ``WWW-Authenticate: Basic realm="git"``.
    ``delay_s``: sleep before answering each git-upload-pack POST. ``fail_first``: answer the
    first N requests (whatever they are) with 503.
    """
    server = GitHTTPServer(
        root, token=token, delay_s=delay_s, fail_first=fail_first, lifetime_s=lifetime_s
    )
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def stalling_server(
    root: Path, *, token: str | None = None, lifetime_s: float = DEFAULT_LIFETIME_S
) -> Iterator[GitHTTPServer]:
    """Like ``http_git_server``, but the answer that carries the pack (to the upload-pack POST
    containing "done") sends its headers and part of the body, then nothing until stopped:
    the ref advertisement and ls-refs work, the transfer stalls."""
    server = GitHTTPServer(root, token=token, stall_pack=True, lifetime_s=lifetime_s)
    try:
        yield server
    finally:
        server.stop()


# --- a server that never answers ------------------------------------------------------------


@contextmanager
def hanging_server(*, lifetime_s: float = DEFAULT_LIFETIME_S) -> Iterator[str]:
    """Accepts TCP connections on 127.0.0.1 and never answers (nor reads); yields
    "http://127.0.0.1:PORT/repo.git". Connections are closed when the block exits (or after
    ``lifetime_s``)."""
    listener = socket.socket()
    stop = threading.Event()

    def run() -> None:
        conns: list[socket.socket] = []
        deadline = time.monotonic() + lifetime_s
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                if select.select([listener], [], [], 0.05)[0]:
                    with suppress(OSError):
                        conns.append(listener.accept()[0])
        finally:
            for conn in conns:
                conn.close()

    with listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        thread = threading.Thread(target=run, name=f"hanging-{port}", daemon=True)
        thread.start()
        try:
            yield f"http://{LOOPBACK}:{port}/repo.git"
        finally:
            stop.set()
            thread.join()
