"""``diskaudit serve`` as a subprocess on 127.0.0.1, scanning real trees."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import bcrypt
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import diskaudit
from diskaudit.render import display_path
from tests.daemon import Daemon, running_daemon
from tests.trees import build_awkward_tree, du

SHUTDOWN_TIMEOUT = 5.0


# Helpers


def series(text: str, name: str) -> dict[str, float]:
    """{path label: value} of one family of an exposition."""
    [family] = [f for f in text_string_to_metric_families(text) if f.name == name]
    return {s.labels["path"]: s.value for s in family.samples}


def levels(text: str, name: str) -> dict[str, str]:
    [family] = [f for f in text_string_to_metric_families(text) if f.name == name]
    return {s.labels["path"]: s.labels["level"] for s in family.samples}


def gauge(text: str, name: str) -> float:
    [family] = [f for f in text_string_to_metric_families(text) if f.name == name]
    [sample] = family.samples
    return sample.value


def wait_for_fresh_scan(d: Daemon) -> None:
    """Wait for a scan that *started* after now: the first scan ending after now may have been
    under way already, and seen the tree as it was."""
    d.wait_for_scan_after(time.time())
    d.wait_for_scan_after(time.time())


def worker_pids(parent: int) -> set[int]:
    """Live scan worker processes whose parent is ``parent``."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and is_worker(int(entry), parent):
            pids.add(int(entry))
    return pids


def is_worker(pid: int, parent: int | None = None) -> bool:
    """``pid`` is a live (not zombie) scan worker (of ``parent``, if given)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/stat") as f:
            state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
    except OSError:
        return False
    if b"diskaudit.scan.worker" not in cmdline or state == "Z":
        return False
    return parent is None or int(ppid) == parent


def still_alive(pids: set[int], within_s: float = 0.0) -> set[int]:
    deadline = time.monotonic() + within_s
    while True:
        alive = {p for p in pids if is_worker(p)}
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def wait_until_scanning(d: Daemon, timeout_s: float = 20.0) -> set[int]:
    """Wait until the pool reports a busy worker; return the daemon's worker pids."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert d.proc.poll() is None, d.log_text()
        try:
            text = d.metrics()
        except OSError:
            time.sleep(0.05)
            continue
        pids = worker_pids(d.proc.pid)
        if gauge(text, "diskaudit_scan_workers_busy") >= 1 and pids:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"no scan under way:\n{d.log_text()}")


