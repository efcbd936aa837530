"""Redis Sentinel: the backend contract and the cache over a primary found through a Sentinel."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest

# The suite's asserts live in the package; rewritten, a failing check shows its values.
if "cachetier.testing.contract" not in sys.modules:
    pytest.register_assert_rewrite("cachetier.testing.contract")

from cachetier import BackendError, Cache
from cachetier.backends import RedisBackend
from cachetier.testing.contract import BackendContract, BackendFactory

from ..conftest import need_redis_server
from ..servers import REDIS_CLI, SentinelServers, closed_port, running_sentinel

pytestmark = pytest.mark.redis

PASSWORD = "pw-S3CRET-sentinel"


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelServers]:
    """One primary with a password and one Sentinel watching it, started once for this module."""
    need_redis_server(cli=True)
    with running_sentinel(tmp_path_factory.mktemp("sentinel"), password=PASSWORD) as servers:
        yield servers


@pytest.fixture
async def cache(sentinel: SentinelServers, namespace: str) -> AsyncIterator[Cache]:
    # Generous timeouts: these tests check semantics on a CI machine that may stall.
    async with Cache(
        RedisBackend.from_url(sentinel.url, connect_timeout=2.0, command_timeout=2.0),
        namespace=namespace,
        strict=True,
    ) as cache:
        yield cache
        await cache.clear()


def _sentinel_clients(sentinel: SentinelServers) -> int:
    """Returns how many clients the Sentinel has, the one asking included."""
    assert REDIS_CLI is not None
    listing = subprocess.run(
        [REDIS_CLI, "-h", "127.0.0.1", "-p", str(sentinel.sentinel_port), "CLIENT", "LIST"],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    return len(listing.splitlines())


class TestSentinelBackendContract(BackendContract):
    @pytest.fixture
    def backend_factory(self, sentinel: SentinelServers) -> BackendFactory:
        url = sentinel.url
        return BackendFactory(
            make=lambda: RedisBackend.from_url(url, connect_timeout=2.0, command_timeout=2.0)
        )


async def test_url_gives_a_redis_backend_without_the_password(sentinel: SentinelServers) -> None:
    backend = RedisBackend.from_url(sentinel.url)
    assert backend.kind == "redis"
    assert isinstance(backend, RedisBackend)
    assert PASSWORD not in repr(backend)
    assert "mymaster" in repr(backend)
    await backend.aclose()


async def test_cache_works_through_the_sentinel(cache: Cache) -> None:
    assert await cache.set("greeting", {"text": "hello via Sentinel"}) is True
    assert await cache.get("greeting") == {"text": "hello via Sentinel"}
    assert await cache.get_or_set("computed", lambda: [1, 2, 3], ttl=60, lock=True) == [1, 2, 3]
    assert await cache.delete_pattern("*") == 2
    report = await cache.health_check(degraded_after_ms=5_000)
    assert report.status == "healthy"
    assert report.backend == "redis"
    assert report.uptime_seconds is not None


async def test_database_after_the_service_is_used(sentinel: SentinelServers) -> None:
    backend = RedisBackend.from_url(sentinel.url + "/3", connect_timeout=2.0, command_timeout=2.0)
    plain = RedisBackend.from_url(
        f"redis://:{PASSWORD}@127.0.0.1:{sentinel.primary.port}/3",
        connect_timeout=2.0,
        command_timeout=2.0,
    )
    try:
        await backend.set("sentinel:db-check", b"3", ttl=60)
        assert await plain.get("sentinel:db-check") == b"3"
    finally:
        await plain.delete("sentinel:db-check")
        await backend.aclose()
        await plain.aclose()


async def test_aclose_closes_the_connections_to_the_sentinel(sentinel: SentinelServers) -> None:
    before = _sentinel_clients(sentinel)
    backend = RedisBackend.from_url(sentinel.url, connect_timeout=2.0, command_timeout=2.0)
    await backend.set("sentinel:close-check", b"v", ttl=5)
    assert _sentinel_clients(sentinel) == before + 1
    await backend.aclose()
    deadline = time.monotonic() + 5
    while _sentinel_clients(sentinel) != before:
        assert time.monotonic() < deadline, "the Sentinel connection stayed open"
        await asyncio.sleep(0.02)
    # Usable again after aclose, as every backend is.
    assert await backend.get("sentinel:close-check") == b"v"
    await backend.aclose()


async def test_unreachable_sentinel_fails_open_without_credentials() -> None:
    url = f"redis+sentinel://app:{PASSWORD}@127.0.0.1:{closed_port()}/mymaster"
    backend = RedisBackend.from_url(url)
    assert PASSWORD not in repr(backend)
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        await backend.get("k")
    assert time.monotonic() - started < 2
    assert PASSWORD not in str(info.value)
    async with Cache(backend, namespace="unreachable") as cache:
        assert await cache.get("k", default="fallback") == "fallback"
        assert await cache.set("k", 1) is False
        report = await cache.health_check()
        assert report.status == "unhealthy"
        assert PASSWORD not in str(report.to_dict())


async def test_unknown_service_fails_open(sentinel: SentinelServers) -> None:
    url = sentinel.url.replace("/mymaster", "/othermaster")
    # Timeouts a loaded CI machine does not trip: a Sentinel query that timed out would fail
    # open too, but not saying that no Sentinel named a master.
    backend = RedisBackend.from_url(url, connect_timeout=2.0, command_timeout=2.0)
    async with Cache(backend, namespace="unknown") as cache:
        assert await cache.get("k", default="fallback") == "fallback"
        report = await cache.health_check()
    assert report.status == "unhealthy"
    assert PASSWORD not in str(report.to_dict())
    backend = RedisBackend.from_url(url, connect_timeout=2.0, command_timeout=2.0)
    try:
        with pytest.raises(BackendError, match="no Sentinel named a master for the service"):
            await backend.get("k")
    finally:
        await backend.aclose()


async def test_wrong_password_is_reported_without_it(sentinel: SentinelServers) -> None:
    url = sentinel.url.replace(PASSWORD, "pw-WR0NG-guess")
    backend = RedisBackend.from_url(url, command_timeout=2.0)
    try:
        with pytest.raises(BackendError) as info:
            await backend.get("k")
    finally:
        await backend.aclose()
    assert "refused the credentials" in str(info.value)
    assert "WR0NG" not in str(info.value)
