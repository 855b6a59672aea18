"""``diskaudit serve`` (the daemon) and ``diskaudit textfile`` (one scan, one file)."""

from __future__ import annotations

import sys

import anyio

from diskaudit.settings import Settings


def run_serve(settings: Settings) -> int:
    from diskaudit.daemon import serve_http, serve_textfile
    from diskaudit.http.server import BindError
    from diskaudit.settings import ConfigError

    try:
        if settings.mode == "file":
            assert settings.output_file is not None  # settings require it in file mode
            return anyio.run(serve_textfile, settings, settings.output_file)
        return anyio.run(serve_http, settings)
    except BindError as exc:
        print(f"diskaudit: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"diskaudit: configuration error:\n{exc}", file=sys.stderr)
        return 2


def run_textfile(settings: Settings, output: str) -> int:
    from diskaudit.daemon import write_textfile_once

    return anyio.run(write_textfile_once, settings, output)
