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
)

TOKEN = "s3cr3t-token"
BASIC = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
LOW_SPEED = {"GIT_HTTP_LOW_SPEED_LIMIT": "1000", "GIT_HTTP_LOW_SPEED_TIME": "2"}


@pytest.fixture(autouse=True)
def no_git_left_behind() -> Iterator[None]:
    yield
    assert git_processes(os.getpid()) == []


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
        daemon = git_processes(os.getpid())  # git, and the git-daemon it runs
        assert daemon
        assert set(daemon) <= all_git_processes()
        rc, err = clone(url + "repo.git", tmp_path / "c", env)
        assert rc == 0, err
    assert head(tmp_path / "c" / ".git") == head(root / "repo.git")
    assert not set(daemon) & all_git_processes()
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


def test_gzip_and_chunked_negotiation(tmp_path: Path, env: dict[str, str]) -> None:
    """Many wants: gzipped upload-pack requests (> 1 KiB), chunked ones (> http.postBuffer)."""
    root = tmp_path / "served"
    add_tags(make_repo(root / "some-tags.git", files=2, commits=1), 60)
    add_tags(make_repo(root / "many-tags.git", files=2, commits=1), 2000)
    with http_git_server(root) as server:
        for name in ("some-tags", "many-tags"):
            # postBuffer at its minimum (64 KiB): the ~100 KB of wants go chunked.
            rc, err = clone(
                f"{server.url}{name}.git", tmp_path / name, env, "http.postBuffer=65536"
            )
            assert rc == 0, err
    posts = [r for r in server.requests if r.method == "POST"]
    assert {r.status for r in posts} == {200}
    assert any(
        r.content_encoding == "gzip" for r in posts if r.path == "/some-tags.git/git-upload-pack"
    )
    assert any(r.chunked for r in posts if r.path == "/many-tags.git/git-upload-pack")
    tags = subprocess.run(
        ["git", "-C", str(tmp_path / "many-tags"), "tag"], capture_output=True, check=True
    )
    assert len(tags.stdout.splitlines()) == 2000


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
