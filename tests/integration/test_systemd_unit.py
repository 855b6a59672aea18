"""config/systemd/diskaudit.service: systemd accepts it, and its sandbox stays in place.

``systemd-analyze`` comes with Debian's ``systemd`` package. With ``CI`` set its absence fails
the test (.ci/run installs it); elsewhere the verification is skipped, the parsing tests run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diskaudit.settings import Settings

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "config" / "systemd" / "diskaudit.service"
SHIPPED_EXEC = "/usr/bin/diskaudit"
EXEC_START = f"{SHIPPED_EXEC} serve --config /etc/diskaudit/diskaudit.yaml"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """{section: {key: [values in order]}}, as systemd reads it: keys may repeat (most list
    settings accumulate, an empty value resets), ``#``/``;`` start comments, a trailing
    backslash continues a line. configparser would merge repeated keys and lowercase them."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"{line!r} is outside any section"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def last(unit: Unit, key: str, section: str = "Service") -> str:
    """The value systemd uses for a single-valued setting: the last one."""
    values = unit[section].get(key)
    assert values, f"[{section}] {key}= is missing"
    return values[-1]


def bytes_of(size: str) -> int:
    """systemd's memory sizes (384M, 1G, plain bytes); base 1024."""
    m = re.fullmatch(r"(\d+)([KMGT]?)", size)
    assert m, f"not a plain size: {size!r}"
    return int(m[1]) << (10 * "_KMGT".index(m[2] or "_"))


def seconds_of(span: str) -> float:
    """systemd time spans as used here: "20", "20s", "1min 30s"."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "ms": 0.001}
    parts = re.findall(r"(\d+)\s*([a-z]*)", span)
    assert parts, f"not a time span: {span!r}"
    return sum(int(n) * units[u] for n, u in parts)


@pytest.fixture(scope="module")
def unit() -> Unit:
    return parse_unit(UNIT.read_text(encoding="utf-8"))


def systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        message = "systemd-analyze not found (Debian package: systemd)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return exe


def verify(exe: str, unit_file: Path) -> str:
    proc = subprocess.run(
        [exe, "verify", str(unit_file)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""},
        timeout=60,
    )
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 or out, "verify failed without saying why"
    return out


def test_systemd_analyze_verify_reports_nothing(tmp_path: Path) -> None:
    exe = systemd_analyze()
    out = verify(exe, UNIT)
    if out and not Path(SHIPPED_EXEC).exists() and SHIPPED_EXEC in out:
        # verify checks that ExecStart's program exists, and on a development machine diskaudit
        # lives in the virtualenv, not /usr/bin. Verify a copy that differs only in that path
        # (the console script beside this interpreter, as tests/e2e/test_cli.py runs it), so
        # that every other complaint still fails the test. The copy keeps the file name:
        # verify takes the unit's name from it.
        venv_exec = Path(sys.executable).parent / "diskaudit"
        assert venv_exec.exists(), f"{venv_exec} missing: install the package (make install)"
        text = UNIT.read_text(encoding="utf-8")
        assert text.count(f"ExecStart={SHIPPED_EXEC} ") == 1
        copy = tmp_path / UNIT.name
        copy.write_text(text.replace(f"ExecStart={SHIPPED_EXEC} ", f"ExecStart={venv_exec} "))
        out = verify(exe, copy)
    assert out == ""


def test_runs_the_daemon_as_its_own_user_and_restarts_on_failure(unit: Unit) -> None:
    assert last(unit, "ExecStart") == EXEC_START
    assert unit["Service"]["ExecStart"] == [EXEC_START]  # one command, no ExecStart reset tricks
    assert last(unit, "User") == "diskaudit"
    assert last(unit, "Group") == "diskaudit"
    assert "DynamicUser" not in unit["Service"]  # a static user: see the comment in the unit
    assert last(unit, "Restart") == "on-failure"
    assert last(unit, "KillMode") == "mixed"
    assert last(unit, "SyslogIdentifier") == "diskaudit"
    assert last(unit, "WantedBy", "Install") == "multi-user.target"


def test_file_system_is_read_only_but_the_data_dir(unit: Unit) -> None:
    assert last(unit, "ProtectSystem") == "strict"
    assert last(unit, "ProtectHome") == "read-only"
    assert last(unit, "PrivateTmp") == "yes"
    # StateDirectory=diskaudit is /var/lib/diskaudit, the default data-dir: the one place written.
    assert unit["Service"]["StateDirectory"] == ["diskaudit"]
    assert Settings().data_dir == "/var/lib/diskaudit"
    assert unit["Service"].get("ReadWritePaths", []) in ([], ["/var/lib/diskaudit"])
    assert "ReadOnlyPaths" not in unit["Service"]  # an example only: which paths is site-specific


@pytest.mark.parametrize(
    "key",
    [
        "NoNewPrivileges",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "PrivateDevices",
        "RestrictSUIDSGID",
    ],
)
def test_hardening_switch_is_on(unit: Unit, key: str) -> None:
    assert last(unit, key) == "yes"


def test_no_capabilities_and_only_ip_and_unix_sockets(unit: Unit) -> None:
    assert last(unit, "CapabilityBoundingSet") == ""
    assert "AmbientCapabilities" not in unit["Service"]  # CAP_DAC_READ_SEARCH is opt-in
    families = [f for v in unit["Service"]["RestrictAddressFamilies"] for f in v.split()]
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_UNIX"]


def test_resource_limits_fit_a_512_mb_vm(unit: Unit) -> None:
    memory_max = bytes_of(last(unit, "MemoryMax"))
    memory_high = bytes_of(last(unit, "MemoryHigh"))
    assert memory_high < memory_max < 512 * 1024**2
    assert memory_max >= 256 * 1024**2  # two clones and the workers need room
    assert 64 <= int(last(unit, "TasksMax")) <= 4096
    # The daemon evicts slow connections near the soft fd limit; give it room to do so.
    assert last(unit, "LimitNOFILE") == "8192"


def test_systemd_waits_longer_than_the_daemons_own_graceful_stop(unit: Unit) -> None:
    stop = seconds_of(last(unit, "TimeoutStopSec"))
    assert Settings().shutdown_timeout < stop <= Settings().shutdown_timeout + 30


def test_every_setting_says_why() -> None:
    """Each key=value line comes right after a comment line that explains it: one comment per
    setting, none shared with the setting above."""
    lines = UNIT.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines):
        if line and line[0] not in "#;[" and "=" in line:
            assert n > 0, "the file starts with a setting"
            assert lines[n - 1].startswith("#"), f"line {n + 1} has no comment: {line!r}"


def test_parser_reads_repeats_resets_and_continuations() -> None:
    parsed = parse_unit("# c\n[Service]\nA=1\n; c\nA=\nA=2 \\\n  3\n[Install]\nWantedBy=x.target\n")
    assert parsed == {"Service": {"A": ["1", "", "2 3"]}, "Install": {"WantedBy": ["x.target"]}}
    assert bytes_of("384M") == 384 * 1024**2
    assert seconds_of("1min 30s") == 90
