"""The disk usage collector and the ASGI app, in process: no daemon, no socket."""

from __future__ import annotations

import base64
import gzip
import json
import os
from dataclasses import dataclass

import bcrypt
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import ASGIApp, Message

from diskaudit import __version__
from diskaudit.exporter.state import ExporterState, Snapshot
from diskaudit.http.app import build_app
from diskaudit.http.webconfig import BasicAuth
from diskaudit.metrics.disk_usage import DiskUsageCollector
from diskaudit.scan.model import DirUsage, RootUsage
from diskaudit.settings import RootSpec

ROOT = "/data"
SPEC = RootSpec(ROOT, 2)


def dir_usage(path: str, level: int, disk: int) -> DirUsage:
    return DirUsage(path, level, disk, disk // 2, files=disk // 100, dirs=level)


def root_usage(*entries: DirUsage, spec: RootSpec = SPEC, errors: int = 0) -> RootUsage:
    return RootUsage(
        path=spec.path,
        dir_level=spec.dir_level,
        errors=errors,
        entries_scanned=123,
        duration_seconds=1.5,
        entries=entries,
    )


FIRST = root_usage(
    dir_usage(ROOT, 0, 10_000),
    dir_usage(f"{ROOT}/a", 1, 6_000),
    dir_usage(f"{ROOT}/b", 1, 3_000),
    dir_usage(f"{ROOT}/a/x", 2, 4_000),
    dir_usage(f"{ROOT}/b/y", 2, 1_000),
)


def registry_for(state: ExporterState, compat: str = "none") -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(DiskUsageCollector(lambda: state.snapshot, compat=compat))
    return registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


# DiskUsageCollector


def test_nothing_but_nothing_before_the_first_scan() -> None:
    registry = registry_for(ExporterState([SPEC]))
    assert value(registry, "diskaudit_scan_success", root=ROOT) is None
    assert value(registry, "diskaudit_disk_usage_bytes", path=ROOT, level="0") is None


def test_values_of_a_successful_scan() -> None:
    state = ExporterState([SPEC])
    state.record_success(SPEC, root_usage(*FIRST.entries, errors=2))
    registry = registry_for(state)
    for e in FIRST.entries:
        labels = {"path": e.path, "level": str(e.level)}
        assert value(registry, "diskaudit_disk_usage_bytes", **labels) == e.disk_bytes
        assert value(registry, "diskaudit_apparent_size_bytes", **labels) == e.apparent_bytes
        assert value(registry, "diskaudit_files", **labels) == e.files
        assert value(registry, "diskaudit_directories", **labels) == e.dirs
    assert value(registry, "diskaudit_scan_success", root=ROOT) == 1.0
    assert value(registry, "diskaudit_scan_duration_seconds", root=ROOT) == 1.5
    assert value(registry, "diskaudit_scan_entries", root=ROOT) == 123
    assert value(registry, "diskaudit_scan_errors", root=ROOT) == 2
    last = state.snapshot.roots[0].last_success_s
    assert value(registry, "diskaudit_scan_last_success_timestamp_seconds", root=ROOT) == last
    # No compat families unless asked for.
    assert value(registry, "node_disk_usage_bytes", path=f"{ROOT}/a/x") is None


def test_a_directory_gone_from_a_newer_scan_disappears() -> None:
    state = ExporterState([SPEC])
    registry = registry_for(state)
    state.record_success(SPEC, FIRST)
    assert value(registry, "diskaudit_disk_usage_bytes", path=f"{ROOT}/b/y", level="2") == 1000
    state.record_success(SPEC, root_usage(*(e for e in FIRST.entries if e.path != f"{ROOT}/b/y")))
    for name in ("diskaudit_disk_usage_bytes", "diskaudit_apparent_size_bytes", "diskaudit_files"):
        assert value(registry, name, path=f"{ROOT}/b/y", level="2") is None
    assert value(registry, "diskaudit_disk_usage_bytes", path=f"{ROOT}/b", level="1") == 3000


def test_a_failed_scan_keeps_the_last_usage_but_reports_failure() -> None:
    state = ExporterState([SPEC])
    registry = registry_for(state)
    state.record_success(SPEC, FIRST)
    last = state.snapshot.roots[0].last_success_s
    state.record_failure(SPEC, "did not finish within scan-timeout (1s)", 7.25)
    assert value(registry, "diskaudit_scan_success", root=ROOT) == 0.0
    assert value(registry, "diskaudit_scan_duration_seconds", root=ROOT) == 7.25
    assert value(registry, "diskaudit_scan_last_success_timestamp_seconds", root=ROOT) == last
    assert value(registry, "diskaudit_disk_usage_bytes", path=f"{ROOT}/a", level="1") == 6000
    assert value(registry, "diskaudit_scan_entries", root=ROOT) == 123


def test_a_first_scan_that_fails_has_no_usage() -> None:
    state = ExporterState([SPEC])
    state.record_failure(SPEC, "No such file or directory", 0.01)
    registry = registry_for(state)
    assert value(registry, "diskaudit_scan_success", root=ROOT) == 0.0
    assert value(registry, "diskaudit_scan_last_success_timestamp_seconds", root=ROOT) is None
    assert value(registry, "diskaudit_disk_usage_bytes", path=ROOT, level="0") is None


def test_roots_are_reported_independently() -> None:
    other = RootSpec("/other", 0)
    state = ExporterState([SPEC, other])
    state.record_success(SPEC, FIRST)
    state.record_failure(other, "boom", 0.1)
    registry = registry_for(state)
    assert value(registry, "diskaudit_scan_success", root=ROOT) == 1.0
    assert value(registry, "diskaudit_scan_success", root="/other") == 0.0


def test_describe_does_not_read_the_snapshot() -> None:
    calls = 0

    def snapshot() -> Snapshot:
        nonlocal calls
        calls += 1
        raise AssertionError("describe() must not collect")

    for compat in ("none", "dundee"):
        collector = DiskUsageCollector(snapshot, compat=compat)
        CollectorRegistry().register(collector)
        names = {m.name for m in collector.describe()}
        assert "diskaudit_disk_usage_bytes" in names
        assert ("node_disk_usage_bytes" in names) == (compat == "dundee")
        assert all(not m.samples for m in collector.describe())
    assert calls == 0


def test_dundee_compat_families() -> None:
    state = ExporterState([SPEC])
    state.record_success(SPEC, FIRST)
    registry = registry_for(state, compat="dundee")
    # node_disk_usage_bytes: the directories at dir-level only.
    for e in FIRST.entries:
        expected = e.disk_bytes if e.level == SPEC.dir_level else None
        assert value(registry, "node_disk_usage_bytes", path=e.path) == expected, e
        expected = e.disk_bytes if e.level == 1 else None
        assert value(registry, "node_disk_usage_level_1_bytes", path=e.path) == expected, e
    # The native families are there as well.
    assert value(registry, "diskaudit_disk_usage_bytes", path=ROOT, level="0") == 10_000


def test_dundee_compat_with_dir_level_1_reports_level_1_in_both() -> None:
    spec = RootSpec(ROOT, 1)
    state = ExporterState([spec])
    state.record_success(spec, root_usage(*FIRST.entries[:3], spec=spec))
    registry = registry_for(state, compat="dundee")
    assert value(registry, "node_disk_usage_bytes", path=f"{ROOT}/a") == 6000
    assert value(registry, "node_disk_usage_level_1_bytes", path=f"{ROOT}/a") == 6000
    assert value(registry, "node_disk_usage_bytes", path=ROOT) is None


# The ASGI app, called directly


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


async def call(app: ASGIApp, path: str, headers: dict[str, str] | None = None) -> Response:
    """One GET through the ASGI interface, as a server would make it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 9995),
        "state": {},
    }
    requested = False
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert not sent[-1].get("more_body", False)
    return Response(
        int(start["status"]),
        {k.decode().lower(): v.decode() for k, v in start["headers"]},
        body,
    )


@dataclass
class App:
    state: ExporterState
    app: ASGIApp


def make_app(*specs: RootSpec, auth: BasicAuth | None = None) -> App:
    state = ExporterState(list(specs))
    app = build_app(
        lambda: state.snapshot, registry_for(state), auth or BasicAuth({}), implementation="test"
    )
    return App(state, app)


@pytest.mark.anyio
async def test_metrics_in_the_text_format() -> None:
    a = make_app(SPEC)
    a.state.record_success(SPEC, FIRST)
    r = await call(a.app, "/metrics")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "charset=utf-8" in r.headers["content-type"]
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    samples = {
        (s.labels["path"], s.labels["level"]): s.value
        for s in families["diskaudit_disk_usage_bytes"].samples
    }
    assert samples == {(e.path, str(e.level)): e.disk_bytes for e in FIRST.entries}
    assert families["diskaudit_scan_success"].samples[0].value == 1.0


@pytest.mark.anyio
async def test_metrics_are_gzipped_when_asked_and_large_enough() -> None:
    a = make_app(SPEC)
    a.state.record_success(SPEC, FIRST)
    plain = await call(a.app, "/metrics")
    r = await call(a.app, "/metrics", {"Accept-Encoding": "gzip"})
    assert r.status == 200
    assert r.headers["content-encoding"] == "gzip"
    assert gzip.decompress(r.body) == plain.body


@pytest.mark.anyio
async def test_openmetrics_when_asked() -> None:
    a = make_app(SPEC)
    a.state.record_success(SPEC, FIRST)
    r = await call(a.app, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.status == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")


@pytest.mark.anyio
async def test_names_that_are_not_utf8_are_shown_with_escapes() -> None:
    """Label values must be UTF-8: an undecodable byte is shown as \\xNN, as everywhere else."""
    root = "/d" + os.fsdecode(b"\xff")
    spec = RootSpec(root, 1)
    odd = f"{root}/" + os.fsdecode(b"caf\xe9")
    a = make_app(spec)
    a.state.record_success(
        spec, root_usage(dir_usage(root, 0, 10), dir_usage(odd, 1, 5), spec=spec)
    )
    r = await call(a.app, "/metrics")
    assert r.status == 200
    families = {f.name: f for f in text_string_to_metric_families(r.body.decode("utf-8"))}
    disk = {s.labels["path"]: s.value for s in families["diskaudit_disk_usage_bytes"].samples}
    assert disk == {"/d\\xff": 10, "/d\\xff/caf\\xe9": 5}
    assert families["diskaudit_scan_success"].samples[0].labels["root"] == "/d\\xff"
    # The page shows them the same way.
    page = (await call(a.app, "/")).text
    assert "/d\\xff" in page


@pytest.mark.anyio
async def test_readyz_turns_ready_after_every_first_scan() -> None:
    other = RootSpec("/other", 0)
    a = make_app(SPEC, other)
    r = await call(a.app, "/readyz")
    assert r.status == 503
    assert "/data" in r.text
    assert "/other" in r.text
    a.state.record_success(SPEC, FIRST)
    r = await call(a.app, "/readyz")
    assert r.status == 503
    assert "/other" in r.text
    assert "/data" not in r.text
    # A failed first scan counts as finished: readiness is about having tried.
    a.state.record_failure(other, "boom", 0.1)
    r = await call(a.app, "/readyz")
    assert (r.status, r.text) == (200, "ready\n")


@pytest.mark.anyio
async def test_healthz_and_version() -> None:
    a = make_app(SPEC)
    assert (await call(a.app, "/healthz")).status == 200
    r = await call(a.app, "/version")
    assert r.status == 200
    assert r.headers["content-type"] == "application/json"
    assert json.loads(r.body) == {
        "name": "diskaudit",
        "version": __version__,
        "scan_reader": "test",
    }


@pytest.mark.anyio
async def test_index_escapes_paths_and_errors() -> None:
    spec = RootSpec('/srv/<b>&"x', 1)
    failing = RootSpec("/srv/<script>", 0)
    a = make_app(spec, failing)
    a.state.record_success(spec, root_usage(dir_usage(spec.path, 0, 2048), spec=spec))
    a.state.record_failure(failing, "<i>denied</i>", 0.1)
    r = await call(a.app, "/")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "/srv/&lt;b&gt;&amp;&quot;x" in r.text
    assert "&lt;i&gt;denied&lt;/i&gt;" in r.text
    assert "<b>" not in r.text
    assert "<script>" not in r.text
    assert "<i>" not in r.text


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/nope", "/metrics/extra", "/favicon.ico"])
async def test_unknown_paths_are_404(path: str) -> None:
    assert (await call(make_app(SPEC).app, path)).status == 404


@pytest.mark.anyio
async def test_basic_auth_guards_every_path() -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    a = make_app(SPEC, auth=BasicAuth({"u": hashed}))
    good = {"Authorization": "Basic " + base64.b64encode(b"u:pw").decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"u:nope").decode()}
    for path in ("/", "/metrics", "/healthz", "/readyz", "/version", "/nope"):
        for headers in (None, bad):
            r = await call(a.app, path, headers)
            assert r.status == 401, path
            assert r.headers["www-authenticate"] == 'Basic realm="diskaudit"'
    assert (await call(a.app, "/metrics", good)).status == 200
    assert (await call(a.app, "/nope", good)).status == 404
