"""The job API: ``/api/v1/jobs``. Validation with pydantic; every bad request gets a 4xx with a
reason, a store that cannot write gets a 503; the schema is served at ``/api/v1/openapi.json``.

Authentication (``ApiAuthMiddleware``): ``Authorization: Bearer <api-token>`` when a token is
configured; without one, the API answers only to loopback clients. It is never open to other
hosts unauthenticated.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from diskaudit import __version__
from diskaudit.audit.urlpolicy import UrlPolicy, UrlRefused, check_ref, check_url
from diskaudit.jobs.model import Status
from diskaudit.jobs.runner import JobRunner
from diskaudit.jobs.store import JobStore, StoreError

API = "/api/v1"
MAX_BODY_BYTES = 64 * 1024
MAX_LIST = 1000
_JOB_ID = r"[0-9a-f]{32}"


class JobSubmission(BaseModel):
    """``POST /api/v1/jobs`` body."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=4096, description="https://, ssh:// or git:// repository URL")
    ref: str | None = Field(default=None, max_length=255, description="branch or tag")


class HistoryEntry(BaseModel):
    status: Status
    at: str = Field(json_schema_extra={"format": "date-time"})


class JobOut(BaseModel):
    """A job as the API returns it (see docs/jobs.md for the states)."""

    id: str = Field(pattern=f"^{_JOB_ID}$")
    url: str
    ref: str | None
    status: Status
    attempts: int = Field(ge=0)
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    started_at: str | None
    finished_at: str | None
    not_before: str | None
    error: str | None
    result: dict[str, Any] | None
    cancel_requested: bool
    history: list[HistoryEntry]
    #: The daemon that claimed the job last (its job store owner id); null if never claimed.
    owner: str | None = None


class JobList(BaseModel):
    jobs: list[JobOut]


class Problem(BaseModel):
    """An error: ``detail`` says why; ``errors`` lists invalid fields (422)."""

    detail: str
    errors: list[dict[str, Any]] | None = None


def _unavailable(reason: str) -> Response:
    """503: the job store cannot answer now (disk full, database unreachable)."""
    response = _problem(503, reason)
    response.headers["Retry-After"] = "60"
    return response


def _problem(status: int, detail: str, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail}
    body.update(extra)
    return JSONResponse(body, status_code=status)


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiAuthMiddleware:
    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            response = self._refuse(scope)
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refuse(self, scope: Scope) -> Response | None:
        if self.token is None:
            client = scope.get("client")
            if _is_loopback(client[0] if client else None):
                return None
            return _problem(
                403, "the job API answers only on loopback when no api-token is configured"
            )
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), self.token):
            return None
        response = _problem(401, "a valid 'Authorization: Bearer <api-token>' is required")
        response.headers["WWW-Authenticate"] = 'Bearer realm="diskaudit"'
        return response


