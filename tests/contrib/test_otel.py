"""`cachetier.contrib.otel`: reads by outcome and function, latency, stats and state at collection."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cachetier import Cache, CircuitBreaker
from cachetier.backends import MemoryBackend
from cachetier.testing import FaultyBackend

pytest.importorskip("opentelemetry.metrics")
pytest.importorskip("opentelemetry.sdk.metrics")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from cachetier.contrib.otel import instrument


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


@pytest.fixture
def cache() -> Cache:
    return Cache(MemoryBackend(), namespace="otel")


def collect(reader: InMemoryMetricReader) -> dict[str, dict[frozenset[tuple[str, object]], float]]:
    """Returns ``{instrument name: {attribute set: value}}`` from one collection."""
    found: dict[str, dict[frozenset[tuple[str, object]], float]] = {}
    data = reader.get_metrics_data()
    if data is None:  # nothing was observed
        return found
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            assert scope_metrics.scope.name == "cachetier"
            for metric in scope_metrics.metrics:
                points = found.setdefault(metric.name, {})
                for point in metric.data.data_points:
                    points[frozenset((point.attributes or {}).items())] = point.value  # type: ignore[union-attr]  # counters only
    return found


def attributes(**values: str) -> frozenset[tuple[str, object]]:
    """The attribute set of an observation of the ``otel`` cache, unless ``namespace`` is given."""
    return frozenset({"namespace": "otel", **values}.items())


async def test_reads_are_counted_by_outcome(
    cache: Cache, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    instrument(cache, provider)
    await cache.set("a", 1)
    await cache.get("a")
    await cache.get("a")
    await cache.get("absent")
    metrics = collect(reader)
    assert metrics["cachetier.reads"] == {
        attributes(outcome="hit"): 2,
        attributes(outcome="miss"): 1,
    }


async def test_decorated_reads_carry_the_function_never_the_key(
    cache: Cache, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    instrument(cache, provider)

    @cache.cached(ttl=60)
    async def load_user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    await load_user(4242)
    await load_user(4242)
    reads = collect(reader)["cachetier.reads"]
    function = load_user.__wrapped__.__module__ + "." + load_user.__wrapped__.__qualname__
    assert reads == {
        attributes(outcome="miss", function=function): 1,
        attributes(outcome="hit", function=function): 1,
    }
    assert all("4242" not in str(value) for points in reads for _, value in points)


async def test_stats_are_observed_at_collection(
    cache: Cache, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    instrument(cache, provider)
    await cache.set_many({"a": 1, "b": 2})
    await cache.delete("a")
    metrics = collect(reader)
    assert metrics["cachetier.sets"] == {attributes(): 2}
    assert metrics["cachetier.deletes"] == {attributes(): 1}
    for name in ("refreshes", "lock_waits", "errors", "journaled", "replays", "journal_overflows"):
        assert metrics[f"cachetier.{name}"] == {attributes(): 0}
    assert metrics["cachetier.awaiting_replay"] == {attributes(): 0}
    assert metrics["cachetier.breaker.open"] == {attributes(): 0}


async def test_uninstrument_stops_counting_and_reporting(
    cache: Cache, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    instruments = instrument(cache, provider)
    await cache.get("x")
    instruments.uninstrument()
    await cache.get("x")
    metrics = collect(reader)
    assert all(not points for points in metrics.values())


async def test_backend_latency_is_reported_as_cumulative_buckets(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    """Bucket counts only grow with ``le``, and +Inf, the count and `backend_calls` agree."""
    cache = Cache(FaultyBackend(MemoryBackend(), latency=0.002), namespace="otel")
    instrument(cache, provider)
    await cache.set("k", 1)
    for _ in range(5):
        await cache.get("k")
    metrics = collect(reader)
    buckets = {
        dict(points)["le"]: value
        for points, value in metrics["cachetier.backend.latency.bucket"].items()
    }
    assert list(buckets) == [repr(bound) for bound, _ in cache.stats.latency_buckets[:-1]] + [
        "+Inf"
    ]
    counts = list(buckets.values())
    assert counts == sorted(counts)
    assert buckets["+Inf"] == 6 == cache.stats.backend_calls
    assert buckets["0.001"] == 0  # every call slept 2 ms first
    assert metrics["cachetier.backend.latency.count"] == {attributes(): 6}
    (total,) = metrics["cachetier.backend.latency.sum"].values()
    assert total >= 6 * 0.002
    assert all(
        dict(points)["namespace"] == "otel"
        for points in metrics["cachetier.backend.latency.bucket"]
    )


async def test_caches_share_a_meter_provider_told_apart_by_namespace(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    first, second = Cache(MemoryBackend(), namespace="one"), Cache(MemoryBackend(), namespace="two")
    first_instruments = instrument(first, provider)
    instrument(second, provider)
    await first.set("k", 1)
    await first.get("k")
    await second.get("k")
    metrics = collect(reader)
    assert metrics["cachetier.reads"] == {
        attributes(namespace="one", outcome="hit"): 1,
        attributes(namespace="two", outcome="miss"): 1,
    }
    assert metrics["cachetier.sets"] == {
        attributes(namespace="one"): 1,
        attributes(namespace="two"): 0,
    }
    first_instruments.uninstrument()
    assert set(collect(reader)["cachetier.sets"]) == {attributes(namespace="two")}


async def test_a_second_cache_of_the_same_namespace_is_refused_and_left_unhooked(
    cache: Cache, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    instrument(cache, provider)
    other = Cache(MemoryBackend(), namespace="otel")
    with pytest.raises(ValueError, match="namespace 'otel' is instrumented"):
        instrument(other, provider)
    await other.get("k")
    assert not collect(reader).get("cachetier.reads")


async def test_breaker_open_is_one_while_the_breaker_is_open(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    faulty = FaultyBackend(MemoryBackend(), outage=True)
    cache = Cache(faulty, namespace="otel", breaker=CircuitBreaker(threshold=2, cooldown=60))
    instrument(cache, provider)
    for _ in range(2):
        assert await cache.get("k") is None
    assert collect(reader)["cachetier.breaker.open"] == {attributes(): 1}
