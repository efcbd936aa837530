"""Redis Cluster: the backend contract and the cache over a local cluster of three primaries."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as redis_asyncio
from redis.asyncio.cluster import RedisCluster

# The suite's asserts live in the package; rewritten, a failing check shows its values.
if "cachetier.testing.contract" not in sys.modules:
    pytest.register_assert_rewrite("cachetier.testing.contract")

from cachetier import BackendError, Cache
from cachetier.backends import RedisBackend
from cachetier.testing.contract import BackendContract, BackendFactory

from ..servers import RedisClusterServers, closed_port

pytestmark = pytest.mark.redis

PASSWORD = "pw-S3CRET-cluster"


@pytest.fixture(scope="module")
def cluster(redis_cluster: RedisClusterServers) -> RedisClusterServers:
    """Three primaries, no replicas, started once for the session (see conftest)."""
    return redis_cluster


@pytest.fixture
async def raw(cluster: RedisClusterServers) -> AsyncIterator[RedisCluster]:
    """A plain redis-py cluster client, to see where keys landed."""
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    await client.initialize()
    yield client
    await client.aclose()


@pytest.fixture
async def cache(cluster: RedisClusterServers, namespace: str) -> AsyncIterator[Cache]:
    # Generous timeouts: these tests check semantics on a CI machine that may stall.
    async with Cache(
        RedisBackend.from_url(cluster.url, connect_timeout=2.0, command_timeout=2.0),
        namespace=namespace,
        strict=True,
    ) as cache:
        yield cache
        await cache.clear()


def _keys_on_every_primary(client: RedisCluster, prefix: str, per_node: int = 2) -> list[str]:
    """Returns keys under ``prefix`` with at least ``per_node`` of them on each primary."""
    wanted = {node.name: per_node for node in client.get_primaries()}
    keys: list[str] = []
    index = 0
    while any(wanted.values()):
        key = f"{prefix}{index}"
        index += 1
        node = client.get_node_from_key(key)
        assert node is not None
        if wanted[node.name]:
            wanted[node.name] -= 1
            keys.append(key)
    return keys


def _nodes_of(client: RedisCluster, keys: list[str]) -> set[str]:
    names = set()
    for key in keys:
        node = client.get_node_from_key(key)
        assert node is not None
        names.add(node.name)
    return names


class TestClusterBackendContract(BackendContract):
    @pytest.fixture
    def backend_factory(self, cluster: RedisClusterServers) -> BackendFactory:
        url = cluster.url
        return BackendFactory(
            make=lambda: RedisBackend.from_url(url, connect_timeout=2.0, command_timeout=2.0)
        )


# -- the backend ---------------------------------------------------------------------------------


async def test_url_gives_a_cluster_backend(cluster: RedisClusterServers) -> None:
    backend = RedisBackend.from_url(cluster.url)
    assert backend.kind == "redis-cluster"
    assert type(backend).__name__ == "RedisClusterBackend"
    await backend.aclose()


async def test_multi_key_operations_span_every_primary(
    cluster: RedisClusterServers, raw: RedisCluster, namespace: str
) -> None:
    """get_many, set_many and delete take keys of every slot, where one MGET/MSET/DEL would not."""
    keys = _keys_on_every_primary(raw, f"{namespace}:k", per_node=5)
    assert len(_nodes_of(raw, keys)) == 3
    backend = RedisBackend.from_url(cluster.url, command_timeout=2.0)
    try:
        await backend.set_many({key: key.encode() for key in keys}, ttl=60)
        for key in keys:
            assert await raw.get(key) == key.encode()
            assert 0 < await raw.pttl(key) <= 60_000
        absent = f"{namespace}:absent"
        assert await backend.get_many([*keys, absent, keys[0]]) == [
            *(key.encode() for key in keys),
            None,
            keys[0].encode(),
        ]
        await backend.set_many(dict.fromkeys(keys, b"forever"))
        assert await raw.pttl(keys[0]) == -1
        assert await backend.delete(*keys, absent, keys[0]) == len(keys)
        assert await raw.exists(*keys) == 0
    finally:
        await backend.aclose()


async def test_scan_finds_keys_on_all_three_primaries(
    cluster: RedisClusterServers, raw: RedisCluster, namespace: str
) -> None:
    keys = _keys_on_every_primary(raw, f"{namespace}:scan:", per_node=3)
    for key in keys:
        await raw.set(key, b"v")
    backend = RedisBackend.from_url(cluster.url, command_timeout=2.0)
    try:
        found = [
            key async for batch in backend.scan(f"{namespace}:scan:*", count=2) for key in batch
        ]
        assert sorted(found) == sorted(keys)
    finally:
        await raw.delete(*keys)
        await backend.aclose()


async def test_publish_on_any_node_wakes_a_subscriber(
    cluster: RedisClusterServers, namespace: str
) -> None:
    """The backend listens on one primary; a PUBLISH sent to any node reaches it."""
    backend = RedisBackend.from_url(cluster.url, command_timeout=2.0)
    channel = f"{namespace}:ready"
    try:
        async with backend.subscribe(channel) as notifications:
            for port in cluster.ports:
                node = redis_asyncio.Redis(host="127.0.0.1", port=port)
                try:
                    await node.publish(channel, b"")
                finally:
                    await node.aclose()
                assert await notifications.wait(2.0) is True
            assert await notifications.wait(0.05) is False
    finally:
        await backend.aclose()


async def test_server_info_sums_over_the_primaries(cluster: RedisClusterServers) -> None:
    backend = RedisBackend.from_url(cluster.url, command_timeout=2.0)
    try:
        facts = await backend.server_info()
    finally:
        await backend.aclose()
    assert facts["primaries"] == 3
    # This backend holds a connection to each primary at least.
    assert isinstance(facts["connected_clients"], int)
    assert facts["connected_clients"] >= 3
    assert isinstance(facts["used_memory_mb"], float)
    assert str(facts["redis_version"])[:1].isdigit()


# -- the cache over the cluster --------------------------------------------------------------------


async def test_cache_round_trip_and_health(cache: Cache) -> None:
    assert await cache.set("greeting", {"text": "hello, cluster"}) is True
    assert await cache.get("greeting") == {"text": "hello, cluster"}
    await cache.set_many({f"user:{index}": index for index in range(30)})
    assert await cache.get_many([f"user:{index}" for index in range(30)]) == {
        f"user:{index}": index for index in range(30)
    }
    assert await cache.incr("hits", ttl=60) == 1
    report = await cache.health_check(degraded_after_ms=5_000)
    assert report.status == "healthy"
    assert report.backend == "redis-cluster"
    assert report.connected_clients is not None


async def test_delete_pattern_and_clear_reach_every_primary(
    cache: Cache, raw: RedisCluster, namespace: str
) -> None:
    for index in range(30):
        await cache.set(f"tasks:pending:{index}", index)
        await cache.set(f"tasks:done:{index}", index)
    pending = [key async for key in raw.scan_iter(match=f"{namespace}:*tasks:pending:*")]
    assert len(_nodes_of(raw, [key.decode() for key in pending])) == 3
    assert await cache.delete_pattern("tasks:pending:*") == 30
    assert [key async for key in raw.scan_iter(match=f"{namespace}:*tasks:pending:*")] == []
    assert await cache.get("tasks:done:7") == 7
    assert await cache.clear() >= 30
    # Only the generation stays: clear() keeps it, so readers never see it go back.
    left = [key async for key in raw.scan_iter(match=f"{namespace}:*")]
    assert [key.decode() for key in left] == [cache.keys.generation_key()]


async def test_invalidate_tags_reaches_entries_on_every_primary(
    cache: Cache, raw: RedisCluster, namespace: str
) -> None:
    for index in range(30):
        assert await cache.set(f"report:{index}", index, tags=["reports"]) is True
    await cache.set("other", 1, tags=["others"])
    stored = [key.decode() async for key in raw.scan_iter(match=f"{namespace}:*report:*")]
    assert len(_nodes_of(raw, stored)) == 3
    assert await cache.invalidate_tags("reports") == 1
    assert await cache.get_many([f"report:{index}" for index in range(30)]) == {}
    assert await cache.get("other") == 1


async def test_lock_computes_once_for_concurrent_misses_of_separate_caches(
    cluster: RedisClusterServers, namespace: str
) -> None:
    """Four caches (as four processes would have) miss three keys at once: one computes each."""
    calls: dict[str, int] = dict.fromkeys(("a", "b", "c"), 0)

    def fetch_for(name: str) -> Callable[[], Awaitable[dict[str, str]]]:
        async def fetch() -> dict[str, str]:
            calls[name] += 1
            await asyncio.sleep(0.2)
            return {"name": name}

        return fetch

    caches = [
        Cache(
            RedisBackend.from_url(cluster.url, connect_timeout=2.0, command_timeout=2.0),
            namespace=namespace,
            strict=True,
        )
        for _ in range(4)
    ]
    try:
        results = await asyncio.gather(
            *(
                cache.get_or_set(f"slow:{name}", fetch_for(name), ttl=60, lock=True, lock_timeout=5)
                for cache in caches
                for name in calls
                for _ in range(5)
            )
        )
        assert results == [{"name": name} for _ in caches for name in calls for _ in range(5)]
        assert calls == {"a": 1, "b": 1, "c": 1}
        assert sum(cache.stats.lock_waits for cache in caches) >= 1
    finally:
        await caches[0].clear()
        for cache in caches:
            await cache.aclose()


# -- failures --------------------------------------------------------------------------------------


async def test_unreachable_cluster_fails_open_without_credentials() -> None:
    url = f"redis+cluster://app:{PASSWORD}@127.0.0.1:{closed_port()},127.0.0.1:{closed_port()}"
    backend = RedisBackend.from_url(url)
    assert PASSWORD not in repr(backend)
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        await backend.get("k")
    assert time.monotonic() - started < 2
    assert PASSWORD not in str(info.value)
    assert "127.0.0.1" not in str(info.value)
    assert "could be reached" in str(info.value)
    async with Cache(backend, namespace="unreachable") as cache:
        assert await cache.get("k", default="fallback") == "fallback"
        assert await cache.set("k", 1) is False
        report = await cache.health_check()
        assert report.status == "unhealthy"
        assert PASSWORD not in str(report.to_dict())


async def test_a_stalled_primary_fails_a_call_at_the_timeout_then_recovers(
    cluster: RedisClusterServers, raw: RedisCluster, namespace: str
) -> None:
    """CLIENT PAUSE stalls one primary: a read of its key fails at the command timeout, not
    after redis-py's retries, and works again once the primary answers."""
    key = f"{namespace}:stalled"
    await raw.set(key, b"v")
    node = raw.get_node_from_key(key)
    assert node is not None
    backend = RedisBackend.from_url(cluster.url, command_timeout=0.2)
    pauser = redis_asyncio.Redis(host=node.host, port=node.port)
    try:
        assert await backend.get(key) == b"v"
        await pauser.execute_command("CLIENT", "PAUSE", "1000", "ALL")
        paused_until = time.monotonic() + 1.0
        with pytest.raises(BackendError, match="timed out after 200 ms"):
            await backend.get(key)
        assert time.monotonic() < paused_until - 0.2
        await asyncio.sleep(paused_until - time.monotonic() + 0.1)
        assert await backend.get(key) == b"v"
    finally:
        await pauser.aclose()
        await raw.delete(key)
        await backend.aclose()


async def test_wrong_password_is_reported_without_it(cluster: RedisClusterServers) -> None:
    """The cluster has no password: AUTH with one fails, and the error says so safely."""
    url = cluster.url.replace("redis+cluster://", f"redis+cluster://app:{PASSWORD}@")
    backend = RedisBackend.from_url(url, command_timeout=2.0)
    try:
        with pytest.raises(BackendError) as info:
            await backend.get("k")
    finally:
        await backend.aclose()
    assert PASSWORD not in str(info.value)
    assert PASSWORD not in repr(info.value)


async def test_counters_with_a_ttl_stay_exact_past_two_to_the_53(
    cluster: RedisClusterServers,
) -> None:
    """The TTL-setting increment runs as a script, where Lua numbers are doubles."""
    backend = RedisBackend.from_url(cluster.url, connect_timeout=2.0, command_timeout=2.0)
    try:
        await backend.set("big-counter", b"9007199254740992")
        assert await backend.incr("big-counter", 1, ttl=60) == 9007199254740993
        assert await backend.incr("new-counter", 2**62, ttl=60) == 2**62
        assert await backend.get("big-counter") == b"9007199254740993"
    finally:
        await backend.delete("big-counter", "new-counter")
        await backend.aclose()
