"""``diskaudit audit URL``: one repository audit, in this process."""

from __future__ import annotations

import json
import sys

import anyio

from diskaudit.settings import Settings


async def _audit(settings: Settings, url: str, ref: str | None) -> object:
    from diskaudit.audit.admission import Admission
    from diskaudit.audit.service import AuditConfig, AuditService, prepare_dirs
    from diskaudit.scan.pool import open_scan_pool

    config = AuditConfig.from_settings(settings)
    prepare_dirs(config, sweep=False)
    # The job's one deadline is born here and reaches the clone slot, git and every walk.
    with anyio.fail_after(settings.job_timeout):
        async with open_scan_pool(settings.max_procs) as pool:
            # The same admission as the daemon's: a one-shot audit also waits for the reserves.
            admission = Admission.from_settings(settings)
            return await AuditService(config, pool, admission).audit(url, ref)


def run_audit(settings: Settings, url: str, ref: str | None, *, output_format: str) -> int:
    from diskaudit.audit.errors import AuditError, RefusedError
    from diskaudit.audit.model import AuditResult
    from diskaudit.render_audit import audit_table

    try:
        result = anyio.run(_audit, settings, url, ref)
    except RefusedError as exc:
        print(f"diskaudit: refused: {exc}", file=sys.stderr)
        return 2
    except AuditError as exc:
        print(f"diskaudit: audit failed: {exc}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(
            f"diskaudit: audit did not finish within job-timeout ({settings.job_timeout:g}s)",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        print(f"diskaudit: {exc}", file=sys.stderr)
        return 1
    assert isinstance(result, AuditResult)
    if output_format == "json":
        json.dump(result.to_json(), sys.stdout, indent=1)
        print()
    else:
        print(audit_table(result))
    return 0
