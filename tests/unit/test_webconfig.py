"""The exporter-toolkit web config file and the basic auth check built from it."""

from __future__ import annotations

import base64
from pathlib import Path

import bcrypt
import pytest

from diskaudit.http.webconfig import BasicAuth, WebConfig, load_web_config
from diskaudit.settings import ConfigError

# Cost 4: the lowest bcrypt allows, so the tests stay fast.
HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return path


@pytest.fixture
def cert_files(tmp_path: Path) -> tuple[Path, Path]:
    """The loader checks only that the files exist; their content is uvicorn's business."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("cert")
    key.write_text("key")
    return cert, key


def config_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_web_config(str(path))
    text = str(info.value)
    # Every problem line names the file.
    assert info.value.problems
    for line in info.value.problems:
        assert line.startswith(f"{path}: "), line
    return text


def test_valid_file(tmp_path: Path, cert_files: tuple[Path, Path]) -> None:
    cert, key = cert_files
    path = write(
        tmp_path,
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        f"basic_auth_users:\n  prometheus: '{HASH}'\n",
    )
    assert load_web_config(str(path)) == WebConfig(
        cert_file=str(cert), key_file=str(key), users={"prometheus": HASH}
    )


@pytest.mark.parametrize("text", ["", "# only a comment\n", "basic_auth_users:\n"])
def test_empty_file_or_sections_mean_nothing_configured(tmp_path: Path, text: str) -> None:
    assert load_web_config(str(write(tmp_path, text))) == WebConfig()


def test_missing_file(tmp_path: Path) -> None:
    text = config_error(tmp_path / "absent.yml")
    assert "cannot read web config file" in text


def test_bad_yaml(tmp_path: Path) -> None:
    text = config_error(write(tmp_path, "basic_auth_users: [unclosed\n"))
    assert "not valid YAML" in text


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    assert "must be a mapping" in config_error(write(tmp_path, "- a\n- b\n"))


def test_unknown_top_key(tmp_path: Path) -> None:
    text = config_error(write(tmp_path, "http_server_config:\n  http2: true\n"))
    assert "http_server_config: not supported" in text


def test_unknown_tls_key(tmp_path: Path, cert_files: tuple[Path, Path]) -> None:
    cert, key = cert_files
    path = write(
        tmp_path,
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n",
    )
    assert "tls_server_config.client_auth_type: not supported" in config_error(path)


def test_cert_without_key(tmp_path: Path, cert_files: tuple[Path, Path]) -> None:
    cert, _ = cert_files
    path = write(tmp_path, f"tls_server_config:\n  cert_file: {cert}\n")
    assert "tls_server_config: cert_file and key_file go together" in config_error(path)


def test_unreadable_cert_file(tmp_path: Path, cert_files: tuple[Path, Path]) -> None:
    _, key = cert_files
    path = write(
        tmp_path, f"tls_server_config:\n  cert_file: {tmp_path}/nope.pem\n  key_file: {key}\n"
    )
    assert "tls_server_config.cert_file:" in config_error(path)


@pytest.mark.parametrize("hashed", ["plaintext", "'$1$md5$crypt'", "12345", "{a: b}"])
def test_non_bcrypt_hash(tmp_path: Path, hashed: str) -> None:
    path = write(tmp_path, f"basic_auth_users:\n  alice: '{HASH}'\n  bob: {hashed}\n")
    text = config_error(path)
    assert "basic_auth_users.bob: not a bcrypt hash" in text
    assert "alice" not in text


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "extra: 1\nbasic_auth_users:\n  bob: nope\n")
    with pytest.raises(ConfigError) as info:
        load_web_config(str(path))
    assert len(info.value.problems) == 2


# BasicAuth


def test_no_users_means_disabled() -> None:
    auth = BasicAuth({})
    assert not auth.enabled
    assert auth.check(None)
    assert auth.check("Basic garbage")


def test_right_and_wrong_credentials() -> None:
    auth = BasicAuth({"prometheus": HASH})
    assert auth.enabled
    assert auth.check(basic("prometheus", "s3cret"))
    assert not auth.check(basic("prometheus", "wrong"))
    assert not auth.check(basic("someone", "s3cret"))
    assert not auth.check(basic("prometheus", ""))


def test_password_may_contain_colons() -> None:
    hashed = bcrypt.hashpw(b"a:b:c", bcrypt.gensalt(rounds=4)).decode()
    assert BasicAuth({"u": hashed}).check(basic("u", "a:b:c"))


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic",
        "Basic ",
        "basic " + base64.b64encode(b"prometheus:s3cret").decode(),  # scheme is case-sensitive
        "Bearer " + base64.b64encode(b"prometheus:s3cret").decode(),
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),  # not UTF-8
        "Basic " + base64.b64encode(b"prometheus").decode(),  # no colon
    ],
)
def test_malformed_headers_are_refused(header: str | None) -> None:
    assert not BasicAuth({"prometheus": HASH}).check(header)


def test_a_verified_header_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    auth = BasicAuth({"prometheus": HASH})
    right = basic("prometheus", "s3cret")
    assert auth.check(right)
    assert auth.check(right)
    assert auth.check(right)
    assert calls == [b"s3cret"]
    # Failures are not cached: each costs a bcrypt check.
    assert not auth.check(basic("prometheus", "nope"))
    assert not auth.check(basic("prometheus", "nope"))
    assert len(calls) == 3
    # Another process (another key) does not share the cache.
    assert BasicAuth({"prometheus": HASH}).check(right)
    assert len(calls) == 4
