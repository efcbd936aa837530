"""The `Cache` façade on the memory backend: operations, TTLs, get_or_set, fail-open, health."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest

from cachetier import (
    MISSING,
    BackendError,
    Cache,
    CircuitBreaker,
    CircuitOpenError,
    ConfigurationError,
    SerializationError,
)
from cachetier.backends import MemoryBackend, NullBackend
from cachetier.serializers import PickleSerializer
from cachetier.testing import FakeClock


class SpyBackend:
    """Wraps a backend, counting calls and failing every call while ``down`` is set."""

    def __init__(self, inner: MemoryBackend) -> None:
        self.inner = inner
        self.calls: list[str] = []
        self.down = False

    @property
    def kind(self) -> str:
        return "spy"

    def _enter(self, name: str) -> None:
        self.calls.append(name)
        if self.down:
            raise BackendError(f"{name.upper()} failed: connection refused")

    async def get(self, key: str) -> bytes | None:
        self._enter("get")
        return await self.inner.get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self._enter("get_many")
        return await self.inner.get_many(keys)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._enter("set")
        await self.inner.set(key, value, ttl)

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        self._enter("set_many")
        await self.inner.set_many(items, ttl)

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        self._enter("add")
        return await self.inner.add(key, value, ttl)

    async def delete(self, *keys: str) -> int:
        self._enter("delete")
        return await self.inner.delete(*keys)

    async def exists(self, key: str) -> bool:
        self._enter("exists")
        return await self.inner.exists(key)

    async def ttl(self, key: str) -> float | None:
        self._enter("ttl")
        return await self.inner.ttl(key)

    async def expire(self, key: str, ttl: float) -> bool:
        self._enter("expire")
        return await self.inner.expire(key, ttl)

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        self._enter("incr")
        return await self.inner.incr(key, amount, ttl)

    async def scan(self, pattern: str, *, count: int = 500) -> AsyncIterator[list[str]]:
        self._enter("scan")
        async for batch in self.inner.scan(pattern, count=count):
            yield batch

    async def ping(self) -> None:
        self._enter("ping")

    async def aclose(self) -> None:
        self.calls.append("aclose")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory(clock: FakeClock) -> MemoryBackend:
    return MemoryBackend(clock=clock)


@pytest.fixture
def spy(memory: MemoryBackend) -> SpyBackend:
    return SpyBackend(memory)


@pytest.fixture
def cache(spy: SpyBackend, clock: FakeClock) -> Cache:
    return Cache(
        spy,
        namespace="app",
        version="v1",
        default_ttl=60,
        clock=clock,
        breaker=CircuitBreaker(threshold=5, cooldown=5, clock=clock),
        # The first read fetches the generation along (get_many), later ones never need to:
        # call counts below are then those of the operations under test.
        version_check_interval=math.inf,
    )


async def test_set_then_get_returns_an_equal_value(cache: Cache) -> None:
    value = {"id": 1, "tags": ["a", "b"], "score": 1.5, "ok": True, "none": None}
    assert await cache.set("user:1", value) is True
    assert await cache.get("user:1") == value


async def test_result_mutated_by_caller_does_not_change_the_cache(cache: Cache) -> None:
    await cache.set("k", {"items": [1, 2]})
    first = await cache.get("k")
    assert isinstance(first, dict)
    first["items"].append(3)
    assert await cache.get("k") == {"items": [1, 2]}


async def test_none_is_a_value_and_missing_keys_return_default(cache: Cache) -> None:
    await cache.set("none", None)
    assert await cache.get("none", MISSING) is None
    assert await cache.get("absent", MISSING) is MISSING
    assert await cache.get("absent", "fallback") == "fallback"


async def test_entries_expire_after_their_ttl(cache: Cache, clock: FakeClock) -> None:
    await cache.set("short", 1, ttl=5)
    await cache.set("default", 2)
    await cache.set("delta", 3, ttl=timedelta(minutes=2))
    clock.advance(5.01)
    assert await cache.get("short") is None
    assert await cache.get("default") == 2
    clock.advance(55)
    assert await cache.get("default") is None
    assert await cache.get("delta") == 3


async def test_ttl_reports_remaining_seconds(cache: Cache, clock: FakeClock) -> None:
    await cache.set("k", 1, ttl=30)
    clock.advance(10)
    remaining = await cache.ttl("k")
    assert remaining is not None
    assert remaining == pytest.approx(20, abs=0.01)
    assert await cache.ttl("absent") is None


async def test_no_default_ttl_keeps_entries(spy: SpyBackend, clock: FakeClock) -> None:
    cache = Cache(spy, default_ttl=None, clock=clock)
    await cache.set("k", 1)
    clock.advance(10**7)
    assert await cache.get("k") == 1
    assert await cache.ttl("k") == math.inf


@pytest.mark.parametrize("ttl", [0, -1, math.nan, math.inf])
async def test_invalid_ttl_is_refused_and_stores_nothing(cache: Cache, ttl: float) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        await cache.set("k", 1, ttl=ttl)
    assert await cache.get("k", MISSING) is MISSING


async def test_ttl_of_wrong_type_raises_type_error(cache: Cache) -> None:
    with pytest.raises(TypeError):
        await cache.set("k", 1, ttl="60")  # type: ignore[arg-type]


@pytest.mark.parametrize("key", [b"k", 1, None, ("a",)])
async def test_non_str_keys_raise_type_error(cache: Cache, key: object) -> None:
    with pytest.raises(TypeError, match="str"):
        await cache.get(key)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str"):
        await cache.set(key, 1)  # type: ignore[arg-type]


async def test_unserializable_value_raises_and_keeps_the_old_value(cache: Cache) -> None:
    await cache.set("k", "old")
    with pytest.raises(SerializationError, match="Unserializable"):
        await cache.set("k", Unserializable())
    assert await cache.get("k") == "old"


class Unserializable:
    pass


async def test_value_over_the_size_limit_is_not_cached(spy: SpyBackend, clock: FakeClock) -> None:
    cache = Cache(spy, max_value_bytes=100, clock=clock)
    assert await cache.set("big", "x" * 200) is False
    assert await cache.get("big", MISSING) is MISSING
    assert await cache.set("small", "x" * 10) is True


async def test_add_stores_only_when_absent(cache: Cache, clock: FakeClock) -> None:
    assert await cache.add("k", 1, ttl=5) is True
    assert await cache.add("k", 2) is False
    assert await cache.get("k") == 1
    clock.advance(6)
    assert await cache.add("k", 3) is True
    assert await cache.get("k") == 3


async def test_delete_returns_how_many_existed(cache: Cache) -> None:
    await cache.set_many({"a": 1, "b": 2})
    assert await cache.delete("a", "b", "c") == 2
    assert await cache.delete() == 0
    assert await cache.get("a") is None


async def test_get_many_and_set_many_are_one_backend_call_each(
    cache: Cache, spy: SpyBackend
) -> None:
    assert await cache.set_many({f"k{i}": i for i in range(50)}, ttl=10) is True
    assert spy.calls.count("set_many") == 1
    spy.calls.clear()
    found = await cache.get_many([f"k{i}" for i in range(60)])
    assert spy.calls == ["get_many"]
    assert found == {f"k{i}": i for i in range(50)}


async def test_set_many_with_one_bad_value_stores_nothing(cache: Cache) -> None:
    with pytest.raises(SerializationError):
        await cache.set_many({"a": 1, "b": Unserializable()})
    assert await cache.get_many(["a", "b"]) == {}


async def test_incr_sets_ttl_with_the_first_increment_only(cache: Cache, clock: FakeClock) -> None:
    assert await cache.incr("hits", ttl=10) == 1
    clock.advance(6)
    assert await cache.incr("hits", 5, ttl=100) == 6
    assert await cache.get("hits") == 6
    clock.advance(5)
    assert await cache.get("hits") is None
    assert await cache.incr("hits", -2) == -2


async def test_incr_of_a_non_integer_value_raises(cache: Cache) -> None:
    await cache.set("k", "text")
    with pytest.raises(BackendError):
        await cache.incr("k")
    with pytest.raises(TypeError):
        await cache.incr("k", 1.5)  # type: ignore[arg-type]


async def test_exists(cache: Cache) -> None:
    await cache.set("k", 0)
    assert await cache.exists("k") is True
    assert await cache.exists("nope") is False


async def test_delete_pattern_reaches_only_this_namespace_and_version(
    memory: MemoryBackend, clock: FakeClock
) -> None:
    app = Cache(memory, namespace="app", version="v1", clock=clock)
    app_v2 = Cache(memory, namespace="app", version="v2", clock=clock)
    other = Cache(memory, namespace="other", version="v1", clock=clock)
    for cache in (app, app_v2, other):
        await cache.set_many({"tasks:pending:10": 1, "tasks:pending:20": 2, "tasks:done:1": 3})
    assert await app.delete_pattern("tasks:pending:*") == 2
    assert await app.get_many(["tasks:pending:10", "tasks:done:1"]) == {"tasks:done:1": 3}
    assert len(await app_v2.get_many(["tasks:pending:10", "tasks:pending:20"])) == 2
    assert await other.clear() == 3
    assert await app.get("tasks:done:1") == 3


async def test_delete_pattern_removes_more_keys_than_one_scan_batch(cache: Cache) -> None:
    await cache.set_many({f"bulk:{i}": i for i in range(1234)})
    assert await cache.delete_pattern("bulk:*") == 1234
    assert await cache.get_many([f"bulk:{i}" for i in range(1234)]) == {}


async def test_get_or_set_calls_fetch_once_then_hits(cache: Cache) -> None:
    calls = 0

    async def fetch() -> list[int]:
        nonlocal calls
        calls += 1
        return [1, 2, 3]

    assert await cache.get_or_set("q", fetch, ttl=30) == [1, 2, 3]
    assert await cache.get_or_set("q", fetch, ttl=30) == [1, 2, 3]
    assert calls == 1
    assert await cache.get_or_set("sync", lambda: {"a": 1}) == {"a": 1}
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.sets) == (1, 2, 2)


async def test_concurrent_misses_of_one_key_run_fetch_once(cache: Cache) -> None:
    calls = 0

    async def fetch() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return 42

    results = await asyncio.gather(*(cache.get_or_set("hot", fetch) for _ in range(1000)))
    assert results == [42] * 1000
    assert calls == 1


async def test_fetch_exception_reaches_every_waiter_and_nothing_is_cached(cache: Cache) -> None:
    async def fetch() -> int:
        await asyncio.sleep(0.01)
        raise LookupError("db down")

    results = await asyncio.gather(
        *(cache.get_or_set("k", fetch) for _ in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, LookupError) for r in results)
    assert await cache.get("k", MISSING) is MISSING
    assert await cache.get_or_set("k", lambda: 7) == 7


async def test_cancelling_one_waiter_does_not_cancel_the_shared_fetch(cache: Cache) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def fetch() -> str:
        started.set()
        await release.wait()
        return "done"

    first = asyncio.create_task(cache.get_or_set("k", fetch))
    await started.wait()
    second = asyncio.create_task(cache.get_or_set("k", fetch))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == "done"
    assert first.cancelled()
    assert await cache.get("k") == "done"


async def test_get_or_set_returns_unserializable_values_uncached(
    cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    value = Unserializable()
    with caplog.at_level(logging.WARNING, logger="cachetier"):
        assert await cache.get_or_set("k", lambda: value) is value
    assert await cache.get("k", MISSING) is MISSING
    assert "not caching" in caplog.text


async def test_use_routes_operations_to_another_backend_and_restores(
    cache: Cache, spy: SpyBackend
) -> None:
    await cache.set("k", "original")
    replacement = MemoryBackend()
    with cache.use(replacement) as used:
        assert used is replacement
        assert cache.backend is replacement
        assert await cache.get("k") is None
        await cache.set("k", "swapped")
    assert cache.backend is spy
    assert await cache.get("k") == "original"
    assert await replacement.get(cache.keys.full("k")) is not None


async def test_backend_failure_fails_open_and_is_counted(
    cache: Cache, spy: SpyBackend, clock: FakeClock
) -> None:
    await cache.set("k", 1)
    spy.down = True
    assert await cache.get("k", "default") == "default"
    assert await cache.set("k", 2) is False
    assert await cache.delete("k") == 0
    assert await cache.get_many(["k", "j"]) == {}
    assert await cache.get_or_set("k", lambda: 3) == 3
    assert await cache.delete_pattern("*") == 0
    stats = cache.stats
    assert stats.backend_errors == 4
    assert stats.hit_ratio == 0.0
    assert cache.stats.awaiting_replay
    spy.down = False
    clock.advance(5)  # the failures above opened the breaker; its cool-down ends
    # The delete and the pattern that failed are replayed before anything is read: the old
    # value is gone, not served again.
    assert await cache.get("k") is None
    assert (cache.stats.replays, cache.stats.awaiting_replay) == (1, False)
    assert await cache.set("k", 4) is True
    assert await cache.get("k") == 4


async def test_outage_logs_at_a_bounded_rate(
    cache: Cache, spy: SpyBackend, caplog: pytest.LogCaptureFixture
) -> None:
    spy.down = True
    with caplog.at_level(logging.WARNING, logger="cachetier"):
        for _ in range(200):
            await cache.get("k")
    assert len(caplog.records) == 1
    assert "connection refused" in caplog.text


async def test_strict_cache_raises_backend_errors(spy: SpyBackend) -> None:
    cache = Cache(spy, strict=True)
    spy.down = True
    with pytest.raises(BackendError):
        await cache.get("k")
    with pytest.raises(BackendError):
        await cache.set("k", 1)


async def test_incr_raises_backend_errors_even_when_not_strict(
    cache: Cache, spy: SpyBackend
) -> None:
    spy.down = True
    with pytest.raises(BackendError):
        await cache.incr("k")


@pytest.mark.parametrize("stored", [b"\xc1\x01garbage", b"plain text", b"\xc1", b"{not json"])
async def test_corrupt_or_foreign_entry_is_a_miss_and_is_deleted(
    cache: Cache, memory: MemoryBackend, stored: bytes
) -> None:
    full = cache.keys.full("k")
    await memory.set(full, stored)
    assert await cache.get("k", MISSING) is MISSING
    assert await memory.get(full) is None
    assert cache.stats.decode_errors == 1
    assert await cache.get_or_set("k", lambda: "fresh") == "fresh"


async def test_entry_of_another_serializer_is_a_decode_error_not_a_crash(spy: SpyBackend) -> None:
    writer = Cache(spy, serializer=PickleSerializer())
    reader = Cache(spy)
    await writer.set("k", {1, 2})
    assert await reader.get("k", MISSING) is MISSING
    assert reader.stats.decode_errors == 1


async def test_health_check_reports_each_backend_kind(cache: Cache, spy: SpyBackend) -> None:
    report = await cache.health_check()
    assert (report.status, report.available, report.backend) == ("healthy", True, "spy")
    assert report.latency_ms is not None
    assert report["status"] == "healthy"
    spy.down = True
    report = await cache.health_check()
    assert (report.status, report.available) == ("unhealthy", False)
    assert "connection refused" in (report.error or "")
    disabled = await Cache(NullBackend()).health_check()
    assert (disabled.status, disabled.available) == ("disabled", False)
    assert disabled.to_dict()["backend"] == "null"


async def test_null_backend_caches_nothing_and_the_app_still_works() -> None:
    cache = Cache(NullBackend())
    assert await cache.set("k", 1) is True
    assert await cache.get("k") is None
    assert await cache.get_or_set("k", lambda: 5) == 5


async def test_async_with_closes_the_backend(spy: SpyBackend) -> None:
    async with Cache(spy) as cache:
        await cache.set("k", 1)
    assert spy.calls[-1] == "aclose"


def test_construction_validates_arguments(spy: SpyBackend) -> None:
    with pytest.raises(ConfigurationError, match="ttl_jitter"):
        Cache(spy, ttl_jitter=1.5)
    with pytest.raises(ConfigurationError, match="namespace"):
        Cache(spy, namespace="has space")
    with pytest.raises(ConfigurationError, match="max_value_bytes"):
        Cache(spy, max_value_bytes=0)


async def test_ttl_jitter_shortens_ttls_within_the_fraction(
    memory: MemoryBackend, clock: FakeClock
) -> None:
    cache = Cache(memory, default_ttl=100, ttl_jitter=0.2, clock=clock)
    for i in range(50):
        await cache.set(f"k{i}", i)
    ttls = [await cache.ttl(f"k{i}") for i in range(50)]
    assert all(t is not None and 80 <= t <= 100 for t in ttls)
    assert len({round(t or 0, 3) for t in ttls}) > 10


def test_default_cache_is_process_local_memory() -> None:
    assert Cache().backend.kind == "memory"


async def test_every_read_reports_its_outcome_to_hooks(
    cache: Cache, spy: SpyBackend, memory: MemoryBackend
) -> None:
    from cachetier import Outcome, ReadEvent

    events: list[ReadEvent] = []
    cache.add_hook(events.append)

    @cache.cached()
    async def double(x: int) -> int:
        return 2 * x

    await double(1)
    await double(1)
    await cache.get("absent")
    await memory.set(cache.keys.full("junk"), b"junk")
    await cache.get("junk")
    spy.down = True
    await cache.get("k")
    spy.down = False
    outcomes = [(e.outcome, e.function) for e in events]
    name = "tests.unit.test_cache.test_every_read_reports_its_outcome_to_hooks.<locals>.double"
    assert outcomes == [
        (Outcome.MISS, name),
        (Outcome.HIT, name),
        (Outcome.MISS, None),
        (Outcome.DECODE_ERROR, None),
        (Outcome.BACKEND_ERROR, None),
    ]
    assert events[2].key == cache.keys.full("absent")
    cache.remove_hook(events.append)
    await cache.get("absent")
    assert len(events) == 5


async def test_a_failing_hook_never_reaches_the_caller(
    cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: object) -> None:
        raise RuntimeError("metrics exporter down")

    cache.add_hook(broken)
    await cache.set("k", 1)
    with caplog.at_level(logging.WARNING, logger="cachetier"):
        assert await cache.get("k") == 1
    assert "metrics exporter down" in caplog.text


# -- circuit breaker ---------------------------------------------------------------------------


async def test_breaker_opens_after_consecutive_failures_and_stops_calling(
    cache: Cache, spy: SpyBackend
) -> None:
    runs = 0

    @cache.cached()
    async def compute() -> int:
        nonlocal runs
        runs += 1
        return runs

    spy.down = True
    for _ in range(5):
        await cache.get("k")
    spy.calls.clear()
    assert [await compute() for _ in range(3)] == [1, 2, 3]
    assert await cache.get("k", "d") == "d"
    assert await cache.set("k", 1) is False
    assert spy.calls == []  # open: no call reaches the dead backend
    assert (await cache.health_check()).breaker == "open"


async def test_failures_must_be_consecutive_to_open_the_breaker(
    cache: Cache, spy: SpyBackend
) -> None:
    for _ in range(10):
        spy.down = True
        for _ in range(4):
            await cache.get("k")
        spy.down = False
        await cache.get("k")
    spy.calls.clear()
    await cache.get("k")
    assert spy.calls == ["get"]


async def test_half_open_breaker_sends_one_probe_and_closes_on_success(
    cache: Cache, spy: SpyBackend, clock: FakeClock
) -> None:
    await cache.set("k", "v")
    spy.down = True
    for _ in range(5):
        await cache.get("k")
    spy.down = False
    clock.advance(4.9)
    spy.calls.clear()
    assert await cache.get("k") is None
    assert spy.calls == []
    clock.advance(0.1)
    assert await cache.get("k") == "v"  # the probe
    assert await cache.get("k") == "v"
    assert spy.calls == ["get", "get"]


async def test_failed_probe_reopens_for_another_cooldown(
    cache: Cache, spy: SpyBackend, clock: FakeClock
) -> None:
    spy.down = True
    for _ in range(5):
        await cache.get("k")
    clock.advance(5)
    spy.calls.clear()
    await cache.get("k")  # the probe, which fails (and would have learned the generation)
    await cache.get("k")
    assert spy.calls == ["get_many"]
    clock.advance(5)
    spy.down = False
    await cache.set("k", 1)
    assert await cache.get("k") == 1


async def test_cancelled_probe_does_not_keep_the_breaker_open_for_ever() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, cooldown=5, clock=clock)
    breaker.failed()
    clock.advance(5)
    assert breaker.allow() is True  # the probe goes out, and its caller is cancelled
    assert breaker.allow() is False
    clock.advance(5)
    assert breaker.allow() is True
    breaker.succeeded()
    assert breaker.state == "closed"


async def test_strict_cache_raises_circuit_open_while_open(
    spy: SpyBackend, clock: FakeClock
) -> None:
    cache = Cache(spy, strict=True, clock=clock, breaker=CircuitBreaker(threshold=1, clock=clock))
    spy.down = True
    with pytest.raises(BackendError):
        await cache.get("k")
    spy.down = False
    with pytest.raises(CircuitOpenError, match="circuit breaker is open"):
        await cache.get("k")


async def test_health_check_probes_through_an_open_breaker_and_closes_it(
    cache: Cache, spy: SpyBackend
) -> None:
    spy.down = True
    for _ in range(5):
        await cache.get("k")
    report = await cache.health_check()
    assert (report.status, report.breaker) == ("unhealthy", "open")
    spy.down = False
    report = await cache.health_check()
    assert (report.status, report.breaker) == ("healthy", "closed")
    spy.calls.clear()
    await cache.get("k")
    # The first read that reaches the store learns its generation (and starts it: it had none).
    assert spy.calls == ["get_many", "add"]


async def test_incr_of_a_non_counter_raises_counter_error_and_spares_the_breaker(
    cache: Cache, spy: SpyBackend
) -> None:
    from cachetier import CounterError

    await cache.set("k", "text")
    assert await cache.get("k") == "text"
    for _ in range(10):
        with pytest.raises(CounterError, match="'app:v1:k'"):
            await cache.incr("k")
    spy.calls.clear()
    assert await cache.get("k") == "text"  # ten caller mistakes did not open the breaker
    assert spy.calls == ["get"]


async def test_latency_stats_off_times_nothing_and_still_counts(spy: SpyBackend) -> None:
    cache = Cache(spy, latency_stats=False)
    await cache.set("k", 1)
    for _ in range(5):
        assert await cache.get("k") == 1
    assert await cache.get("absent") is None
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.sets) == (5, 1, 1)
    assert stats.backend_calls == 0
    assert stats.latency_p50_ms is None


async def test_stats_report_backend_latency_percentiles(cache: Cache) -> None:
    """The spy backend does not declare itself in-process, so its calls are timed."""
    assert cache.stats.latency_p50_ms is None
    await cache.set("k", 1)

    @cache.cached()
    async def value() -> int:
        return 1

    for _ in range(20):
        await cache.get("k")
        await value()
    stats = cache.stats
    assert stats.backend_calls == 20 + 20 + 2  # gets, decorated reads, and the two writes
    assert stats.latency_p50_ms is not None
    assert stats.latency_p99_ms is not None
    assert 0 < stats.latency_p50_ms <= stats.latency_p95_ms <= stats.latency_p99_ms < 1000  # type: ignore[operator]
    assert value.stats.backend_calls == 20
    assert value.stats.latency_p99_ms is not None


class _NetworkSpy(SpyBackend):
    """Answers a turn of the event loop later, as a backend across a network does."""

    async def get(self, key: str) -> bytes | None:
        await asyncio.sleep(0)
        return await super().get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        await asyncio.sleep(0)
        return await super().get_many(keys)


async def test_a_burst_of_reads_counts_one_latency_sample_per_round_trip() -> None:
    """Merged readers made no backend call of their own: they add no sample (issue 17)."""
    spy = _NetworkSpy(MemoryBackend())
    cache = Cache(spy)

    @cache.cached()
    async def value(n: int) -> int:
        return n

    for n in range(40):
        await value(n)
    calls, own_calls = cache.stats.backend_calls, value.stats.backend_calls
    spy.calls.clear()
    assert await asyncio.gather(*(value(7) for _ in range(100))) == [7] * 100
    assert spy.calls == ["get"]
    assert cache.stats.backend_calls == calls + 1
    assert value.stats.backend_calls == own_calls + 1
    assert cache.stats.hits >= 100

    spy.calls.clear()
    assert await asyncio.gather(*(value(n) for n in range(40))) == list(range(40))
    assert spy.calls == ["get", "get_many"]  # the first read alone, the rest in one batch
    assert cache.stats.backend_calls == calls + 3
    assert value.stats.backend_calls == own_calls + 3


def test_latency_percentiles_are_within_a_quarter_of_the_truth() -> None:
    from cachetier._core.stats import LatencyHistogram

    histogram = LatencyHistogram()
    durations = [1_000 * i for i in range(1, 10_001)]  # 1 us to 10 ms, evenly
    for duration in durations:
        histogram.record(duration)
    for q in (0.5, 0.95, 0.99):
        truth = durations[int(q * len(durations)) - 1] / 1e6
        estimate = histogram.quantile(q)
        assert estimate is not None
        assert truth <= estimate <= truth * 1.25, (q, truth, estimate)


async def test_in_process_backends_are_not_timed(clock: FakeClock) -> None:
    cache = Cache(MemoryBackend(clock=clock), clock=clock)
    await cache.set("k", 1)
    await cache.get("k")
    assert (cache.stats.backend_calls, cache.stats.latency_p50_ms) == (0, None)


async def test_reads_are_logged_at_debug_with_their_outcome(
    cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    await cache.set("k", 1)

    @cache.cached(key="f")
    async def value() -> int:
        return 2

    with caplog.at_level(logging.DEBUG, logger="cachetier"):
        await cache.get("k")
        await cache.get("absent")
        await value()
        await value()
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert lines == [
        "cache hit: app:v1:k",
        "cache miss: app:v1:absent",
        "cache miss: app:v1:f",
        "cache hit: app:v1:f",
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cachetier"):
        await value()
    assert caplog.records == []


async def test_the_health_report_as_a_dict_is_strict_json(cache: Cache) -> None:
    import json

    await cache.set("k", 1)
    await cache.get("k")
    data = (await cache.health_check()).to_dict()
    text = json.dumps(data, allow_nan=False)  # what a /health route's JSON response needs
    assert json.loads(text)["stats"]["latency_buckets"][-1][0] == "+Inf"


async def test_get_many_checks_every_tagged_entry_in_one_more_round_trip() -> None:
    """Reading N tagged entries costs two round trips, whichever of their tags moved."""
    from cachetier.backends import MemoryBackend

    class Counting:
        in_process = False

        def __init__(self) -> None:
            self.inner = MemoryBackend()
            self.reads = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        async def get_many(self, keys: Any) -> Any:
            self.reads += 1
            return await self.inner.get_many(keys)

    backend = Counting()
    async with Cache(backend, version_check_interval=60) as cache:  # type: ignore[arg-type]
        for n in range(6):
            await cache.set(f"k{n}", n, tags=[f"t{n % 3}", "all"])
        await cache.invalidate_tags("t1")
        backend.reads = 0
        found = await cache.get_many([f"k{n}" for n in range(6)])
        assert found == {"k0": 0, "k2": 2, "k3": 3, "k5": 5}
        assert backend.reads == 2
