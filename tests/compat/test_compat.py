"""`cachetier.compat`: the integration guide's `RedisCache`, `CacheConfig` and `cached` on `Cache`."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio
from pydantic import BaseModel

import cachetier.compat
from cachetier import TTL, BackendError, Cache, CacheSettings, ConfigurationError
from cachetier.backends import MemoryBackend, NullBackend, RedisBackend
from cachetier.compat import CacheConfig, RedisCache, cached

from ..servers import closed_port

CALLS: Counter[str] = Counter()


# Decorated at import time, before any default cache exists: binding must wait for the first call.
@cached(ttl=CacheConfig.QUERY_CACHE_TTL, key_prefix="tasks:")
async def pending_tasks(limit: int = 10) -> list[dict[str, object]]:
    CALLS["pending_tasks"] += 1
    return [{"id": i, "status": "pending"} for i in range(limit)]


class User(BaseModel):
    id: int
    name: str


@cached(ttl=CacheConfig.USER_CACHE_TTL, key_prefix="user:")
async def load_user(user_id: int) -> User:
    CALLS["load_user"] += 1
    return User(id=user_id, name=f"user {user_id}")


class TaskService:
    """A service whose method is cached, as the guide's DatabaseService would be."""

    def __init__(self) -> None:
        self.fetches = 0

    @cached(ttl=60, key_prefix="query:tasks:")
    async def count(self, status: str) -> int:
        self.fetches += 1
        return len(status)


