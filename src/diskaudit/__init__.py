"""diskaudit: a disk usage exporter for Prometheus and a repository size auditor.

This package's import is deliberately empty of heavy modules: scan worker processes import
``diskaudit.scan.worker`` and must not pay for anyio, pydantic or prometheus-client.
"""

__version__ = "0.1.0"
