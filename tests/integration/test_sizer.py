"""measure_repository against real git on repositories built here, each value checked against
git's own commands or a computation independent of sizer.py."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import anyio
import pytest

from diskaudit.audit.gitproc import GitError, hardened_env
from diskaudit.audit.sizer import SCALES, Metric, SizerReport, measure_repository, table

pytestmark = pytest.mark.anyio

FAKE_SUBMODULE_COMMIT = "1234567890abcdef1234567890abcdef12345678"
LONG_MESSAGE = "the biggest commit\n\n" + "x" * 6000 + "\n"
DEEP_FILE = "a/b/c/d/e/" + "long-name-" * 6 + ".txt"  # 6 components, the longest path


def git(repo: Path, env: Mapping[str, str], *args: str, stdin: bytes | None = None) -> str:
    """Synchronous git for building and checking (never inside the code under test)."""
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        env=env,
        input=stdin,
        capture_output=True,
        check=True,
    )
    return done.stdout.decode()


def make_env(home: Path) -> dict[str, str]:
    home.mkdir(exist_ok=True)
    return hardened_env(str(home), {"GIT_CEILING_DIRECTORIES": str(home.parent)})


@dataclass(frozen=True)
class Repo:
    path: Path
    env: dict[str, str]
    long_commit: str  # the commit with LONG_MESSAGE


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """Branches, merge, octopus, nested annotated tags, a 1 MiB blob, a 500-entry tree, a path
    6 deep, a symlink and a gitlink; the first commit packed, the rest loose."""
    base = tmp_path_factory.mktemp("sizer")
    env = make_env(base / "home")
    path = base / "repo"
    path.mkdir()
    g = git
    g(path, env, "init", "-q", "-b", "main")
    (path / "README").write_text("readme\n")
    (path / "assets").mkdir()
    (path / "assets" / "big.bin").write_bytes(os.urandom(1 << 20))
    (path / "many").mkdir()
    for i in range(500):
        (path / "many" / f"f{i:03}").write_text(f"{i}\n")
    (path / DEEP_FILE).parent.mkdir(parents=True)
    (path / DEEP_FILE).write_text("deep\n")
    (path / "link").symlink_to("README")
    (path / "sub").mkdir()  # an unpopulated submodule, as a checkout leaves it
    g(path, env, "add", "README", "assets", "many", "a", "link")
    g(path, env, "update-index", "--add", "--cacheinfo", f"160000,{FAKE_SUBMODULE_COMMIT},sub")
    g(path, env, "commit", "-q", "-m", "initial")
    g(path, env, "repack", "-adq")  # so both packed and loose objects are counted

    def commit_file(name: str, message: str) -> None:
        (path / name).write_text(f"{name}\n")
        g(path, env, "add", name)
        g(path, env, "commit", "-q", "-m", message)

    g(path, env, "branch", "other")
    g(path, env, "checkout", "-q", "-b", "feature")
    commit_file("feature.txt", "feature")
    g(path, env, "checkout", "-q", "main")
    commit_file("main.txt", LONG_MESSAGE)
    long_commit = g(path, env, "rev-parse", "HEAD").strip()
    g(path, env, "merge", "-q", "--no-ff", "-m", "merge feature", "feature")
    for branch in ("o1", "o2"):
        g(path, env, "checkout", "-q", "-b", branch, "main")
        commit_file(f"{branch}.txt", branch)
    g(path, env, "checkout", "-q", "main")
    g(path, env, "merge", "-q", "--no-ff", "-m", "octopus", "o1", "o2")
    g(path, env, "checkout", "-q", "other")
    commit_file("other.txt", "other")
    g(path, env, "checkout", "-q", "main")
    # An annotated tag, a tag of it, then the inner tag's ref removed: the inner tag object
    # is reachable only through the outer one.
    g(path, env, "tag", "-a", "-m", "v1", "v1")
    g(path, env, "-c", "advice.nestedTag=false", "tag", "-a", "-m", "outer", "v1-outer", "v1")
    g(path, env, "tag", "-d", "v1")
    g(path, env, "tag", "light")
    g(path, env, "update-ref", "refs/remotes/origin/main", "HEAD")
    g(path, env, "update-ref", "refs/other/x", "HEAD")
    return Repo(path, env, long_commit)


@pytest.fixture(scope="module")
def big_repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """~3,000 commits and ~30,000 blobs through fast-import: enough to be mid-stream when a
    short deadline strikes."""
    base = tmp_path_factory.mktemp("sizer-big")
    env = make_env(base / "home")
    path = base / "repo"
    path.mkdir()
    git(path, env, "init", "-q", "-b", "main")
    stream = bytearray()
    for c in range(3000):
        stream += b"commit refs/heads/main\ncommitter t <t@t> 1700000000 +0000\ndata 1\nx\n"
        for f in range(10):
            data = f"commit {c} file {f}\n".encode()
            stream += b"M 100644 inline d%d/f%d\ndata %d\n%s\n" % (c % 50, f, len(data), data)
    git(path, env, "fast-import", "--quiet", stdin=bytes(stream))
    git(path, env, "checkout", "-q", "main")
    return Repo(path, env, "")


@cache
def objects_by_type(path: Path, env_items: tuple[tuple[str, str], ...]) -> dict[str, list[str]]:
    out = git(path, dict(env_items), "cat-file", "--batch-all-objects", "--batch-check")
    by_type: dict[str, list[str]] = {}
    for line in out.splitlines():
        oid, kind, _size = line.split()
        by_type.setdefault(kind, []).append(oid)
    return by_type


def by_type(repo: Repo) -> dict[str, list[str]]:
    return objects_by_type(repo.path, tuple(sorted(repo.env.items())))


def longest_chain(repo: Repo) -> int:
    """Longest parent chain, in commits, by memoised recursion over the whole (small) graph."""
    parents: dict[str, list[str]] = {}
    for line in git(repo.path, repo.env, "rev-list", "--parents", "--all").splitlines():
        commit, *ps = line.split()
        parents[commit] = ps
    depth: dict[str, int] = {}

    def visit(c: str) -> int:
        if c not in depth:
            depth[c] = 1 + max((visit(p) for p in parents[c]), default=0)
        return depth[c]

    return max(map(visit, parents))


def worktree_size(root: Path, paths: list[str]) -> int:
    return sum((root / p).stat().st_size for p in paths)


def git_children(pid: int) -> list[str]:
    """git processes (zombies too) whose parent is ``pid``, described."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and (comm.startswith("git") or cmdline.startswith(b"git")):
            found.append(stat)
    return found


