"""The Grafana dashboard and the alerting rules against the real Prometheus tools.

- ``promtool check rules`` and ``promtool test rules`` accept config/prometheus/.
- docs/grafana/diskaudit.json has what Grafana needs, and each of its PromQL expressions, with
  the template variables replaced by values, parses in a real Prometheus (started on 127.0.0.1
  with no scrape targets; a parse error is a 400 ``bad_data``).
- Every diskaudit metric the dashboard and the rules use is exported by the collectors and
  documented in docs/metrics.md, so renaming a metric breaks this test.

Without the binaries a test is skipped, unless ``CI`` is set: then it fails (see
test_prometheus.py's ``require``).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics_core import Metric

from diskaudit.audit.gate import NoGate
from diskaudit.audit.service import CloneSlots
from diskaudit.audit.state import AuditState
from diskaudit.jobs.background import QueueCounts
from diskaudit.metrics.audit import AuditCollector
from diskaudit.metrics.cluster import ClusterCollector
from diskaudit.metrics.disk_usage import DiskUsageCollector, ScanPoolCollector
from diskaudit.metrics.jobs import JobsCollector
from tests.daemon import free_port
from tests.integration.test_prometheus import background, http_get, require, tail, wait_http_ok

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "diskaudit.json"
RULES = ROOT / "config" / "prometheus" / "diskaudit-rules.yml"
RULES_TEST = ROOT / "config" / "prometheus" / "diskaudit-rules.test.yml"
METRICS_DOC = ROOT / "docs" / "metrics.md"

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

#: Values for the dashboard's variables and Grafana's built-in ones: one root, and several
#: (``root`` and ``repo`` are multi-value: Grafana writes an alternation of the values with
#: regex metacharacters escaped for a PromQL string, ``\\.``).
SINGLE = {"root": "/srv", "repo": "https://x/y.git"}
MULTI = {"root": r"(/srv|/home/a\\.b)", "repo": r"(https://x/y\\.git|https://x/z\\.git)"}
BUILTIN = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}

#: ``$name``, ``${name}`` or ``${name:format}``.
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
METRIC = re.compile(r"(?<![\w:])((?:diskaudit|node_disk_usage)_\w+)")


# The files.


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def load_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    return [
        target["expr"]
        for panel in load_dashboard()["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def variable_queries() -> list[str]:
    """The queries of the dashboard's query variables (Grafana functions, not PromQL)."""
    return [v["definition"] for v in load_dashboard()["templating"]["list"] if v["type"] == "query"]


def substitute(expr: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"unknown variable ${name} in {expr!r}"
        return values[name]

    return VARIABLE.sub(value, expr)


def metric_names(expr: str) -> set[str]:
    """The diskaudit metric names in a PromQL expression (not in its string literals)."""
    return set(METRIC.findall(STRING.sub('""', expr)))


# 1. promtool.


def run_promtool(*args: str) -> None:
    promtool = require("promtool")
    done = subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.timeout(60)
def test_promtool_check_rules() -> None:
    run_promtool("check", "rules", str(RULES))


@pytest.mark.timeout(60)
def test_promtool_test_rules() -> None:
    run_promtool("test", "rules", str(RULES_TEST))


def test_rules_have_severity_annotations_and_tests() -> None:
    rules = load_rules()
    alerts = {rule["alert"] for rule in rules}
    assert alerts == {
        "DiskauditScanStale",
        "DiskauditScanErrorsRising",
        "DiskauditDirectoryGrowingFast",
        "DiskauditRepositoryOverConcern",
        "DiskauditCloneQueueBackingUp",
        "DiskauditJobStoreDown",
        "DiskauditDown",
    }
    for rule in rules:
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]
        assert "$labels" in rule["annotations"]["summary"], rule["alert"]
    # Every alert has a case that fires and one that does not.
    doc = yaml.safe_load(RULES_TEST.read_text())
    assert doc["rule_files"] == [RULES.name]
    cases = [case for test in doc["tests"] for case in test["alert_rule_test"]]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert firing == alerts
    assert quiet == alerts


# 2. The dashboard's structure.


