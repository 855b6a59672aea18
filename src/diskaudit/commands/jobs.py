"""``diskaudit jobs submit|list|show|cancel``: a client of the daemon's job API (stdlib only)."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from diskaudit.settings import Settings

FINAL = {"succeeded", "failed", "timed_out", "cancelled"}


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


class Client:
    def __init__(self, base: str, token: str | None) -> None:
        self.base = base.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("detail", exc.reason)
            except ValueError:
                detail = exc.reason
            raise ApiError(exc.code, str(detail)) from None


def default_server(settings: Settings) -> str:
    host, port = settings.bind_host_port()
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _line(job: dict[str, Any]) -> str:
    ref = f" ({job['ref']})" if job.get("ref") else ""
    err = f"  {job['error']}" if job.get("error") else ""
    return f"{job['id']}  {job['status']:<9}  {job['attempts']}  {job['url']}{ref}{err}"


def run_jobs(settings: Settings, args: Any) -> int:
    token = os.environ.get("DISKAUDIT_API_TOKEN") or settings.read_api_token()
    client = Client(args.server or default_server(settings), token)
    try:
        return _dispatch(client, args)
    except ApiError as exc:
        print(f"diskaudit: {exc}", file=sys.stderr)
        return 2 if 400 <= exc.status < 500 else 1
    except urllib.error.URLError as exc:
        print(f"diskaudit: cannot reach the daemon at {client.base}: {exc.reason}", file=sys.stderr)
        return 1


def _dispatch(client: Client, args: Any) -> int:
    if args.jobs_command == "submit":
        job = client.call("POST", "/api/v1/jobs", {"url": args.url, "ref": args.ref})
        if args.wait:
            deadline = time.monotonic() + args.wait_timeout
            while job["status"] not in FINAL and time.monotonic() < deadline:
                time.sleep(1)
                job = client.call("GET", f"/api/v1/jobs/{job['id']}")
        print(json.dumps(job, indent=1) if args.json else _line(job))
        return 0 if job["status"] in ("queued", "running", "succeeded") else 1
    if args.jobs_command == "list":
        query = f"?limit={args.limit}" + (f"&status={args.status}" if args.status else "")
        jobs = client.call("GET", "/api/v1/jobs" + query)["jobs"]
        if args.json:
            print(json.dumps(jobs, indent=1))
        else:
            for job in jobs:
                print(_line(job))
        return 0
    if args.jobs_command == "show":
        print(json.dumps(client.call("GET", f"/api/v1/jobs/{args.id}"), indent=1))
        return 0
    if args.jobs_command == "cancel":
        print(_line(client.call("DELETE", f"/api/v1/jobs/{args.id}")))
        return 0
    raise AssertionError(args.jobs_command)