async def test_object_counts_and_sizes(repo: Repo) -> None:
    report = await measure_repository(str(repo.path), env=repo.env)
    types = by_type(repo)
    assert report.commit_count == len(types["commit"]) == 8
    assert report.tree_count == len(types["tree"])
    assert report.blob_count == len(types["blob"])
    assert report.tag_count == len(types["tag"]) == 2
    total = report.commit_count + report.tree_count + report.blob_count + report.tag_count

    # count-objects: loose (count) + packed (in-pack); the repack made both non-zero.
    counted: dict[str, str] = {}
    for line in git(repo.path, repo.env, "count-objects", "-v").splitlines():
        key, _, value = line.partition(": ")
        counted[key] = value
    assert int(counted["count"]) > 0
    assert int(counted["in-pack"]) > 0
    assert total == int(counted["count"]) + int(counted["in-pack"])

    # rev-list --objects --all lists what references reach: commits, trees, blobs and (git
    # 2.39 peels tag chains) both tag objects, the inner one reachable only through the outer.
    # Gitlinks are not followed. Everything here is reachable, so the sets are equal.
    listed = {
        line.split(" ", 1)[0]
        for line in git(repo.path, repo.env, "rev-list", "--objects", "--all").splitlines()
    }
    assert listed == {oid for oids in types.values() for oid in oids}
    assert FAKE_SUBMODULE_COMMIT not in listed

    # Sizes: the sum of cat-file -s (uncompressed) and of objectsize:disk.
    sizes: dict[str, int] = {}
    disk = 0
    check = "%(objecttype) %(objectsize) %(objectsize:disk)"
    for line in git(
        repo.path, repo.env, "cat-file", "--batch-all-objects", f"--batch-check={check}"
    ).splitlines():
        kind, size, on_disk = line.split()
        sizes[kind] = sizes.get(kind, 0) + int(size)
        disk += int(on_disk)
    assert report.commit_size == sizes["commit"]
    assert report.tree_size == sizes["tree"]
    assert report.blob_size == sizes["blob"]
    assert report.disk_size == disk
    assert report.blob_size > 1 << 20

    # Total tree entries: ls-tree of every tree, counted independently.
    entries = sum(
        len(git(repo.path, repo.env, "ls-tree", tree).splitlines()) for tree in types["tree"]
    )
    assert report.tree_entries == entries


