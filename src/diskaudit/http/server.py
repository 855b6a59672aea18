"""uvicorn, embedded in our task group. We own the signals and the listening socket.

uvicorn's ``Server.serve()`` installs its own SIGINT/SIGTERM handlers for the duration of the
call; the daemon handles signals itself (it must stop scans and worker processes first, and exit
at once on a second signal), so ``capture_signals`` is a no-op here and shutdown is asked for
with ``request_stop()``. The socket is bound by ``bind()`` before anything starts, so that a port
in use is a clear start-up error rather than uvicorn's ``sys.exit(1)`` deep inside a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
from collections import OrderedDict
from collections.abc import Iterator
from typing import ClassVar

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

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


#: A connection must have sent a whole request head within this long (slow clients).
REQUEST_HEAD_TIMEOUT_S = 10.0
#: File descriptors kept free for everything but client connections (workers, git, SQLite).
FD_RESERVE = 64


def connection_cap() -> int:
    """Client connections allowed at once: below the soft RLIMIT_NOFILE, read at each
    connection (an operator may change it with prlimit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, soft - FD_RESERVE)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with two defences against slow or idle clients, which
    uvicorn alone holds forever (its keep-alive timer starts only after a response):

    - a connection that has not sent a complete request head within
      ``REQUEST_HEAD_TIMEOUT_S`` is closed;
    - when connections reach ``connection_cap()``, the oldest one still waiting for a request
      head is closed to make room, so that a flood of half-sent requests can never take the
      last file descriptors from /healthz and /metrics.

    It relies on uvicorn internals (``connections``, ``cycle``, ``on_response_complete``);
    tests/reliability/test_api_faults.py fails if a uvicorn release changes them.
    """

    #: Connections waiting for a request head, oldest first (shared by the server's protocols).
    waiting: ClassVar[OrderedDict[GuardedH11Protocol, asyncio.TimerHandle]] = OrderedDict()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_request()
        cap = connection_cap()
        while len(self.connections) > cap and self.waiting:
            oldest = next(iter(self.waiting))
            if oldest is self:
                break
            oldest._drop()

    def _wait_for_request(self) -> None:
        self._stop_waiting()
        timer = self.loop.call_later(REQUEST_HEAD_TIMEOUT_S, self._drop)
        self.waiting[self] = timer
        self._cycle_when_armed = self.cycle

    def _stop_waiting(self) -> None:
        timer = self.waiting.pop(self, None)
        if timer is not None:
            timer.cancel()

    def _drop(self) -> None:
        self._stop_waiting()
        if not self.transport.is_closing():
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self in self.waiting and self.cycle is not self._cycle_when_armed:
            self._stop_waiting()  # a request head arrived: the application has it now

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._wait_for_request()  # the next request on this keep-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)


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
        http=GuardedH11Protocol,
    )
    return EmbeddedServer(config)
