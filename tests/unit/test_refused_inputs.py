"""Bad settings, URLs, TTLs and arguments are refused early, with errors naming what is at fault."""

from __future__ import annotations

import math
import os
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from cachetier import Cache, CacheSettings, CircuitBreaker, ConfigurationError, KeyBuilder
from cachetier._keys import check_key_collection
from cachetier.backends import MemoryBackend
from cachetier.backends.redis import RedisBackend

MAX_TTL = 10 * 365 * 24 * 3600  # the documented maximum: ten years
PASSWORD_PIECES = ("Zq9-pa", "ss-x7")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hides the developer's variables and ``.env`` files: each test starts from defaults."""
    for name in list(os.environ):
        upper = name.upper()
        if upper in {"REDIS_URL", "REDIS_ENABLED"} or upper.startswith("CACHE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


# --- settings errors name the environment variable -------------------------------------------


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        ("CACHE_BACKEND", "mongodb"),
        ("CACHE_DEFAULT_TTL", "soon"),
        ("CACHE_RETRIES", "many"),
        ("REDIS_ENABLED", "perhaps"),
        ("REDIS_URL", "http://h:6379"),
        ("CACHE_NAMESPACE", "a b"),
    ],
)
def test_plain_construction_error_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str
) -> None:
    monkeypatch.setenv(variable, text)
    with pytest.raises(ValidationError) as info:
        CacheSettings()
    assert [error["loc"][0] for error in info.value.errors()] == [variable]
    assert variable in str(info.value)


def test_plain_construction_error_names_every_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_BACKEND", "mongodb")
    monkeypatch.setenv("CACHE_DEFAULT_TTL", "soon")
    with pytest.raises(ValidationError) as info:
        CacheSettings()
    message = str(info.value)
    assert "CACHE_BACKEND" in message
    assert "CACHE_DEFAULT_TTL" in message
    assert "\nbackend\n" not in message
    assert "\ndefault_ttl\n" not in message


def test_plain_construction_error_hides_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "http://app:pw-S3CRET-42@h:6379/0")
    with pytest.raises(ValidationError) as info:
        CacheSettings()
    assert "S3CRET" not in str(info.value)
    assert "S3CRET" not in repr(info.value.errors())
    assert info.value.__context__ is None


def test_keyword_errors_name_the_variable_too() -> None:
    with pytest.raises(ValidationError, match="CACHE_DEFAULT_TTL"):
        CacheSettings(default_ttl="soon")


# --- a password holding '/', '?' or '#' never shows ------------------------------------------


@pytest.mark.parametrize("char", ["/", "?", "#"])
def test_from_url_error_hides_a_password_with_reserved_characters(char: str) -> None:
    url = f"redis://:{PASSWORD_PIECES[0]}{char}{PASSWORD_PIECES[1]}@127.0.0.1:6379/0"
    with pytest.raises(ConfigurationError, match="percent-encoded") as info:
        RedisBackend.from_url(url)
    assert not any(piece in str(info.value) for piece in PASSWORD_PIECES)


@pytest.mark.parametrize("char", ["/", "?", "#"])
@pytest.mark.parametrize("scheme", ["redis", "redis+cluster", "redis+sentinel"])
def test_settings_error_hides_a_password_with_reserved_characters(char: str, scheme: str) -> None:
    url = f"{scheme}://:{PASSWORD_PIECES[0]}{char}{PASSWORD_PIECES[1]}@h:6379/mymaster"
    with pytest.raises(ConfigurationError, match=r"REDIS_URL: .*percent-encoded") as info:
        CacheSettings.load(redis_url=url)
    assert not any(piece in str(info.value) for piece in PASSWORD_PIECES)


def test_from_url_accepts_a_percent_encoded_password() -> None:
    backend = RedisBackend.from_url("redis://:Zq9-pa%2Fss-x7@127.0.0.1:6379/0")
    assert "Zq9" not in repr(backend)


# --- TTLs, retries and the breaker's cool-down are bounded where they are given ---------------


@pytest.mark.parametrize("ttl", [sys.maxsize, 1e17, MAX_TTL + 1, timedelta(days=365 * 11)])
async def test_ttl_above_the_maximum_is_refused_before_any_write(ttl: float | timedelta) -> None:
    async with Cache(MemoryBackend()) as cache:
        with pytest.raises(ConfigurationError, match=r"ttl must be at most 315360000 seconds"):
            await cache.set("k", 1, ttl=ttl)
        with pytest.raises(ConfigurationError, match="ttl"):
            await cache.incr("counter", ttl=ttl)
        assert await cache.exists("k") is False
        assert await cache.exists("counter") is False


async def test_ttl_of_ten_years_is_accepted() -> None:
    async with Cache(MemoryBackend()) as cache:
        assert await cache.set("k", 1, ttl=MAX_TTL) is True


def test_decorator_ttl_above_the_maximum_is_refused() -> None:
    cache = Cache(MemoryBackend())
    with pytest.raises(ConfigurationError, match="ttl"):

        @cache.cached(ttl=sys.maxsize)
        async def f() -> int:
            return 1


def test_default_ttl_above_the_maximum_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="default_ttl must be at most"):
        Cache(MemoryBackend(), default_ttl=1e17)


