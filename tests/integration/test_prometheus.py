"""diskaudit against the real Prometheus tools: promtool, a Prometheus server, node_exporter.

Everything listens on 127.0.0.1 with free ports and is stopped (process group) at the end of its
test. The binaries come from the Debian packages ``prometheus`` (prometheus, promtool) and
``prometheus-node-exporter``; ``.ci/run`` installs them. Without them a test is skipped, unless
``CI`` is set: then it fails, so that CI cannot pass by skipping.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.daemon import Daemon, free_port, running_daemon
from tests.trees import NON_UTF8, build_awkward_tree, du

DISKAUDIT = [sys.executable, "-m", "diskaudit"]
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
DISK = "diskaudit_disk_usage_bytes"

#: Labels as a hashable key, e.g. (("level", "1"), ("path", "/x")).
LabelKey = tuple[tuple[str, str], ...]


# Binaries.


def require(binary: str) -> str:
    """The path of ``binary``; skip without it, or fail when the CI variable is set."""
    path = shutil.which(binary)
    if path is not None:
        return path
    hint = "Debian packages prometheus (prometheus, promtool) and prometheus-node-exporter"
    if "CI" in os.environ:
        pytest.fail(
            f"{binary} is not installed but CI is set: install the {hint} (.ci/run does)",
            pytrace=False,
        )
    pytest.skip(f"{binary} is not installed ({hint})")


# Processes and HTTP.


@contextmanager
def background(cmd: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in its own process group; on exit stop the whole group (TERM, then KILL)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    # The leader if it ignored SIGTERM, and anything it left behind in its group.
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def http_get(
    url: str, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET ``url``: (status, headers with lower-case names, raw body, not decoded)."""
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), _lower(resp.headers.items()), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), _lower(exc.headers.items()), bytes(exc.read())


def _lower(items: list[tuple[str, str]]) -> dict[str, str]:
    return {k.lower(): v for k, v in items}


def wait_http_ok(url: str, proc: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    """Poll ``url`` until it answers 200; fail if ``proc`` exits or ``deadline`` passes."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args!r} exited {proc.returncode}:\n{tail(log)}")
        try:
            if http_get(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} not answering 200 in time:\n{tail(log)}")


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def daemon(tmp_path: Path, settings: dict[str, Any]) -> Iterator[Daemon]:
    """``running_daemon`` (ready: every root scanned once), stopped gracefully at the end so
    that its scan worker processes end with it."""
    with running_daemon(tmp_path, settings) as d:
        try:
            yield d
        finally:
            d.stop()


def scrape(d: Daemon, headers: Mapping[str, str] | None = None) -> bytes:
    status, _, body = http_get(d.url + "/metrics", headers)
    if status != 200:
        d.stop()  # the log is complete (the server's traceback included) once it has exited
        pytest.fail(f"/metrics answered {status} {body[:200]!r}; daemon log:\n{tail(d.log, 12)}")
    return body


# Exposition parsing.


def samples(text: str, name: str) -> dict[LabelKey, float]:
    """The samples called ``name`` in a text-format exposition, by their labels."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in parse_text(text)
        for s in family.samples
        if s.name == name
    }


def key(**labels: str) -> LabelKey:
    return tuple(sorted(labels.items()))


# diskaudit textfile.


