"""Peak RSS of one ``git clone`` (git and all its children) with and without
``GIT_MEMORY_CONFIG``: ``python -m bench.git_memory [--size-mb 200] [--kind rewrites|chains]``.

``rewrites`` (the first measurement of ADR 0012): 40 commits rewriting 20 text files plus
incompressible blobs, cloned over ``file://`` with ``--no-local`` (the sending upload-pack is
in the measured tree). ``chains``: a few large text files, each edited in a few lines by
many consecutive commits, written with ``git fast-import`` so every version is a delta on the
previous one (chains up to fast-import's depth of 50): index-pack must rebuild every version,
which is what its delta base cache is for. Cloned over smart HTTP from a server in this process
(``tests.gitservers.http_git_server``), so the server is outside the measured tree.
Repositories are made once (cached)."""

from __future__ import annotations

import argparse
import random
import subprocess
import tempfile
import time
from pathlib import Path

from tests.gitservers import http_git_server, isolated_git_env

from bench.scan_bench import ProcessTreeSampler
from bench.treegen import default_cache_dir
from diskaudit.audit.gitproc import GIT_MEMORY_CONFIG, config_env


def make_repo(path: Path, size_mb: int) -> None:
    if (path / "HEAD").exists():
        return
    work = path.with_suffix(".work")
    env = isolated_git_env(path.parent / "home")
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True, env=env)
    rng = random.Random(1)
    words = [f"w{i}" for i in range(5000)]
    files = 20
    per_commit = max(1, size_mb // 40)
    for commit in range(40):  # 40 commits, each rewriting part of every text file
        for f in range(files):
            text = " ".join(rng.choice(words) for _ in range(40_000 * per_commit // 4))
            (work / f"t{f}.txt").write_text(text)
        (work / f"bin{commit}.dat").write_bytes(rng.randbytes(256 * 1024 * per_commit))
        subprocess.run(["git", "-C", str(work), "add", "-A"], check=True, env=env)
        subprocess.run(
            [
                "git",
                "-C",
                str(work),
                "-c",
                "user.name=b",
                "-c",
                "user.email=b@b",
                "commit",
                "-qm",
                f"c{commit}",
            ],
            check=True,
            env=env,
        )
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(path)], check=True, env=env)
    subprocess.run(["git", "-C", str(path), "gc", "-q", "--aggressive"], check=True, env=env)


def make_chains_repo(path: Path, files: int, file_mb: int, commits: int) -> None:
    """Large text files edited a few lines at a time; consecutive commits edit the same file,
    so fast-import stores each version as a delta on the one before."""
    if (path / "HEAD").exists():
        return
    env = isolated_git_env(path.parent / "home")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True, env=env)
    rng = random.Random(2)
    words = [f"w{i}" for i in range(5000)]
    n_lines = file_mb * 1024 * 1024 // 80
    contents = [
        [" ".join(rng.choice(words) for _ in range(14)) for _ in range(n_lines)]
        for _ in range(files)
    ]
    proc = subprocess.Popen(
        ["git", "--git-dir", str(path), "fast-import", "--quiet", "--depth=50"],
        stdin=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None
    per_file = max(1, commits // files)
    for c in range(commits):
        f = min(files - 1, c // per_file)
        lines = contents[f]
        for _ in range(20):  # a few small edits
            lines[rng.randrange(n_lines)] = " ".join(rng.choice(words) for _ in range(14))
        changed = [f] if c >= files else list(range(files))  # first commits add every file
        out = [f"commit refs/heads/main\ncommitter b <b@b> {1_600_000_000 + c} +0000\n"]
        out.append(f"data {len(f'c{c}')}\nc{c}\n")
        head = "".join(out).encode()
        proc.stdin.write(head)
        for g in changed:
            blob = ("\n".join(contents[g]) + "\n").encode()
            proc.stdin.write(f"M 100644 inline t{g}.txt\ndata {len(blob)}\n".encode())
            proc.stdin.write(blob + b"\n")
        proc.stdin.write(b"\n")
    proc.stdin.close()
    assert proc.wait() == 0
    subprocess.run(["git", "--git-dir", str(path), "repack", "-a", "-d", "-q"], check=True, env=env)


def variant_config(spec: str) -> dict[str, str]:
    """``defaults`` (none), ``bounded`` (GIT_MEMORY_CONFIG), ``bounded+k=v,...`` (overridden) or
    ``k=v,...`` alone: to tell which setting buys the memory and which costs the time."""
    if spec == "defaults":
        return {}
    base: dict[str, str] = {}
    if spec.startswith("bounded"):
        base = dict(GIT_MEMORY_CONFIG)
        spec = spec.removeprefix("bounded").removeprefix("+")
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        base[key] = value
    return base


def clone_peak_http(url: str, config: dict[str, str]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = isolated_git_env(tmp)
        if config:
            env.update(config_env(config))
        t0 = time.monotonic()
        proc = subprocess.Popen(["git", "clone", "-q", url, f"{tmp}/c"], env=env)
        sampler = ProcessTreeSampler(proc.pid, 0.005)
        sampler.start()
        proc.wait()
        sampler.stop()
        assert proc.returncode == 0
        return sampler.peak_kib / 1024, time.monotonic() - t0


def clone_peak(repo: Path, bounded: bool) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = isolated_git_env(tmp)
        if bounded:
            env.update(config_env(GIT_MEMORY_CONFIG))
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [
                "git",
                "-c",
                "protocol.file.allow=always",
                "clone",
                "-q",
                "--no-local",
                f"file://{repo}",
                f"{tmp}/c",
            ],
            env=env,
        )
        sampler = ProcessTreeSampler(proc.pid, 0.005)
        sampler.start()
        proc.wait()
        sampler.stop()
        assert proc.returncode == 0
        return sampler.peak_kib / 1024, time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--kind", choices=["rewrites", "chains"], default="rewrites")
    parser.add_argument("--files", type=int, default=4, help="chains: large files")
    parser.add_argument("--file-mb", type=int, default=8, help="chains: size of each")
    parser.add_argument("--commits", type=int, default=200, help="chains: commits")
    parser.add_argument(
        "--variants",
        default="defaults;bounded;defaults;bounded",
        help="chains: ';'-separated: defaults, bounded, bounded+k=v,..., k=v,...",
    )
    args = parser.parse_args()
    if args.kind == "rewrites":
        repo = default_cache_dir() / f"git-memory-{args.size_mb}mb.git"
        make_repo(repo, args.size_mb)
    else:
        name = f"git-memory-chains-{args.files}x{args.file_mb}mb-{args.commits}c.git"
        repo = default_cache_dir() / name
        make_chains_repo(repo, args.files, args.file_mb, args.commits)
    size = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file()) / 2**20
    print(f"repository: {repo} ({size:.0f} MiB packed)")
    if args.kind == "rewrites":
        for bounded in (False, True, False, True):
            peak, wall = clone_peak(repo, bounded)
            label = "bounded (GIT_MEMORY_CONFIG)" if bounded else "git defaults"
            print(f"{label:28s} peak RSS {peak:6.0f} MiB, {wall:5.1f} s", flush=True)
        return
    with http_git_server(repo.parent) as server:
        for spec in args.variants.split(";"):
            peak, wall = clone_peak_http(server.url + repo.name, variant_config(spec))
            print(f"{spec:50s} peak RSS {peak:6.0f} MiB, {wall:5.1f} s", flush=True)


if __name__ == "__main__":
    main()