@pytest.mark.parametrize(
    ("variable", "text", "message"),
    [
        ("CACHE_DEFAULT_TTL", "1e17", "CACHE_DEFAULT_TTL: must be at most 315360000"),
        ("CACHE_LOCAL_TTL", "1e12", "CACHE_LOCAL_TTL: must be at most 315360000"),
        ("CACHE_RETRIES", "100000", "CACHE_RETRIES: must be at most 10"),
        ("CACHE_BREAKER_COOLDOWN", "7200", "CACHE_BREAKER_COOLDOWN: must be at most 3600"),
    ],
)
def test_settings_bounds_name_the_variable(variable: str, text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        CacheSettings.load(**{variable: text})


@pytest.mark.parametrize("retries", [11, 100_000, -1, True])
def test_from_url_refuses_retries_out_of_range(retries: int) -> None:
    with pytest.raises(ConfigurationError, match="retries must be from 0 to 10"):
        RedisBackend.from_url("redis://127.0.0.1:6379/0", retries=retries)


@pytest.mark.parametrize("cooldown", [math.inf, math.nan, 0, -1, 3601, 1e300])
def test_circuit_breaker_refuses_a_cooldown_out_of_range(cooldown: float) -> None:
    with pytest.raises(ConfigurationError, match="cooldown"):
        CircuitBreaker(cooldown=cooldown)


def test_circuit_breaker_accepts_an_hour() -> None:
    assert CircuitBreaker(cooldown=3600).cooldown == 3600


# --- user keys cannot reach cachetier's own keys, and bad text is refused alike everywhere ----


async def test_a_user_key_named_like_the_generation_counter_leaves_bump_version_working() -> None:
    async with Cache(MemoryBackend()) as cache:
        assert await cache.set("__generation__", "x") is True
        await cache.set("report", 1)
        await cache.bump_version()
        assert await cache.get("report") is None
        assert await cache.get("__generation__") is None  # written before the bump


async def test_a_user_key_named_like_a_tag_index_leaves_the_tag_working() -> None:
    async with Cache(MemoryBackend()) as cache:
        assert await cache.set("__tag__:users", 1) is True
        assert await cache.set("u1", 1, tags=["users"]) is True
        assert await cache.invalidate_tags("users") == 1
        assert await cache.get("u1") is None
        assert await cache.get("__tag__:users") == 1


@pytest.mark.parametrize("key", ["\\_generation", "\\_tag:users", "\\_lock:x"])
async def test_keys_in_the_reserved_space_are_refused(key: str) -> None:
    async with Cache(MemoryBackend()) as cache:
        with pytest.raises(ValueError, match="reserved"):
            await cache.set(key, 1)
        with pytest.raises(ValueError, match="reserved"):
            await cache.get(key)


@pytest.mark.parametrize("key", ["a\ud800b", "\udfff"])
async def test_a_lone_surrogate_key_is_refused_on_every_backend(key: str) -> None:
    async with Cache(MemoryBackend()) as cache:
        with pytest.raises(ValueError, match="lone surrogate"):
            await cache.set(key, 1)
        with pytest.raises(ValueError, match="lone surrogate"):
            await cache.get(key)
        with pytest.raises(ValueError, match="lone surrogate"):
            await cache.set("k", 1, tags=[key])
        with pytest.raises(ValueError, match="lone surrogate"):
            await cache.delete_pattern(key + "*")


def test_reserved_keys_cannot_be_written_by_any_user_key() -> None:
    keys = KeyBuilder("app", "v1")
    reserved = [keys.generation_key(), keys.tag_key("users"), keys.lock_key(keys.full("x"))]
    for stored in reserved:
        with pytest.raises(ValueError, match="reserved"):
            keys.full(stored[len(keys.prefix) :])


async def test_a_decorated_call_with_a_lone_surrogate_argument_is_keyed_as_valid_utf8() -> None:
    async with Cache(MemoryBackend()) as cache:

        @cache.cached(ttl=30)
        async def echo(text: str) -> str:
            return text

        assert await echo("a\ud800") == "a\ud800"
        stored = echo.key_for("a\ud800")
        stored.encode("utf-8")  # no UnicodeEncodeError: Redis can hold it
        assert stored != echo.key_for("a\\ud800")


@pytest.mark.parametrize("keys", ["abc", b"abc"])
def test_a_single_string_where_keys_are_expected_is_a_type_error(keys: object) -> None:
    with pytest.raises(TypeError, match=r"keys must be a collection of keys, not a single"):
        check_key_collection(keys)
    check_key_collection(["abc"])


@pytest.mark.parametrize("backend", ["redis://:hunter2@localhost:6379/0", "redis", b"memory"])
def test_a_url_or_a_name_given_as_backend_is_refused_at_construction(backend: object) -> None:
    with pytest.raises(TypeError, match=r"RedisBackend\.from_url.*Cache\.from_settings") as caught:
        Cache(backend=backend)  # type: ignore[arg-type]  # the mistake under test
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("backend", [42, object(), {"get": 1}])
def test_an_object_that_is_no_backend_is_refused_naming_what_it_lacks(backend: object) -> None:
    with pytest.raises(TypeError, match="has no get"):
        Cache(backend=backend)  # type: ignore[arg-type]  # the mistake under test


def test_use_refuses_what_is_no_backend_and_keeps_the_one_it_had() -> None:
    cache = Cache()
    before = cache.backend
    with pytest.raises(TypeError, match=r"RedisBackend\.from_url"), cache.use("redis://x"):  # type: ignore[arg-type]
        pass
    assert cache.backend is before
