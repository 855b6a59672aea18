"""Settings for diskaudit: the only module that reads the YAML file, the environment and flags.

Sources, highest priority first: command-line flags, ``DISKAUDIT_*`` environment variables, the
YAML file given with ``--config``, field defaults. YAML keys are dashed (``max-procs``) as in the
Go exporters; fields, environment variables and flags use the snake_case spelling
(docs/adr/0003-settings-sources-and-dash-keys.md).

Only pydantic, pydantic-settings and PyYAML are imported here: the daemon and CLI import this
module, scan worker processes should not need to.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

__all__ = ["ConfigError", "RootSpec", "Settings", "load_settings"]


class ConfigError(Exception):
    """Invalid configuration: ``str()`` is one line per problem, ``problems`` the same lines."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class RootSpec:
    """A directory to scan and the depth below it down to which usage is reported."""

    path: str
    dir_level: int
    #: Count files per size bucket in each reported directory (``size-buckets``).
    size_buckets: bool = False
    #: Report this many of the largest files (``top-files``).
    top_files: int = 0


# Value parsers: each accepts both the exporters' string form and the structured YAML form.


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _parse_multi_paths(value: object) -> object:
    """``"/home=2,/var=3"`` -> ``{"/home": "2", "/var": "3"}``; the levels are checked later."""
    if not isinstance(value, str):
        return value
    result: dict[str, str] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        # rpartition: "=" may occur in a path, never in a level.
        path, sep, level = item.rpartition("=")
        path = path.strip()
        if not sep or not path:
            raise ValueError(f"has entry {item!r}, expected PATH=LEVEL")
        if path in result:
            raise ValueError(f"lists {path!r} twice")
        result[path] = level.strip()
    return result


def _check_ignore_entry(entry: str) -> str:
    if any(char in entry for char in "*?["):
        return entry
    if not os.path.isabs(entry):
        raise ValueError("is neither an absolute path nor a glob pattern")
    # The scanner compares paths as strings: "/proc/" must still match "/proc".
    return os.path.normpath(entry)


def _split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        raise ValueError("is not HOST:PORT (e.g. 0.0.0.0:9995)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("has an IPv6 host without [brackets]")
    if int(port) > 65535:
        raise ValueError("has a port outside 0-65535")
    return host, int(port)


def _check_bind_address(address: str) -> str:
    _split_host_port(address)
    return address


def _check_job_store(value: str) -> str:
    if value == "sqlite" or value.startswith(("postgresql://", "postgres://")):
        return value
    raise ValueError("is neither 'sqlite' nor a postgresql:// URL")


def is_postgresql(job_store: str) -> bool:
    return job_store.startswith(("postgresql://", "postgres://"))


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def _parse_duration(value: object) -> object:
    """``"5m"``, ``"1h30m"``, ``"250ms"``, or a number of seconds, as seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration like 30s, 5m, 1h30m or 250ms")
    if not isinstance(value, (str, int, float)):
        return value  # pydantic reports the wrong type
    if isinstance(value, (int, float)):
        return float(value)
    text = value.strip().replace(" ", "")
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{value!r} is not a duration like 30s, 5m, 1h30m or 250ms")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}


def _parse_size(value: object) -> object:
    """``"2GiB"``, ``"500MB"``, ``"1.5 GiB"`` or a number of bytes, as bytes."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size like 512MiB or 2GiB")
    if not isinstance(value, str):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"{value!r} is not a size like 512MiB or 2GiB")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


