"""Settings: sources and their precedence, dashed YAML keys, and the error messages users see."""

import json
import os
import textwrap
from pathlib import Path

import pytest
import yaml

from diskaudit.settings import (
    ConfigError,
    Credential,
    Repository,
    RootSpec,
    Settings,
    load_settings,
)

SHIPPED_CONFIG = Path(__file__).parents[2] / "config" / "diskaudit.yaml"

# One non-default value per key, as a user writes it in YAML, and the value it should become.
YAML_EXAMPLES: dict[str, tuple[object, object]] = {
    "max-procs": (3, 3),
    "chunk-size": (250, 250),
    "dir-level": (0, 0),
    "analyzed-path": ("/srv", "/srv"),
    "multi-paths": ({"/home": 1}, {"/home": 1}),
    "ignore-dirs": (["/tmp", "*.cache"], ("/tmp", "*.cache")),
    "follow-symlinks": (True, True),
    "one-file-system": (True, True),
    "bind-address": ("127.0.0.1:9100", "127.0.0.1:9100"),
    "mode": ("file", "file"),
    "output-file": ("/var/lib/node_exporter/disk.prom", "/var/lib/node_exporter/disk.prom"),
    "scan-interval-minutes": (0.5, 0.5),
    "scan-interval": ("90s", 90.0),
    "scan-timeout": ("1h30m", 5400.0),
    "shutdown-timeout": (2.5, 2.5),
    "io-budget": (5000, 5000),
    "metrics-compat": ("dundee", "dundee"),
    "web-config-file": ("/etc/diskaudit/web.yml", "/etc/diskaudit/web.yml"),
    "size-buckets": (["/"], ("/",)),
    "top-files": ({"/": 5}, {"/": 5}),
    "data-dir": ("/srv/diskaudit", "/srv/diskaudit"),
    "job-timeout": ("30m", 1800.0),
    "max-concurrent-clones": (1, 1),
    "clone-memory-reserve": ("300MiB", 300 * 1024**2),
    "clone-memory-estimate": (0, 0),
    "clone-disk-reserve": ("2GB", 2 * 1000**3),
    "allowed-schemes": (["https"], ("https",)),
    "allowed-hosts": ("github.com,*.example.org", ("github.com", "*.example.org")),
    "allow-local-urls": (True, True),
    "credentials": (
        [{"host": "git.example.org", "token-env": "GIT_TOKEN"}],
        (Credential(host="git.example.org", token_env="GIT_TOKEN"),),
    ),
    "clone-depth": (1, 1),
    "max-repo-bytes": ("512MiB", 512 * 1024**2),
    "job-workers": (4, 4),
    "max-attempts": (5, 5),
    "retry-backoff": ("1s", 1.0),
    "job-retention": ("7d", 7 * 86400.0),
    "shutdown-grace": ("20s", 20.0),
    "api-token": ("s3cret-token", "s3cret-token"),
    "job-store": ("postgresql://da@db.example/diskaudit", "postgresql://da@db.example/diskaudit"),
    "job-lease": ("30s", 30.0),
    "cluster-max-concurrent-clones": (0, 0),
    "api-token-file": ("/etc/diskaudit/api-token", "/etc/diskaudit/api-token"),
    "repositories": (
        [{"url": "https://h/r.git", "interval": "6h"}],
        (Repository(url="https://h/r.git", interval=21600.0),),
    ),
    "log-level": ("debug", "debug"),
    "log-format": ("json", "json"),
}


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "diskaudit.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(
    config_path: Path | None = None,
    overrides: dict[str, object] | None = None,
    env: dict[str, str] | None = None,
) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(config_path, overrides, env={} if env is None else env)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return list(caught.value.problems)


# --- defaults and each source on its own


def test_defaults() -> None:
    settings = load_settings(env={})

    assert settings.max_procs == (os.cpu_count() or 1)
    assert settings.chunk_size == 1000
    assert settings.dir_level == 2
    assert settings.analyzed_path == "/"
    assert settings.multi_paths == {}
    assert settings.ignore_dirs == ("/proc", "/dev", "/sys", "/run")
    assert settings.follow_symlinks is False
    assert settings.one_file_system is False
    assert settings.bind_address == "0.0.0.0:9995"
    assert settings.mode == "http"
    assert settings.output_file is None
    assert settings.scan_interval_minutes == 5
    assert settings.log_level == "info"