ENV_NAMES = ("REDIS_URL", "REDIS_ENABLED")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No REDIS_* or CACHE_* variable and no .env file reaches `Cache.from_settings`."""
    for name in list(os.environ):
        if name in ENV_NAMES or name.startswith("CACHE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    CALLS.clear()


@pytest.fixture(autouse=True)
async def isolated_default_cache() -> AsyncIterator[None]:
    """Whatever a test makes the default cache is closed, and the previous one restored, after it."""
    with RedisCache.use(Cache(NullBackend())):
        yield
        await RedisCache.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def cache(request: pytest.FixtureRequest, namespace: str) -> AsyncIterator[Cache]:
    """The default cache for the test: on memory, or on the real Redis in a namespace of its own."""
    if request.param == "memory":
        backend: MemoryBackend | RedisBackend = MemoryBackend()
    else:
        # Timeouts a loaded CI machine does not trip: these tests are about the guide's API, and
        # a read that timed out is served as a miss (fail-open), which they would misread.
        backend = RedisBackend.from_url(
            request.getfixturevalue("redis_url"), connect_timeout=2.0, command_timeout=2.0
        )
    cache = Cache(backend, namespace=namespace)
    with RedisCache.use(cache):
        yield cache
    await cache.clear()
    await cache.aclose()


@pytest.fixture
def refusing_url() -> str:
    """A loopback port nothing listens on, with a password that must never show."""
    return f"redis://app:pw-compat-S3CRET@127.0.0.1:{closed_port()}/0"


@pytest.fixture
async def down_cache(refusing_url: str, namespace: str) -> AsyncIterator[Cache]:
    """The default cache for the test, on a Redis that refuses every connection."""
    backend = RedisBackend.from_url(refusing_url, connect_timeout=0.1, command_timeout=0.1)
    cache = Cache(backend, namespace=namespace)
    with RedisCache.use(cache):
        yield cache
    await cache.aclose()


# -- the module ------------------------------------------------------------------------------


def test_all_is_a_sorted_tuple_of_public_names() -> None:
    assert isinstance(cachetier.compat.__all__, tuple)
    assert list(cachetier.compat.__all__) == sorted(cachetier.compat.__all__)
    for name in cachetier.compat.__all__:
        assert getattr(cachetier.compat, name).__doc__


def test_cache_config_ttls_equal_the_ttl_presets() -> None:
    assert (
        CacheConfig.DEFAULT_TTL,
        CacheConfig.QUERY_CACHE_TTL,
        CacheConfig.USER_CACHE_TTL,
        CacheConfig.METRICS_CACHE_TTL,
        CacheConfig.CONTENT_CACHE_TTL,
        CacheConfig.MODEL_CACHE_TTL,
    ) == (3600, 1800, 300, 60, 7200, 86400)
    assert (TTL.DEFAULT, TTL.QUERY, TTL.USER, TTL.METRICS, TTL.CONTENT, TTL.MODEL) == (
        3600,
        1800,
        300,
        60,
        7200,
        86400,
    )


def test_cache_config_prefixes_end_with_the_separator() -> None:
    prefixes = {name: value for name, value in vars(CacheConfig).items() if name[:7] == "PREFIX_"}
    assert prefixes["PREFIX_QUERY"] == "query:"
    assert {"PREFIX_USER", "PREFIX_METRICS", "PREFIX_CONTENT", "PREFIX_MODEL"} <= set(prefixes)
    assert {"PREFIX_SESSION", "PREFIX_TASK", "PREFIX_COMPUTATION"} <= set(prefixes)
    for name, value in prefixes.items():
        assert value == name.removeprefix("PREFIX_").lower() + ":"


def test_redis_cache_is_not_instantiated() -> None:
    with pytest.raises(TypeError, match="class methods"):
        RedisCache()


# -- each operation, on memory and on real Redis ---------------------------------------------


async def test_get_set_delete_round_trip(cache: Cache) -> None:
    assert await RedisCache.get("user:123") is None
    user_data = {"id": 123, "name": "Ada", "roles": ["admin"]}
    assert await RedisCache.set("user:123", user_data, ttl=3600) is True
    assert await RedisCache.get("user:123") == user_data
    assert await cache.get("user:123") == user_data  # the same entry, through the core
    remaining = await cache.ttl("user:123")
    assert remaining is not None
    assert 3590 < remaining <= 3600
    assert await RedisCache.delete("user:123") is True
    assert await RedisCache.delete("user:123") is False
    assert await RedisCache.get("user:123") is None


async def test_set_without_ttl_uses_the_default_ttl(cache: Cache) -> None:
    await RedisCache.set("key", "value")
    remaining = await cache.ttl("key")
    assert remaining is not None
    assert CacheConfig.DEFAULT_TTL - 10 < remaining <= CacheConfig.DEFAULT_TTL


async def test_delete_pattern_removes_only_matching_keys(cache: Cache) -> None:
    for key in ("query:tasks:pending:10", "query:tasks:pending:20", "query:tasks:123"):
        await RedisCache.set(key, [1])
    await RedisCache.set("query:content:1", {"x": 1})
    assert await RedisCache.delete_pattern("query:tasks:pending:*") == 2
    assert await RedisCache.get("query:tasks:123") == [1]
    assert await RedisCache.delete_pattern("query:tasks:*") == 1
    assert await RedisCache.get("query:content:1") == {"x": 1}


async def test_get_or_set_fetches_once_then_hits(cache: Cache) -> None:
    fetches = Counter[str]()

    async def fetch() -> list[dict[str, object]]:
        fetches["tasks"] += 1
        return [{"id": 1}]

    first = await RedisCache.get_or_set(
        "query:tasks:pending", fetch, ttl=CacheConfig.QUERY_CACHE_TTL
    )
    second = await RedisCache.get_or_set(
        key="query:tasks:pending", fetch_fn=lambda: fetch(), ttl=CacheConfig.QUERY_CACHE_TTL
    )
    assert first == second == [{"id": 1}]
    assert fetches["tasks"] == 1
    assert await RedisCache.get_or_set("plain", lambda: 42) == 42


async def test_incr_counts_and_keeps_the_ttl(cache: Cache) -> None:
    assert await RedisCache.incr("api:calls:user_123", amount=1) == 1
    assert await RedisCache.incr("api:calls:user_123", amount=5) == 6
    assert await RedisCache.get("api:calls:user_123") == 6
    remaining = await cache.ttl("api:calls:user_123")
    assert remaining is not None
    assert remaining <= CacheConfig.DEFAULT_TTL


async def test_incr_of_a_non_counter_raises(cache: Cache) -> None:
    """A caller's bug is not an outage: it is raised, not turned into "no count"."""
    await RedisCache.set("not-a-counter", {"a": 1})
    with pytest.raises(BackendError, match="integer"):
        await RedisCache.incr("not-a-counter")


