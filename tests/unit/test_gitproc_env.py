"""git's environment: hardened, with the memory bounds after any credential header."""

from __future__ import annotations

from diskaudit.audit.gitproc import GIT_MEMORY_CONFIG, hardened_env


def config_of(env: dict[str, str]) -> dict[str, str]:
    count = int(env["GIT_CONFIG_COUNT"])
    return {env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(count)}


def test_memory_bounds_are_in_the_environment() -> None:
    env = hardened_env("/nonexistent-home")
    assert config_of(env) == GIT_MEMORY_CONFIG
    assert config_of(env)["pack.threads"] == "1"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert env["GIT_CONFIG_GLOBAL"] == "/dev/null"
    assert env["HOME"] == "/nonexistent-home"


def test_a_credential_header_keeps_its_place_before_the_bounds() -> None:
    header = {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.https://h/.extraHeader",
        "GIT_CONFIG_VALUE_0": "Authorization: Basic xyz",
    }
    config = config_of(hardened_env("/h", header))
    assert config["http.https://h/.extraHeader"] == "Authorization: Basic xyz"
    assert {k: v for k, v in config.items() if k in GIT_MEMORY_CONFIG} == GIT_MEMORY_CONFIG
