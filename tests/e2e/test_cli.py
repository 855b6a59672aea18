"""The installed ``diskaudit`` command, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import diskaudit

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = REPO / "config" / "diskaudit.yaml"


def diskaudit_cmd() -> str:
    """The console script installed beside this interpreter (the virtualenv's bin/)."""
    exe = Path(sys.executable).parent / "diskaudit"
    if not exe.exists():
        pytest.fail(f"the diskaudit console script is not installed at {exe} (make install)")
    return str(exe)


def run(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [diskaudit_cmd(), *args], capture_output=True, text=True, check=False, **kw
    )


def test_version_and_help() -> None:
    assert run("--version").stdout.strip() == f"diskaudit {diskaudit.__version__}"
    helptext = run("--help").stdout
    assert "scan" in helptext
    assert "check-config" in helptext
    assert "--format" in run("scan", "--help").stdout


def test_check_config_prints_the_effective_settings_with_dashed_keys() -> None:
    proc = run("check-config", "--config", str(SHIPPED_CONFIG), "--max-procs", "3")
    assert proc.returncode == 0, proc.stderr
    assert "max-procs: 3" in proc.stdout
    assert "chunk-size: 1000" in proc.stdout


def test_scan_of_the_shipped_config_roots_as_json(tmp_path: Path) -> None:
    """What `make run` does today, in JSON: the exact shape the issue fixes."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f").write_bytes(b"x" * 5000)
    config = tmp_path / "c.yaml"
    config.write_text(f"analyzed-path: {tmp_path}\ndir-level: 1\n")
    proc = run("scan", "--config", str(config), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    [root] = doc["roots"]
    assert {"path", "dir_level", "errors", "entries"} <= root.keys()
    assert root["path"] == str(tmp_path)
    sub = next(e for e in root["entries"] if e["path"] == str(tmp_path / "sub"))
    assert sub == {
        "path": str(tmp_path / "sub"),
        "level": 1,
        "disk_bytes": sub["disk_bytes"],
        "apparent_bytes": 5000 + (tmp_path / "sub").stat().st_size,
        "files": 1,
        "dirs": 0,
    }
    assert sub["disk_bytes"] > 0


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"analyzed-path: {tmp_path}\ndir-level: 1\n")
    env = {"PATH": "/usr/bin:/bin", "DISKAUDIT_DIR_LEVEL": "0"}
    proc = run("scan", "--config", str(config), "--format", "json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["roots"][0]["dir_level"] == 0


def test_bad_config_names_key_value_and_file_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("max-procs: many\n")
    proc = run("scan", "--config", str(config))
    assert proc.returncode == 2
    assert "max-procs" in proc.stderr
    assert "many" in proc.stderr
    assert str(config) in proc.stderr
    assert proc.stdout == ""  # nothing started


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    proc = run("check-config", "--config", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert "nope.yaml" in proc.stderr


def test_audit_of_a_local_repository_as_json_and_table(tmp_path: Path) -> None:
    src = tmp_path / "src"
    subprocess.run(["git", "init", "-q", "-b", "main", str(src)], check=True)
    (src / "a.txt").write_text("hello\n")
    git = ["git", "-C", str(src), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    config = tmp_path / "c.yaml"
    config.write_text(f"data-dir: {tmp_path / 'data'}\nallow-local-urls: true\n")
    proc = run("audit", "--config", str(config), "--format", "json", f"file://{src}")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["sizer"]["commit_count"]["value"] == 1
    assert doc["disk"]["worktree_files"] == 1
    assert doc["ref"] is None
    table = run("audit", "--config", str(config), "--ref", "main", f"file://{src}")
    assert table.returncode == 0, table.stderr
    assert "Level of concern" in table.stdout
    assert list((tmp_path / "data" / "clones").iterdir()) == []


def test_audit_refuses_a_hostile_url_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"data-dir: {tmp_path / 'data'}\n")
    proc = run("audit", "--config", str(config), "ext::sh -c touch% /tmp/pwned")
    assert proc.returncode == 2
    assert "refused" in proc.stderr
    local = run("audit", "--config", str(config), str(tmp_path))
    assert local.returncode == 2
    assert "local paths are not allowed" in local.stderr