async def test_biggest_objects(repo: Repo) -> None:
    report = await measure_repository(str(repo.path), env=repo.env)

    def rev(spec: str) -> str:
        return git(repo.path, repo.env, "rev-parse", spec).strip()

    assert report.max_blob_size == 1 << 20
    assert report.max_blob_size_blob == rev("HEAD:assets/big.bin")
    assert report.max_blob_size_path == "assets/big.bin"

    assert report.max_tree_entries == 500
    assert report.max_tree_entries_tree == rev("HEAD:many")

    assert report.max_parent_count == 3
    assert report.max_parent_count_commit == rev("main")  # the octopus
    assert len(git(repo.path, repo.env, "rev-list", "--merges", "--all").split()) == 2

    assert report.max_commit_size_commit == repo.long_commit
    assert report.max_commit_size == int(
        git(repo.path, repo.env, "cat-file", "-s", repo.long_commit)
    )

    assert report.max_tag_depth == 2
    assert report.max_tag_depth_tag == rev("refs/tags/v1-outer")


async def test_history_depth(repo: Repo) -> None:
    report = await measure_repository(str(repo.path), env=repo.env)
    first_parent = int(git(repo.path, repo.env, "rev-list", "--count", "--first-parent", "main"))
    # initial → main.txt → merge → o1.txt → octopus: 5, longer than main's first-parent chain
    # (initial → main.txt → merge → octopus), which skips the o1/o2 commits.
    assert first_parent == 4
    assert report.max_history_depth == longest_chain(repo) == 5


async def test_references(repo: Repo) -> None:
    report = await measure_repository(str(repo.path), env=repo.env)
    refs = git(repo.path, repo.env, "for-each-ref", "--format=%(refname)").split()
    assert report.reference_count == len(refs) == 9
    assert report.branch_count == 5  # main, feature, o1, o2, other
    assert report.tag_ref_count == 2  # v1-outer, light
    assert report.remote_ref_count == 1
    assert report.other_ref_count == 1


async def test_checkout_of_head(repo: Repo) -> None:
    report = await measure_repository(str(repo.path), env=repo.env)
    staged = git(repo.path, repo.env, "ls-files", "-s", "-z").split("\0")[:-1]
    modes = [line.split(" ", 1)[0] for line in staged]
    paths = [line.split("\t", 1)[1] for line in staged]
    regular = [p for p, m in zip(paths, modes, strict=True) if m in ("100644", "100755")]
    dirs = {str(Path(p).parent) for p in paths} - {"."}
    dirs |= {str(parent) for d in dirs for parent in Path(d).parents} - {"."}

    assert len(paths) == int(
        report.checkout_files + report.checkout_symlinks + report.checkout_submodules
    )
    assert report.checkout_files == len(regular) == 500 + 7
    assert report.checkout_symlinks == modes.count("120000") == 1
    assert report.checkout_submodules == modes.count("160000") == 1
    assert report.checkout_size == worktree_size(repo.path, regular)
    assert report.checkout_directories == len(dirs) + 1 == 8  # + the root, as git-sizer counts
    # git-sizer counts the root tree as a level: a path of n components is n + 1 deep.
    assert report.checkout_path_depth == max(p.count("/") + 2 for p in paths) == 6 + 1
    assert report.checkout_path_length == max(len(p.encode()) for p in paths) == len(DEEP_FILE)
    assert report.checkout_tree == git(repo.path, repo.env, "rev-parse", "HEAD^{tree}").strip()