def test_every_key_has_a_yaml_example_and_a_description() -> None:
    dashed = {name.replace("_", "-") for name in Settings.model_fields}
    assert set(YAML_EXAMPLES) == dashed
    assert all(field.description for field in Settings.model_fields.values())


@pytest.mark.parametrize(("key", "example"), YAML_EXAMPLES.items())
def test_each_key_from_yaml(tmp_path: Path, key: str, example: tuple[object, object]) -> None:
    written, expected = example
    # mode: file is only valid with an output file; give one unless that is the key under test.
    extra = {} if key == "output-file" else {"output-file": "/tmp/out.prom"}
    path = tmp_path / "diskaudit.yaml"
    path.write_text(yaml.safe_dump({key: written, **extra}), encoding="utf-8")

    settings = load_settings(path, env={})

    assert getattr(settings, key.replace("-", "_")) == expected


def test_empty_yaml_file_means_defaults(tmp_path: Path) -> None:
    path = write_config(tmp_path, "# only a comment\n")

    assert load_settings(path, env={}) == load_settings(env={})


@pytest.mark.parametrize(
    "multi_paths",
    ['"/home=2,/var=3"', "{/home: 2, /var: 3}", "\n  /home: 2\n  /var: 3"],
    ids=["string", "flow-mapping", "block-mapping"],
)
def test_multi_paths_string_and_mapping(tmp_path: Path, multi_paths: str) -> None:
    path = tmp_path / "diskaudit.yaml"
    path.write_text(f"multi-paths: {multi_paths}\n", encoding="utf-8")

    settings = load_settings(path, env={})

    assert settings.multi_paths == {"/home": 2, "/var": 3}
    assert settings.roots() == [RootSpec("/home", 2), RootSpec("/var", 3)]


@pytest.mark.parametrize(
    "ignore_dirs",
    ['"/proc, /dev/,*/node_modules"', "[/proc, /dev/, '*/node_modules']"],
    ids=["comma-string", "list"],
)
def test_ignore_dirs_string_and_list(tmp_path: Path, ignore_dirs: str) -> None:
    path = write_config(tmp_path, f"ignore-dirs: {ignore_dirs}\n")

    settings = load_settings(path, env={})

    # The trailing slash goes so that the scanner's string comparison still matches /dev.
    assert settings.ignore_dirs == ("/proc", "/dev", "*/node_modules")


def test_ignore_dirs_rejects_relative_path(tmp_path: Path) -> None:
    path = write_config(tmp_path, "ignore-dirs: [/proc, proc]\n")

    assert problems_of(path) == [
        f"{path}: ignore-dirs[1]: 'proc' is neither an absolute path nor a glob pattern"
    ]


def test_environment_values() -> None:
    settings = load_settings(
        env={
            "DISKAUDIT_MAX_PROCS": "3",
            "DISKAUDIT_DIR_LEVEL": "1",
            "DISKAUDIT_MULTI_PATHS": "/home=2,/var=3",
            "DISKAUDIT_IGNORE_DIRS": "/proc,/mnt/*",
            "DISKAUDIT_FOLLOW_SYMLINKS": "true",
            "DISKAUDIT_LOG_LEVEL": "DEBUG",
            "UNRELATED": "x",
        }
    )

    assert settings.max_procs == 3
    assert settings.dir_level == 1
    assert settings.multi_paths == {"/home": 2, "/var": 3}
    assert settings.ignore_dirs == ("/proc", "/mnt/*")
    assert settings.follow_symlinks is True
    assert settings.log_level == "debug"


def test_env_none_reads_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISKAUDIT_CHUNK_SIZE", "7")

    assert load_settings().chunk_size == 7
    assert load_settings(env={}).chunk_size == 1000
    # Settings() alone is a plain value: nothing leaks in from the shell.
    assert Settings().chunk_size == 1000


