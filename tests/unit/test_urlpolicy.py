"""The URL policy: every hostile URL is refused before git could see it."""

from __future__ import annotations

import pytest

from diskaudit.audit.urlpolicy import (
    MAX_URL_LENGTH,
    RepoUrl,
    UrlPolicy,
    UrlRefused,
    check_ref,
    check_url,
)

DEFAULT = UrlPolicy()
LOCAL = UrlPolicy(allow_local=True)

HOSTILE = [
    ("ext::sh -c touch% /tmp/pwned", "transport"),
    ("ext::sh", "transport"),
    ("fd::17", "transport"),
    ("transport::x", "transport"),
    ("--upload-pack=touch /tmp/pwned", "starts with '-'"),
    ("-u touch /tmp/pwned", "starts with '-'"),
    ("-c core.sshCommand=touch /tmp/pwned", "starts with '-'"),
    ("--config=core.sshCommand=x", "starts with '-'"),
    ("--template=/tmp", "starts with '-'"),
    ("--separate-git-dir=/tmp/x", "starts with '-'"),
    ("--bundle-uri=http://x", "starts with '-'"),
    ("file:///etc", "file://"),
    ("FILE:///etc", "file://"),
    ("/etc", "local paths"),
    ("./repo", "local paths"),
    ("../../etc", "local paths"),
    ("repo.git", "local paths"),
    ("https://user:pass@example.com/r.git", "credentials"),
    ("https://ghp_token@example.com/r.git", "credentials"),
    ("git://user@example.com/r.git", "credentials"),
    ("user:pass@example.com:r.git", "credentials"),
    ("ssh://-oProxyCommand=touch%20x/r", "starts with '-'"),
    ("-oProxyCommand=x:r", "starts with '-'"),
    ("host:-oProxyCommand=x", "starts with '-'"),
    ("https://-example.com/r", "starts with '-'"),
    ("https://example.com/r\n.git", "control"),
    ("https://example.com/r\x00.git", "control"),
    ("https://example.com/r .git", "whitespace"),
    ("https://example.com/\r\nHost: evil", "control"),
    ("http://example.com/r.git", "scheme"),
    ("ftp://example.com/r.git", "scheme"),
    ("https://example.com:99999/r.git", "cannot be parsed"),
    ("https:///r.git", "no host"),
    ("https://example.com/" + "a" * MAX_URL_LENGTH, "longer"),
    ("", "non-empty"),
]


@pytest.mark.parametrize(("url", "reason"), HOSTILE)
def test_hostile_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(UrlRefused, match=reason):
        check_url(url, DEFAULT)


def test_the_refusal_never_repeats_a_credential() -> None:
    with pytest.raises(UrlRefused) as caught:
        check_url("https://x-access-token:s3cret@example.com/r.git", DEFAULT)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "scheme", "host"),
    [
        ("https://github.com/org/repo.git", "https", "github.com"),
        ("https://GitHub.com:8443/org/repo", "https", "github.com:8443"),
        ("ssh://git@github.com/org/repo.git", "ssh", "github.com"),
        ("git@github.com:org/repo.git", "ssh", "github.com"),
        ("git://127.0.0.1:9418/repo.git", "git", "127.0.0.1:9418"),
    ],
)
def test_ordinary_urls_pass(url: str, scheme: str, host: str) -> None:
    assert check_url(url, DEFAULT) == RepoUrl(url, scheme, host)


def test_local_urls_only_when_allowed() -> None:
    assert check_url("file:///srv/r.git", LOCAL).scheme == "file"
    assert check_url("/srv/r.git", LOCAL).scheme == "file"
    with pytest.raises(UrlRefused, match="transport"):
        check_url("ext::sh", LOCAL)  # allowing local never allows transports


def test_schemes_and_hosts_are_limited_by_the_policy() -> None:
    policy = UrlPolicy(
        allowed_schemes=frozenset({"https"}), allowed_hosts=frozenset({"*.example.org", "h.io"})
    )
    assert check_url("https://git.example.org/r", policy).host == "git.example.org"
    assert check_url("https://h.io/r", policy).host == "h.io"
    for url, reason in [
        ("https://example.org.evil.com/r", "allowed-hosts"),
        ("https://evil.io/r", "allowed-hosts"),
        ("git://h.io/r", "scheme"),
        ("git@h.io:r", "ssh"),
    ]:
        with pytest.raises(UrlRefused, match=reason):
            check_url(url, policy)


@pytest.mark.parametrize("ref", [None, "main", "release/1.2", "v1.0.0", "feature-x"])
def test_good_refs(ref: str | None) -> None:
    assert check_ref(ref) == ref


@pytest.mark.parametrize(
    "ref",
    [
        "-main",
        "--upload-pack=x",
        "a..b",
        "a b",
        "a\nb",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[",
        "a\\b",
        "x.lock",
        "x/",
        "/x",
        "@",
        "a@{1}",
        "",
        "x" * 300,
    ],
)
def test_bad_refs(ref: str) -> None:
    with pytest.raises(UrlRefused):
        check_ref(ref)