class Credential(BaseModel):
    """A token for one git host, from an environment variable or a file; never from the
    settings file itself (which is often world-readable and checked into repositories)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: NonEmptyStr
    token_env: NonEmptyStr | None = None
    token_file: NonEmptyStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _dashed(cls, value: object) -> object:
        if isinstance(value, dict):
            return {str(k).replace("-", "_"): v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.token_env is None) == (self.token_file is None):
            raise ValueError("give exactly one of token-env and token-file")
        return self

    def token(self, env: Mapping[str, str] | None = None) -> str:
        """Read the token now (so a rotated file is picked up). Raises ``OSError``/``KeyError``."""
        if self.token_env is not None:
            return (os.environ if env is None else env)[self.token_env]
        assert self.token_file is not None
        return Path(self.token_file).read_text(encoding="utf-8").strip()


class Repository(BaseModel):
    """A repository the daemon audits on its own, every ``interval``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: NonEmptyStr
    ref: NonEmptyStr | None = None
    interval: Annotated[
        float, BeforeValidator(lambda v: _parse_duration(v)), Field(gt=0, allow_inf_nan=False)
    ] = 86400.0


def _default_max_procs() -> int:
    return os.cpu_count() or 1


NonEmptyStr = Annotated[str, Field(min_length=1)]
Level = Annotated[int, Field(ge=0)]
IgnoreEntry = Annotated[str, Field(min_length=1), AfterValidator(_check_ignore_entry)]
# NoDecode: pydantic-settings would otherwise parse these environment values as JSON, and
# "/home=2,/var=3" or "/proc,/dev" are not JSON. Keep these plain assignments: NoDecode is not
# seen through a `type X = ...` alias (pydantic-settings issue #715).
PathLevels = Annotated[dict[NonEmptyStr, Level], NoDecode, BeforeValidator(_parse_multi_paths)]
IgnoreList = Annotated[tuple[IgnoreEntry, ...], NoDecode, BeforeValidator(_split_commas)]
StrList = Annotated[tuple[NonEmptyStr, ...], NoDecode, BeforeValidator(_split_commas)]
BindAddress = Annotated[str, AfterValidator(_check_bind_address)]
Mode = Annotated[Literal["http", "file"], BeforeValidator(_lower)]
#: Bytes; written as "2GiB", "500MB" or a number of bytes.
Size = Annotated[int, BeforeValidator(_parse_size), Field(gt=0)]
#: Bytes as for ``Size``; 0 turns the check it bounds off.
SizeOrOff = Annotated[int, BeforeValidator(_parse_size), Field(ge=0)]
#: Seconds; written as "5m", "30s", "1h30m", "250ms" or a number of seconds.
Duration = Annotated[float, BeforeValidator(_parse_duration), Field(gt=0, allow_inf_nan=False)]
MetricsCompat = Annotated[Literal["none", "dundee"], BeforeValidator(_lower)]
LogFormat = Annotated[Literal["text", "json"], BeforeValidator(_lower)]
LogLevel = Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)]

# Raised by model validators for rules between fields; ctx["field"] names the field to blame, so
# the error can be reported against the source that set it.
_CONFLICT = "settings_conflict"