async def _read_body(request: Request) -> bytes | Response:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        return _problem(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY_BYTES:
            return _problem(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    return bytes(body)


def job_routes(
    store: JobStore,
    runner: JobRunner | None,
    policy: UrlPolicy,
    *,
    clock: Callable[[], float] = time.time,
) -> list[Route]:
    async def submit(request: Request) -> Response:
        body = await _read_body(request)
        if isinstance(body, Response):
            return body
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return _problem(400, f"the body is not valid JSON: {exc}")
        try:
            submission = JobSubmission.model_validate(data)
        except ValidationError as exc:
            errors = [
                {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()
            ]
            return _problem(422, "the job is not valid", errors=errors)
        try:
            repo = check_url(submission.url, policy)
            ref = check_ref(submission.ref)
        except UrlRefused as exc:
            return _problem(422, f"refused: {exc}")
        try:
            job, created = await store.submit(repo.url, ref, now=clock())
        except StoreError as exc:
            return _unavailable(f"the job could not be stored: {exc}")
        if runner is not None and created:
            runner.wake()
        return JSONResponse(
            job.to_json(),
            status_code=202 if created else 200,
            headers={"Location": f"{API}/jobs/{job.id}"},
        )

    async def show(request: Request) -> Response:
        try:
            job = await store.get(request.path_params["job_id"])
        except StoreError as exc:
            return _unavailable(f"the job could not be read: {exc}")
        if job is None:
            return _problem(404, "no such job")
        return JSONResponse(job.to_json())

    async def listing(request: Request) -> Response:
        status_arg = request.query_params.get("status")
        limit_arg = request.query_params.get("limit", "100")
        try:
            status = Status(status_arg) if status_arg else None
        except ValueError:
            allowed = ", ".join(s.value for s in Status)
            return _problem(422, f"status must be one of {allowed}")
        # ASCII digits only: str.isdigit() accepts "²", which int() then refuses.
        if not re.fullmatch(r"[0-9]{1,4}", limit_arg) or not 1 <= int(limit_arg) <= MAX_LIST:
            return _problem(422, f"limit must be an integer from 1 to {MAX_LIST}")
        try:
            jobs = await store.list(status=status, limit=int(limit_arg))
        except StoreError as exc:
            return _unavailable(f"the jobs could not be read: {exc}")
        return JSONResponse({"jobs": [j.to_json() for j in jobs]})

    async def cancel(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            job = await store.cancel(job_id, now=clock())
        except StoreError as exc:
            return _unavailable(f"the job could not be cancelled: {exc}")
        if job is None:
            return _problem(404, "no such job")
        if job.status == Status.RUNNING and runner is not None:
            runner.cancel_running(job_id)
        return JSONResponse(job.to_json())

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_schema())

    job_path = f"{API}/jobs/{{job_id:str}}"
    return [
        Route(f"{API}/jobs", submit, methods=["POST"]),
        Route(f"{API}/jobs", listing, methods=["GET"]),
        Route(job_path, show, methods=["GET"]),
        Route(job_path, cancel, methods=["DELETE"]),
        Route(f"{API}/openapi.json", openapi, methods=["GET"]),
    ]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _responses(ok: dict[str, Any], *codes: int) -> dict[str, Any]:
    reasons = {
        400: "Invalid JSON",
        401: "Missing or wrong bearer token",
        403: "Not loopback and no api-token configured",
        404: "No such job",
        413: "Body too large",
        422: "Invalid job, refused URL or invalid query",
        503: "The job store cannot answer now (disk full, database unreachable)",
    }
    out = dict(ok)
    for code in (401, 403, *codes):
        out[str(code)] = {
            "description": reasons[code],
            "content": {"application/json": {"schema": _ref("Problem")}},
        }
    return out


def openapi_schema() -> dict[str, Any]:
    """OpenAPI 3.1 of the job API, its schemas generated from the pydantic models."""
    schemas: dict[str, Any] = {}
    for model in (JobSubmission, JobOut, JobList, Problem):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    job = {"content": {"application/json": {"schema": _ref("JobOut")}}}
    job_id = {
        "name": "job_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": f"^{_JOB_ID}$"},
    }
    status_values = [s.value for s in Status]
    return {
        "openapi": "3.1.0",
        "info": {"title": "diskaudit job API", "version": __version__},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            f"{API}/jobs": {
                "post": {
                    "summary": "Submit a repository audit (an identical queued or running job "
                    "is returned instead of a new one)",
                    "operationId": "submitJob",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("JobSubmission")}},
                    },
                    "responses": _responses(
                        {
                            "202": {"description": "Queued", **job},
                            "200": {"description": "Already queued or running", **job},
                        },
                        400,
                        413,
                        422,
                        503,
                    ),
                },
                "get": {
                    "summary": "List jobs, newest first",
                    "operationId": "listJobs",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string", "enum": status_values},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST},
                        },
                    ],
                    "responses": _responses(
                        {
                            "200": {
                                "description": "Jobs",
                                "content": {"application/json": {"schema": _ref("JobList")}},
                            }
                        },
                        422,
                        503,
                    ),
                },
            },
            f"{API}/jobs/{{job_id}}": {
                "get": {
                    "summary": "A job",
                    "operationId": "getJob",
                    "parameters": [job_id],
                    "responses": _responses({"200": {"description": "The job", **job}}, 404, 503),
                },
                "delete": {
                    "summary": "Cancel a job (a running one is stopped: its git processes "
                    "are killed and its clone removed)",
                    "operationId": "cancelJob",
                    "parameters": [job_id],
                    "responses": _responses(
                        {"200": {"description": "Cancelled, or cancel requested", **job}},
                        404,
                        503,
                    ),
                },
            },
        },
    }


__all__ = ["ApiAuthMiddleware", "JobSubmission", "job_routes", "openapi_schema"]
