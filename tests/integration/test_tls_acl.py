"""TLS and ACL against real redis-server processes started by the tests."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from cachetier import BackendError, Cache, CacheError, CircuitBreaker
from cachetier.backends import RedisBackend

from ..conftest import REQUIRE_REDIS
from ..servers import (
    OPENSSL,
    REDIS_SERVER,
    RedisServer,
    TlsFiles,
    TlsRedisServer,
    TlsUnsupportedError,
    make_tls_files,
    running_redis,
)

pytestmark = pytest.mark.redis

# Room for the handshake on a loaded 2-core CI machine, where one took over 250 ms and timed
# out instead of failing on the certificate. Failing fast is failing before this runs out.
CONNECT_TIMEOUT = 2.0

ACL_USER = "app"
ACL_PASSWORD = "pw-S3CRET-acl"
WRONG_PASSWORD = "pw-WR0NG-guess"
NAMESPACE = "cachetest"
# What cachetier sends: reads and writes, INCRBY in MULTI/EXEC, SCAN + UNLINK for patterns,
# the lock (SET NX, a GET + DEL script, PUBLISH/SUBSCRIBE), leases and guarded writes (SET NX,
# a GET + SET script), tag stamps (strings read and replaced by scripts, kept alive with PTTL,
# PEXPIRE and PERSIST), PING and INFO for health checks, and CLIENT SETNAME on each connection.
# Keys are limited to the cache's namespace. The commands are the README's list, in its order.
ACL_RULES = (
    "reset",
    "on",
    f">{ACL_PASSWORD}",
    f"~{NAMESPACE}:*",
    "allchannels",
    "-@all",
    *(
        f"+{command}"
        for command in (
            "get",
            "mget",
            "set",
            "mset",
            "unlink",
            "del",  # inside the lock-release script
            "exists",
            "pttl",
            "pexpire",
            "persist",
            "incrby",
            "multi",
            "exec",
            "discard",
            "scan",
            "evalsha",
            "script|load",
            "publish",
            "subscribe",
            "unsubscribe",
            "ping",
            "info",
            "client|setname",
            "select",
        )
    ),
)


def _missing(message: str) -> None:
    if REQUIRE_REDIS:
        pytest.fail(message + " [CACHETIER_REQUIRE_REDIS=1 makes this a failure]")
    pytest.skip(message)


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    if OPENSSL is None:
        _missing("openssl is not installed (apt-get install openssl)")
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_redis(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> Iterator[TlsRedisServer]:
    """A redis-server listening only on a TLS port, with a certificate for 127.0.0.1."""
    if REDIS_SERVER is None:
        _missing("redis-server is not installed (apt-get install redis-server)")
    server = TlsRedisServer(tmp_path_factory.mktemp("redis-tls"), tls_files)
    try:
        server.start()
    except TlsUnsupportedError as exc:
        # A missing build capability, not a missing server: skipped even when Redis is required.
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["system CAs", "another CA"])
def untrusting_ca(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """CA certificates that did not sign the server's: the system store, or a CA of our own."""
    if request.param == "system CAs":
        return None
    return str(make_tls_files(tmp_path).ca_cert)


async def test_tls_round_trip_with_the_ca_that_signed_the_server(
    tls_redis: TlsRedisServer, namespace: str
) -> None:
    # Timeouts a loaded CI machine does not trip: this test is about TLS, and it is strict.
    backend = RedisBackend.from_url(
        tls_redis.url,
        ssl_ca_certs=str(tls_redis.files.ca_cert),
        connect_timeout=2.0,
        command_timeout=2.0,
    )
    runs = 0
    async with Cache(backend, namespace=namespace, strict=True) as cache:

        @cache.cached(ttl=60)
        async def lookup(k: int) -> dict[str, int]:
            nonlocal runs
            runs += 1
            return {"k": k}

        assert await cache.set("greeting", {"text": "hello over TLS"}) is True
        assert await cache.get("greeting") == {"text": "hello over TLS"}
        assert [await lookup(3), await lookup(3)] == [{"k": 3}, {"k": 3}]
        assert runs == 1
        report = await cache.health_check(degraded_after_ms=5_000)
        assert report.status == "healthy"
        assert report.server_version is not None
        assert await cache.clear() == 2


