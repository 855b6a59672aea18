"""Small trees with every awkward kind of entry, for comparing the scan engine with du."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

NON_UTF8 = b"caf\xe9-latin1"  # a valid Linux name that is not UTF-8


def write(path: Path, size: int, *, sparse: bool = False) -> None:
    with open(path, "wb") as f:
        if sparse:
            f.truncate(size)
        else:
            f.write(b"x" * size)


def build_awkward_tree(root: Path, *, cross_dir_hardlinks: bool = False) -> Path:
    """A tree of 3 levels with sparse files, empty dirs, hard links, symlinks (to files, to
    directories, dangling, looping) and a name that is not valid UTF-8."""
    root.mkdir(parents=True, exist_ok=True)
    for a in range(3):
        da = root / f"a{a}"
        da.mkdir()
        write(da / "small", 10 * (a + 1))
        for b in range(3):
            db = da / f"b{b}"
            db.mkdir()
            for i in range(5 + a * 3 + b):
                write(db / f"f{i}", (i * 997 + a * 131) % 20000)
            dc = db / "deep" / "deeper"
            dc.mkdir(parents=True)
            write(dc / "leaf", 5000 + b)
    (root / "empty").mkdir()
    (root / "a0" / "empty-too").mkdir()
    write(root / "a1" / "sparse", 50 * 1024 * 1024, sparse=True)
    write(root / "a2" / "half-sparse", 0)
    with open(root / "a2" / "half-sparse", "r+b") as f:
        f.write(b"y" * 8192)
        f.seek(10 * 1024 * 1024)
        f.write(b"z")
    # Hard links within one directory: du counts the inode once, and so must we.
    write(root / "a0" / "b1" / "linked", 70000)
    os.link(root / "a0" / "b1" / "linked", root / "a0" / "b1" / "linked-again")
    if cross_dir_hardlinks:
        os.link(root / "a0" / "b1" / "linked", root / "a2" / "b0" / "linked-elsewhere")
    (root / "a1" / "to-file").symlink_to("small")
    (root / "a1" / "to-dir").symlink_to("../a2")
    (root / "a1" / "dangling").symlink_to("does-not-exist")
    (root / "a2" / "loop").symlink_to("loop")
    (root / "a2" / "b2" / "up").symlink_to("../..")
    odd = root / os.fsdecode(NON_UTF8)
    odd.mkdir()
    write(odd / os.fsdecode(b"\xff\xfe"), 1234)
    (root / "with\nnewline").mkdir()
    write(root / "with\nnewline" / 'q"uote\\', 77)
    return root


def du(
    root: Path | str,
    *,
    depth: int,
    apparent: bool,
    user: str | None = None,
    follow: bool = False,
    one_file_system: bool = False,
) -> dict[str, int]:
    """``du -B1 -d N`` (or ``-b``) as {path: bytes}, names decoded like Python's os functions."""
    cmd = ["du", "-b" if apparent else "-B1", "-d", str(depth), "-0", os.fspath(root)]
    if follow:
        cmd.insert(1, "-L")
    if one_file_system:
        cmd.insert(1, "-x")
    out = run_as(cmd, user=user, check=False).stdout
    result: dict[str, int] = {}
    for record in out.split(b"\0"):
        if record:
            size, _, path = record.partition(b"\t")
            result[os.fsdecode(path)] = int(size)
    return result


def unprivileged_user() -> str | None:
    """A user that cannot read chmod 000 directories: nobody when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return None
    return "nobody"


def python_for(user: str | None) -> list[str]:
    """A Python command ``user`` can run with this checkout and its dependencies.

    Our virtualenv's interpreter may live where another user cannot reach it (pyenv under
    /root), so another user runs the system python3 with our source and site-packages on
    PYTHONPATH (see ``run_as``).
    """
    if user is None:
        return [sys.executable]
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system is None:
        pytest.skip("no system python3 for the unprivileged user")
    probe = subprocess.run(
        [system, "-c", "import sys; print(sys.version_info >= (3, 11))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.stdout.strip() != "True":
        pytest.skip("the system python3 is older than 3.11")
    return [system]


def _pythonpath() -> str:
    src = Path(__file__).resolve().parents[1] / "src"
    site = [p for p in sys.path if p.endswith("site-packages")]
    return os.pathsep.join([str(src), *site])


def run_as(
    cmd: list[str], *, user: str | None, check: bool = True, **kw: object
) -> subprocess.CompletedProcess[bytes]:
    if user is not None:
        entry = pwd.getpwnam(user)
        cmd = [
            "setpriv",
            f"--reuid={entry.pw_uid}",
            f"--regid={entry.pw_gid}",
            "--clear-groups",
            "--",
            "env",
            f"PYTHONPATH={_pythonpath()}",
            *cmd,
        ]
    return subprocess.run(cmd, capture_output=True, check=check, **kw)  # type: ignore[call-overload, no-any-return]


@contextmanager
def world_readable_tmpdir() -> Iterator[Path]:
    """A temporary directory another user can enter (pytest's tmp_path is private to us)."""
    path = Path(tempfile.mkdtemp(prefix="diskaudit-test-"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        for dirpath, dirnames, _ in os.walk(path):
            for d in dirnames:
                p = os.path.join(dirpath, d)
                if not os.path.islink(p):
                    os.chmod(p, 0o755)
        shutil.rmtree(path)
