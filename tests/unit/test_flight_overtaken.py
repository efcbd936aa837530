"""A call that joins a computation another process's invalidation overtook does not take its result."""

from __future__ import annotations

import asyncio

import pytest

from cachetier import Cache
from cachetier.backends import MemoryBackend


@pytest.mark.parametrize("invalidation", ["delete", "tag", "pattern"])
async def test_a_joiner_recomputes_when_another_process_invalidated_the_flight(
    invalidation: str,
) -> None:
    store = MemoryBackend()
    db = {"row": "old"}
    started = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    async with Cache(store, namespace="app") as a, Cache(store, namespace="app") as other:

        @a.cached(key="row:{n}", tags=["rows"])
        async def row(n: int) -> str:
            nonlocal calls
            calls += 1
            value = db["row"]  # read before the write below ...
            if calls == 1:
                started.set()
                await release.wait()  # ... and slow to finish
            return value

        first = asyncio.create_task(row(1))
        await started.wait()
        db["row"] = "new"
        if invalidation == "delete":
            await other.delete("row:1")
        elif invalidation == "tag":
            await other.invalidate_tags("rows")
        else:
            await other.delete_pattern("row:*")
        # Starts after the other process's invalidation returned: joins the flight in A ...
        joiner = asyncio.create_task(row(1))
        await asyncio.sleep(0)
        release.set()
        assert await first == "old"  # started before the invalidation: its answer stands
        assert await joiner == "new"  # ... but does not take a result read before it
        assert await row(1) == "new"