async def test_health_check_is_the_guides_dict(cache: Cache) -> None:
    health = await RedisCache.health_check()
    assert isinstance(health, dict)
    # "degraded" past 100 ms for the PING: a loaded machine can take that long.
    assert health["status"] == ("degraded" if health["latency_ms"] > 100 else "healthy")
    assert health["available"] is True
    guide_keys = {"uptime_seconds", "used_memory_mb", "connected_clients", "ops_per_sec"}
    assert guide_keys <= set(health)
    assert {"backend", "latency_ms", "namespace", "breaker", "stats"} <= set(health)
    assert health["namespace"] == cache.namespace
    if cache.backend.kind == "redis":
        assert isinstance(health["uptime_seconds"], int)
        assert isinstance(health["used_memory_mb"], float)
        assert isinstance(health["connected_clients"], int)
        assert health["connected_clients"] >= 1
        assert isinstance(health["ops_per_sec"], int)
    else:
        assert health["uptime_seconds"] is None


# -- clear_all ---------------------------------------------------------------------------------


async def test_clear_all_removes_only_this_namespace(cache: Cache, namespace: str) -> None:
    other = Cache(cache.backend, namespace=namespace + "-other")
    other_version = Cache(cache.backend, namespace=namespace, version="v2")
    await other.set("query:tasks:1", "kept")
    await other_version.set("query:tasks:1", "kept too")
    for key in ("user:1", "query:tasks:1", "metrics:summary"):
        await RedisCache.set(key, key)
    try:
        assert await RedisCache.clear_all() == 3
        assert await RedisCache.get("user:1") is None
        assert await other.get("query:tasks:1") == "kept"
        assert await other_version.get("query:tasks:1") == "kept too"
    finally:
        await other.clear()
        await other_version.clear()


@pytest.mark.redis
async def test_clear_all_leaves_keys_outside_the_cache_untouched(
    redis_url: str, namespace: str
) -> None:
    """Other applications' keys in the same database survive: no FLUSHDB."""
    raw = redis.asyncio.Redis.from_url(redis_url)
    foreign = f"{namespace}-foreign-app:session:1"
    backend = RedisBackend.from_url(redis_url, connect_timeout=2.0, command_timeout=2.0)
    cache = Cache(backend, namespace=namespace)
    try:
        await raw.set(foreign, b"not ours")
        with RedisCache.use(cache):
            await RedisCache.set("session:user_1", {"token": "t"})
            assert await RedisCache.clear_all() == 1
        assert await raw.get(foreign) == b"not ours"
    finally:
        await raw.delete(foreign)
        await raw.aclose()
        await cache.aclose()


# -- cached ----------------------------------------------------------------------------------


async def test_cached_decorated_before_configuration_binds_at_first_call(cache: Cache) -> None:
    assert await pending_tasks(3) == await pending_tasks(limit=3)
    assert CALLS["pending_tasks"] == 1
    assert pending_tasks.key_for(3).startswith("tasks:")
    assert await cache.delete_pattern("tasks:*") == 1
    await pending_tasks(3)
    assert CALLS["pending_tasks"] == 2


async def test_cached_follows_a_later_swap_of_the_default_cache(cache: Cache) -> None:
    await pending_tasks(2)
    other = Cache(MemoryBackend(), namespace="swapped")
    with RedisCache.use(other):
        await pending_tasks(2)  # a miss: the other cache is empty
        await pending_tasks(2)
        assert await other.get(pending_tasks.key_for(2)) is not None
    await pending_tasks(2)  # back on the first cache, which still holds the value
    assert CALLS["pending_tasks"] == 2


