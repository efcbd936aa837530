"""Fixtures shared by the framework integration tests: a cache on memory or on real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cachetier import Cache
from cachetier.backends import MemoryBackend, RedisBackend


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def cache(request: pytest.FixtureRequest, namespace: str) -> AsyncIterator[Cache]:
    """A cache on the memory backend, or on the real Redis in a namespace of its own."""
    if request.param == "memory":
        backend: MemoryBackend | RedisBackend = MemoryBackend()
    else:
        # Timeouts a loaded CI machine does not trip: these tests are about the frameworks, and
        # a read that timed out is served as a miss (fail-open), which they would misread.
        backend = RedisBackend.from_url(
            request.getfixturevalue("redis_url"), connect_timeout=2.0, command_timeout=2.0
        )
    cache = Cache(backend, namespace=namespace)
    yield cache
    await cache.clear()
    await cache.aclose()