async def test_untrusted_server_certificate_fails_fast_and_open_saying_so(
    tls_redis: TlsRedisServer,
    untrusting_ca: str | None,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="cachetier")
    strict_backend = RedisBackend.from_url(
        tls_redis.url, ssl_ca_certs=untrusting_ca, connect_timeout=CONNECT_TIMEOUT
    )
    async with Cache(strict_backend, namespace=namespace, strict=True) as strict:
        started = time.perf_counter()
        with pytest.raises(BackendError) as caught:
            await strict.get("k")
        assert time.perf_counter() - started < CONNECT_TIMEOUT
        assert "certificate was not trusted" in str(caught.value)

    backend = RedisBackend.from_url(
        tls_redis.url, ssl_ca_certs=untrusting_ca, connect_timeout=CONNECT_TIMEOUT
    )
    async with Cache(backend, namespace=namespace, breaker=CircuitBreaker(threshold=3)) as cache:

        @cache.cached(ttl=60)
        async def lookup(k: int) -> dict[str, int]:
            return {"k": k}

        assert await cache.set("k", 1) is False
        assert await cache.get("k", "default") == "default"
        assert await lookup(5) == {"k": 5}
        report = await cache.health_check()
        assert report.status == "unhealthy"
        assert report.error is not None
        assert "certificate was not trusted" in report.error
    messages = [record.getMessage() for record in caplog.records]
    assert any("certificate was not trusted" in message for message in messages), messages


# -- ACL ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server with an ACL user ``app`` limited to the ``cachetest:`` keys."""
    if REDIS_SERVER is None:
        _missing("redis-server is not installed (apt-get install redis-server)")
    with running_redis(tmp_path_factory.mktemp("redis-acl")) as server:
        admin = redis.Redis.from_url(server.url)
        try:
            admin.execute_command("ACL", "SETUSER", ACL_USER, *ACL_RULES)
        finally:
            admin.close()
        yield server


def _acl_url(server: RedisServer, password: str) -> str:
    return f"redis://{ACL_USER}:{password}@127.0.0.1:{server.port}/0"


@pytest.fixture
async def acl_cache(acl_redis: RedisServer) -> AsyncIterator[Cache]:
    # Timeouts a loaded CI machine does not trip: its tests count backend errors and logs.
    backend = RedisBackend.from_url(
        _acl_url(acl_redis, ACL_PASSWORD), connect_timeout=2.0, command_timeout=2.0
    )
    async with Cache(backend, namespace=NAMESPACE) as cache:
        yield cache
        await cache.clear()


