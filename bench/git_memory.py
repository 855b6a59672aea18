"""Peak RSS of one ``git clone`` (git and all its children) with and without
``GIT_MEMORY_CONFIG``: ``python -m bench.git_memory [--size-mb 200]``. The repository is made
once (cached): history with many versions of large text files, so that index-pack has deltas
to resolve, plus incompressible blobs."""

from __future__ import annotations

import argparse
import random
import subprocess
import tempfile
import time
from pathlib import Path

from tests.gitservers import isolated_git_env

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
    args = parser.parse_args()
    repo = default_cache_dir() / f"git-memory-{args.size_mb}mb.git"
    make_repo(repo, args.size_mb)
    size = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file()) / 2**20
    print(f"repository: {repo} ({size:.0f} MiB packed)")
    for bounded in (False, True, False, True):
        peak, wall = clone_peak(repo, bounded)
        label = "bounded (GIT_MEMORY_CONFIG)" if bounded else "git defaults"
        print(f"{label:28s} peak RSS {peak:6.0f} MiB, {wall:5.1f} s", flush=True)


if __name__ == "__main__":
    main()
