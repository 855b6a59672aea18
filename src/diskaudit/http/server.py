"""uvicorn, embedded in our task group. We own the signals and the listening socket.

uvicorn's ``Server.serve()`` installs its own SIGINT/SIGTERM handlers for the duration of the
call; the daemon handles signals itself (it must stop scans and worker processes first, and exit
at once on a second signal), so ``capture_signals`` is a no-op here and shutdown is asked for
with ``request_stop()``. The socket is bound by ``bind()`` before anything starts, so that a port
in use is a clear start-up error rather than uvicorn's ``sys.exit(1)`` deep inside a task.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from diskaudit.http.webconfig import WebConfig


class BindError(Exception):
    """The listening address cannot be bound (in use, not ours, bad host)."""


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        raise BindError(f"cannot listen on {shown}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


class EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals are the daemon's (see the module docstring)

    def request_stop(self) -> None:
        self.should_exit = True


def make_server(app: ASGIApp, web: WebConfig | None) -> EmbeddedServer:
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,  # our logging configuration, not uvicorn's
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=2,
        ssl_certfile=web.cert_file if web else None,
        ssl_keyfile=web.key_file if web else None,
    )
    return EmbeddedServer(config)
