"""Tests for `CacheSettings`, the backend choice and the start-up line."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from cachetier import Cache, ConfigurationError
from cachetier._settings import (
    CacheSettings,
    build_backend,
    describe_backend_choice,
    startup_log_line,
)

PASSWORD = "pw-S3CRET-42"
URL_WITH_PASSWORD = f"redis://app:{PASSWORD}@redis.example.com:6380/2"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Hides the developer's variables and ``.env`` files: each test starts from defaults."""
    for name in list(os.environ):
        upper = name.upper()
        if upper in {"REDIS_URL", "REDIS_ENABLED"} or upper.startswith("CACHE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _load_error(**overrides: object) -> str:
    with pytest.raises(ConfigurationError) as info:
        CacheSettings.load(**overrides)
    return str(info.value)


# --- defaults and each variable ------------------------------------------------------------


def test_defaults_without_environment() -> None:
    settings = CacheSettings.load()
    assert settings.redis_url is None
    assert settings.redacted_url is None
    assert settings.redis_enabled is True
    assert settings.backend == "auto"
    assert (settings.namespace, settings.version) == ("cache", "v1")
    assert settings.default_ttl == 3600
    assert (settings.connect_timeout, settings.command_timeout) == (0.25, 0.1)
    assert (settings.max_connections, settings.retries) == (256, 0)
    assert (settings.breaker_failures, settings.breaker_cooldown) == (5, 5.0)
    assert settings.memory_max_entries == 10_000
    assert settings.memory_max_bytes == 64 * 1024 * 1024
    assert settings.max_value_bytes == 1024 * 1024
    assert settings.strict is False
    assert settings.key_max_length == 200


@pytest.mark.parametrize(
    ("variable", "text", "field", "expected"),
    [
        ("REDIS_ENABLED", "false", "redis_enabled", False),
        ("CACHE_BACKEND", "memory", "backend", "memory"),
        ("CACHE_NAMESPACE", "myapp", "namespace", "myapp"),
        ("CACHE_VERSION", "v7", "version", "v7"),
        ("CACHE_DEFAULT_TTL", "60", "default_ttl", 60.0),
        ("CACHE_CONNECT_TIMEOUT", "0.5", "connect_timeout", 0.5),
        ("CACHE_COMMAND_TIMEOUT", "0.05", "command_timeout", 0.05),
        ("CACHE_MAX_CONNECTIONS", "8", "max_connections", 8),
        ("CACHE_RETRIES", "2", "retries", 2),
        ("CACHE_BREAKER_FAILURES", "3", "breaker_failures", 3),
        ("CACHE_BREAKER_COOLDOWN", "1.5", "breaker_cooldown", 1.5),
        ("CACHE_MEMORY_MAX_ENTRIES", "100", "memory_max_entries", 100),
        ("CACHE_MEMORY_MAX_BYTES", "4096", "memory_max_bytes", 4096),
        ("CACHE_MAX_VALUE_BYTES", "512", "max_value_bytes", 512),
        ("CACHE_STRICT", "true", "strict", True),
        ("CACHE_KEY_MAX_LENGTH", "120", "key_max_length", 120),
        ("CACHE_VERSION_CHECK_INTERVAL", "0", "version_check_interval", 0.0),
        ("CACHE_LOCAL_TIER", "true", "local_tier", True),
        ("CACHE_LATENCY_STATS", "false", "latency_stats", False),
        ("CACHE_LOCAL_MAX_ENTRIES", "500", "local_max_entries", 500),
        ("CACHE_LOCAL_TTL", "5", "local_ttl", 5.0),
    ],
)
def test_each_variable_is_read(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, field: str, expected: object
) -> None:
    monkeypatch.setenv(variable, text)
    assert getattr(CacheSettings.load(), field) == expected


def test_redis_url_is_read_and_kept_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", URL_WITH_PASSWORD)
    settings = CacheSettings.load()
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == URL_WITH_PASSWORD
    assert settings.redacted_url == "redis://app:***@redis.example.com:6380/2"


@pytest.mark.parametrize("name", ["BACKEND", "NAMESPACE", "STRICT", "CACHE_REDIS_URL"])
def test_unrelated_variables_are_not_read(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Only ``REDIS_URL``, ``REDIS_ENABLED`` and ``CACHE_*`` names count, never bare field names."""
    monkeypatch.setenv(name, "redis://elsewhere:6379/0" if name.endswith("URL") else "true")
    settings = CacheSettings.load()
    assert settings.redis_url is None
    assert settings.backend == "auto"
    assert settings.namespace == "cache"
    assert settings.strict is False


def test_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "")
    monkeypatch.setenv("CACHE_DEFAULT_TTL", "")
    settings = CacheSettings.load()
    assert settings.redis_url is None
    assert settings.default_ttl == 3600


# --- .env files and precedence -------------------------------------------------------------


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CACHE_NAMESPACE=fromdotenv\nUNRELATED_KEY=1\n")
    assert CacheSettings.load().namespace == "fromdotenv"


def test_dotenv_local_is_read_and_overrides_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CACHE_NAMESPACE=fromdotenv\nCACHE_VERSION=v2\n")
    (tmp_path / ".env.local").write_text(f"REDIS_URL={URL_WITH_PASSWORD}\nCACHE_VERSION=v3\n")
    settings = CacheSettings.load()
    assert settings.namespace == "fromdotenv"
    assert settings.version == "v3"
    assert settings.redacted_url == "redis://app:***@redis.example.com:6380/2"


def test_environment_overrides_dotenv_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("CACHE_DEFAULT_TTL=10\n")
    (tmp_path / ".env.local").write_text("CACHE_DEFAULT_TTL=20\n")
    monkeypatch.setenv("CACHE_DEFAULT_TTL", "30")
    assert CacheSettings.load().default_ttl == 30


def test_keyword_arguments_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_BACKEND", "null")
    monkeypatch.setenv("REDIS_URL", "redis://env-host:6379/0")
    settings = CacheSettings(redis_url="redis://kw-host:6379/1", backend="redis")
    assert settings.backend == "redis"
    assert settings.redacted_url == "redis://kw-host:6379/1"


def test_load_accepts_field_and_environment_names() -> None:
    by_field = CacheSettings.load(default_ttl=60, redis_url="redis://h:6379/0")
    by_env = CacheSettings.load(CACHE_DEFAULT_TTL=60, REDIS_URL="redis://h:6379/0")
    assert by_field == by_env
    assert by_field.default_ttl == 60


def test_load_refuses_unknown_override() -> None:
    message = _load_error(defualt_ttl=60)
    assert "defualt_ttl" in message
    assert "default_ttl" in message


def test_construction_refuses_unknown_keyword() -> None:
    with pytest.raises(TypeError, match="'redis_ur'"):
        CacheSettings(redis_ur="redis://h:6379/0")


def test_construction_accepts_environment_names() -> None:
    settings = CacheSettings(CACHE_BACKEND="memory", REDIS_URL="redis://h:6379/0")
    assert (settings.backend, settings.redacted_url) == ("memory", "redis://h:6379/0")


def test_construction_passes_pydantic_settings_options(tmp_path: Path) -> None:
    (tmp_path / "other.env").write_text("CACHE_NAMESPACE=fromother\n")
    assert CacheSettings(_env_file=tmp_path / "other.env").namespace == "fromother"


def test_settings_are_immutable() -> None:
    settings = CacheSettings.load()
    with pytest.raises(ValidationError):
        settings.namespace = "other"


# --- validation errors name the variable ---------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "text", "expected"),
    [
        (
            "REDIS_URL",
            "http://localhost:6379",
            'REDIS_URL: scheme must be redis://, rediss:// or unix:// (got "http")',
        ),
        ("REDIS_URL", "localhost:6379", "REDIS_URL: scheme must be redis://"),
        ("REDIS_URL", "redis+sentinel://h:26379", "REDIS_URL: redis+sentinel:// URL must name"),
        ("REDIS_URL", "redis://:6379/0", "REDIS_URL: redis:// URL must give a host"),
        ("REDIS_URL", "redis://h:port/0", "REDIS_URL: port must be a number"),
        ("REDIS_URL", "redis://h:6379/zero", "REDIS_URL: database must be a number"),
        ("REDIS_URL", "unix://", "REDIS_URL: unix:// URL must give the socket path"),
        (
            "REDIS_ENABLED",
            "maybe",
            'REDIS_ENABLED: must be true or false (or 1/0, yes/no, on/off) (got "maybe")',
        ),
        (
            "CACHE_BACKEND",
            "redsi",
            "CACHE_BACKEND: must be one of 'auto', 'redis', 'memory' or 'null'",
        ),
        ("CACHE_DEFAULT_TTL", "an hour", 'CACHE_DEFAULT_TTL: must be a number (got "an hour")'),
        ("CACHE_DEFAULT_TTL", "0", "CACHE_DEFAULT_TTL: must be greater than 0"),
        ("CACHE_DEFAULT_TTL", "inf", "CACHE_DEFAULT_TTL: must be a finite number"),
        ("CACHE_CONNECT_TIMEOUT", "-1", 'CACHE_CONNECT_TIMEOUT: must be greater than 0 (got "-1")'),
        ("CACHE_COMMAND_TIMEOUT", "-0.1", "CACHE_COMMAND_TIMEOUT: must be greater than 0"),
        ("CACHE_MAX_CONNECTIONS", "0", "CACHE_MAX_CONNECTIONS: must be at least 1"),
        ("CACHE_MAX_CONNECTIONS", "1.5", "CACHE_MAX_CONNECTIONS: must be a whole number"),
        ("CACHE_RETRIES", "-1", "CACHE_RETRIES: must be at least 0"),
        ("CACHE_BREAKER_FAILURES", "0", "CACHE_BREAKER_FAILURES: must be at least 1"),
        ("CACHE_BREAKER_COOLDOWN", "-5", "CACHE_BREAKER_COOLDOWN: must be greater than 0"),
        ("CACHE_MEMORY_MAX_ENTRIES", "none", "CACHE_MEMORY_MAX_ENTRIES: must be a whole number"),
        ("CACHE_MEMORY_MAX_BYTES", "0", "CACHE_MEMORY_MAX_BYTES: must be at least 1"),
        ("CACHE_MAX_VALUE_BYTES", "-1", "CACHE_MAX_VALUE_BYTES: must be at least 1"),
        ("CACHE_STRICT", "sometimes", "CACHE_STRICT: must be true or false"),
        ("CACHE_KEY_MAX_LENGTH", "20", "CACHE_KEY_MAX_LENGTH: must be at least 64"),
        (
            "CACHE_NAMESPACE",
            "my app",
            'CACHE_NAMESPACE: must not contain whitespace (got "my app")',
        ),
        ("CACHE_VERSION", " ", "CACHE_VERSION: must not contain whitespace"),
    ],
)
def test_malformed_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, expected: str
) -> None:
    monkeypatch.setenv(variable, text)
    assert expected in _load_error()


def test_error_from_a_keyword_names_the_variable_too() -> None:
    assert _load_error(namespace="").startswith("CACHE_NAMESPACE: must not be empty")
    assert _load_error(backend="redis") == (
        "REDIS_URL: must be set when CACHE_BACKEND=redis "
        "(or choose CACHE_BACKEND=auto, memory or null)"
    )


def test_several_errors_are_reported_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_DEFAULT_TTL", "x")
    monkeypatch.setenv("CACHE_RETRIES", "-2")
    message = _load_error()
    assert message.startswith("2 invalid cache settings: ")
    assert "CACHE_DEFAULT_TTL: " in message
    assert "CACHE_RETRIES: " in message


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="CACHE_BACKEND"):
        CacheSettings.load(backend="sqlite")


def test_plain_construction_raises_pydantic_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_DEFAULT_TTL", "x")
    with pytest.raises(ValidationError):
        CacheSettings()


# --- the password never shows ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"http://app:{PASSWORD}@redis.example.com:6379/0",
        f"app:{PASSWORD}@redis.example.com:6379/0",
        f"{PASSWORD}",
        f"redis://app:{PASSWORD}@:6379/0",
        f"redis://app:{PASSWORD}@h:99999/0",
        f"redis://app:{PASSWORD}@h:6379/{PASSWORD}",
        f"redis+sentinel://app:{PASSWORD}@h:26379/0",
    ],
)
def test_password_absent_from_error(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(ConfigurationError) as info:
        CacheSettings.load()
    error = info.value
    assert str(error).startswith("REDIS_URL: ")
    assert PASSWORD not in str(error)
    assert PASSWORD not in repr(error)
    # Nothing chained either: pydantic's own error text quotes every input.
    assert error.__cause__ is None
    assert error.__context__ is None


def test_password_absent_from_error_about_another_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", URL_WITH_PASSWORD)
    monkeypatch.setenv("CACHE_DEFAULT_TTL", f"redis://x:{PASSWORD}@h")
    message = _load_error()
    assert "CACHE_DEFAULT_TTL" in message
    assert PASSWORD not in message


def test_password_absent_from_repr_and_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", URL_WITH_PASSWORD)
    settings = CacheSettings.load()
    for text in (repr(settings), str(settings), f"{settings!r}"):
        assert PASSWORD not in text
        assert "redis.example.com" in text


def test_password_absent_from_log_lines(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("REDIS_URL", URL_WITH_PASSWORD)
    settings = CacheSettings.load()
    with caplog.at_level(logging.DEBUG):
        backend = build_backend(settings)
        line = startup_log_line(settings, backend)
    assert PASSWORD not in line
    assert "redis://app:***@redis.example.com:6380/2" in line
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(backend)


# --- the backend choice --------------------------------------------------------------------


def test_redis_enabled_false_wins_over_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://localhost:6379/0")
    monkeypatch.setenv("REDIS_ENABLED", "false")
    settings = CacheSettings.load()
    assert describe_backend_choice(settings).kind == "null"
    assert "REDIS_ENABLED=false" in describe_backend_choice(settings).reason
    assert build_backend(settings).kind == "null"


def test_backend_choice_names_what_from_settings_builds_without_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cachetier import BackendChoice

    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_ENABLED", raising=False)
    local = CacheSettings.load().backend_choice()
    assert isinstance(local, BackendChoice)
    assert (local.kind, "REDIS_URL is not set" in local.reason) == ("memory", True)
    monkeypatch.setenv("REDIS_URL", "redis://app:pw-CHOICE@127.0.0.1:1/0")  # nothing listens
    remote = CacheSettings.load().backend_choice()
    assert remote.kind == "redis"
    assert "pw-CHOICE" not in remote.reason


def test_redis_url_selects_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://localhost:6379/0")
    settings = CacheSettings.load()
    assert describe_backend_choice(settings).reason == "REDIS_URL is set"
    assert build_backend(settings).kind == "redis"


def test_building_redis_backend_does_no_io() -> None:
    """Nothing listens on port 1; building must still succeed because it connects lazily."""
    backend = build_backend(CacheSettings.load(redis_url="redis://127.0.0.1:1/0"))
    assert backend.kind == "redis"


def test_nothing_set_selects_memory_with_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    settings = CacheSettings.load()
    with caplog.at_level(logging.DEBUG, logger="cachetier"):
        backend = build_backend(settings)
    assert backend.kind == "memory"
    records = [r for r in caplog.records if r.name == "cachetier" and r.levelno == logging.INFO]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "process-local" in message
    assert "REDIS_URL" in message


@pytest.mark.parametrize(
    ("overrides", "kind"),
    [
        ({"backend": "memory"}, "memory"),
        ({"backend": "null"}, "null"),
        ({"backend": "redis", "redis_url": "redis://h:6379/0"}, "redis"),
        ({"backend": "memory", "redis_url": "redis://h:6379/0"}, "memory"),
        ({"backend": "null", "redis_url": "redis://h:6379/0"}, "null"),
        ({"backend": "redis", "redis_url": "redis://h:6379/0", "redis_enabled": False}, "null"),
        ({"backend": "memory", "redis_enabled": False}, "memory"),
    ],
)
def test_explicit_backend_choice(
    caplog: pytest.LogCaptureFixture, overrides: dict[str, object], kind: str
) -> None:
    with caplog.at_level(logging.DEBUG, logger="cachetier"):
        backend = build_backend(CacheSettings.load(**overrides))
    assert backend.kind == kind
    assert not caplog.records, "only the auto choice of memory logs"


def test_memory_backend_gets_its_bounds() -> None:
    settings = CacheSettings.load(backend="memory", memory_max_entries=2)
    backend = build_backend(settings)
    assert backend.kind == "memory"


async def test_memory_backend_bound_is_applied() -> None:
    backend = build_backend(CacheSettings.load(backend="memory", memory_max_entries=2))
    for key in ("a", "b", "c"):
        await backend.set(key, b"x")
    assert [await backend.exists(key) for key in ("a", "b", "c")].count(True) == 2


def test_redis_backend_without_url_names_redis_url() -> None:
    settings = CacheSettings.model_construct(backend="redis", redis_url=None, redis_enabled=True)
    with pytest.raises(ConfigurationError, match=r"^REDIS_URL: "):
        build_backend(settings)


# --- the start-up line ---------------------------------------------------------------------


def test_startup_line_for_memory() -> None:
    settings = CacheSettings.load(namespace="app", version="v2", default_ttl=1800)
    line = startup_log_line(settings, build_backend(settings))
    assert line == (
        "cachetier: cache initialized: backend=memory default_ttl=1800s namespace=app "
        "version=v2 (REDIS_URL is not set: process-local memory cache)"
    )


def test_startup_line_for_redis_shows_redacted_url() -> None:
    settings = CacheSettings.load(redis_url="redis://localhost:6379/0")
    line = startup_log_line(settings, build_backend(settings))
    assert line.startswith(
        "cachetier: cache initialized: backend=redis url=redis://localhost:6379/0 "
    )
    assert "default_ttl=3600s" in line


def test_startup_line_for_disabled_cache_gives_reason() -> None:
    settings = CacheSettings.load(redis_enabled=False, redis_url="redis://localhost:6379/0")
    line = startup_log_line(settings, build_backend(settings))
    assert "backend=null" in line
    assert "url=" not in line
    assert "REDIS_ENABLED=false" in line


def test_from_settings_builds_the_local_tier_when_asked(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("CACHE_LOCAL_TIER", "true")
    monkeypatch.setenv("CACHE_LOCAL_MAX_ENTRIES", "7")
    cache = Cache.from_settings()
    local = cache._engine.local
    assert local is not None
    assert local.settings.max_entries == 7
