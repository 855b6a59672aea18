"""The ASGI application: /metrics, /healthz, /readyz, /version and the page at /.

Handlers read the current snapshot and registry; none of them starts a scan or waits for one.
"""

from __future__ import annotations

import gzip
import html
import time
from collections.abc import Callable

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from diskaudit import __version__
from diskaudit.exporter.state import RootStatus, Snapshot
from diskaudit.http.jobs_api import ApiAuthMiddleware
from diskaudit.http.webconfig import BasicAuth
from diskaudit.render import display_path, human_bytes

GZIP_MIN_BYTES = 1024  # smaller bodies are not worth compressing


class BasicAuthMiddleware:
    """401 with a challenge unless the request carries valid credentials (when configured)."""

    def __init__(self, app: ASGIApp, auth: BasicAuth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The job API (/api/) has its own bearer-token authentication (ApiAuthMiddleware).
        if scope["type"] == "http" and self.auth.enabled and not scope["path"].startswith("/api/"):
            header = dict(scope["headers"]).get(b"authorization")
            if not self.auth.check(header.decode("latin-1") if header else None):
                response = PlainTextResponse(
                    "Unauthorized\n",
                    status_code=401,
                    headers={"WWW-Authenticate": 'Basic realm="diskaudit"'},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(
    snapshot: Callable[[], Snapshot],
    registry: CollectorRegistry,
    auth: BasicAuth,
    *,
    implementation: str = "unknown",
    api_routes: list[Route] | None = None,
    api_token: str | None = None,
) -> Starlette:
    async def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        body = encoder(registry)
        headers = {}
        if "gzip" in request.headers.get("accept-encoding", "") and len(body) >= GZIP_MIN_BYTES:
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type=content_type, headers=headers)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        snap = snapshot()
        if snap.ready:
            return PlainTextResponse("ready\n")
        waiting = [display_path(r.spec.path) for r in snap.roots if r.last_ok is None]
        return PlainTextResponse(
            "waiting for a first scan of: " + ", ".join(waiting) + "\n", status_code=503
        )

    async def version(request: Request) -> Response:
        return JSONResponse(
            {"name": "diskaudit", "version": __version__, "scan_reader": implementation}
        )

    async def index(request: Request) -> Response:
        return HTMLResponse(render_index(snapshot()))

    return Starlette(
        routes=[
            Route("/", index),
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/version", version),
            *(api_routes or []),
        ],
        middleware=[
            Middleware(BasicAuthMiddleware, auth=auth),
            Middleware(ApiAuthMiddleware, token=api_token),
        ],
    )


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _row(r: RootStatus) -> str:
    e = html.escape
    total = r.usage.total if r.usage is not None else None
    status = {None: "pending", True: "ok", False: "failed"}[r.last_ok]
    cells = [
        e(display_path(r.spec.path)),
        e(status) + (f"<br><small>{e(display_path(r.last_error))}</small>" if r.last_error else ""),
        e(_when(r.last_success_s)),
        "" if r.last_duration_s is None else f"{r.last_duration_s:.2f}s",
        "" if total is None else e(human_bytes(total.disk_bytes)),
        "" if total is None else str(total.files),
        "" if r.usage is None else str(r.usage.errors),
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render_index(snap: Snapshot) -> str:
    rows = "\n".join(_row(r) for r in snap.roots)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>diskaudit</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ padding: .3rem .8rem; text-align: left; }}
tr:nth-child(even) {{ background: #f3f3f3; }} small {{ color: #a00; }}
</style></head>
<body>
<h1>diskaudit {html.escape(__version__)}</h1>
<p>Disk usage exporter. Values come from the last background scan.</p>
<ul>
<li><a href="metrics">Metrics</a></li>
<li><a href="healthz">Health</a> · <a href="readyz">Readiness</a> ·
<a href="version">Version</a></li>
</ul>
<table>
<tr><th>Root</th><th>Last scan</th><th>Last success</th><th>Duration</th><th>Size</th>
<th>Files</th><th>Unreadable</th></tr>
{rows}
</table>
</body></html>
"""


__all__ = ["build_app", "render_index"]