async def test_cached_rebuilds_the_return_type_on_a_hit(cache: Cache) -> None:
    first = await load_user(7)
    second = await load_user(7)
    assert isinstance(second, User)
    assert first == second
    assert CALLS["load_user"] == 1
    assert await load_user.invalidate(7) is True
    assert await load_user.refresh(7) == first
    assert CALLS["load_user"] == 2
    assert load_user.stats.hits >= 1


async def test_cached_method_keys_ignore_self(cache: Cache) -> None:
    one, two = TaskService(), TaskService()
    assert await one.count("pending") == 7
    assert await two.count("pending") == 7
    assert one.fetches + two.fetches == 1
    assert one.count.key_for("pending") == two.count.key_for("pending")
    assert await RedisCache.delete_pattern("query:tasks:*") == 1


def test_cached_reports_mistakes_at_decoration() -> None:
    def not_async() -> int:
        return 1

    with pytest.raises(TypeError, match="async def"):
        cached(ttl=60)(not_async)  # type: ignore[arg-type]  # the mistake under test
    with pytest.raises(ConfigurationError, match="ttl"):
        cached(ttl=-1)
    with pytest.raises(TypeError, match="limit"):

        @cached(key="tasks:{limit}")
        async def no_limit() -> int:
            return 1


async def test_bare_cached_uses_the_default_ttl(cache: Cache) -> None:
    @cached
    async def answer() -> int:
        CALLS["answer"] += 1
        return 42

    assert await answer() == await answer() == 42
    assert CALLS["answer"] == 1
    remaining = await cache.ttl(answer.key_for())
    assert remaining is not None
    assert cache.default_ttl is not None
    assert cache.default_ttl - 10 < remaining <= cache.default_ttl


# -- configuration and lifecycle -------------------------------------------------------------


async def test_default_cache_is_built_from_settings_on_first_use(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, namespace: str
) -> None:
    """The guide's start-up line: backend, redacted URL, default TTL; never the password."""
    await RedisCache.close()
    monkeypatch.setenv("REDIS_URL", "redis://app:pw-startup-S3CRET@127.0.0.1:6379/15")
    monkeypatch.setenv("CACHE_NAMESPACE", namespace)
    with caplog.at_level(logging.INFO, logger="cachetier"):
        cache = RedisCache.current()
        assert RedisCache.current() is cache
    lines = [
        record.getMessage() for record in caplog.records if "initialized" in record.getMessage()
    ]
    assert len(lines) == 1
    assert "backend=redis" in lines[0]
    assert "url=redis://app:***@127.0.0.1:6379/15" in lines[0]
    assert "default_ttl=3600s" in lines[0]
    assert "S3CRET" not in caplog.text
    assert "S3CRET" not in repr(cache)
    assert cache.namespace == namespace


async def test_malformed_setting_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    await RedisCache.close()
    monkeypatch.setenv("REDIS_URL", "http://app:pw-S3CRET@example.invalid/0")
    with pytest.raises(ConfigurationError, match="REDIS_URL") as caught:
        RedisCache.configure()
    assert "S3CRET" not in str(caught.value)


def test_configure_takes_a_cache_or_settings_not_both() -> None:
    cache = Cache(MemoryBackend())
    assert RedisCache.configure(cache) is cache
    assert RedisCache.current() is cache
    with pytest.raises(ValueError, match="not both"):
        RedisCache.configure(cache, settings=CacheSettings(backend="memory"))


async def test_initialize_and_close_fit_a_lifespan(redis_url: str, namespace: str) -> None:
    settings = CacheSettings(
        redis_url=redis_url, namespace=namespace, connect_timeout=2.0, command_timeout=2.0
    )
    assert await RedisCache.initialize(settings) is True
    assert RedisCache.current().backend.kind == "redis"
    assert await RedisCache.set("k", 1) is True
    assert await RedisCache.clear_all() == 1
    await RedisCache.close()
    assert await RedisCache.initialize(CacheSettings(backend="memory")) is True
    await RedisCache.close()
    await RedisCache.close()  # closing twice is harmless