async def test_levels_stars_json_and_table(repo: Repo) -> None:
    report = await measure_repository(str(repo.path), env=repo.env)
    doc = report.to_json()
    assert json.loads(json.dumps(doc)) == doc
    assert set(SCALES) <= set(doc)
    for name, row in doc.items():
        value = row["value"]
        assert value == getattr(report, name)
        if name in SCALES:
            assert row["scale"] == SCALES[name]
            assert row["level"] == pytest.approx(getattr(report, name) / SCALES[name])
            assert isinstance(row["level"], float)
            assert row["stars"] == "*" * int(row["level"])  # nothing here is above 30
        else:
            assert row["scale"] is None
            assert row["level"] is None
            assert row["stars"] == ""
    assert doc["max_tag_depth"]["stars"] == "*"  # 2 / 1.001
    assert doc["max_tree_entries"]["level"] == 0.5
    assert doc["max_blob_size"]["path"] == "assets/big.bin"
    assert doc["max_parent_count"]["object"] == report.max_parent_count_commit
    assert Metric("x", 31, 1.0).stars == "!" * 30
    assert Metric("x", 30, 1.0).stars == "*" * 30

    text = table(report)
    lines = text.splitlines()
    assert lines[0] == (
        "| Name                         | Value     | Level of concern               |"
    )
    assert all(len(line) == len(lines[0]) for line in lines if line.startswith("|"))
    tag_row = next(line for line in lines if "Maximum tag depth" in line)
    assert tag_row.split("|")[3].strip() == "*"
    blob_row = next(line for line in lines if "Maximum size" in line and "MiB" in line)
    assert "1.00 MiB" in blob_row
    assert f"{report.max_blob_size_blob} (assets/big.bin)" in text
    # Only the rows at or above the threshold remain: here, the tag depth.
    assert [ln for ln in table(report, threshold=1).splitlines() if "* " in ln] == [
        "| * Maximum tag depth      [1] |     2     | *                              |"
    ]


async def test_empty_repository(tmp_path: Path) -> None:
    env = make_env(tmp_path / "home")
    (tmp_path / "empty").mkdir()
    git(tmp_path / "empty", env, "init", "-q")
    report = await measure_repository(str(tmp_path / "empty"), env=env)
    assert report == SizerReport()
    assert "No problems" in table(report, threshold=1)


async def test_not_a_repository_raises_git_error(tmp_path: Path) -> None:
    env = make_env(tmp_path / "home")
    with pytest.raises(GitError):
        await measure_repository(str(tmp_path), env=env)


@pytest.mark.parametrize("fraction", [0.0, 0.3])
async def test_deadline_kills_every_git(big_repo: Repo, fraction: float) -> None:
    """fail_after at once (0.001 s), or after 30% of an uncancelled run: TimeoutError, and
    every git started is gone (killed and reaped, no zombie)."""
    start = time.monotonic()
    full = await measure_repository(str(big_repo.path), env=big_repo.env)
    elapsed = time.monotonic() - start
    assert full.commit_count == 3000
    assert full.blob_count > 25_000
    assert git_children(os.getpid()) == []

    deadline = max(0.001, fraction * elapsed)
    with pytest.raises(TimeoutError), anyio.fail_after(deadline):
        await measure_repository(str(big_repo.path), env=big_repo.env)
    assert git_children(os.getpid()) == []
