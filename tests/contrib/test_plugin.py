"""The pytest plugin's fixtures, `FaultyBackend` and the read assertions, used as a user would."""

from __future__ import annotations

import time

import pytest

import cachetier.testing
from cachetier import TTL, BackendError, Cache
from cachetier.backends import MemoryBackend, NullBackend
from cachetier.testing import FakeClock, FaultyBackend, Swap, assert_hits, expect_reads

# A module-level cache, as application code holds one.
app_cache = Cache(MemoryBackend(), namespace="plugin-app")


@app_cache.cached(ttl=TTL.USER, key="user:{user_id}")
async def load_user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


async def test_memory_cache_expires_on_the_fake_clock(
    cachetier_memory_cache: Cache, cachetier_clock: FakeClock
) -> None:
    await cachetier_memory_cache.set("k", "v", ttl=10)
    cachetier_clock.advance(9)
    assert await cachetier_memory_cache.get("k") == "v"
    cachetier_clock.advance(2)
    assert await cachetier_memory_cache.get("k") is None


async def test_memory_cache_is_fresh_per_test(cachetier_memory_cache: Cache) -> None:
    assert await cachetier_memory_cache.get("k") is None
    assert cachetier_memory_cache.stats.reads == 1


async def test_fakeredis_cache_round_trips(cachetier_fakeredis_cache: Cache) -> None:
    assert cachetier_fakeredis_cache.backend.kind == "redis"
    await cachetier_fakeredis_cache.set("k", {"a": [1, 2]})
    assert await cachetier_fakeredis_cache.get("k") == {"a": [1, 2]}


async def test_redis_cache_has_its_own_namespace(cachetier_redis_cache: Cache) -> None:
    report = await cachetier_redis_cache.health_check()
    assert report.status in ("healthy", "degraded")
    await cachetier_redis_cache.set("k", 1)
    assert await cachetier_redis_cache.incr("n") == 1
    assert await cachetier_redis_cache.get("k") == 1


async def test_swap_routes_a_module_level_cache(cachetier_swap: Swap) -> None:
    original = app_cache.backend
    swapped = cachetier_swap(app_cache)
    assert app_cache.backend is swapped is not original
    assert await load_user(1) == {"id": 1}
    assert await swapped.get(app_cache.keys.full("user:1")) is not None
    null = cachetier_swap(app_cache, NullBackend())
    assert app_cache.backend is null


def test_swap_is_undone_after_the_test() -> None:
    assert isinstance(app_cache.backend, MemoryBackend)
    assert app_cache.backend.kind == "memory"


async def test_assert_hits_on_a_decorated_function(cachetier_swap: Swap) -> None:
    cachetier_swap(app_cache)
    before = load_user.stats.hits
    await load_user(2)
    await load_user(2)
    assert_hits(load_user, before + 1)
    with pytest.raises(AssertionError, match="expected 99 hits"):
        assert_hits(load_user, 99)


async def test_expect_reads_counts_the_block(cachetier_memory_cache: Cache) -> None:
    await cachetier_memory_cache.set("a", 1)
    with expect_reads(cachetier_memory_cache, hits=1, misses=1):
        await cachetier_memory_cache.get("a")
        await cachetier_memory_cache.get("b")
    with (
        pytest.raises(AssertionError, match=r"hits=0 \(expected 1\)"),
        expect_reads(cachetier_memory_cache, hits=1),
    ):
        await cachetier_memory_cache.get("b")


async def test_faulty_outage_fails_open_and_recovers(cachetier_clock: FakeClock) -> None:
    faulty = FaultyBackend(MemoryBackend(clock=cachetier_clock))
    cache = Cache(faulty, clock=cachetier_clock)
    await cache.set("k", "v")
    faulty.outage = True
    with expect_reads(cache, errors=1, hits=0):
        assert await cache.get("k") is None
    assert await cache.set("k", "w") is False
    with pytest.raises(BackendError, match="outage injected"):
        await faulty.get("k")
    faulty.outage = False
    # The cache's read (which fetched the generation along, as a first read does) and ours.
    assert faulty.calls["get_many"] + faulty.calls["get"] >= 2


async def test_faulty_latency_delays_each_call() -> None:
    faulty = FaultyBackend(MemoryBackend(), latency=0.05)
    started = time.perf_counter()
    await faulty.set("k", b"v")
    assert await faulty.get("k") == b"v"
    assert time.perf_counter() - started >= 0.1


async def test_faulty_corrupt_reads_are_decode_errors() -> None:
    faulty = FaultyBackend(MemoryBackend())
    cache = Cache(faulty)
    await cache.set("k", {"a": 1})
    faulty.corrupt = True
    with expect_reads(cache, errors=1, hits=0):
        assert await cache.get("k") is None
    assert cache.stats.decode_errors == 1


def test_testing_package_exports() -> None:
    assert cachetier.testing.__all__ == tuple(sorted(cachetier.testing.__all__))
    for name in cachetier.testing.__all__:
        assert getattr(cachetier.testing, name) is not None
    with pytest.raises(AttributeError):
        _ = cachetier.testing.no_such_name  # type: ignore[attr-defined]
