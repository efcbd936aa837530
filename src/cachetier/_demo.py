"""The demo: three slow endpoint queries on a real SQLite database, uncached and then cached.

``cachetier demo`` runs it from an installed package, ``python examples/demo.py`` from a
checkout. It builds a SQLite database of tasks, events and articles, times three endpoint-like
queries uncached and then cached, shows an invalidation, and names the backend used:
process-local memory by default, Redis when ``REDIS_URL`` is set. Only the standard library and
cachetier are needed. The database (`cachetier._demo_db`) is never part of the package: it is
built where ``--db`` says, or in a temporary directory removed at exit. Like the rest of the
command, it uses only cachetier's public API.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack, closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachetier import TTL, Cache, CacheSettings, ConfigurationError

from ._demo_db import DEFAULT_ROWS, Database, Row, Sizes, open_database

__all__ = ("add_arguments", "run_command")

HIT_SAMPLES = 5


@dataclass(frozen=True)
class Endpoint:
    """One cached endpoint: its route, cache key, query and TTL."""

    route: str
    key: str
    fetch: Callable[[], Awaitable[Any]]
    ttl: int


@dataclass(frozen=True)
class Timing:
    route: str
    first_ms: float
    hit_ms: float

    @property
    def speedup(self) -> float:
        return self.first_ms / self.hit_ms if self.hit_ms > 0 else float("inf")


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """Returns the milliseconds ``call`` took and its result."""
    started = time.perf_counter()
    result = await call()
    return (time.perf_counter() - started) * 1000, result


async def timed_outcome(cache: Cache, call: Callable[[], Awaitable[Any]]) -> tuple[float, Any, str]:
    """Returns the milliseconds ``call`` took, its result, and how the cache read ended."""
    before = cache.stats
    ms, result = await timed(call)
    after = cache.stats
    if after.hits > before.hits:
        outcome = "hit"
    elif after.misses > before.misses:
        outcome = "miss"
    elif after.backend_errors > before.backend_errors:
        outcome = "backend error, ran the query"
    else:
        outcome = "not cached"
    return ms, result, outcome


async def measure(cache: Cache, endpoint: Endpoint) -> Timing:
    """Times the first (uncached) call of ``endpoint`` and the median of the cached ones."""

    def call() -> Awaitable[Any]:
        return cache.get_or_set(endpoint.key, endpoint.fetch, ttl=endpoint.ttl)

    first_ms, fetched = await timed(call)
    hits = [await timed(call) for _ in range(HIT_SAMPLES)]
    if any(value != fetched for _, value in hits):
        raise AssertionError(f"{endpoint.route}: the cached value differs from the fetched one")
    return Timing(endpoint.route, first_ms, statistics.median(ms for ms, _ in hits))


def print_table(timings: list[Timing]) -> None:
    header = ("endpoint", "first call (ms)", "cached hit (ms)", "speedup")
    rows = [
        (t.route, f"{t.first_ms:,.1f}", f"{t.hit_ms:,.3f}", f"{t.speedup:,.0f}x") for t in timings
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        first, *numbers = cells
        return "  ".join(
            [
                first.ljust(widths[0]),
                *(c.rjust(w) for c, w in zip(numbers, widths[1:], strict=True)),
            ]
        )

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    print(f"(cached hit: median of {HIT_SAMPLES} calls)")


def top_task(tasks: object) -> Row | None:
    """Returns the first task of a pending-tasks result (cached values are plain JSON)."""
    if isinstance(tasks, list) and tasks and isinstance(tasks[0], dict):
        return tasks[0]
    return None


def describe_task(task: Row | None) -> str:
    if task is None:
        return "no pending task"
    return f'#{task["id"]} "{task["title"]}" (priority {task["priority"]})'


async def show_invalidation(cache: Cache, db: Database, endpoint: Endpoint) -> None:
    """Completes the most urgent task, shows the stale cached list, invalidates, refetches."""

    def call() -> Awaitable[Any]:
        return cache.get_or_set(endpoint.key, endpoint.fetch, ttl=endpoint.ttl)

    print()
    print("Invalidation: PUT /api/tasks/{id} marks the most urgent pending task done")
    task = top_task(await call())
    if task is None:
        print("  (no pending task to complete)")
        return
    print(f"  top pending task:  {describe_task(task)}")
    await db.complete_task(task["id"])
    try:
        shown = f"UPDATE tasks SET status = 'done' WHERE id = {task['id']}"  # noqa: S608  # printed, not run
        print(f"  database:          {shown}")
        cached = await cache.get(endpoint.key)
        if cached is None:
            print("  cache:             holds nothing (caching is off or failing)")
        else:
            print(
                f"  cache, still:      {describe_task(top_task(cached))}  <- stale until invalidated"
            )
        removed = await cache.delete_pattern("demo:tasks:pending:*")
        keys = "key" if removed == 1 else "keys"
        print(
            f'  invalidate:        delete_pattern("demo:tasks:pending:*") removed {removed} {keys}'
        )
        ms, after, outcome = await timed_outcome(cache, call)
        print(
            f"  next call:         {outcome}, {ms:,.1f} ms, top is now {describe_task(top_task(after))}"
        )
        ms, _, outcome = await timed_outcome(cache, call)
        print(f"  and again:         {outcome}, {ms:,.3f} ms")
    finally:
        # Put the row back, so that the next run starts from the same data.
        await db.complete_task(task["id"], status="pending")
        await cache.delete_pattern("demo:tasks:pending:*")


async def run(args: argparse.Namespace) -> int:
    try:
        settings = CacheSettings.load()
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    sizes = Sizes(args.rows)
    print(f"Database: {args.db}")
    connection, how = await asyncio.to_thread(open_database, args.db, sizes, rebuild=args.rebuild)
    print(
        f"  {sizes.tasks:,} tasks, {sizes.events:,} events, {sizes.articles:,} articles, "
        f"{sizes.comments:,} comments ({how})"
    )
    db = Database(connection)
    article_id = min(42, sizes.articles)
    endpoints = [
        Endpoint(
            "GET /api/tasks/pending?limit=20",
            "demo:tasks:pending:20",
            lambda: db.pending_tasks(20),
            TTL.QUERY,
        ),
        Endpoint(
            "GET /api/metrics?days=30", "demo:metrics:30d", lambda: db.metrics(30), TTL.METRICS
        ),
        Endpoint(
            f"GET /api/content/{article_id}",
            f"demo:content:{article_id}",
            lambda: db.content(article_id),
            TTL.CONTENT,
        ),
    ]
    cache = Cache.from_settings(settings)
    with closing(connection):
        async with cache:
            # Start cold, also on a Redis server that kept the entries of an earlier run.
            await cache.delete_pattern("demo:*")
            print()
            print_table([await measure(cache, endpoint) for endpoint in endpoints])
            if not cache.stats.hits:
                print("No cache hits: the backend is off or failing (see below).")
            await show_invalidation(cache, db, endpoints[0])
            print()
            print_backend(cache, settings)
    return 0


def print_backend(cache: Cache, settings: CacheSettings) -> None:
    kind = cache.backend.kind
    if kind == "redis":
        print(f"Backend: redis at {settings.redacted_url} (shared by every process using it)")
    elif kind == "memory":
        print("Backend: memory (process-local: this Python process only)")
        print("  Set REDIS_URL=redis://localhost:6379/0 to run the same demo on Redis.")
    else:
        print(f"Backend: {kind} (caching is off: every call runs the query)")
    stats = cache.stats
    print(
        f"Stats: {stats.hits} hits, {stats.misses} misses, hit ratio {stats.hit_ratio:.0%}, "
        f"{stats.backend_errors} backend errors"
    )
    if stats.backend_errors:
        print("  The backend failed; the cache failed open, so the app kept working uncached.")


def add_arguments(parser: argparse.ArgumentParser, *, default_db: Path | None) -> None:
    """Adds the demo's options to ``parser``; without ``default_db`` the database is temporary."""
    parser.add_argument(
        "--rows",
        type=_rows,
        default=DEFAULT_ROWS,
        help=f"number of tasks, at least 100; the other tables scale with it (default {DEFAULT_ROWS:,})",
    )
    where = (
        f"default {default_db}"
        if default_db is not None
        else "default: a temporary file, removed at exit"
    )
    parser.add_argument(
        "--db",
        type=Path,
        default=default_db,
        help=f"SQLite file, built on first use and reused while its size and schema match ({where})",
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the database")
    parser.add_argument("-q", "--quiet", action="store_true", help="hide cachetier's log lines")


def _rows(text: str) -> int:
    try:
        rows = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if rows < 100:
        raise argparse.ArgumentTypeError(f"must be at least 100, not {rows}")
    return rows


def run_command(args: argparse.Namespace) -> int:
    """Runs the demo with the options `add_arguments` defined; returns the exit code."""
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="log: %(message)s", stream=sys.stdout)
    with ExitStack() as stack:
        if args.db is None:
            # Built for this run only (a few seconds), so that an installed demo leaves nothing.
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="cachetier-demo-"))
            args.db = Path(directory) / "demo.sqlite3"
        with suppress(KeyboardInterrupt):
            return asyncio.run(run(args))
    return 130  # the shell convention for a command ended by SIGINT
