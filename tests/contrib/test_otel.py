"""`cachetier.contrib.otel`: read counts by outcome and function, and stats at collection."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cachetier import Cache
from cachetier.backends import MemoryBackend

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
    return frozenset(values.items())


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
    assert metrics["cachetier.sets"] == {frozenset(): 2}
    assert metrics["cachetier.deletes"] == {frozenset(): 1}
    for name in ("refreshes", "lock_waits", "errors"):
        assert metrics[f"cachetier.{name}"] == {frozenset(): 0}


async def test_uninstrument_stops_counting_and_reporting(
    cache: Cache, provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    instruments = instrument(cache, provider)
    await cache.get("x")
    instruments.uninstrument()
    await cache.get("x")
    metrics = collect(reader)
    assert all(not points for points in metrics.values())
