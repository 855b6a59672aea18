"""The exporter-toolkit web configuration file: TLS and basic auth, as Prometheus users know it.

```yaml
tls_server_config:
  cert_file: /etc/diskaudit/cert.pem
  key_file: /etc/diskaudit/key.pem
basic_auth_users:
  prometheus: $2y$10$...   # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\\n')
```

Other exporter-toolkit keys (client auth, cipher suites, http_server_config) are refused rather
than silently ignored: a setting the operator believes is in force must be.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from diskaudit.settings import ConfigError

_TLS_KEYS = {"cert_file", "key_file"}
_TOP_KEYS = {"tls_server_config", "basic_auth_users"}


@dataclass(frozen=True)
class WebConfig:
    cert_file: str | None = None
    key_file: str | None = None
    #: user -> bcrypt hash
    users: dict[str, str] = field(default_factory=dict)


def load_web_config(path: str) -> WebConfig:
    """Read and check the file; every problem is a ``ConfigError`` naming the file and key."""
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read web config file: {exc.strerror}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    doc = {} if doc is None else doc
    if not isinstance(doc, dict):
        raise ConfigError([f"{path}: the top level must be a mapping"])
    problems = [f"{path}: {key}: not supported" for key in doc if key not in _TOP_KEYS]
    tls = doc.get("tls_server_config") or {}
    users = doc.get("basic_auth_users") or {}
    if not isinstance(tls, dict):
        problems.append(f"{path}: tls_server_config: must be a mapping")
        tls = {}
    problems += [
        f"{path}: tls_server_config.{key}: not supported" for key in tls if key not in _TLS_KEYS
    ]
    if bool(tls.get("cert_file")) != bool(tls.get("key_file")):
        problems.append(f"{path}: tls_server_config: cert_file and key_file go together")
    for key in ("cert_file", "key_file"):
        value = tls.get(key)
        if value and not os.path.isfile(value):
            problems.append(f"{path}: tls_server_config.{key}: {value!r} is not a readable file")
    if not isinstance(users, dict):
        problems.append(f"{path}: basic_auth_users: must be a mapping of user to bcrypt hash")
        users = {}
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            problems.append(f"{path}: basic_auth_users.{user}: not a bcrypt hash")
    if problems:
        raise ConfigError(problems)
    return WebConfig(
        cert_file=tls.get("cert_file") or None,
        key_file=tls.get("key_file") or None,
        users={str(u): str(h) for u, h in users.items()},
    )


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes.

    bcrypt is deliberately slow (~50-100 ms at cost 10); Prometheus sends the same credentials on
    every scrape. A successful check is remembered as an HMAC of the header under a key made at
    start-up, so a scrape costs one bcrypt per process lifetime, and the cache holds no password.
    """

    def __init__(self, users: dict[str, str]) -> None:
        self._users = {u: h.encode() for u, h in users.items()}
        self._key = os.urandom(32)
        self._verified: set[bytes] = set()

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    def check(self, header: str | None) -> bool:
        if not self.enabled:
            return True
        if not header or not header.startswith("Basic "):
            return False
        token = hmac.new(self._key, header.encode(), hashlib.sha256).digest()
        if token in self._verified:
            return True
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self._users.get(user)
        if hashed is None:
            return False
        import bcrypt  # only when basic auth is configured

        if not bcrypt.checkpw(password.encode(), hashed):
            return False
        if len(self._verified) < 64:  # a handful of scrapers, not an unbounded set
            self._verified.add(token)
        return True