def test_dashboard_has_what_grafana_needs() -> None:
    dashboard = load_dashboard()
    assert dashboard["title"]
    assert re.fullmatch(r"[\w-]{1,40}", dashboard["uid"])
    assert dashboard["schemaVersion"] == 39
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]

    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for name, metric in (("root", "diskaudit_scan_success"), ("repo", "diskaudit_repo_pack_bytes")):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DATASOURCE
        assert variables[name]["definition"] == f"label_values({metric}, {name})"
        assert variables[name]["query"]["query"] == variables[name]["definition"]

    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        title = panel["title"]
        assert isinstance(panel["id"], int)
        assert panel["type"] in {"row", "timeseries", "stat", "bargauge", "table"}, title
        assert title
        grid = panel["gridPos"]
        assert grid["w"] > 0, title
        assert grid["h"] > 0, title
        assert 0 <= grid["x"] <= grid["x"] + grid["w"] <= 24, title
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{title!r} overlaps {cells[x, y]!r}"
                cells[x, y] = title
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, title
        assert panel["fieldConfig"]["defaults"]["unit"], title
        targets = panel["targets"]
        assert targets, title
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), title
        for target in targets:
            assert target["datasource"] == DATASOURCE, title
            assert target["expr"].strip(), title
            for match in VARIABLE.finditer(target["expr"]):
                name = match.group(1) or match.group(2)
                assert name in variables or name in BUILTIN, (title, name)
        if "repeat" in panel:
            assert panel["repeat"] in variables, title

    units = {p["fieldConfig"]["defaults"]["unit"] for p in panels if p["type"] != "row"}
    assert {"bytes", "s", "percentunit"} <= units


# 3. Every expression parses in a real Prometheus.


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a Prometheus with nothing to scrape."""
    binary = require("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"evaluation_interval": "1m"}}))
    port = free_port()
    log = tmp / "prometheus.log"
    cmd = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    base = f"http://127.0.0.1:{port}"
    with background(cmd, log) as proc:
        wait_http_ok(base + "/-/ready", proc, log, time.monotonic() + 30)
        yield base
        assert proc.poll() is None, tail(log)


def parse_error(base: str, query: str) -> str | None:
    """None if Prometheus evaluates ``query``, else its error."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    status, _, body = http_get(url)
    doc = json.loads(body)
    if status == 200 and doc["status"] == "success":
        return None
    return f"{status} {doc.get('errorType')}: {doc.get('error')}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("values", [SINGLE, MULTI], ids=["one-value", "several-values"])
def test_dashboard_promql_parses(prometheus: str, values: dict[str, str]) -> None:
    exprs = dashboard_exprs()
    assert exprs
    failures = {
        expr: error
        for expr in exprs
        if (error := parse_error(prometheus, substitute(expr, {**values, **BUILTIN}))) is not None
    }
    assert not failures, json.dumps(failures, indent=2)


@pytest.mark.timeout(60)
def test_variable_and_rule_promql_parses(prometheus: str) -> None:
    label_values = re.compile(r"label_values\((\w+), *(\w+)\)")
    queries = []
    for query in variable_queries():
        match = label_values.fullmatch(query)
        assert match, query
        queries.append(match[1])
    queries += [rule["expr"] for rule in load_rules()]
    failures = {q: error for q in queries if (error := parse_error(prometheus, q)) is not None}
    assert not failures, json.dumps(failures, indent=2)


# 4. The metric names exist.


def used_metrics() -> dict[str, set[str]]:
    """Each diskaudit metric name the dashboard and the rules use, and where."""
    sources = [("dashboard", e) for e in dashboard_exprs() + variable_queries()]
    sources += [(f"rule {r['alert']}", r["expr"]) for r in load_rules()]
    used: dict[str, set[str]] = {}
    for where, expr in sources:
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
    return used


def exported_samples() -> set[str]:
    """The sample names the daemon's collectors can export (from describe(), no data)."""
    families: list[Metric] = [
        *DiskUsageCollector(lambda: pytest.fail("must not collect"), compat="dundee").describe(),
        *ScanPoolCollector(lambda: pytest.fail("must not collect")).describe(),
        *AuditCollector(AuditState(), lambda: CloneSlots(0, 0, 0)).describe(),
        *JobsCollector(QueueCounts(), lambda: 0).describe(),
        *ClusterCollector(NoGate()).describe(),
    ]
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    return {f.name + s for f in families for s in suffixes.get(f.type, [""])}


def test_metrics_used_are_exported() -> None:
    used = used_metrics()
    assert "diskaudit_disk_usage_bytes" in used
    assert "diskaudit_repo_concern_level" in used
    missing = {
        name: sorted(where) for name, where in used.items() if name not in exported_samples()
    }
    assert not missing, f"not exported by any collector: {missing}"


def documented(name: str, doc: str) -> bool:
    histogram = re.sub(r"_(bucket|sum|count)$", "", name)
    return any(re.search(rf"(?<![\w:]){n}(?![\w:])", doc) for n in (name, histogram))


def test_metrics_used_are_documented() -> None:
    doc = METRICS_DOC.read_text()
    used = used_metrics()
    missing = {name: sorted(where) for name, where in used.items() if not documented(name, doc)}
    assert not missing, f"not in {METRICS_DOC.relative_to(ROOT)}: {json.dumps(missing, indent=2)}"
