"""`cachetier.contrib.prometheus`: read counts by outcome and function, and stats at scrape time."""

from __future__ import annotations

import pytest

from cachetier import Cache
from cachetier.backends import MemoryBackend, RedisBackend

from ..servers import closed_port

pytest.importorskip("prometheus_client")

# After the importorskip call, so that the module skips when prometheus-client is missing.
from prometheus_client import CollectorRegistry, generate_latest

from cachetier.contrib.prometheus import instrument


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def memory_cache() -> Cache:
    return Cache(MemoryBackend(), namespace="prom")


def reads(
    registry: CollectorRegistry, outcome: str, function: str = "", prefix: str = "cachetier"
) -> float | None:
    return registry.get_sample_value(
        f"{prefix}_reads_total", {"outcome": outcome, "function": function}
    )


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
    assert registry.get_sample_value("cachetier_errors_total") == 1


async def test_stats_counters_are_read_at_scrape_time(
    registry: CollectorRegistry, memory_cache: Cache
) -> None:
    instrument(memory_cache, registry)
    assert registry.get_sample_value("cachetier_sets_total") == 0
    await memory_cache.set_many({"a": 1, "b": 2})
    await memory_cache.delete("a")
    assert registry.get_sample_value("cachetier_sets_total") == 2
    assert registry.get_sample_value("cachetier_deletes_total") == 1
    for name in ("refreshes", "lock_waits", "errors"):
        assert registry.get_sample_value(f"cachetier_{name}_total") == 0


async def test_exposition_has_help_and_counter_types(
    registry: CollectorRegistry, memory_cache: Cache
) -> None:
    instrument(memory_cache, registry)
    exposition = generate_latest(registry).decode()
    assert "# TYPE cachetier_reads_total counter" in exposition
    assert "# HELP cachetier_sets_total" in exposition


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


async def test_prefix_lets_two_caches_share_a_registry(registry: CollectorRegistry) -> None:
    first, second = Cache(MemoryBackend(), namespace="one"), Cache(MemoryBackend(), namespace="two")
    instrument(first, registry)
    instrument(second, registry, prefix="second_cache")
    await second.get("k")
    assert reads(registry, "miss") == 0
    assert reads(registry, "miss", prefix="second_cache") == 1


async def test_a_name_clash_is_refused_and_leaves_the_cache_unhooked(
    registry: CollectorRegistry,
) -> None:
    first, second = Cache(MemoryBackend(), namespace="one"), Cache(MemoryBackend(), namespace="two")
    instrument(first, registry)
    with pytest.raises(ValueError, match="Duplicated"):
        instrument(second, registry)
    await second.get("k")
    assert reads(registry, "miss") == 0
