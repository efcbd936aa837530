"""A process of the cross-process lock test: 100 concurrent calls of one cold, locked key.

Run as ``python lock_worker.py URL NAMESPACE START_AT``; prints one JSON line with the results.
The body counts its runs in Redis (INCR), so the test sees runs across every process.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import redis.asyncio as redis_asyncio

from cachetier import Cache
from cachetier.backends import RedisBackend


async def main(url: str, namespace: str, start_at: float) -> None:
    counter = redis_asyncio.Redis.from_url(url)
    async with Cache(
        RedisBackend.from_url(url, connect_timeout=2.0, command_timeout=2.0), namespace=namespace
    ) as cache:

        @cache.cached(ttl=60, lock=True, lock_ttl=5, lock_timeout=10, on_lock_timeout="raise")
        async def report() -> dict[str, int]:
            runs = int(await counter.incr(f"{namespace}:runs"))
            await asyncio.sleep(0.3)  # the slow query all 400 callers want at once
            return {"value": 42, "run": runs}

        await asyncio.sleep(max(0.0, start_at - time.time()))
        results = await asyncio.gather(*(report() for _ in range(100)))
        stats = cache.stats
    await counter.aclose()
    print(json.dumps({"results": results, "lock_waits": stats.lock_waits, "misses": stats.misses}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