class Settings(BaseSettings):
    """Effective settings. Build them with :func:`load_settings`.

    ``Settings(...)`` on its own validates its keyword arguments and nothing else: it reads no
    environment, so a developer's shell cannot leak into tests or into ``load_settings``.

    Adding a key: one field with ``Field(description=...)``; its YAML key is the field name with
    dashes, its environment variable ``DISKAUDIT_<NAME>``.
    """

    model_config = SettingsConfigDict(
        env_prefix="DISKAUDIT_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    max_procs: int = Field(
        default_factory=_default_max_procs,
        ge=1,
        description="Scan worker processes (default: CPU count).",
    )
    chunk_size: int = Field(
        default=1000,
        ge=1,
        description="Directory entries a worker handles per batch; bounds worker memory.",
    )
    dir_level: Level = Field(
        default=2,
        description="Depth below analyzed-path down to which per-directory usage is reported.",
    )
    analyzed_path: NonEmptyStr = Field(
        default="/",
        description="Directory to scan when multi-paths is empty.",
    )
    multi_paths: PathLevels = Field(
        default_factory=dict,
        description="Directories to scan, each with its own dir-level; replaces analyzed-path.",
    )
    ignore_dirs: IgnoreList = Field(
        default=("/proc", "/dev", "/sys", "/run"),
        description="Absolute paths or glob patterns of directories not to descend into.",
    )
    follow_symlinks: bool = Field(
        default=False,
        description="Descend into symlinked directories.",
    )
    one_file_system: bool = Field(
        default=False,
        description="Do not cross into other mounted file systems.",
    )
    bind_address: BindAddress = Field(
        default="0.0.0.0:9995",
        description="HOST:PORT to listen on in http mode ([::1]:9995 for IPv6).",
    )
    mode: Mode = Field(
        default="http",
        description="'http' serves /metrics on bind-address; 'file' writes output-file.",
    )
    output_file: NonEmptyStr | None = Field(
        default=None,
        description="File the metrics are written to in file mode.",
    )
    scan_interval_minutes: float = Field(
        default=5,
        gt=0,
        allow_inf_nan=False,
        description="Minutes between scans.",
    )
    scan_interval: Duration | None = Field(
        default=None,
        description="Time between scans as a duration (5m, 30s); overrides scan-interval-minutes.",
    )
    scan_timeout: Duration = Field(
        default=3600.0,
        description="Deadline of one root's scan; a scan past it fails and is retried next time.",
    )
    shutdown_timeout: Duration = Field(
        default=10.0,
        description="How long a graceful stop (SIGTERM/SIGINT) may take before exiting anyway.",
    )
    io_budget: int | None = Field(
        default=None,
        ge=1,
        description="Directory entries per second per root at most (null: unlimited).",
    )
    metrics_compat: MetricsCompat = Field(
        default="none",
        description="'dundee' adds node_disk_usage_bytes and node_disk_usage_level_1_bytes.",
    )
    web_config_file: NonEmptyStr | None = Field(
        default=None,
        description="exporter-toolkit web config (TLS, basic auth with bcrypt hashes).",
    )
    size_buckets: StrList = Field(
        default=(),
        description="Roots whose directories also export file counts per size bucket.",
    )
    top_files: PathLevels = Field(
        default_factory=dict,
        description="Roots that also export their N largest files, as {root: N}.",
    )
    data_dir: NonEmptyStr = Field(
        default="/var/lib/diskaudit",
        description="Where clones (data-dir/clones) and, later, the job store live.",
    )
    job_timeout: Duration = Field(
        default=900.0,
        description="One deadline per repository audit: clone slot wait, clone, scan, audit.",
    )
    max_concurrent_clones: int = Field(
        default=2,
        ge=1,
        description="Clones on disk at once at most; fewer while memory is short (a slot is "
        "held until the clone is deleted).",
    )
    clone_memory_reserve: SizeOrOff = Field(
        default=256 * 1024**2,
        description="Memory that must stay available: a clone starts only with this much "
        "available, and one is stopped if it falls under half of it. 0: no memory check.",
    )
    clone_memory_estimate: SizeOrOff = Field(
        default=128 * 1024**2,
        description="Memory one clone is expected to take; clone slots above the first are "
        "added only while available memory covers them. 0: always max-concurrent-clones.",
    )
    clone_disk_reserve: SizeOrOff = Field(
        default=1024**3,
        description="Free space data-dir must keep: a clone starts only with this much free, "
        "and one is stopped if it falls under half of it. 0: no disk check.",
    )
    allowed_schemes: StrList = Field(
        default=("https", "ssh", "git"),
        description="URL schemes a repository may be cloned with (file:// needs allow-local-urls).",
    )
    allowed_hosts: StrList = Field(
        default=(),
        description="Hosts repositories may be cloned from ('*.example.com' allowed); [] = any.",
    )
    allow_local_urls: bool = Field(
        default=False,
        description="Allow file:// URLs and local paths (for tests; a local clone reads any file).",
    )
    credentials: tuple[Credential, ...] = Field(
        default=(),
        description="Tokens for private repositories: [{host, token-env | token-file}].",
    )
    clone_depth: int | None = Field(
        default=None,
        ge=1,
        description="Shallow clone depth; null clones the full history (history metrics need it).",
    )
    max_repo_bytes: Size = Field(
        default=2 * 1024**3,
        description="A clone whose directory grows past this is stopped and the audit fails.",
    )
    job_workers: int = Field(
        default=2,
        ge=1,
        description="Jobs audited at once by the daemon (clones are limited separately).",
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        description="Attempts of a job before a transient failure becomes final.",
    )
    retry_backoff: Duration = Field(
        default=30.0,
        description="Wait before the first retry of a transient failure; x4 each time, max 1h.",
    )
    job_retention: Duration = Field(
        default=30 * 86400.0,
        description="Finished jobs and their results are deleted after this long.",
    )
    shutdown_grace: Duration = Field(
        default=5.0,
        description="On stop, how long running jobs may finish before being queued again.",
    )
    job_store: Annotated[str, AfterValidator(_check_job_store)] = Field(
        default="sqlite",
        description="'sqlite' (data-dir/diskaudit.db, one daemon) or a postgresql:// URL shared "
        "by several daemons.",
    )
    job_lease: Annotated[Duration, Field(ge=3.0)] = Field(
        default=60.0,
        description="How long a claimed job stays this daemon's without renewal (renewed every "
        "third of it); a dead daemon's jobs go to others after it.",
    )
    cluster_max_concurrent_clones: int = Field(
        default=0,
        ge=0,
        description="Clones at once across all daemons sharing a PostgreSQL job store; 0 = no "
        "cluster limit (each daemon still keeps max-concurrent-clones).",
    )
    api_token: NonEmptyStr | None = Field(
        default=None,
        description="Bearer token of the job API (prefer api-token-file or the environment).",
    )
    api_token_file: NonEmptyStr | None = Field(
        default=None,
        description="File holding the job API's bearer token.",
    )
    repositories: tuple[Repository, ...] = Field(
        default=(),
        description="Repositories audited on their own: [{url, ref, interval}].",
    )
    log_level: LogLevel = Field(
        default="info",
        description="Least severe log level that is written.",
    )
    log_format: LogFormat = Field(
        default="text",
        description="'text' for people, 'json' (one object per line) for log shippers.",
    )

    @model_validator(mode="after")
    def _per_root_options_name_roots(self) -> Self:
        roots = {spec.path for spec in self._plain_roots()}
        for name, paths in (("size_buckets", self.size_buckets), ("top_files", self.top_files)):
            for path in paths:
                if os.path.abspath(path) not in roots:
                    raise PydanticCustomError(
                        _CONFLICT,
                        "{path} is not one of the scanned roots",
                        {"field": name, "path": path},
                    )
        return self

    @model_validator(mode="after")
    def _cluster_limit_needs_a_shared_store(self) -> Self:
        if self.cluster_max_concurrent_clones and not is_postgresql(self.job_store):
            raise PydanticCustomError(
                _CONFLICT,
                "needs a PostgreSQL job-store (the limit is kept in the shared database)",
                {"field": "cluster_max_concurrent_clones"},
            )
        return self

    @model_validator(mode="after")
    def _file_mode_needs_output_file(self) -> Self:
        if self.mode == "file" and self.output_file is None:
            raise PydanticCustomError(
                _CONFLICT, "'file' requires output-file to be set", {"field": "mode"}
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() reads each source itself, so that an invalid value can be reported
        # against the file, variable or flag it came from; merged sources would lose that.
        return (init_settings,)

    def roots(self) -> list[RootSpec]:
        """The directories to scan: multi-paths if set, else analyzed-path with dir-level.

        Paths are made absolute against the working directory but not resolved: a symlinked root
        keeps the name the user gave it.
        """
        buckets = {os.path.abspath(p) for p in self.size_buckets}
        top = {os.path.abspath(p): n for p, n in self.top_files.items()}
        return [
            RootSpec(spec.path, spec.dir_level, spec.path in buckets, top.get(spec.path, 0))
            for spec in self._plain_roots()
        ]

    def _plain_roots(self) -> list[RootSpec]:
        if self.multi_paths:
            return [RootSpec(os.path.abspath(p), level) for p, level in self.multi_paths.items()]
        return [RootSpec(os.path.abspath(self.analyzed_path), self.dir_level)]

    def scan_interval_seconds(self) -> float:
        """``scan-interval`` if set, else ``scan-interval-minutes``."""
        if self.scan_interval is not None:
            return self.scan_interval
        return self.scan_interval_minutes * 60.0

    def bind_host_port(self) -> tuple[str, int]:
        """``bind_address`` split for socket APIs: IPv6 brackets removed, "" means all hosts."""
        return _split_host_port(self.bind_address)

    def to_yaml_dict(self) -> dict[str, object]:
        """Effective settings under their dashed YAML keys; ``load_settings`` reads it back.
        Secrets (``api-token``) are masked."""
        out = {_dash(name): value for name, value in self.model_dump(mode="json").items()}
        if out.get("api-token") is not None:
            out["api-token"] = "***"
        out["job-store"] = redact_url(str(out["job-store"]))
        out["credentials"] = [
            {_dash(k): v for k, v in c.items() if v is not None} for c in out["credentials"]
        ]
        return out

    def read_api_token(self) -> str | None:
        """The job API's token: api-token, else the content of api-token-file. Raises OSError."""
        if self.api_token is not None:
            return self.api_token
        if self.api_token_file is not None:
            return Path(self.api_token_file).read_text(encoding="utf-8").strip() or None
        return None


# Loading.


def _dash(field_name: str) -> str:
    return field_name.replace("_", "-")


_DASHED_KEYS = {_dash(name): name for name in Settings.model_fields}


def _did_you_mean(key: str, prefix: str = "") -> str:
    # Underscores are mapped first so that "max_procs" is matched exactly, not merely closely.
    close = difflib.get_close_matches(key.lower().replace("_", "-"), _DASHED_KEYS, n=1)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _show(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _line(source: str, key: str, problem: str) -> str:
    # A flag already spells the key: "--max-procs: --max-procs: ..." would say it twice.
    if source == f"--{key}":
        return f"{source}: {problem}"
    return f"{source}: {key}: {problem}"


_REASONS = {
    "int_parsing": "is not a valid integer",
    "int_type": "is not a valid integer",
    "int_from_float": "is not a whole number",
    "float_parsing": "is not a valid number",
    "float_type": "is not a valid number",
    "finite_number": "is not a finite number",
    "bool_parsing": "is not a valid boolean",
    "bool_type": "is not a valid boolean",
    "string_type": "is not a string",
    "string_too_short": "is empty",
    "dict_type": "is not a mapping",
    "list_type": "is not a list",
    "tuple_type": "is not a list",
    "greater_than_equal": "is out of range (must be >= {ge})",
    "greater_than": "is out of range (must be > {gt})",
    "literal_error": "is not allowed (expected {expected})",
}


def _problem(error: ErrorDetails, source_of: Callable[[str], str]) -> str:
    ctx: dict[str, Any] = error.get("ctx") or {}
    if error["type"] == _CONFLICT:
        name = str(ctx["field"])
        return _line(source_of(name), _dash(name), error["msg"])
    first, *inner = error["loc"]
    name = str(first)
    key = _dash(name) + "".join(f"[{part!r}]" for part in inner)
    if error["type"] == "value_error":
        reason = str(ctx["error"])
    elif error["type"] in _REASONS:
        reason = _REASONS[error["type"]].format(**ctx)
    else:
        reason = f"is invalid: {error['msg']}"
    if name in _SECRET_FIELDS:
        # A token pasted where it does not belong must not be echoed into logs.
        return _line(source_of(name), key, reason)
    return _line(source_of(name), key, f"{_show(error['input'])} {reason}")


#: Fields whose values may hold secrets: their errors never show the value.
_SECRET_FIELDS = {"credentials", "api_token", "job_store"}


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for messages and dumps."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"


@dataclass
class _Layer:
    """The values one source sets, by field name, and how to name where each one came from."""

    source_of: Callable[[str], str]
    values: dict[str, object] = field(default_factory=dict)
    #: Problems found while reading the source (unreadable file, unknown key), before validation.
    found: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        try:
            Settings.model_validate(self.values)
        except ValidationError as exc:
            # Rules between fields are checked once all sources are merged: mode may come from
            # the file and output-file from a flag.
            invalid = [_problem(e, self.source_of) for e in exc.errors() if e["type"] != _CONFLICT]
            return self.found + invalid
        return self.found


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return "invalid YAML: " + " ".join(str(exc).split())


def _yaml_layer(path: str | os.PathLike[str]) -> _Layer:
    label = os.fspath(path)
    layer = _Layer(lambda _field: label)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        layer.found.append(f"{label}: cannot read config file: {exc.strerror or exc}")
        return layer
    except UnicodeDecodeError as exc:
        layer.found.append(f"{label}: not UTF-8 text (byte {exc.start})")
        return layer
    except yaml.YAMLError as exc:
        layer.found.append(f"{label}: {_yaml_problem(exc)}")
        return layer
    if data is None:  # empty, or only comments
        return layer
    if not isinstance(data, dict):
        layer.found.append(f"{label}: top level is a {type(data).__name__}, expected a mapping")
        return layer
    for key, value in data.items():
        # Dashes only: accepting "max_procs" too would let a half-renamed key slip through.
        name = _DASHED_KEYS.get(key) if isinstance(key, str) else None
        if name is None:
            hint = _did_you_mean(key) if isinstance(key, str) else ""
            layer.found.append(f"{label}: {key}: unknown key{hint}")
        else:
            layer.values[name] = value
    return layer


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' own environment parsing, over a given mapping instead of os.environ."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        super().__init__(Settings)
        # The base class has already read os.environ into env_vars; everything it parses later
        # (prefix, case, nesting, NoDecode) reads env_vars, so replacing it is enough.
        self.env_vars = {
            (name if self.case_sensitive else name.lower()): value
            for name, value in environ.items()
        }


def _env_layer(environ: Mapping[str, str]) -> _Layer:
    prefix = str(Settings.model_config.get("env_prefix", ""))
    nested = str(Settings.model_config.get("env_nested_delimiter", ""))

    def source_of(field_name: str) -> str:
        # Report the variable as the user spelled it; matching is case-insensitive.
        wanted = (prefix + field_name).lower()
        for name in environ:
            if name.lower() == wanted or name.lower().startswith(wanted + nested):
                return name
        return (prefix + field_name).upper()

    layer = _Layer(source_of)
    try:
        layer.values.update(_EnvSource(environ)())
    except SettingsError as exc:  # e.g. a JSON value for a nested field that does not parse
        layer.found.append(f"environment: {exc}")
    return layer


def _flag_layer(overrides: Mapping[str, object]) -> _Layer:
    layer = _Layer(lambda field_name: f"--{_dash(field_name)}")
    for name, value in overrides.items():
        if value is None:  # the flag was not given
            continue
        if name in Settings.model_fields:
            layer.values[name] = value
        else:
            layer.found.append(f"--{_dash(name)}: unknown option{_did_you_mean(name, '--')}")
    return layer


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Merge flags (``overrides``, None = not given) > environment > YAML file > defaults.

    ``env=None`` reads ``os.environ``. Every source is validated on its own, so a bad value is an
    error even where a higher-priority source overrides it: the file must stay usable without
    the flag. Raises :class:`ConfigError` listing every problem found.
    """
    layers: list[_Layer] = []  # lowest priority first
    if config_path is not None:
        layers.append(_yaml_layer(config_path))
    layers.append(_env_layer(os.environ if env is None else env))
    layers.append(_flag_layer(overrides or {}))
    problems = [problem for layer in layers for problem in layer.problems()]
    if problems:
        raise ConfigError(problems)

    merged: dict[str, object] = {}
    origin: dict[str, _Layer] = {}
    for layer in layers:
        merged.update(layer.values)
        origin.update(dict.fromkeys(layer.values, layer))

    def source_of(field_name: str) -> str:
        return origin[field_name].source_of(field_name) if field_name in origin else "defaults"

    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_problem(e, source_of) for e in exc.errors()) from None