async def test_acl_user_limited_to_its_namespace_can_do_everything_the_cache_needs(
    acl_cache: Cache, acl_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cachetier")
    cache = acl_cache
    runs = 0

    @cache.cached(ttl=60, key_prefix="reports:")
    async def report(day: int) -> dict[str, int]:
        nonlocal runs
        runs += 1
        return {"day": day, "total": day * 10}

    assert await cache.set("users:1", {"name": "Ada"}, ttl=60) is True
    assert await cache.get("users:1") == {"name": "Ada"}
    assert await cache.add("users:1", {"name": "Eve"}) is False
    assert await cache.set_many({"users:2": 2, "users:3": 3}, ttl=60) is True
    assert await cache.set_many({"users:4": 4}) is True
    assert await cache.get_many(["users:2", "users:3", "users:9"]) == {"users:2": 2, "users:3": 3}
    assert await cache.exists("users:2") is True
    remaining = await cache.ttl("users:2")
    assert remaining is not None
    assert 0 < remaining <= 60
    assert await cache.incr("hits", ttl=60) == 1
    assert await cache.incr("hits", 4) == 5
    assert await cache.get("hits") == 5
    assert await cache.get_or_set("answer", lambda: 42, ttl=60) == 42
    assert await cache.get_or_set("answer", lambda: 0, ttl=60) == 42
    assert [await report(1), await report(1)] == [{"day": 1, "total": 10}] * 2
    assert runs == 1
    assert await cache.delete_pattern("users:*") == 4
    assert await cache.get("users:1") is None
    assert await cache.delete("hits") == 1
    assert await cache.set("tagged:1", 1, tags=["group"]) is True
    assert await cache.get_or_set("tagged:2", lambda: 2, tags=["group"]) == 2
    assert await cache.invalidate_tags("group") == 1
    assert await cache.get_many(["tagged:1", "tagged:2"]) == {}
    await cache.set("versioned", 1)
    generation = await cache.bump_version()
    assert await cache.bump_version() == generation + 1
    assert await cache.get("versioned") is None
    health = await cache.health_check(degraded_after_ms=5_000)
    assert health.status == "healthy"
    assert health.uptime_seconds is not None

    stats = cache.stats
    assert stats.backend_errors == 0
    assert stats.errors == 0
    assert [record.getMessage() for record in caplog.records] == []

    admin = redis.Redis.from_url(acl_redis.url)
    try:
        keys = admin.keys("*")
    finally:
        admin.close()
    assert keys
    assert all(key.startswith(f"{NAMESPACE}:".encode()) for key in keys), keys


async def test_acl_user_limited_to_its_namespace_can_use_cross_process_locks(
    acl_cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    """``lock=True`` takes its lock and publishes under keys the namespace's ACL covers."""
    caplog.set_level(logging.WARNING, logger="cachetier")
    runs = 0

    async def fetch() -> int:
        nonlocal runs
        runs += 1
        return 7

    for _ in range(3):
        assert await acl_cache.get_or_set("locked", fetch, ttl=60, lock=True) == 7
    assert runs == 1
    assert acl_cache.stats.backend_errors == 0
    assert [record.getMessage() for record in caplog.records] == []


async def test_wrong_password_fails_open_saying_the_credentials_were_refused(
    acl_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = _acl_url(acl_redis, WRONG_PASSWORD)
    # Timeouts a loaded CI machine does not trip: a timed-out AUTH would not say "refused".
    backend = RedisBackend.from_url(url, connect_timeout=2.0, command_timeout=2.0)
    async with Cache(backend, namespace=NAMESPACE) as cache:

        @cache.cached(ttl=60)
        async def lookup(k: int) -> dict[str, int]:
            return {"k": k}

        assert await cache.get("k", "default") == "default"
        assert await cache.set("k", 1) is False
        assert await lookup(2) == {"k": 2}
        report = await cache.health_check()
        assert report.status == "unhealthy"
        texts = [repr(cache), json.dumps(report.to_dict())]

    backend = RedisBackend.from_url(url, connect_timeout=2.0, command_timeout=2.0)
    async with Cache(backend, namespace=NAMESPACE, strict=True) as strict:
        with pytest.raises(BackendError) as caught:
            await strict.get("k")
    # A cache's first read fetches the generation along (MGET).
    assert str(caught.value) == "MGET failed: the server refused the credentials"
    texts += _exception_texts(caught.value)

    messages = [record.getMessage() for record in caplog.records]
    assert any("the server refused the credentials" in message for message in messages), messages
    texts += messages
    for text in texts:
        assert WRONG_PASSWORD not in text
        assert ACL_PASSWORD not in text


def _exception_texts(exc: BaseException) -> list[str]:
    """``str`` and ``repr`` of ``exc`` and of every exception chained to it."""
    texts: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), *map(str, current.args)]
        pending += [current.__cause__, current.__context__]
    assert isinstance(exc, CacheError)
    return texts
