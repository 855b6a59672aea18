"""Which repository URLs and refs may reach git. Checked before any git process starts.

Refused, whatever the settings: ``transport::address`` URLs (``ext::sh -c ...`` runs commands,
CVE-2022-24439), anything starting with ``-`` (read by git or ssh as an option,
CVE-2017-1000117), control characters and whitespace (header and argument injection), URLs
longer than ``MAX_URL_LENGTH``, and credentials inside the URL (they would end up in
``.git/config``, in process listings and in logs: tokens come from ``credentials`` instead).
Refused unless allowed: schemes outside ``allowed-schemes``; hosts outside ``allowed-hosts``;
``file://`` URLs and local paths (a local clone can read any file the daemon can).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
MAX_REF_LENGTH = 255

_TRANSPORT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+.-]*::")
_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/]+)@)?(?P<host>[^/:@]+):(?P<path>.*)$")
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f]")
_BAD_REF = re.compile(r"(^-)|(\.\.)|(@\{)|(//)|([~^:?*\[\\])|(\.lock$)|(/$)|(^/)|(\.$)|(^@$)")


class UrlRefused(ValueError):
    """The URL or ref is not allowed; the message says why (and never contains a secret)."""


@dataclass(frozen=True)
class UrlPolicy:
    allowed_schemes: frozenset[str] = frozenset({"https", "ssh", "git"})
    #: Exact host names or "*.example.com"; empty allows any host.
    allowed_hosts: frozenset[str] = frozenset()
    allow_local: bool = False


@dataclass(frozen=True)
class RepoUrl:
    """A URL that passed the policy."""

    url: str
    scheme: str
    #: Lower-cased host (with ":port" if given); "" for local repositories.
    host: str


def _host_allowed(host: str, allowed: frozenset[str]) -> bool:
    if not allowed:
        return True
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host
    return any(
        name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:]))
        for pattern in allowed
    )


def check_url(url: object, policy: UrlPolicy) -> RepoUrl:
    if not isinstance(url, str) or not url:
        raise UrlRefused("the URL must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if url.startswith("-"):
        raise UrlRefused("the URL starts with '-' (git would read it as an option)")
    if _TRANSPORT.match(url):
        raise UrlRefused("transport::address URLs (ext::, fd:: ...) are never allowed")
    if _BAD_CHARS.search(url):
        raise UrlRefused("the URL contains whitespace or control characters")
    _check_gitpython(url)
    if "://" in url:
        return _check_full_url(url, policy)
    scp = _SCP_LIKE.match(url)
    if scp and "/" not in url.split(":", 1)[0]:
        return _check_scp(url, scp, policy)
    if not policy.allow_local:
        raise UrlRefused("local paths are not allowed (allow-local-urls is false)")
    return RepoUrl(url, "file", "")


def _check_gitpython(url: str) -> None:
    """GitPython's own check for dangerous protocols, as a second opinion on ours."""
    from git.cmd import Git
    from git.exc import UnsafeProtocolError

    try:
        Git.check_unsafe_protocols(url)
    except UnsafeProtocolError as exc:
        raise UrlRefused("the URL uses a protocol that can run commands") from exc


def _check_full_url(url: str, policy: UrlPolicy) -> RepoUrl:
    try:
        parts = urlsplit(url)
        port = parts.port  # validates the port
    except ValueError as exc:
        raise UrlRefused(f"the URL cannot be parsed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "file":
        if not policy.allow_local:
            raise UrlRefused("file:// URLs are not allowed (allow-local-urls is false)")
        return RepoUrl(url, "file", "")
    if scheme not in policy.allowed_schemes:
        allowed = ", ".join(sorted(policy.allowed_schemes))
        raise UrlRefused(f"the scheme {scheme!r} is not allowed (allowed: {allowed})")
    if parts.password is not None or (parts.username is not None and scheme != "ssh"):
        raise UrlRefused("credentials in the URL are not allowed; configure credentials instead")
    host = (parts.hostname or "").lower()
    if not host:
        raise UrlRefused("the URL has no host")
    if host.startswith("-"):
        raise UrlRefused("the host starts with '-'")
    if not _host_allowed(host, policy.allowed_hosts):
        raise UrlRefused(f"the host {host!r} is not in allowed-hosts")
    return RepoUrl(url, scheme, host if port is None else f"{host}:{port}")


def _check_scp(url: str, scp: re.Match[str], policy: UrlPolicy) -> RepoUrl:
    if "ssh" not in policy.allowed_schemes:
        raise UrlRefused("ssh (user@host:path) URLs are not allowed")
    user, host, path = scp.group("user"), scp.group("host").lower(), scp.group("path")
    if user is not None and ":" in user:
        raise UrlRefused("credentials in the URL are not allowed; configure credentials instead")
    if host.startswith("-") or path.startswith("-"):
        raise UrlRefused("the host or path starts with '-'")
    if not _host_allowed(host, policy.allowed_hosts):
        raise UrlRefused(f"the host {host!r} is not in allowed-hosts")
    return RepoUrl(url, "ssh", host)


def check_ref(ref: object) -> str | None:
    """A branch or tag name for ``git clone --branch``; None for the remote's default."""
    if ref is None:
        return None
    if not isinstance(ref, str) or not ref:
        raise UrlRefused("the ref must be a non-empty string")
    if len(ref) > MAX_REF_LENGTH:
        raise UrlRefused(f"the ref is longer than {MAX_REF_LENGTH} characters")
    if _BAD_CHARS.search(ref):
        raise UrlRefused("the ref contains whitespace or control characters")
    if _BAD_REF.search(ref):
        raise UrlRefused(f"{ref!r} is not a valid branch or tag name")
    return ref