def test_flags_given_as_none_are_ignored() -> None:
    settings = load_settings(overrides={"chunk_size": None, "dir_level": 4}, env={})

    assert settings.chunk_size == 1000
    assert settings.dir_level == 4


# --- precedence: flags > environment > YAML > defaults


@pytest.mark.parametrize(
    ("in_yaml", "in_env", "in_flags", "expected"),
    [
        (None, None, None, 1000),
        (10, None, None, 10),  # YAML over default
        (None, 20, None, 20),  # environment over default
        (None, None, 30, 30),  # flag over default
        (10, 20, None, 20),  # environment over YAML
        (10, None, 30, 30),  # flag over YAML
        (None, 20, 30, 30),  # flag over environment
        (10, 20, 30, 30),
    ],
)
def test_precedence(
    tmp_path: Path,
    in_yaml: int | None,
    in_env: int | None,
    in_flags: int | None,
    expected: int,
) -> None:
    path = write_config(tmp_path, "" if in_yaml is None else f"chunk-size: {in_yaml}\n")
    env = {} if in_env is None else {"DISKAUDIT_CHUNK_SIZE": str(in_env)}

    settings = load_settings(path, {"chunk_size": in_flags}, env)

    assert settings.chunk_size == expected


def test_overridden_invalid_value_is_still_an_error(tmp_path: Path) -> None:
    # The file must stay valid on its own: the flag that hides the mistake may go away.
    path = write_config(tmp_path, "max-procs: many\n")

    assert problems_of(path, {"max_procs": 2}) == [
        f"{path}: max-procs: 'many' is not a valid integer"
    ]


def test_mode_file_output_file_may_come_from_another_source(tmp_path: Path) -> None:
    path = write_config(tmp_path, "mode: file\n")

    settings = load_settings(path, {"output_file": "/tmp/out.prom"}, env={})

    assert (settings.mode, settings.output_file) == ("file", "/tmp/out.prom")


# --- errors


def test_unknown_key_names_key_and_file_with_hint(tmp_path: Path) -> None:
    path = write_config(tmp_path, "chunk-sise: 10\nfrobnicate: 1\n")

    assert problems_of(path) == [
        f"{path}: chunk-sise: unknown key (did you mean chunk-size?)",
        f"{path}: frobnicate: unknown key",
    ]


def test_underscore_key_is_unknown_with_dashed_hint(tmp_path: Path) -> None:
    path = write_config(tmp_path, "max_procs: 2\n")

    assert problems_of(path) == [f"{path}: max_procs: unknown key (did you mean max-procs?)"]


def test_wrong_type_names_key_value_and_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "max-procs: many\n")

    assert problems_of(path) == [f"{path}: max-procs: 'many' is not a valid integer"]


def test_zero_max_procs_rejected(tmp_path: Path) -> None:
    path = write_config(tmp_path, "max-procs: 0\n")

    assert problems_of(path) == [f"{path}: max-procs: 0 is out of range (must be >= 1)"]
    assert problems_of(overrides={"max_procs": 0}) == [
        "--max-procs: 0 is out of range (must be >= 1)"
    ]


def test_broken_yaml(tmp_path: Path) -> None:
    path = write_config(tmp_path, "max-procs: 2\nchunk-size: [1000\n")

    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: invalid YAML at line 3, column 1: ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    assert problems_of(path) == [f"{path}: cannot read config file: No such file or directory"]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write_config(tmp_path, "- max-procs: 2\n")

    assert problems_of(path) == [f"{path}: top level is a list, expected a mapping"]


def test_mode_file_without_output_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "mode: file\n")

    assert problems_of(path) == [f"{path}: mode: 'file' requires output-file to be set"]


def test_env_wrong_type_names_env_var() -> None:
    problems = problems_of(env={"DISKAUDIT_MAX_PROCS": "many"})

    assert problems == ["DISKAUDIT_MAX_PROCS: max-procs: 'many' is not a valid integer"]


