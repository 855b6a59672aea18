"""Running ``diskaudit serve`` as a subprocess for tests: free port, readiness, clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """GET ``path``; (status, body). HTTPS is not verified (tests use throwaway certs)."""
        import ssl

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())

    def metrics(self) -> str:
        status, body = self.get("/metrics")
        assert status == 200, body
        return body.decode()

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log_text()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready within {timeout_s}s:\n{self.log_text()}")

    def wait_for_scan_after(self, t: float, timeout_s: float = 30.0) -> None:
        """Wait until every root's last successful scan ended after unix time ``t``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stamps = [
                float(line.rsplit(" ", 1)[1])
                for line in self.metrics().splitlines()
                if line.startswith("diskaudit_scan_last_success_timestamp_seconds{")
            ]
            if stamps and min(stamps) > t:
                return
            time.sleep(0.05)
        raise AssertionError("no scan finished in time")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout_s)


@contextmanager
def running_daemon(
    tmp_path: Path, settings: dict[str, Any], *, wait_ready: bool = True
) -> Iterator[Daemon]:
    """Start ``diskaudit serve`` with ``settings`` (dashed keys) on a free loopback port."""
    port = free_port()
    config = tmp_path / f"daemon-{port}.yaml"
    defaults = {"bind-address": f"127.0.0.1:{port}", "data-dir": str(tmp_path / "data")}
    config.write_text(yaml.safe_dump({**defaults, **settings}))
    log = tmp_path / f"daemon-{port}.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "diskaudit", "serve", "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    scheme = "https" if settings.get("web-config-file") and _has_tls(settings) else "http"
    daemon = Daemon(proc, port, log, scheme)
    try:
        if wait_ready:
            daemon.wait_ready()
        yield daemon
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _has_tls(settings: dict[str, Any]) -> bool:
    doc = yaml.safe_load(Path(settings["web-config-file"]).read_text())
    return bool((doc or {}).get("tls_server_config"))