def wait_for_log(d: Daemon, needle: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while needle not in d.log_text():
        assert time.monotonic() < deadline, d.log_text()
        time.sleep(0.001)


def request(url: str, headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), resp.headers, bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.headers, bytes(exc.read())


def wait_serving(d: Daemon, timeout_s: float = 20.0) -> None:
    """Wait until the daemon answers HTTP at all (whatever the status)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert d.proc.poll() is None, d.log_text()
        try:
            request(d.url + "/healthz")
        except OSError:
            time.sleep(0.05)
        else:
            return
    raise AssertionError(f"not serving within {timeout_s}s:\n{d.log_text()}")


def serve(config: Path, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "diskaudit", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


# Fixtures


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """50,000 empty files. Scanned with chunk-size 1 under an io-budget, that takes 10 s or more
    on any machine. (150,000 took 1 to 19 s to create here on a busy disk: not worth it.)"""
    root = tmp_path_factory.mktemp("big")
    for i in range(50):
        d = f"{root}/d{i:03}/inner"
        os.makedirs(d)
        for j in range(1000):
            os.mknod(f"{d}/f{j}")
    yield root
    shutil.rmtree(root)  # pytest keeps the last three runs' temporary directories


def big_scan_settings(root: Path) -> dict[str, object]:
    return {
        "analyzed-path": str(root),
        "dir-level": 2,
        "max-procs": 2,
        "chunk-size": 1,
        "io-budget": 5000,  # entries per second: >= 10 s for the whole tree
        "scan-interval": "1h",
        "shutdown-timeout": f"{SHUTDOWN_TIMEOUT}s",
    }


# 1. Values


def test_scraped_values_equal_du(tmp_path: Path) -> None:
    root = build_awkward_tree(tmp_path / "tree")
    with running_daemon(
        tmp_path, {"analyzed-path": str(root), "dir-level": 2, "scan-interval": "1h"}
    ) as d:
        status, body = d.get("/metrics")
    assert status == 200, body
    text = body.decode("utf-8")  # the exposition format is UTF-8, nothing else
    disk = series(text, "diskaudit_disk_usage_bytes")
    apparent = series(text, "diskaudit_apparent_size_bytes")
    # A name that is not UTF-8 is shown with \xNN escapes for its undecodable bytes.
    assert disk == {display_path(p): v for p, v in du(root, depth=2, apparent=False).items()}
    assert apparent == {display_path(p): v for p, v in du(root, depth=2, apparent=True).items()}
    assert f"{root}/caf\\xe9-latin1" in disk
    # Labels are escaped in the exposition and come back exactly.
    assert str(root / "with\nnewline") in disk
    for path, level in levels(text, "diskaudit_disk_usage_bytes").items():
        assert int(level) == len(Path(path).relative_to(root).parts), path
    assert gauge(text, "diskaudit_scan_success") == 1.0


# 2. No stale series


def test_deleted_directories_disappear_and_new_ones_appear(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for sub in ("a/x", "a/keep", "b/y"):
        (root / sub).mkdir(parents=True)
        (root / sub / "f").write_bytes(b"x" * 5000)
    with running_daemon(
        tmp_path, {"analyzed-path": str(root), "dir-level": 2, "scan-interval": "250ms"}
    ) as d:
        before = series(d.metrics(), "diskaudit_disk_usage_bytes")
        assert {str(root / p) for p in ("a/x", "b", "b/y")} <= before.keys()

        shutil.rmtree(root / "a" / "x")
        shutil.rmtree(root / "b")
        wait_for_fresh_scan(d)
        text = d.metrics()
        for name in ("diskaudit_disk_usage_bytes", "diskaudit_apparent_size_bytes"):
            assert series(text, name).keys() == {str(root), str(root / "a"), str(root / "a/keep")}
        assert "/b/y" not in text

        (root / "c" / "z").mkdir(parents=True)
        (root / "c" / "z" / "f").write_bytes(b"y" * 9000)
        wait_for_fresh_scan(d)
        text = d.metrics()
        assert series(text, "diskaudit_disk_usage_bytes") == du(root, depth=2, apparent=False)
        assert levels(text, "diskaudit_disk_usage_bytes")[str(root / "c" / "z")] == "2"
        assert d.stop() == 0


# 3. Signals


@pytest.mark.slow
def test_sigterm_during_a_scan_stops_everything(tmp_path: Path, big_tree: Path) -> None:
    with running_daemon(tmp_path, big_scan_settings(big_tree), wait_ready=False) as d:
        workers = wait_until_scanning(d)
        assert d.get("/readyz")[0] == 503  # the scan is really still under way
        started = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        code = d.proc.wait(timeout=SHUTDOWN_TIMEOUT + 5)
        elapsed = time.monotonic() - started
        assert code == 0, d.log_text()
        assert elapsed < SHUTDOWN_TIMEOUT, d.log_text()
        assert still_alive(workers) == set(), d.log_text()
        log = d.log_text()
        assert "SIGTERM: stopping" in log
        assert "stopped" in log
        assert "Traceback" not in log
        assert "shutdown-timeout" not in log  # it was graceful, not cut short


@pytest.mark.slow
def test_a_second_sigterm_exits_at_once(tmp_path: Path, big_tree: Path) -> None:
    with running_daemon(tmp_path, big_scan_settings(big_tree), wait_ready=False) as d:
        workers = wait_until_scanning(d)
        d.proc.send_signal(signal.SIGTERM)
        # Once the first is handled (not before: two signals sent back to back can merge into
        # one), and before the graceful stop (at least uvicorn's 0.1 s tick) is over.
        wait_for_log(d, "SIGTERM: stopping")
        d.proc.send_signal(signal.SIGTERM)
        code = d.proc.wait(timeout=SHUTDOWN_TIMEOUT)
        assert code == 130, d.log_text()
        assert "second signal: exiting at once" in d.log_text()
        assert still_alive(workers, within_s=2.0) == set()


# 4. Basic auth


def test_basic_auth(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"right horse", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": hashed}}))
    settings = {"analyzed-path": str(tmp_path), "dir-level": 0, "web-config-file": str(web)}

    def auth(user: str, password: str) -> dict[str, str]:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    with running_daemon(tmp_path, settings, wait_ready=False) as d:
        wait_serving(d)
        for headers in ({}, auth("prometheus", "wrong"), auth("nobody", "right horse")):
            status, response_headers, _ = request(d.url + "/metrics", headers)
            assert status == 401, headers
            assert response_headers["WWW-Authenticate"] == 'Basic realm="diskaudit"'
        status, _, body = request(d.url + "/metrics", auth("prometheus", "right horse"))
        assert status == 200
        assert b"diskaudit_scan_workers " in body
        assert d.stop() == 0


# 5. TLS


def test_tls(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        if os.environ.get("CI"):
            pytest.fail("openssl is needed for the TLS test and CI is set")
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    web = tmp_path / "web.yml"
    web.write_text(
        yaml.safe_dump({"tls_server_config": {"cert_file": str(cert), "key_file": str(key)}})
    )
    settings = {"analyzed-path": str(tmp_path), "dir-level": 0, "web-config-file": str(web)}
    with running_daemon(tmp_path, settings) as d:
        assert d.scheme == "https"
        assert d.get("/healthz") == (200, b"ok\n")
        served = ssl.get_server_certificate(("127.0.0.1", d.port), timeout=10)
        assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(cert.read_text())
        plain = Daemon(d.proc, d.port, d.log, scheme="http")
        with pytest.raises((OSError, http.client.HTTPException)):
            plain.get("/healthz")
        assert d.get("/healthz")[0] == 200  # the failed plain request did no harm
        assert d.stop() == 0


# 6. /readyz, /version, /


def test_readyz_version_and_index(tmp_path: Path) -> None:
    root = tmp_path / 'x<b>&"y'
    root.mkdir()
    for i in range(400):
        (root / f"f{i}").touch()
    settings = {
        "analyzed-path": str(root),
        "dir-level": 1,
        "max-procs": 1,
        "chunk-size": 50,
        "io-budget": 200,  # ~2 s for the first scan
        "scan-interval": "1h",
    }
    with running_daemon(tmp_path, settings, wait_ready=False) as d:
        wait_serving(d)
        status, body = d.get("/readyz")
        assert status == 503, body
        assert str(root) in body.decode()
        assert d.get("/healthz")[0] == 200  # alive while not ready
        d.wait_ready()
        assert d.get("/readyz") == (200, b"ready\n")

        status, body = d.get("/version")
        assert status == 200
        assert json.loads(body)["version"] == diskaudit.__version__

        status, body = d.get("/")
        page = body.decode()
        assert status == 200
        assert page.startswith("<!doctype html>")
        assert "x&lt;b&gt;&amp;&quot;y" in page
        assert "<b>" not in page
        assert d.get("/nope")[0] == 404
        assert d.stop() == 0


# 7. Errors and file mode


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = tmp_path / "c.yaml"
        config.write_text(
            yaml.safe_dump({"analyzed-path": str(tmp_path), "bind-address": f"127.0.0.1:{port}"})
        )
        started = time.monotonic()
        proc = serve(config)
    assert proc.returncode == 1, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("web_config", "key"),
    [
        ({"http_server_config": {"http2": False}}, "http_server_config"),
        ({"tls_server_config": {"min_version": "TLS13"}}, "tls_server_config.min_version"),
        ({"basic_auth_users": {"alice": "plaintext"}}, "basic_auth_users.alice"),
    ],
)
def test_bad_web_config_is_a_usage_error(
    tmp_path: Path, web_config: dict[str, object], key: str
) -> None:
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump(web_config))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"analyzed-path": str(tmp_path), "web-config-file": str(web)}))
    proc = serve(config)
    assert proc.returncode == 2, proc.stderr
    assert f"{web}: {key}:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_file_mode_writes_after_the_first_round(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f").write_bytes(b"z" * 12345)
    output = tmp_path / "out" / "disk.prom"
    output.parent.mkdir()
    settings = {
        "analyzed-path": str(root),
        "dir-level": 1,
        "mode": "file",
        "output-file": str(output),
        "scan-interval": "1h",
    }
    with running_daemon(tmp_path, settings, wait_ready=False) as d:
        deadline = time.monotonic() + 20
        while not output.exists():
            assert d.proc.poll() is None, d.log_text()
            assert time.monotonic() < deadline, d.log_text()
            time.sleep(0.05)
        text = output.read_text()
        assert series(text, "diskaudit_disk_usage_bytes") == du(root, depth=1, apparent=False)
        assert gauge(text, "diskaudit_scan_success") == 1.0
        assert d.stop() == 0, d.log_text()
    assert [p.name for p in output.parent.iterdir()] == ["disk.prom"]  # no temporary left
