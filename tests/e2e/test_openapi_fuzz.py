"""Fuzz the job API of a running daemon from the schema it serves (/api/v1/openapi.json).

schemathesis generates requests for every operation (valid and invalid ones) and checks each
answer: no 5xx, a status code the schema lists, the content type it lists, a body that matches
its schema. The daemon listens on 127.0.0.1 without a token (loopback is allowed); it may clone
only from 127.0.0.1 (``allowed-hosts``), so a fuzzed URL that gets queued reaches nothing else.
One job is audited first, so that listings and job lookups return full jobs with results.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.daemon import Daemon, running_daemon
from tests.gitservers import GitHTTPServer, http_git_server, make_repo

MAX_EXAMPLES = 30
CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _post_job(d: Daemon, url: str) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{d.url}/api/v1/jobs",
        data=json.dumps({"url": url}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(json.load(resp))


def _wait_succeeded(d: Daemon, job_id: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, body = d.get(f"/api/v1/jobs/{job_id}")
        if status == 200 and json.loads(body)["status"] == "succeeded":
            return
        time.sleep(0.1)
    raise AssertionError(f"the seed job did not succeed:\n{d.log_text()[-3000:]}")


@pytest.fixture(scope="module")
def git(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitHTTPServer]:
    root = tmp_path_factory.mktemp("repos")
    make_repo(root / "seed.git", files=4, size=200, commits=2)
    with http_git_server(root) as server:
        yield server


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, git: GitHTTPServer) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("fuzz")
    scan = tmp / "scan"
    scan.mkdir()
    config = {
        "analyzed-path": str(scan),
        "scan-interval": "1h",
        "allowed-schemes": ["http", "https", "git"],
        "allowed-hosts": ["127.0.0.1"],
        "job-workers": 1,
        "shutdown-grace": "0.5s",
    }
    with running_daemon(tmp, config) as d:
        _wait_succeeded(d, _post_job(d, f"{git.url}seed.git")["id"])
        yield d
        assert d.stop() == 0, d.log_text()[-3000:]


@pytest.fixture(scope="module")
def api_schema(daemon: Daemon) -> BaseSchema:
    """The schema as the daemon serves it; requests go to the daemon that served it."""
    return schemathesis.openapi.from_url(f"{daemon.url}/api/v1/openapi.json")


OPERATIONS = (
    "POST /api/v1/jobs",
    "GET /api/v1/jobs",
    "GET /api/v1/jobs/{job_id}",
    "DELETE /api/v1/jobs/{job_id}",
)


def test_the_served_schema_has_every_operation(api_schema: BaseSchema) -> None:
    labels = []
    for result in api_schema.get_all_operations():
        assert isinstance(result, Ok), result
        labels.append(result.ok().label)
    assert sorted(labels) == sorted(OPERATIONS)


# schemathesis' pytest integration (``from_fixture`` + ``parametrize``) fails under pytest 9
# (it sets ``request.node._nodeid``), so each operation is fuzzed with its Hypothesis strategy.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("label", OPERATIONS)
def test_job_api_conforms_to_its_schema(
    api_schema: BaseSchema, label: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Case[Any]) -> None:
        case.call_and_validate(checks=CHECKS, timeout=10)

    check()


def test_successful_answers_conform_too(api_schema: BaseSchema, git: GitHTTPServer) -> None:
    """Random bodies are all refused; these requests get the 2xx answers, checked the same way."""
    submit = api_schema.find_operation_by_label("POST /api/v1/jobs")
    show = api_schema.find_operation_by_label("GET /api/v1/jobs/{job_id}")
    listing = api_schema.find_operation_by_label("GET /api/v1/jobs")
    cancel = api_schema.find_operation_by_label("DELETE /api/v1/jobs/{job_id}")
    assert submit is not None
    assert show is not None
    assert listing is not None
    assert cancel is not None
    body: Any = {"url": f"{git.url}seed.git", "ref": "main"}
    git.delay_s = 60.0  # the job stays running until cancelled
    try:
        first = submit.Case(body=body).call_and_validate(checks=CHECKS, timeout=10)
        assert first.status_code == 202
        job_id = first.json()["id"]
        again = submit.Case(body=body).call_and_validate(checks=CHECKS, timeout=10)
        assert again.status_code == 200
        assert again.json()["id"] == job_id
        for query in ({}, {"status": "running", "limit": 1}, {"status": "succeeded"}):
            answer = listing.Case(query=query).call_and_validate(checks=CHECKS, timeout=10)
            assert answer.status_code == 200
            assert answer.json()["jobs"]
        path = {"job_id": job_id}
        assert show.Case(path_parameters=path).call_and_validate(checks=CHECKS).status_code == 200
        assert cancel.Case(path_parameters=path).call_and_validate(checks=CHECKS).status_code == 200
    finally:
        git.delay_s = 0.0
