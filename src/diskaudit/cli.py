"""The ``diskaudit`` command: parses arguments, loads settings, runs one subcommand.

Heavy modules (anyio, pydantic, prometheus-client) are imported inside the functions that need
them, so ``--help`` is instant and nothing here weighs on other processes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from diskaudit import __version__

if TYPE_CHECKING:
    from diskaudit.settings import Settings

EXIT_OK = 0
EXIT_RUNTIME = 1  # a root could not be scanned, a deadline passed
EXIT_USAGE = 2  # bad arguments or configuration; nothing was started

log = logging.getLogger("diskaudit")


def _add_scan_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH", help="YAML settings file (see config/)")
    p.add_argument("--dir-level", type=int, metavar="N", help="report directories to depth N")
    p.add_argument("--max-procs", type=int, metavar="N", help="scan worker processes")
    p.add_argument("--chunk-size", type=int, metavar="N", help="entries per worker chunk")
    p.add_argument(
        "--follow-symlinks",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="follow symbolic links (each target directory is walked once)",
    )
    p.add_argument(
        "--one-file-system",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="skip directories on other file systems, like du -x",
    )
    p.add_argument(
        "--ignore-dir",
        dest="ignore_dirs",
        action="append",
        metavar="PATH_OR_GLOB",
        help="directory never entered nor counted (repeatable; replaces ignore-dirs)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diskaudit",
        description="Disk usage exporter for Prometheus and repository size auditor.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples:
  diskaudit scan /var /home --dir-level 2          usage per directory, like du
  diskaudit serve --config /etc/diskaudit/diskaudit.yaml   the daemon (/metrics, job API)
  diskaudit textfile --config c.yaml --output /var/lib/node_exporter/textfile/du.prom
  diskaudit audit https://github.com/org/repo.git  one repository's size, like git-sizer
  diskaudit jobs submit https://github.com/org/repo.git --wait

settings: flags > DISKAUDIT_* environment > --config YAML > defaults; every key is documented
in config/diskaudit.yaml. Exit status: 0 done, 1 a runtime failure, 2 bad usage or settings.""",
    )
    parser.add_argument("--version", action="version", version=f"diskaudit {__version__}")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="log verbosity"
    )
    parser.add_argument(
        "--log-format", choices=["text", "json"], help="log lines for people or JSON lines"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    scan = sub.add_parser(
        "scan",
        help="scan directory trees once and print their usage",
        description="Scan PATHs (or the configured roots) once; print usage per directory.",
    )
    scan.add_argument("paths", nargs="*", metavar="PATH", help="roots (default: from settings)")
    _add_scan_flags(scan)
    scan.add_argument("--format", choices=["table", "json"], default="table")
    scan.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="give up after this long (exit 1)"
    )

    serve = sub.add_parser(
        "serve",
        help="run the exporter daemon (background scans, /metrics)",
        description="Run the daemon: scan the configured roots every scan-interval and serve "
        "the latest results on bind-address (mode: http) or write them to output-file "
        "(mode: file). SIGTERM/SIGINT stop it gracefully; a second signal exits at once.",
    )
    _add_scan_flags(serve)
    serve.add_argument("--bind-address", metavar="HOST:PORT", help="listen address (http mode)")
    serve.add_argument("--web-config-file", metavar="PATH", help="TLS and basic auth settings")

    textfile = sub.add_parser(
        "textfile",
        help="scan once and write the metrics for node_exporter's textfile collector",
        description="Scan every configured root once and write the Prometheus exposition to "
        "--output atomically. Exit 1, leaving the previous file in place, if any root failed.",
    )
    _add_scan_flags(textfile)
    textfile.add_argument("--output", required=True, metavar="PATH", help="the .prom file")

    audit = sub.add_parser(
        "audit",
        help="clone a git repository once and report its size",
        description="Clone URL (at --ref) under the clone limiter, measure it like git-sizer "
        "plus its size on disk, delete the clone. One deadline: job-timeout.",
    )
    audit.add_argument("url", metavar="URL", help="https://, ssh:// or git:// repository URL")
    audit.add_argument("--ref", help="branch or tag (default: the remote's default branch)")
    audit.add_argument("--config", metavar="PATH", help="YAML settings file")
    audit.add_argument("--format", choices=["table", "json"], default="table")

    jobs = sub.add_parser(
        "jobs",
        help="submit, list, show and cancel audit jobs of a running daemon",
        description="A client of the daemon's job API. The server defaults to bind-address; "
        "the token to api-token, api-token-file or DISKAUDIT_API_TOKEN.",
    )
    jobs.add_argument("--config", metavar="PATH", help="YAML settings file")
    jobs.add_argument("--server", metavar="URL", help="daemon URL, e.g. http://127.0.0.1:9995")
    jobs.add_argument("--json", action="store_true", help="print JSON")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    submit = jobs_sub.add_parser("submit", help="queue an audit of URL")
    submit.add_argument("url", metavar="URL")
    submit.add_argument("--ref", help="branch or tag")
    submit.add_argument("--wait", action="store_true", help="wait until the job ends")
    submit.add_argument(
        "--wait-timeout", type=float, default=3600, metavar="SECONDS", help="with --wait"
    )
    listing = jobs_sub.add_parser("list", help="list jobs, newest first")
    listing.add_argument(
        "--status",
        choices=["queued", "running", "succeeded", "failed", "timed_out", "cancelled"],
    )
    listing.add_argument("--limit", type=int, default=50)
    show = jobs_sub.add_parser("show", help="one job, with its result")
    show.add_argument("id")
    cancel = jobs_sub.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("id")

    check = sub.add_parser(
        "check-config",
        help="validate settings and print the effective values",
        description="Validate the settings from file, environment and flags; print them.",
    )
    _add_scan_flags(check)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    keys = (
        "dir_level",
        "max_procs",
        "chunk_size",
        "follow_symlinks",
        "one_file_system",
        "bind_address",
        "web_config_file",
    )
    out: dict[str, object] = {k: getattr(args, k, None) for k in keys}
    if getattr(args, "ignore_dirs", None) is not None:
        out["ignore_dirs"] = args.ignore_dirs
    if getattr(args, "log_level", None) is not None:
        out["log_level"] = args.log_level
    if getattr(args, "log_format", None) is not None:
        out["log_format"] = args.log_format
    return {k: v for k, v in out.items() if v is not None}