def test_use_restores_the_previous_cache_when_nested() -> None:
    first, second = Cache(MemoryBackend()), Cache(MemoryBackend())
    before = RedisCache.current()
    with RedisCache.use(first):
        with RedisCache.use(second):
            assert RedisCache.current() is second
        assert RedisCache.current() is first
    assert RedisCache.current() is before


# -- REDIS_ENABLED=false and Redis down: the application keeps working ----------------------


async def test_redis_enabled_false_keeps_the_application_working(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await RedisCache.close()
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/15")
    monkeypatch.setenv("REDIS_ENABLED", "false")
    with caplog.at_level(logging.INFO, logger="cachetier"):
        assert await RedisCache.initialize() is False
    assert RedisCache.current().backend.kind == "null"
    assert "backend=null" in caplog.text
    assert await RedisCache.set("user:1", {"id": 1}) is False
    assert await RedisCache.get("user:1") is None
    assert await RedisCache.delete("user:1") is False
    assert await RedisCache.delete_pattern("query:*") == 0
    assert await RedisCache.clear_all() == 0
    assert await RedisCache.incr("api:calls") is None
    assert await RedisCache.get_or_set("query:x", lambda: [1, 2]) == [1, 2]
    assert await pending_tasks(1) == await pending_tasks(1)
    assert CALLS["pending_tasks"] == 2  # uncached: the function ran each time
    health = await RedisCache.health_check()
    assert (health["status"], health["available"]) == ("disabled", False)


async def test_redis_down_keeps_the_application_working(
    down_cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="cachetier"):
        assert await RedisCache.initialize() is False
        assert await RedisCache.get("user:1") is None
        assert await RedisCache.set("user:1", {"id": 1}) is False
        assert await RedisCache.delete("user:1") is False
        assert await RedisCache.delete_pattern("query:*") == 0
        assert await RedisCache.clear_all() == 0
        assert await RedisCache.incr("api:calls:user_1") is None
        assert await RedisCache.get_or_set("query:x", lambda: {"ok": True}) == {"ok": True}
        assert await pending_tasks(2) == await pending_tasks(2)
        health = await RedisCache.health_check()
    assert CALLS["pending_tasks"] == 2
    assert (health["status"], health["available"]) == ("unhealthy", False)
    assert health["error"]
    assert "does not answer" in caplog.text
    assert "S3CRET" not in caplog.text
    assert "S3CRET" not in repr(health)


async def test_strict_cache_raises_instead_of_returning_no_count(refusing_url: str) -> None:
    cache = Cache(RedisBackend.from_url(refusing_url, connect_timeout=0.1), strict=True)
    with RedisCache.use(cache):
        with pytest.raises(BackendError) as caught:
            await RedisCache.incr("api:calls")
        with pytest.raises(BackendError):
            await RedisCache.get("k")
    assert "S3CRET" not in str(caught.value)
    await cache.aclose()


# -- invalidation racing a fetch ---------------------------------------------------------------


async def test_delete_during_a_fetch_is_not_undone_by_the_fetch() -> None:
    """The guide's update flow: a read starts, the row changes and the key is deleted, the read ends."""
    database = {"title": "old"}
    read_done, invalidated = asyncio.Event(), asyncio.Event()

    async def fetch() -> dict[str, str]:
        row = dict(database)  # read before the update
        read_done.set()
        await invalidated.wait()
        return row

    with RedisCache.use(Cache(MemoryBackend())):
        reader = asyncio.create_task(RedisCache.get_or_set("content:1", fetch))
        await read_done.wait()
        database["title"] = "new"
        await RedisCache.delete("content:1")
        invalidated.set()
        assert await reader == {"title": "old"}  # this caller saw the old row; that is fine
        assert await RedisCache.get("content:1") is None  # but it must not stay cached
