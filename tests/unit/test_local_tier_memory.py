"""The local tier over `MemoryBackend`: decoded objects on the embedded default, kept coherent."""

from __future__ import annotations

import asyncio

import pytest

from cachetier import Cache, LocalTier
from cachetier.backends import MemoryBackend


async def settle() -> None:
    """Lets the local tiers' followers run (a change reaches them in the loop's next turns)."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_local_tier_over_memory_serves_the_decoded_object() -> None:
    runs = 0
    async with Cache(MemoryBackend(), local=LocalTier()) as cache:

        @cache.cached(key="report:{n}")
        async def report(n: int) -> dict[str, list[int]]:
            nonlocal runs
            runs += 1
            return {"rows": [n, n + 1]}

        await report(1)  # computed, stored as bytes
        await settle()  # the subscription to the backend's changes is confirmed
        first = await report(1)  # read and decoded once, kept in the tier
        assert await report(1) is first  # then served as the very object
        assert runs == 1
        assert cache.stats.hits >= 2


async def test_another_cache_over_the_same_memory_backend_invalidates_the_tier() -> None:
    store = MemoryBackend()
    async with (
        Cache(store, local=LocalTier(), version_check_interval=0) as reader,
        Cache(store, version_check_interval=0) as writer,
    ):
        await writer.set("k", "old", tags=["t"])
        await reader.get("k")
        await settle()
        assert await reader.get("k") == "old"
        await writer.set("k", "new")
        await settle()
        assert await reader.get("k") == "new"

        await writer.set("tagged", "old", tags=["t"])
        assert await reader.get("tagged") == "old"
        await settle()
        assert await reader.get("tagged") == "old"
        await writer.invalidate_tags("t")
        await settle()
        assert await reader.get("tagged") is None

        await writer.set("v", 1)
        assert await reader.get("v") == 1
        await settle()
        await writer.bump_version()
        await settle()
        assert await reader.get("v") is None


async def test_the_embedded_default_from_settings_uses_the_local_tier(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("CACHE_LOCAL_TIER", "true")
    cache = Cache.from_settings()
    async with cache:
        await cache.set("k", {"a": 1})
        await cache.get("k")
        await settle()
        first = await cache.get("k")
        assert await cache.get("k") is first
