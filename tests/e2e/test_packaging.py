"""What a user gets from the distribution files: build them, check them, install the wheel.

``python -m build`` runs in a copy of the working tree (tracked files plus untracked ones that
are not ignored), so uncommitted changes are built and no build/, *.egg-info or in-place
``_fastwalk*.so`` of the checkout leaks into the artifacts. The wheel is then installed in a
fresh virtualenv (its dependencies come from the package index) and run from outside the
repository, so nothing is imported from src/.

The C reader is optional (setup.py: ``optional=True``): on a machine without a C compiler or
Python's headers the wheel has no extension, and the package must still work, walking in
Python. Needs ``build`` and ``twine`` in the test environment (the dev extras).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.trees import build_awkward_tree

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
NAME = str(PROJECT["name"])
VERSION = str(PROJECT["version"])
EXTENSION = "diskaudit/scan/_fastwalk"


def have_c_toolchain() -> bool:
    """Whether setup.py can compile the extension here: a C compiler and Python.h."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return shutil.which(shlex.split(cc)[0]) is not None and headers.exists()


def clean_env(venv: Path | None = None) -> dict[str, str]:
    """This environment without what would redirect imports or configure diskaudit."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
        and not k.startswith("DISKAUDIT_")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if venv is not None:
        env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "/usr/bin:/bin")])
    return env


def run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=timeout
    )
    assert proc.returncode == 0, f"{shlex.join(cmd)} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


def require_module(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        pytest.fail(f"{name} is not installed in the test environment: pip install build twine")


def copy_working_tree(dest: Path) -> None:
    """The files git would see: tracked (as they are on disk now) and untracked, not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    for name in sorted({os.fsdecode(n) for n in listed.split(b"\0") if n}):
        src = REPO / name
        if not src.is_symlink() and not src.is_file():
            continue  # tracked but deleted in the working tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path
    seconds: float


@dataclass(frozen=True)
class Installed:
    venv: Path
    cwd: Path  # outside the repository: nothing importable from src/ or the checkout
    env: dict[str, str]
    seconds: float

    def run(self, *args: str) -> str:
        return run(list(args), cwd=self.cwd, env=self.env)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    require_module("build")
    tree = tmp_path_factory.mktemp("tree")
    copy_working_tree(tree)
    out = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    # No --sdist/--wheel: build makes the sdist, then the wheel from the unpacked sdist, which
    # proves the sdist holds everything a build needs.
    run([sys.executable, "-m", "build", "--outdir", str(out), str(tree)], cwd=tree, env=clean_env())
    seconds = time.monotonic() - started
    [sdist] = out.glob("*.tar.gz")
    [wheel] = out.glob("*.whl")
    return Dist(sdist, wheel, seconds)


@pytest.fixture(scope="module")
def installed(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    venv = tmp_path_factory.mktemp("venv")
    cwd = tmp_path_factory.mktemp("elsewhere")
    env = clean_env(venv)
    started = time.monotonic()
    run([sys.executable, "-m", "venv", "--clear", str(venv)], cwd=cwd, env=env)
    # Dependencies come from the index (PyPI or the configured mirror): what a user does.
    run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(dist.wheel)],
        cwd=cwd,
        env=env,
        timeout=100,  # below pytest-timeout (120 s), for a message naming the step
    )
    seconds = time.monotonic() - started
    print(f"build {dist.seconds:.1f}s, venv and install {seconds:.1f}s", file=sys.stderr)
    return Installed(venv, cwd, env, seconds)


def test_build_makes_an_sdist_and_a_wheel_that_twine_accepts(dist: Dist) -> None:
    require_module("twine")
    assert dist.sdist.name == f"{NAME}-{VERSION}.tar.gz"
    assert dist.wheel.name.startswith(f"{NAME}-{VERSION}-")
    cmd = [sys.executable, "-m", "twine", "check", "--strict", str(dist.sdist), str(dist.wheel)]
    out = run(cmd, cwd=dist.sdist.parent, env=clean_env())
    assert out.count("PASSED") == 2, out


def test_sdist_holds_the_c_source_and_no_build_products(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {
        "pyproject.toml",
        "setup.py",
        "README.md",
        f"src/{EXTENSION}.c",
        f"src/{EXTENSION}.pyi",
        "src/diskaudit/py.typed",
    } <= names
    assert not [n for n in names if n.endswith((".so", ".o", ".pyc"))]


def test_wheel_holds_the_typing_marker_and_the_compiled_reader(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as whl:
        names = set(whl.namelist())
    assert "diskaudit/py.typed" in names
    assert f"{EXTENSION}.pyi" in names
    compiled = [n for n in names if n.startswith(EXTENSION) and n.endswith(".so")]
    if not have_c_toolchain():
        # The extension is optional; test_installed_package_uses_the_c_reader checks the
        # package works without it.
        return
    # A platform wheel, with the extension built for the interpreter that built it.
    assert not dist.wheel.name.endswith("-none-any.whl")
    assert compiled == [EXTENSION + importlib.machinery.EXTENSION_SUFFIXES[0]]


def test_installed_command_prints_the_version_from_pyproject(installed: Installed) -> None:
    out = installed.run(str(installed.venv / "bin" / "diskaudit"), "--version")
    assert out.strip() == f"diskaudit {VERSION}"


def test_installed_package_uses_the_c_reader(installed: Installed) -> None:
    """Imported from the virtualenv (not src/); the C reader unless nothing could compile it."""
    code = (
        "import diskaudit; from diskaudit.scan import walk;"
        " print(diskaudit.__file__); print(walk.IMPLEMENTATION)"
    )
    location, implementation = installed.run(
        str(installed.venv / "bin" / "python"), "-c", code
    ).split()
    assert Path(location).is_relative_to(installed.venv)
    assert implementation == ("c" if have_c_toolchain() else "python")


def test_installed_scan_totals_equal_du(installed: Installed) -> None:
    # The scan runs worker processes (python -S -m diskaudit.scan.worker): they must find the
    # installed package too.
    root = build_awkward_tree(installed.cwd / "tree")
    out = installed.run(
        str(installed.venv / "bin" / "diskaudit"),
        "scan",
        str(root),
        "--format",
        "json",
        "--max-procs=2",
    )
    [doc] = json.loads(out)["roots"]
    assert doc["errors"] == 0
    [total] = [e for e in doc["entries"] if e["level"] == 0]
    assert total["path"] == str(root)

    def du(*flags: str) -> int:
        return int(installed.run("du", "-s", *flags, str(root)).split("\t")[0])

    assert total["disk_bytes"] == du("-B1")
    assert total["apparent_bytes"] == du("-b")
