"""Why an audit failed, and whether trying again could help (the job queue retries only
transient failures)."""

from __future__ import annotations


class AuditError(Exception):
    """An audit failed. ``transient``: a network error or a server error, worth a retry."""

    transient = False


class RefusedError(AuditError):
    """The URL or ref is refused by policy; no git process was started."""


class CloneError(AuditError):
    """git clone failed. ``transient`` is decided from git's (redacted) message."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class RepoTooLarge(AuditError):
    """The clone grew past max-repo-bytes and was stopped."""


class CloneSlotLost(AuditError):
    """The cluster-wide clone slot could not be kept (the shared database was unreachable for
    longer than the lease): the clone was stopped so that the cluster limit holds. Retried."""

    transient = True


class ResourceShortage(AuditError):
    """The clone was stopped because the machine ran short of memory or disk while it ran.
    Transient: the job is retried later, when the machine may have room again."""

    transient = True


#: Phrases of git's stderr that mean the repository or the access to it is wrong: retrying will
#: not help. Checked before the transient ones.
_PERMANENT = (
    "authentication failed",
    "could not read username",
    "could not read password",
    "terminal prompts disabled",
    "repository not found",
    "not found",
    "does not appear to be a git repository",
    "returned error: 401",
    "returned error: 403",
    "returned error: 404",
    "remote branch",  # "Remote branch X not found in upstream origin"
    "permission denied",
    "host key verification failed",
)
_TRANSIENT = (
    "could not resolve host",
    "failed to connect",
    "couldn't connect",
    "connection refused",
    "connection timed out",
    "timed out",
    "operation too slow",
    "early eof",
    "rpc failed",
    "returned error: 5",
    "the remote end hung up",
    "connection reset",
    "temporary failure",
    "network is unreachable",
)


def classify_clone_failure(stderr: str) -> bool:
    """True if git's message says the failure may go away by itself."""
    text = stderr.lower()
    if any(p in text for p in _PERMANENT):
        return False
    return any(p in text for p in _TRANSIENT)