def _load(args: argparse.Namespace) -> Settings:
    from diskaudit.settings import load_settings

    settings = load_settings(args.config, _overrides(args))
    if settings.web_config_file and args.command in ("serve", "check-config"):
        from diskaudit.http.webconfig import load_web_config

        load_web_config(settings.web_config_file)  # its errors are configuration errors too
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error of ours.
        sys.stderr.close()
        return EXIT_OK


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from diskaudit.settings import ConfigError

    try:
        settings = _load(args)
    except ConfigError as exc:
        print(f"diskaudit: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    from diskaudit import logs

    logs.configure(settings.log_level, settings.log_format)
    if args.command == "check-config":
        return _check_config(settings)
    if args.command == "serve":
        from diskaudit.commands.serve import run_serve

        return run_serve(settings)
    if args.command == "textfile":
        from diskaudit.commands.serve import run_textfile

        return run_textfile(settings, args.output)
    if args.command == "audit":
        from diskaudit.commands.audit import run_audit

        return run_audit(settings, args.url, args.ref, output_format=args.format)
    if args.command == "jobs":
        from diskaudit.commands.jobs import run_jobs

        return run_jobs(settings, args)
    if args.command == "scan":
        from diskaudit.commands.scan import run_scan

        return run_scan(settings, args.paths, output_format=args.format, timeout=args.timeout)
    raise AssertionError(args.command)  # argparse rejects unknown commands


def _check_config(settings: Settings) -> int:
    import yaml

    print("# effective settings (flags > environment > file > defaults)")
    print(yaml.safe_dump(settings.to_yaml_dict(), sort_keys=False), end="")
    return EXIT_OK
