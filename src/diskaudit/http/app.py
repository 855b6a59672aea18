"""The ASGI application: /metrics, /healthz, /readyz, /version and the page at /.

Handlers read the current snapshot and registry; none of them starts a scan or waits for one.
"""

from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from diskaudit import __version__
from diskaudit.exporter.state import Snapshot
from diskaudit.http.jobs_api import ApiAuthMiddleware
from diskaudit.http.page import CONTENT_SECURITY_POLICY, render_page
from diskaudit.http.webconfig import BasicAuth
from diskaudit.jobs.model import Job
from diskaudit.jobs.store import StoreError
from diskaudit.render import display_path

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
    recent_jobs: Callable[[], Awaitable[Sequence[Job]]] | None = None,
) -> Starlette:
    """``recent_jobs``: the latest jobs, newest first, for the page (None: no job list)."""

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
        try:
            jobs = await recent_jobs() if recent_jobs is not None else None
        except StoreError:
            jobs = None  # the page still shows the disk usage; /metrics says the store is down
        return HTMLResponse(
            render_index(snapshot(), jobs, implementation=implementation),
            headers={
                "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

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


def render_index(
    snap: Snapshot, jobs: Sequence[Job] | None = None, *, implementation: str | None = None
) -> str:
    """The page at ``/`` (see ``diskaudit.http.page``)."""
    return render_page(snap, jobs, implementation=implementation)


__all__ = ["build_app", "render_index"]
