"""The test git servers of tests.gitservers, checked with plain ``git clone``."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path

import pytest

from tests.gitservers import (
    add_tags,
    all_git_processes,
    git_daemon,
    git_processes,
    hanging_server,
    http_git_server,
    isolated_git_env,
    make_repo,
    make_repo_of_size,
    repo_size,
    stalling_server,
    wait_git_processes_gone,
)

TOKEN = "s3cr3t-token"
BASIC = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
LOW_SPEED = {"GIT_HTTP_LOW_SPEED_LIMIT": "1000", "GIT_HTTP_LOW_SPEED_TIME": "2"}


@pytest.fixture(autouse=True)
def no_git_left_behind() -> Iterator[None]:
    yield
    assert wait_git_processes_gone(os.getpid()) == []


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served")
    make_repo(root / "repo.git")
    return root


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return isolated_git_env(home)


def start_clone(url: str, dest: Path, env: dict[str, str], *config: str) -> subprocess.Popen[bytes]:
    args = [arg for c in config for arg in ("-c", c)]
    return subprocess.Popen(
        ["git", *args, "clone", "-q", url, str(dest)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> tuple[int, str]:
    """Wait for git; (returncode, stderr). On a timeout the whole process group is killed."""
    with proc:
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except BaseException:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return proc.returncode, err.decode(errors="replace")


def clone(url: str, dest: Path, env: dict[str, str], *config: str) -> tuple[int, str]:
    return finish(start_clone(url, dest, env, *config))


def head(git_dir: Path) -> str:
    out = subprocess.run(
        ["git", "--git-dir", str(git_dir), "rev-parse", "HEAD"],
        capture_output=True,
        check=True,
        env=isolated_git_env(git_dir),
    )
    return out.stdout.decode().strip()


def test_make_repo_is_deterministic(tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a.git", files=5, size=300, commits=4)
    b = make_repo(tmp_path / "b.git", files=5, size=300, commits=4)
    assert head(a) == head(b)
    log = subprocess.run(
        ["git", "--git-dir", str(a), "rev-list", "--count", "HEAD"],
        capture_output=True,
        check=True,
    )
    assert log.stdout.strip() == b"4"
    sized = make_repo_of_size(tmp_path / "sized.git", 3_000_000)
    assert abs(repo_size(sized) - 3_000_000) < 16 * 1024


def test_git_daemon_clone_equals_the_bare_repo(
    root: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    with git_daemon(root) as url:
        assert url.startswith("git://127.0.0.1:")
        # git, the git-daemon it runs, perhaps a child for the readiness probe's connection
        daemon = set(git_processes(os.getpid()))
        assert len(daemon & all_git_processes()) >= 2
        rc, err = clone(url + "repo.git", tmp_path / "c", env)
        assert rc == 0, err
    assert head(tmp_path / "c" / ".git") == head(root / "repo.git")
    assert wait_git_processes_gone(os.getpid()) == []
    assert not daemon & all_git_processes()
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_http_clone_without_token(root: Path, tmp_path: Path, env: dict[str, str]) -> None:
    with http_git_server(root) as server:
        assert server.url.startswith("http://127.0.0.1:")
        rc, err = clone(server.url + "repo.git", tmp_path / "c", env)
        assert rc == 0, err
    assert head(tmp_path / "c" / ".git") == head(root / "repo.git")
    assert [r.status for r in server.requests] == [200] * len(server.requests)
    assert any(
        r.method == "POST" and r.path == "/repo.git/git-upload-pack" for r in server.requests
    )
    assert (server.active, server.max_active) == (0, 1)
    assert server.backend_errors == []


def test_http_token(root: Path, tmp_path: Path, env: dict[str, str]) -> None:
    with http_git_server(root, token=TOKEN) as server:
        rc, err = clone(server.url + "repo.git", tmp_path / "none", env)
        assert rc != 0
        assert [(r.status, r.auth) for r in server.requests] == [(401, False)], err
        rc, _ = clone(
            server.url + "repo.git",
            tmp_path / "wrong",
            env,
            "http.extraHeader=Authorization: Bearer nope",
        )
        assert rc != 0
        assert (server.requests[-1].status, server.requests[-1].auth) == (401, True)
        del server.requests[:]
        rc, err = clone(
            server.url + "repo.git",
            tmp_path / "basic",
            env,
            f"http.extraHeader=Authorization: {BASIC}",
        )
        assert rc == 0, err
        assert {(r.status, r.auth) for r in server.requests} == {(200, True)}
        rc, err = clone(
            server.url + "repo.git",
            tmp_path / "bearer",
            env,
            f"http.extraHeader=Authorization: Bearer {TOKEN}",
        )
        assert rc == 0, err
    assert head(tmp_path / "basic" / ".git") == head(root / "repo.git")
    assert server.max_active == 1


def test_delay_holds_concurrent_clones_open(
    root: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    with http_git_server(root, delay_s=1.0) as server, ExitStack() as stack:
        procs = [start_clone(server.url + "repo.git", tmp_path / f"c{i}", env) for i in range(3)]
        for p in procs:
            stack.callback(finish, p)
        results = [finish(p) for p in procs]
        assert [rc for rc, _ in results] == [0, 0, 0], results
        assert (server.active, server.max_active) == (0, 3)


def test_fail_first_then_succeed(root: Path, tmp_path: Path, env: dict[str, str]) -> None:
    with http_git_server(root, fail_first=1) as server:
        rc, _ = clone(server.url + "repo.git", tmp_path / "first", env)
        assert rc != 0
        assert [r.status for r in server.requests] == [503]
        rc, err = clone(server.url + "repo.git", tmp_path / "second", env)
        assert rc == 0, err


def test_gzip_and_chunked_requests(tmp_path: Path, env: dict[str, str]) -> None:
    """60 wants: a gzipped fetch request (> 1 KiB); with http.postBuffer at 64 KiB (any
    request past 16 bytes is "large"), chunked requests after "0000" probes."""
    root = tmp_path / "served"
    add_tags(make_repo(root / "tags.git", files=2, commits=1), 60)
    with http_git_server(root) as server:
        rc, err = clone(server.url + "tags.git", tmp_path / "gzip", env)
        assert rc == 0, err
        assert [(r.method, r.content_encoding, r.chunked) for r in server.requests] == [
            ("GET", "", False),
            ("POST", "", False),  # ls-refs
            ("POST", "gzip", False),  # fetch
        ]
        del server.requests[:]
        rc, err = clone(server.url + "tags.git", tmp_path / "chunked", env, "http.postBuffer=65536")
        assert rc == 0, err
        assert any(r.chunked for r in server.requests)
        assert {r.status for r in server.requests} == {200}
        assert server.max_active == 1
    tags = subprocess.run(
        ["git", "-C", str(tmp_path / "chunked"), "tag"], capture_output=True, check=True
    )
    assert len(tags.stdout.splitlines()) == 60
    assert head(tmp_path / "chunked" / ".git") == head(root / "tags.git")


def test_hanging_server_trips_the_low_speed_limit(tmp_path: Path, env: dict[str, str]) -> None:
    with hanging_server() as url:
        t0 = time.monotonic()
        rc, _ = finish(start_clone(url, tmp_path / "c", {**env, **LOW_SPEED}), timeout_s=20)
        elapsed = time.monotonic() - t0
    assert rc != 0
    assert elapsed < 10


def test_stalling_server_trips_the_low_speed_limit(
    root: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    with stalling_server(root) as server:
        t0 = time.monotonic()
        rc, _ = finish(
            start_clone(server.url + "repo.git", tmp_path / "c", {**env, **LOW_SPEED}), timeout_s=20
        )
        elapsed = time.monotonic() - t0
        assert rc != 0
        assert elapsed < 10
        assert server.requests[0].path == "/repo.git/info/refs"
        assert server.requests[-1].method == "POST"
        assert server.requests[-1].status == 200


def test_stop_during_a_clone_and_lifetimes(root: Path, tmp_path: Path, env: dict[str, str]) -> None:
    with http_git_server(root, delay_s=30) as server:
        proc = start_clone(server.url + "repo.git", tmp_path / "c", env)
        deadline = time.monotonic() + 10
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # the ls-refs POST is now in its delay
        t0 = time.monotonic()
        server.stop()
        assert time.monotonic() - t0 < 2
        rc, _ = finish(proc)
        assert rc != 0
    with http_git_server(root, lifetime_s=0.3) as server:
        time.sleep(0.6)
        rc, _ = clone(server.url + "repo.git", tmp_path / "late", env)
        assert rc != 0
        assert server.requests == []
    with git_daemon(root, lifetime_s=0.3) as url:
        time.sleep(0.6)
        rc, _ = clone(url + "repo.git", tmp_path / "late", env)
        assert rc != 0
    with hanging_server(lifetime_s=0.3) as url:
        t0 = time.monotonic()
        rc, _ = clone(url, tmp_path / "late", env)
        assert rc != 0
        assert time.monotonic() - t0 < 5