def test_multi_paths_errors_name_the_entry(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'multi-paths: "/home=two"\n')

    assert problems_of(path) == [f"{path}: multi-paths['/home']: 'two' is not a valid integer"]
    assert problems_of(env={"DISKAUDIT_MULTI_PATHS": "/home=2,/var"}) == [
        "DISKAUDIT_MULTI_PATHS: multi-paths: '/home=2,/var' has entry '/var', expected PATH=LEVEL"
    ]
    assert problems_of(overrides={"multi_paths": "/home=2,/home=3"}) == [
        "--multi-paths: '/home=2,/home=3' lists '/home' twice"
    ]


def test_unknown_flag_is_reported() -> None:
    assert problems_of(overrides={"chunk_sise": 5}) == [
        "--chunk-sise: unknown option (did you mean --chunk-size?)"
    ]


def test_all_problems_are_collected(tmp_path: Path) -> None:
    path = write_config(tmp_path, "chunk-sise: 1\nmax-procs: many\nmode: ftp\n")

    problems = problems_of(path, {"dir_level": -1}, {"DISKAUDIT_ONE_FILE_SYSTEM": "perhaps"})

    assert problems == [
        f"{path}: chunk-sise: unknown key (did you mean chunk-size?)",
        f"{path}: max-procs: 'many' is not a valid integer",
        f"{path}: mode: 'ftp' is not allowed (expected 'http' or 'file')",
        "DISKAUDIT_ONE_FILE_SYSTEM: one-file-system: 'perhaps' is not a valid boolean",
        "--dir-level: -1 is out of range (must be >= 0)",
    ]


@pytest.mark.parametrize(
    ("address", "host_port"),
    [
        ("0.0.0.0:9995", ("0.0.0.0", 9995)),
        ("[::1]:0", ("::1", 0)),
        (":9995", ("", 9995)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_bind_address_valid(address: str, host_port: tuple[str, int]) -> None:
    settings = load_settings(overrides={"bind_address": address}, env={})

    assert settings.bind_host_port() == host_port


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("localhost", "is not HOST:PORT (e.g. 0.0.0.0:9995)"),
        ("localhost:http", "is not HOST:PORT (e.g. 0.0.0.0:9995)"),
        ("localhost:65536", "has a port outside 0-65535"),
        ("::1:9995", "has an IPv6 host without [brackets]"),
    ],
)
def test_bind_address_invalid(address: str, problem: str) -> None:
    assert problems_of(env={"DISKAUDIT_BIND_ADDRESS": address}) == [
        f"DISKAUDIT_BIND_ADDRESS: bind-address: {address!r} {problem}"
    ]


# --- derived values


def test_roots_single_path_made_absolute_not_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)

    settings = load_settings(overrides={"analyzed_path": "link", "dir_level": 1}, env={})

    assert settings.roots() == [RootSpec(str(tmp_path / "link"), 1)]


def test_roots_multi_paths_replace_analyzed_path() -> None:
    settings = load_settings(
        overrides={"analyzed_path": "/srv", "multi_paths": "/var/log/=1,/home=3"}, env={}
    )

    assert settings.roots() == [RootSpec("/var/log", 1), RootSpec("/home", 3)]


def test_to_yaml_dict_round_trips(tmp_path: Path) -> None:
    settings = load_settings(
        overrides={
            "multi_paths": "/home=1",
            "ignore_dirs": "/proc,*.cache",
            "mode": "file",
            "output_file": "out.prom",
            "scan_interval_minutes": 0.25,
        },
        env={},
    )

    dumped = settings.to_yaml_dict()
    json.dumps(dumped)  # serialisable as plain data, not just by PyYAML
    assert "max-procs" in dumped
    path = tmp_path / "effective.yaml"
    path.write_text(yaml.safe_dump(dumped), encoding="utf-8")

    assert load_settings(path, env={}) == settings


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25), ("45", 45.0), (12, 12.0), ("2d", 172800.0)],
)
def test_durations(tmp_path: Path, written: object, seconds: float) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump({"scan-interval": written}), encoding="utf-8")

    assert load_settings(path, env={}).scan_interval_seconds() == seconds


