"""Times each endpoint of the task service without a cache, then cold and warm with one.

Run it with ``python -m examples.taskservice.loadtest``. The app runs in this process behind
httpx's ``ASGITransport`` (no server, no network), so the times are the app's own: routing,
validation, the query or the cache, and serialization. "Without cache" runs the app on a
`NullBackend` (every read misses, as with ``REDIS_ENABLED=false``); "with cache" uses
``Cache.from_settings()``, so ``REDIS_URL=redis://127.0.0.1:6379/0`` times it on Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import httpx

from cachetier import Cache
from cachetier.backends import NullBackend

from . import db as queries
from .app import DEFAULT_DB, DEFAULT_TASKS, create_app

ENDPOINTS = ("/api/tasks/pending?limit=20", "/api/metrics?days=30", "/api/content/42")


async def time_endpoints(
    cache: Cache, db_path: Path, tasks: int, samples: int
) -> dict[str, tuple[float, float, str]]:
    """Returns, per endpoint, the first call's ms, the median ms of ``samples`` more, and X-Cache."""
    app = create_app(cache, db_path=db_path, tasks=tasks)
    results: dict[str, tuple[float, float, str]] = {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://loadtest"
        ) as client,
    ):
        await cache.clear()  # cold means cold, even on a shared Redis
        for path in ENDPOINTS:
            started = time.perf_counter()
            first = await client.get(path)
            first.raise_for_status()
            cold = (time.perf_counter() - started) * 1000
            warm: list[float] = []
            last = first
            for _ in range(samples):
                started = time.perf_counter()
                last = await client.get(path)
                warm.append((time.perf_counter() - started) * 1000)
                if last.json() != first.json():
                    raise AssertionError(f"{path} answered differently when warm")
            results[path] = (cold, statistics.median(warm), last.headers.get("x-cache", "-"))
        await cache.clear()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", type=Path, default=DEFAULT_DB, help="SQLite file")
    parser.add_argument("--tasks", type=int, default=DEFAULT_TASKS, help="database size")
    parser.add_argument("--samples", type=int, default=20, help="warm calls per endpoint")
    args = parser.parse_args()

    connection, how = await queries.open_database(args.db, args.tasks)
    await connection.close()
    print(f"taskservice: {args.tasks:,} tasks in {args.db.name} ({how})")

    uncached = await time_endpoints(
        Cache(NullBackend(), namespace="loadtest"), args.db, args.tasks, max(3, args.samples // 5)
    )
    cache = Cache.from_settings()
    cached = await time_endpoints(cache, args.db, args.tasks, args.samples)

    print(f"cache backend: {cache.backend.kind}")
    print()
    header = (
        f"{'endpoint':<30} {'no cache (ms)':>14} {'cold (ms)':>10} {'warm (ms)':>10} "
        f"{'speedup':>9}  X-Cache (response cache)"
    )
    print(header)
    print("-" * len(header))
    for path in ENDPOINTS:
        _, without, _ = uncached[path]
        cold, warm, outcome = cached[path]
        print(
            f"GET {path:<26} {without:>14.1f} {cold:>10.1f} {warm:>10.2f} "
            f"{without / warm:>8.0f}x  {outcome}"
        )
    print()
    print(
        "no cache: median of repeated calls on a NullBackend; cold: first call with the cache "
        f"(a miss); warm: median of {args.samples} calls that followed.\n"
        "/api/tasks and /api/metrics cache the query's value (the route still runs); "
        "/api/content caches the whole response."
    )


if __name__ == "__main__":
    asyncio.run(main())
