"""Logging: human-readable lines by default, one JSON object per line with ``log-format: json``.

Every line logged while a job runs carries the job's id (``job_id``), whatever module logs it:
the job runner sets it in a context variable, which anyio passes on to the tasks the job starts.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

#: The id of the job the current task works for, if any.
current_job: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "diskaudit_job", default=None
)


class _JobFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = current_job.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        job = getattr(record, "job_id", None)
        return line if job is None or f"job {job}" in line else f"{line} [job {job}]"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        job = getattr(record, "job_id", None)
        if job is not None:
            doc["job_id"] = job
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_JobFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
