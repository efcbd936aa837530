"""`expect_reads` checks counts only inside `with`; any other use is loud, never a silent pass."""

from __future__ import annotations

import pytest

from cachetier import Cache
from cachetier.backends import MemoryBackend
from cachetier.testing import expect_reads


async def test_a_bare_call_warns_that_it_checked_nothing() -> None:
    cache = Cache(MemoryBackend())
    with pytest.warns(RuntimeWarning, match=r"never entered.*with expect_reads"):
        expect_reads(cache, hits=1, misses=1)  # dropped at once: CPython frees it here


async def test_asserting_the_call_is_a_type_error() -> None:
    cache = Cache(MemoryBackend())
    expectation = expect_reads(cache, hits=1)
    with pytest.raises(TypeError, match="use `with expect_reads"):
        assert expectation
    with expectation:
        await cache.set("k", 1)
        await cache.get("k")


async def test_the_with_block_still_checks_counts() -> None:
    async with Cache(MemoryBackend()) as cache:
        with (
            pytest.raises(AssertionError, match=r"hits=0 \(expected 1\)"),
            expect_reads(cache, hits=1, misses=1),
        ):
            await cache.get("absent")
        with expect_reads(cache, hits=1, misses=1):
            await cache.get("absent")
            await cache.set("k", 1)
            await cache.get("k")
