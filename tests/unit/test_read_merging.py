"""Concurrent reads merge: one GET per hot key, one MGET for a burst over many keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence

import pytest

from cachetier import BackendError, Cache, CircuitBreaker
from cachetier.backends import MemoryBackend


class SlowBackend:
    """A memory backend whose reads take a while, as a network round trip does."""

    def __init__(self) -> None:
        self.inner = MemoryBackend()
        self.calls: list[tuple[str, int]] = []
        self.fail = False
        self.short = False
        self.delay = 0.01

    @property
    def kind(self) -> str:
        return "slow"

    async def get(self, key: str) -> bytes | None:
        self.calls.append(("get", 1))
        await asyncio.sleep(self.delay)
        if self.fail:
            raise BackendError("GET failed: connection reset by the server")
        return await self.inner.get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.calls.append(("get_many", len(keys)))
        await asyncio.sleep(self.delay)
        if self.fail:
            raise BackendError("MGET failed: connection reset by the server")
        values = await self.inner.get_many(keys)
        return values[:-1] if self.short else values

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self.inner.set(key, value, ttl)

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        await self.inner.set_many(items, ttl)

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        return await self.inner.add(key, value, ttl)

    async def delete(self, *keys: str) -> int:
        return await self.inner.delete(*keys)

    async def exists(self, key: str) -> bool:
        return await self.inner.exists(key)

    async def ttl(self, key: str) -> float | None:
        return await self.inner.ttl(key)

    async def expire(self, key: str, ttl: float) -> bool:
        return await self.inner.expire(key, ttl)

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        return await self.inner.incr(key, amount, ttl)

    async def scan(self, pattern: str, *, count: int = 500) -> AsyncIterator[list[str]]:
        async for batch in self.inner.scan(pattern, count=count):
            yield batch

    async def ping(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


@pytest.fixture
def backend() -> SlowBackend:
    return SlowBackend()


@pytest.fixture
async def cache(backend: SlowBackend) -> AsyncIterator[Cache]:
    async with Cache(backend) as cache:
        yield cache


async def test_concurrent_hits_of_one_key_share_one_get(cache: Cache, backend: SlowBackend) -> None:
    await cache.set("hot", {"v": 1})  # learns the generation (bump_version) to write with
    backend.calls.clear()
    assert await asyncio.gather(*(cache.get("hot") for _ in range(100))) == [{"v": 1}] * 100
    assert backend.calls == [("get", 1)]


async def test_burst_over_many_keys_costs_two_round_trips(
    cache: Cache, backend: SlowBackend
) -> None:
    await cache.set_many({f"k{i}": i for i in range(100)})

    @cache.cached(key="k{i}")
    async def value(i: int) -> int:
        raise AssertionError("every key is cached")

    backend.calls.clear()
    assert await asyncio.gather(*(value(i) for i in range(100))) == list(range(100))
    assert backend.calls == [("get", 1), ("get_many", 99)]


async def test_a_lone_read_is_not_delayed_into_a_batch(cache: Cache, backend: SlowBackend) -> None:
    await cache.set("a", 1)
    backend.calls.clear()
    for _ in range(3):
        assert await cache.get("a") == 1
    assert backend.calls == [("get", 1)] * 3


async def test_a_failed_batch_fails_open_for_each_reader(
    cache: Cache, backend: SlowBackend
) -> None:
    await cache.set_many({f"k{i}": i for i in range(10)})
    backend.fail = True
    assert await asyncio.gather(*(cache.get(f"k{i}", -1) for i in range(10))) == [-1] * 10
    assert cache.stats.backend_errors == 10


async def test_cancelling_one_waiter_leaves_the_others_their_answer(
    cache: Cache, backend: SlowBackend
) -> None:
    await cache.set_many({"a": 1, "b": 2, "c": 3})
    first = asyncio.create_task(cache.get("a"))
    await asyncio.sleep(0)
    b = asyncio.create_task(cache.get("b"))
    c = asyncio.create_task(cache.get("c"))
    same = asyncio.create_task(cache.get("a"))
    await asyncio.sleep(0)
    b.cancel()
    assert await c == 3
    assert await first == 1
    assert await same == 1
    assert b.cancelled()


async def test_cancelled_first_reader_does_not_leave_waiters_hanging(
    cache: Cache, backend: SlowBackend
) -> None:
    await cache.set("a", 1)
    first = asyncio.create_task(cache.get("a"))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(cache.get("a"))
    await asyncio.sleep(0)
    first.cancel()
    assert await asyncio.wait_for(waiter, 1) == 1


@pytest.mark.redis
async def test_merged_reads_return_each_callers_own_value_on_real_redis(
    redis_url: str, namespace: str
) -> None:
    from cachetier.backends import RedisBackend

    async with Cache(
        RedisBackend.from_url(redis_url, command_timeout=2.0), namespace=namespace
    ) as cache:
        runs: list[int] = []

        @cache.cached(ttl=60, key="n:{i}")
        async def square(i: int) -> int:
            runs.append(i)
            return i * i

        await asyncio.gather(*(square(i) for i in range(0, 200, 2)))
        results = await asyncio.gather(*(square(i % 200) for i in range(600)))
        assert results == [(i % 200) ** 2 for i in range(600)]
        # Every key was computed; a read that missed just before another caller's value landed
        # may compute once more, which is allowed, so duplicates are not counted.
        assert set(runs) == set(range(200))
        assert cache.stats.backend_errors == 0, cache.stats
        await cache.clear()


async def test_an_mget_answering_too_few_values_fails_every_reader_open_and_hangs_none(
    backend: SlowBackend,
) -> None:
    """A desynchronised connection can answer an MGET with the wrong number of values: each
    reader of the batch misses (the function runs), none waits for ever, and the keys it did
    not answer are not left for later readers to join."""
    cache = Cache(backend, breaker=CircuitBreaker(threshold=1000))
    await cache.set_many({f"k{i}": i for i in range(10)})

    @cache.cached(key="k{i}")
    async def value(i: int) -> int:
        return -i

    backend.short = True
    found = await asyncio.wait_for(asyncio.gather(*(value(i) for i in range(10))), 2)
    assert found[0] == 0  # the lone first read, a GET: answered
    assert found[1:] == [-i for i in range(1, 10)]  # the batch failed open
    backend.short = False
    again = await asyncio.wait_for(asyncio.gather(*(value(i) for i in range(10))), 2)
    assert again == list(range(10))
