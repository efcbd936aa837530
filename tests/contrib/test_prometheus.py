"""`cachetier.contrib.prometheus`: reads by outcome and function, latency, stats and state at scrape time."""

from __future__ import annotations

import math

import pytest

from cachetier import Cache, CircuitBreaker
from cachetier.backends import MemoryBackend, RedisBackend
from cachetier.testing import FaultyBackend

from ..servers import closed_port

pytest.importorskip("prometheus_client")

# After the importorskip call, so that the module skips when prometheus-client is missing.
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from cachetier.contrib.prometheus import instrument


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def memory_cache() -> Cache:
    return Cache(MemoryBackend(), namespace="prom")


def reads(
    registry: CollectorRegistry,
    outcome: str,
    function: str = "",
    prefix: str = "cachetier",
    namespace: str = "prom",
) -> float | None:
    return registry.get_sample_value(
        f"{prefix}_reads_total", {"namespace": namespace, "outcome": outcome, "function": function}
    )


def value(registry: CollectorRegistry, name: str, namespace: str = "prom") -> float | None:
    return registry.get_sample_value(name, {"namespace": namespace})


async def test_reads_are_counted_by_outcome(
    registry: CollectorRegistry, memory_cache: Cache
) -> None:
    instrument(memory_cache, registry)
    await memory_cache.set("a", 1)
    await memory_cache.get("a")
    await memory_cache.get("a")
    await memory_cache.get("absent")
    assert reads(registry, "hit") == 2
    assert reads(registry, "miss") == 1
    # Every outcome has a series from the start, so rate() and ratios work before the first one.
    assert reads(registry, "decode_error") == 0


async def test_decorated_reads_are_labelled_with_the_function_never_the_key(
    registry: CollectorRegistry, memory_cache: Cache
) -> None:
    instrument(memory_cache, registry)

    @memory_cache.cached(ttl=60)
    async def load_user(user_id: str) -> dict[str, str]:
        return {"id": user_id}

    await load_user("alice")
    await load_user("alice")
    function = f"{__name__}.test_decorated_reads_are_labelled_with_the_function_never_the_key.<locals>.load_user"
    assert reads(registry, "miss", function) == 1
    assert reads(registry, "hit", function) == 1
    exposition = generate_latest(registry).decode()
    # Not a number: a _created timestamp may contain any digits.
    assert "alice" not in exposition
    assert "key=" not in exposition


async def test_backend_errors_are_their_own_outcome(registry: CollectorRegistry) -> None:
    cache = Cache(RedisBackend.from_url(f"redis://127.0.0.1:{closed_port()}/0"), namespace="prom")
    instrument(cache, registry)
    try:
        assert await cache.get("k") is None
    finally:
        await cache.aclose()
    assert reads(registry, "backend_error") == 1
    assert reads(registry, "miss") == 0
    assert value(registry, "cachetier_errors_total") == 1


async def test_stats_counters_are_read_at_scrape_time(
    registry: CollectorRegistry, memory_cache: Cache
) -> None:
    instrument(memory_cache, registry)
    assert value(registry, "cachetier_sets_total") == 0
    await memory_cache.set_many({"a": 1, "b": 2})
    await memory_cache.delete("a")
    assert value(registry, "cachetier_sets_total") == 2
    assert value(registry, "cachetier_deletes_total") == 1
    for name in ("refreshes", "lock_waits", "errors", "journaled", "replays", "journal_overflows"):
        assert value(registry, f"cachetier_{name}_total") == 0
    assert value(registry, "cachetier_awaiting_replay") == 0


async def test_exposition_has_help_and_counter_types(
    registry: CollectorRegistry, memory_cache: Cache
) -> None:
    instrument(memory_cache, registry)
    exposition = generate_latest(registry).decode()
    assert "# TYPE cachetier_reads_total counter" in exposition
    assert "# HELP cachetier_sets_total" in exposition
    assert "# TYPE cachetier_backend_latency_seconds histogram" in exposition
    assert "# TYPE cachetier_breaker_open gauge" in exposition


async def test_uninstrument_removes_the_hook_and_the_metrics(
    registry: CollectorRegistry, memory_cache: Cache
) -> None:
    collector = instrument(memory_cache, registry)
    await memory_cache.get("x")
    collector.uninstrument()
    collector.uninstrument()  # a second call does nothing
    await memory_cache.get("x")
    assert reads(registry, "miss") is None
    assert generate_latest(registry) == b""
    # Installed again, it counts from where it stopped: the read after uninstrument is not in.
    collector.install(registry)
    assert reads(registry, "miss") == 1


async def test_prefix_still_separates_caches_in_a_registry(registry: CollectorRegistry) -> None:
    first, second = Cache(MemoryBackend(), namespace="one"), Cache(MemoryBackend(), namespace="two")
    instrument(first, registry)
    instrument(second, registry, prefix="second_cache")
    await second.get("k")
    assert reads(registry, "miss", namespace="one") == 0
    assert reads(registry, "miss", prefix="second_cache", namespace="two") == 1
    assert reads(registry, "miss", namespace="two") is None


