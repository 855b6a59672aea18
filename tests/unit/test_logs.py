"""Logs: JSON lines for shippers, and the job id on every line logged while a job runs."""

from __future__ import annotations

import json
import logging

import anyio
import pytest

from diskaudit import logs
from diskaudit.audit.model import AuditResult
from diskaudit.jobs.memory_store import MemoryJobStore
from diskaudit.jobs.runner import JobRunner, RunnerConfig
from tests.unit.test_job_runner import a_result

pytestmark = pytest.mark.anyio


@pytest.fixture
def restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_every_line_of_a_job_carries_its_id_in_json(
    capsys: pytest.CaptureFixture[str], restore_logging: object
) -> None:
    logs.configure("info", "json")
    store = MemoryJobStore()
    job, _ = await store.submit("https://h/r.git", None, now=1.0)
    elsewhere = logging.getLogger("diskaudit.audit.somewhere")

    async def audit(url: str, ref: str | None) -> AuditResult:
        elsewhere.info("cloning %s", url)  # a module that knows nothing of jobs

        async def child() -> None:
            elsewhere.warning("from a task the job started")

        async with anyio.create_task_group() as tg:
            tg.start_soon(child)
        return a_result(url)

    logging.getLogger("diskaudit.test").info("before any job")
    runner = JobRunner(store, audit, RunnerConfig(poll_s=0.01))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(runner.run)
            while not (await store.get(job.id)).status.final:  # type: ignore[union-attr]  # noqa: ASYNC110
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert {"ts", "level", "logger", "msg"} <= lines[0].keys()
    assert "job_id" not in lines[0]
    during = [x for x in lines if x["logger"] == "diskaudit.audit.somewhere"]
    assert [x["msg"] for x in during] == [
        "cloning https://h/r.git",
        "from a task the job started",
    ]
    assert all(x["job_id"] == job.id for x in during)
    assert any(x["logger"] == "diskaudit.jobs.runner" and x.get("job_id") == job.id for x in lines)


def test_text_lines_name_the_job(
    capsys: pytest.CaptureFixture[str], restore_logging: object
) -> None:
    logs.configure("info", "text")
    token = logs.current_job.set("abc123")
    try:
        logging.getLogger("diskaudit.x").info("hello")
    finally:
        logs.current_job.reset(token)
    assert capsys.readouterr().err.rstrip().endswith("diskaudit.x: hello [job abc123]")