def run_textfile(config: Path, output: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DISKAUDIT, "textfile", "--config", str(config), "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_config(path: Path, settings: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(settings))
    return path


# Label values.


def label_of(path: str) -> str:
    """A path as diskaudit writes it in a label (docs/metrics.md): as is when it is UTF-8, else
    with ``\\xNN`` for each byte that is not."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


# 1. promtool.

TOP_FILES = 1000  # every file of the awkward tree


def every_family(root: Path) -> dict[str, Any]:
    """Settings under which the root exports every family: size buckets and largest files too
    (all of the awkward tree's files, so names with quotes, backslashes, newlines are labels)."""
    return {
        "analyzed-path": str(root),
        "dir-level": 2,
        "size-buckets": [str(root)],
        "top-files": {str(root): TOP_FILES},
    }


@pytest.mark.timeout(60)
@pytest.mark.parametrize("compat", ["none", "dundee"])
def test_promtool_accepts_the_live_exposition(tmp_path: Path, compat: str) -> None:
    promtool = require("promtool")
    root = build_awkward_tree(tmp_path / "tree")
    settings = {**every_family(root), "scan-interval": "1h", "metrics-compat": compat}
    with daemon(tmp_path, settings) as d:
        body = scrape(d)
    text = body.decode()
    assert samples(text, "diskaudit_scan_success") == {key(root=str(root)): 1.0}
    assert ("\nnode_disk_usage_bytes{" in text) == (compat == "dundee")
    assert samples(text, "diskaudit_files_by_size")
    largest = {dict(labels)["path"] for labels in samples(text, "diskaudit_largest_file_bytes")}
    assert str(root / "with\nnewline" / 'q"uote\\') in largest
    check = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False
    )
    report = (check.stdout + check.stderr).decode(errors="replace")
    assert (check.returncode, report) == (0, ""), report


@pytest.mark.timeout(60)
def test_promtool_accepts_the_textfile(tmp_path: Path) -> None:
    promtool = require("promtool")
    root = build_awkward_tree(tmp_path / "tree")
    config = write_config(tmp_path / "diskaudit.yaml", every_family(root))
    output = tmp_path / "out" / "diskaudit.prom"
    output.parent.mkdir()
    done = run_textfile(config, output)
    assert done.returncode == 0, done.stderr[-2000:]
    check = subprocess.run(
        [promtool, "check", "metrics"],
        input=output.read_bytes(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    report = (check.stdout + check.stderr).decode(errors="replace")
    assert (check.returncode, report) == (0, ""), report


# 2. A Prometheus server scraping the daemon.


def prom_query(base: str, query: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    status, _, body = http_get(url)
    doc = json.loads(body)
    assert status == 200, doc
    assert doc["status"] == "success", doc
    assert doc["data"]["resultType"] == "vector", doc
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


def promql_string(value: str) -> str:
    """A PromQL string literal (Go escapes; JSON's are a subset for these characters)."""
    return json.dumps(value, ensure_ascii=False)


@pytest.mark.timeout(90)
def test_prometheus_scrapes_the_daemon_and_answers_promql(tmp_path: Path) -> None:
    prometheus = require("prometheus")
    root = build_awkward_tree(tmp_path / "tree")
    expected = du(root, depth=1, apparent=False)
    level1 = {label_of(p): v for p, v in expected.items() if p != str(root)}
    assert label_of(str(root / os.fsdecode(NON_UTF8))) in level1  # labelled with \xNN escapes
    target = str(root / "a0")
    assert target in level1

    with daemon(tmp_path, {"analyzed-path": str(root), "dir-level": 2, "scan-interval": "1s"}) as d:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                    "scrape_configs": [
                        {
                            "job_name": "diskaudit",
                            "static_configs": [{"targets": [f"127.0.0.1:{d.port}"]}],
                        }
                    ],
                }
            )
        )
        log = tmp_path / "prometheus.log"
        cmd = [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        with background(cmd, log) as proc:
            wait_http_ok(base + "/-/ready", proc, log, deadline)
            query = f"{DISK}{{path={promql_string(target)}}}"
            while not (result := prom_query(base, query)):
                if time.monotonic() > deadline:
                    up = prom_query(base, "up")
                    pytest.fail(f"no sample for {query} within 60s; up: {up}\n{tail(log)}")
                time.sleep(0.2)
            assert len(result) == 1, result
            metric = result[0]["metric"]
            assert metric["job"] == "diskaudit"
            assert metric["instance"] == f"127.0.0.1:{d.port}"
            assert metric["level"] == "1"
            assert int(float(result[0]["value"][1])) == expected[target]

            # Every level-1 directory, those with a newline and with invalid UTF-8 included.
            everything = prom_query(base, f'{DISK}{{job="diskaudit",level="1"}}')
            got = {r["metric"]["path"]: int(float(r["value"][1])) for r in everything}
            assert got == level1
        assert proc.returncode is not None


# 3. node_exporter's textfile collector.


@pytest.mark.timeout(60)
def test_node_exporter_reexports_the_textfile(tmp_path: Path) -> None:
    exporter = require("prometheus-node-exporter")
    root = build_awkward_tree(tmp_path / "tree")
    collector_dir = tmp_path / "textfile"
    collector_dir.mkdir()
    output = collector_dir / "diskaudit.prom"
    config = write_config(tmp_path / "diskaudit.yaml", {"analyzed-path": str(root), "dir-level": 2})
    done = run_textfile(config, output)
    assert done.returncode == 0, done.stderr
    written = samples(output.read_text(), DISK)

    port = free_port()
    log = tmp_path / "node-exporter.log"
    cmd = [
        exporter,
        "--collector.disable-defaults",
        "--collector.textfile",
        f"--collector.textfile.directory={collector_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    url = f"http://127.0.0.1:{port}/metrics"
    with background(cmd, log) as proc:
        wait_http_ok(url, proc, log, time.monotonic() + 30)
        status, _, body = http_get(url)
    assert status == 200
    text = body.decode()
    assert samples(text, "node_textfile_scrape_error") == {(): 0.0}, tail(log)
    reexported = samples(text, DISK)
    assert (
        reexported[key(level="0", path=str(root))] == du(root, depth=0, apparent=False)[str(root)]
    )
    assert reexported == written


# 4. textfile: atomic, and a failed root leaves the previous file alone.


@pytest.mark.timeout(60)
@pytest.mark.parametrize("roots", ["missing-only", "one-of-two-missing"])
def test_textfile_failure_keeps_the_previous_file(tmp_path: Path, roots: str) -> None:
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "f").write_bytes(b"x" * 5000)
    missing = tmp_path / "does-not-exist"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "diskaudit.prom"

    good = write_config(tmp_path / "good.yaml", {"analyzed-path": str(tree), "dir-level": 1})
    first = run_textfile(good, output)
    assert first.returncode == 0, first.stderr
    assert os.listdir(out_dir) == [output.name]
    before = output.read_bytes()
    assert f'{DISK}{{level="0",path="{tree}"}}'.encode() in before
    stat_before = output.stat()

    multi = {str(missing): 1} if roots == "missing-only" else {str(tree): 1, str(missing): 1}
    bad = write_config(tmp_path / "bad.yaml", {"multi-paths": multi})
    failed = run_textfile(bad, output)
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    assert str(missing) in failed.stderr
    assert "Traceback" not in failed.stderr
    assert output.read_bytes() == before
    assert (output.stat().st_ino, output.stat().st_mtime_ns) == (
        stat_before.st_ino,
        stat_before.st_mtime_ns,
    )
    assert os.listdir(out_dir) == [output.name]


# 5. Content negotiation: OpenMetrics and gzip.


def stable_lines(body: bytes) -> list[str]:
    """The exposition without the process_* samples, which change from one scrape to the next."""
    return [line for line in body.decode().splitlines() if not line.startswith("process_")]


@pytest.mark.timeout(60)
def test_openmetrics_and_gzip(tmp_path: Path) -> None:
    root = build_awkward_tree(tmp_path / "tree")
    root_bytes = du(root, depth=0, apparent=False)[str(root)]
    # No scan after the first one: two scrapes differ only in the process_* samples.
    with daemon(tmp_path, {"analyzed-path": str(root), "dir-level": 2, "scan-interval": "1h"}) as d:
        om_status, om_headers, om_body = http_get(d.url + "/metrics", {"Accept": OPENMETRICS})
        gz_status, gz_headers, gz_body = http_get(
            d.url + "/metrics", {"Accept": OPENMETRICS, "Accept-Encoding": "gzip"}
        )
        text_status, text_headers, text_body = http_get(d.url + "/metrics")
        tgz_status, tgz_headers, tgz_body = http_get(
            d.url + "/metrics", {"Accept-Encoding": "gzip"}
        )
    assert (om_status, gz_status, text_status, tgz_status) == (200, 200, 200, 200)

    assert om_headers["content-type"].startswith("application/openmetrics-text"), om_headers
    assert "content-encoding" not in om_headers
    assert om_body.endswith(b"\n# EOF\n")
    families = {f.name: f for f in parse_openmetrics(om_body.decode())}  # type: ignore[no-untyped-call]
    disk = {tuple(sorted(s.labels.items())): s.value for s in families[DISK].samples}
    assert disk[key(level="0", path=str(root))] == root_bytes
    assert families["diskaudit_scanned_entries"].type == "counter"

    assert gz_headers.get("content-encoding") == "gzip", gz_headers
    assert gz_headers["content-type"] == om_headers["content-type"]
    assert gz_body[:2] == b"\x1f\x8b"
    unzipped = gzip.decompress(gz_body)
    assert unzipped.endswith(b"\n# EOF\n")
    assert stable_lines(unzipped) == stable_lines(om_body)

    assert text_headers["content-type"].startswith("text/plain"), text_headers
    assert "content-encoding" not in text_headers
    assert b"# EOF" not in text_body
    assert tgz_headers.get("content-encoding") == "gzip", tgz_headers
    assert stable_lines(gzip.decompress(tgz_body)) == stable_lines(text_body)