async def test_caches_share_a_registry_told_apart_by_namespace(registry: CollectorRegistry) -> None:
    first, second = Cache(MemoryBackend(), namespace="one"), Cache(MemoryBackend(), namespace="two")
    first_collector = instrument(first, registry)
    instrument(second, registry)
    await first.set("k", 1)
    await first.get("k")
    await second.get("k")
    await second.get("k")
    assert reads(registry, "hit", namespace="one") == 1
    assert reads(registry, "miss", namespace="one") == 0
    assert reads(registry, "miss", namespace="two") == 2
    assert value(registry, "cachetier_sets_total", "one") == 1
    assert value(registry, "cachetier_sets_total", "two") == 0
    assert value(registry, "cachetier_backend_latency_seconds_count", "two") == 0
    exposition = generate_latest(registry).decode()
    assert exposition.count("# TYPE cachetier_reads_total counter") == 1
    # Uninstrumenting one cache leaves the other's metrics in place.
    first_collector.uninstrument()
    assert reads(registry, "hit", namespace="one") is None
    assert reads(registry, "miss", namespace="two") == 2


async def test_a_second_cache_of_the_same_namespace_is_refused_and_left_unhooked(
    registry: CollectorRegistry,
) -> None:
    first, second = Cache(MemoryBackend(), namespace="one"), Cache(MemoryBackend(), namespace="one")
    instrument(first, registry)
    with pytest.raises(ValueError, match="namespace 'one' is instrumented"):
        instrument(second, registry)
    await second.get("k")
    assert reads(registry, "miss", namespace="one") == 0


async def test_a_clash_with_another_collector_is_refused_and_leaves_the_cache_unhooked(
    registry: CollectorRegistry, memory_cache: Cache
) -> None:
    class Foreign(Collector):
        def collect(self) -> list[CounterMetricFamily]:
            return [CounterMetricFamily("cachetier_reads", "Not ours.", value=1)]

        def describe(self) -> list[CounterMetricFamily]:
            return self.collect()

    foreign = Foreign()
    registry.register(foreign)
    with pytest.raises(ValueError, match="Duplicated"):
        instrument(memory_cache, registry)
    await memory_cache.get("k")
    # Nothing was kept of the failed attempt: once the clash is gone, instrumenting works.
    registry.unregister(foreign)
    instrument(memory_cache, registry)
    await memory_cache.get("k")
    assert reads(registry, "miss") == 1


async def test_backend_latency_is_a_cumulative_histogram(registry: CollectorRegistry) -> None:
    """Bucket counts only grow with the bound, and +Inf, _count and `backend_calls` agree."""
    cache = Cache(FaultyBackend(MemoryBackend(), latency=0.002), namespace="prom")
    instrument(cache, registry)
    await cache.set("k", 1)
    for _ in range(5):
        await cache.get("k")
    await cache.get("absent")
    stats = cache.stats
    name = "cachetier_backend_latency_seconds"
    buckets = [
        (bound, registry.get_sample_value(f"{name}_bucket", {"namespace": "prom", "le": le}))
        for bound, le in [(bound, repr(bound)) for bound, _ in stats.latency_buckets[:-1]]
        + [(math.inf, "+Inf")]
    ]
    counts = [count for _, count in buckets]
    assert all(count is not None for count in counts)
    assert counts == sorted(counts)  # type: ignore[type-var]  # None ruled out above
    assert counts[-1] == value(registry, f"{name}_count") == stats.backend_calls == 7
    # Every call slept 2 ms first, so none is at or under 1 ms.
    assert dict(buckets)[0.001] == 0
    total = value(registry, f"{name}_sum")
    assert total is not None
    assert total == pytest.approx(stats.latency_sum_seconds)
    assert total >= 7 * 0.002


async def test_decorated_functions_have_latency_buckets_of_their_own() -> None:
    cache = Cache(FaultyBackend(MemoryBackend(), latency=0.002), namespace="prom")

    @cache.cached(ttl=60)
    async def load(number: int) -> int:
        return number

    for _ in range(3):
        await load(1)
    stats = load.stats
    assert stats.backend_calls == 3  # its reads; the write is the cache's
    assert stats.latency_buckets[-1] == (math.inf, 3)
    assert stats.latency_buckets[3] == (0.001, 0)
    assert stats.latency_sum_seconds >= 3 * 0.002


async def test_breaker_open_is_one_while_the_breaker_is_open(registry: CollectorRegistry) -> None:
    faulty = FaultyBackend(MemoryBackend())
    cache = Cache(faulty, namespace="prom", breaker=CircuitBreaker(threshold=2, cooldown=60))
    instrument(cache, registry)
    assert value(registry, "cachetier_breaker_open") == 0
    faulty.outage = True
    for _ in range(2):
        assert await cache.get("k") is None
    assert cache.breaker_state == "open"
    assert value(registry, "cachetier_breaker_open") == 1