@pytest.mark.parametrize("written", ["5 minutes", "m5", "-5m", "0s", "true"])
def test_bad_durations_name_the_key(tmp_path: Path, written: str) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(f"scan-timeout: {written}\n", encoding="utf-8")

    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: scan-timeout:")


def test_scan_interval_minutes_still_works_and_scan_interval_wins() -> None:
    assert (
        load_settings(overrides={"scan_interval_minutes": 2}, env={}).scan_interval_seconds() == 120
    )
    both = load_settings(overrides={"scan_interval_minutes": 2, "scan_interval": "10s"}, env={})
    assert both.scan_interval_seconds() == 10


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"host": "h"}, "exactly one of token-env and token-file"),
        ({"host": "h", "token-env": "A", "token-file": "/f"}, "exactly one"),
        ({"host": "h", "token": "s3cret"}, "token"),
    ],
)
def test_credentials_need_exactly_one_source(
    tmp_path: Path, entry: dict[str, str], message: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"credentials": [entry]}), encoding="utf-8")

    problems = problems_of(path)
    assert problems
    assert all(p.startswith(f"{path}: credentials") for p in problems)
    assert message in "\n".join(problems)
    assert "s3cret" not in "\n".join(problems)  # a token pasted inline is never echoed


def test_credential_tokens_are_read_from_env_or_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n", encoding="utf-8")

    assert Credential(host="h", token_env="T").token({"T": "from-env"}) == "from-env"
    assert Credential(host="h", token_file=str(token_file)).token() == "from-file"


@pytest.mark.parametrize(
    ("written", "expected"), [("2GiB", 2 * 1024**3), ("500MB", 500 * 10**6), (4096, 4096)]
)
def test_sizes(tmp_path: Path, written: object, expected: int) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"max-repo-bytes": written}), encoding="utf-8")

    assert load_settings(path, env={}).max_repo_bytes == expected


def test_shipped_config_loads_cleanly() -> None:
    settings = load_settings(SHIPPED_CONFIG, env={})

    assert settings.roots() == [RootSpec("/usr/share", 2)]
    assert settings.bind_address == "127.0.0.1:9995"
    assert settings.mode == "http"


def test_shipped_config_documents_every_key() -> None:
    text = SHIPPED_CONFIG.read_text(encoding="utf-8")

    undocumented = [
        key
        for key in (name.replace("_", "-") for name in Settings.model_fields)
        if f"{key}:" not in text
    ]
    assert undocumented == []


# --- the shared job store


def test_cluster_clone_limit_needs_a_postgresql_job_store(tmp_path: Path) -> None:
    path = write_config(tmp_path, "cluster-max-concurrent-clones: 2\n")
    assert problems_of(path) == [
        f"{path}: cluster-max-concurrent-clones: needs a PostgreSQL job-store "
        "(the limit is kept in the shared database)"
    ]
    ok = write_config(
        tmp_path, "cluster-max-concurrent-clones: 2\njob-store: postgresql://db/diskaudit\n"
    )
    assert load_settings(ok, env={}).cluster_max_concurrent_clones == 2


def test_job_store_errors_never_echo_the_url(tmp_path: Path) -> None:
    path = write_config(tmp_path, "job-store: mysql://user:hunter2@db/x\n")
    problems = problems_of(path)
    assert problems == [f"{path}: job-store: is neither 'sqlite' nor a postgresql:// URL"]
    assert "hunter2" not in "\n".join(problems)


def test_job_store_password_is_masked_in_the_dump() -> None:
    settings = load_settings(
        None, {"job_store": "postgresql://da:hunter2@db:5432/diskaudit?sslmode=require"}, env={}
    )
    dumped = settings.to_yaml_dict()
    assert dumped["job-store"] == "postgresql://da:***@db:5432/diskaudit?sslmode=require"
    assert "hunter2" not in repr(dumped)


def test_job_lease_has_a_floor(tmp_path: Path) -> None:
    path = write_config(tmp_path, "job-lease: 1s\n")
    assert problems_of(path) == [f"{path}: job-lease: '1s' is out of range (must be >= 3.0)"]
