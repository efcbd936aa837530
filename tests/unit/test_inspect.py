"""`Cache.inspect` tells what a key holds and why a read would miss, and changes nothing."""

from __future__ import annotations

import pytest

from cachetier import MISSING, Cache, Inspection
from cachetier.backends import MemoryBackend
from cachetier.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


@pytest.fixture
def backend(clock: FakeClock) -> MemoryBackend:
    return MemoryBackend(clock=clock)


@pytest.fixture
def cache(backend: MemoryBackend, clock: FakeClock) -> Cache:
    return Cache(backend, namespace="app", clock=clock, version_check_interval=0)


async def test_a_value_is_served(cache: Cache) -> None:
    await cache.set("user:1", {"name": "Ada"})
    found = await cache.inspect("user:1")
    assert found == Inspection("user:1", "value", {"name": "Ada"})
    assert found.served


async def test_a_counter_is_served_with_a_note(cache: Cache) -> None:
    await cache.incr("hits", 3)
    found = await cache.inspect("hits")
    assert (found.state, found.value) == ("counter", 3)
    assert "cache.incr" in found.reason


async def test_each_kind_of_absence_has_its_own_state(
    cache: Cache, backend: MemoryBackend, clock: FakeClock
) -> None:
    assert (await cache.inspect("nothing")).state == "absent"

    await cache.set("old", 1)
    await cache.bump_version()
    assert (await cache.inspect("old")).state == "other_generation"

    await cache.set("tagged", 1, tags=["t"])
    await cache.invalidate_tags("t")
    assert (await cache.inspect("tagged")).state == "invalidated_by_tag"

    await cache.get_or_set("stale", lambda: 1, ttl=10, stale_ttl=100)
    clock.advance(20)
    assert (await cache.inspect("stale")).state == "stale"

    for found in [await cache.inspect(key) for key in ("nothing", "old", "tagged", "stale")]:
        assert found.value is MISSING
        assert not found.served
        assert found.reason


async def test_an_unreadable_entry_is_reported_and_left_in_place(
    cache: Cache, backend: MemoryBackend
) -> None:
    full = cache.keys.full("foreign")
    await backend.set(full, b"written by someone else")
    found = await cache.inspect("foreign")
    assert found.state == "unreadable"
    assert "left in place" in found.reason
    assert await backend.get(full) == b"written by someone else"


async def test_a_key_being_computed_is_leased(cache: Cache) -> None:
    import asyncio

    started = asyncio.Event()
    release = asyncio.Event()

    async def slow() -> int:
        started.set()
        await release.wait()
        return 1

    computing = asyncio.create_task(cache.get_or_set("k", slow))
    await started.wait()
    assert (await cache.inspect("k")).state == "leased"
    release.set()
    assert await computing == 1
    assert (await cache.inspect("k")).state == "value"
