from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

import pytest

from tests.pgserver import PgServer, pg_server, skip_or_fail


@pytest.fixture
def anyio_backend() -> str:
    # The daemon runs on asyncio (uvicorn); test on what ships.
    return "asyncio"


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """One PostgreSQL server for the whole run (tests make their own databases in it). Skips
    with the reason when PostgreSQL is not installed; fails instead when CI is set."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(pg_server())
        except FileNotFoundError as exc:
            skip_or_fail(str(exc))
            raise
        except subprocess.CalledProcessError as exc:
            skip_or_fail(f"PostgreSQL did not start: {exc}: {exc.stderr!r}")
            raise
        yield server
