"""`lock=True` on a real Redis: one computation across processes, dead holders, lost scripts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio

from cachetier import Cache, LockTimeout
from cachetier.backends import RedisBackend

from ..servers import RedisServer

pytestmark = pytest.mark.redis

WORKER = Path(__file__).with_name("lock_worker.py")


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis_asyncio.Redis]:
    client = redis_asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def cache(redis_url: str, namespace: str) -> AsyncIterator[Cache]:
    async with Cache(
        RedisBackend.from_url(redis_url, connect_timeout=2.0, command_timeout=2.0),
        namespace=namespace,
    ) as cache:
        yield cache
        await cache.clear()


async def commands_processed(raw: redis_asyncio.Redis) -> int:
    return int((await raw.info("stats"))["total_commands_processed"])


async def test_four_processes_with_a_hundred_calls_each_compute_once(
    private_redis: RedisServer, namespace: str
) -> None:
    """Counted on a server of its own, so that no other client's commands are counted."""
    redis_url = private_redis.url
    raw = redis_asyncio.Redis.from_url(redis_url)
    procs: list[asyncio.subprocess.Process] = []
    try:
        start_at = time.time() + 1.5  # every process has imported and connected by then
        before = await commands_processed(raw)
        for _ in range(4):
            procs.append(  # noqa: PERF401  # kept as soon as it runs, for the cleanup below
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(WORKER),
                    redis_url,
                    namespace,
                    str(start_at),
                    stdout=subprocess.PIPE,
                )
            )
        outputs = [json.loads((await proc.communicate())[0]) for proc in procs]
        assert all(proc.returncode == 0 for proc in procs)
        spent = await commands_processed(raw) - before
        assert int(await raw.get(f"{namespace}:runs") or 0) == 1
        results = [r for out in outputs for r in out["results"]]
        assert len(results) == 400
        assert all(r == {"value": 42, "run": 1} for r in results)
        # Each process: one GET, one lock attempt, and (waiters) SUBSCRIBE, GETs, UNSUBSCRIBE;
        # the holder: GET, SET, release, PUBLISH. Polling 400 callers would cost thousands.
        assert spent < 60, f"{spent} Redis commands for 400 callers"
    finally:
        # Closed whatever failed: a client left open warns inside a later, unrelated test.
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await raw.aclose()


async def test_waiter_takes_over_when_the_holder_died(
    cache: Cache, raw: redis_asyncio.Redis
) -> None:
    calls = 0

    @cache.cached(ttl=60, lock=True, lock_ttl=1, lock_timeout=5, on_lock_timeout="raise")
    async def compute() -> int:
        nonlocal calls
        calls += 1
        return 7

    full = cache.keys.full(compute.key_for())
    # A holder that took the lock and died: its lock stays until its expiry, and nobody publishes.
    await raw.set(cache.keys.lock_key(full), b"dead-holder-token", px=1000)
    started = time.monotonic()
    assert await compute() == 7
    elapsed = time.monotonic() - started
    assert calls == 1
    assert 0.7 < elapsed < 1.8, elapsed


async def test_killed_holder_process_blocks_others_only_until_lock_expiry(
    redis_url: str, cache: Cache, namespace: str
) -> None:
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        from cachetier import Cache
        from cachetier.backends import RedisBackend

        async def main():
            # Timeouts a loaded CI machine does not trip: a lock it failed to take in time
            # would leave nothing to block the others, and the test would prove nothing.
            backend = RedisBackend.from_url(
                {redis_url!r}, connect_timeout=2.0, command_timeout=2.0
            )
            cache = Cache(backend, namespace={namespace!r})

            @cache.cached(ttl=60, key="slow", lock=True, lock_ttl=1)
            async def slow() -> int:
                print("holding", flush=True)
                await asyncio.sleep(3600)
                return 0

            await slow()

        asyncio.run(main())
        """
    )
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert (await asyncio.wait_for(holder.stdout.readline(), 10)).strip() == b"holding"
        os.kill(holder.pid, signal.SIGKILL)
        await asyncio.wait_for(holder.wait(), 5)

        @cache.cached(
            ttl=60, key="slow", lock=True, lock_ttl=1, lock_timeout=5, on_lock_timeout="raise"
        )
        async def slow() -> int:
            return 1

        started = time.monotonic()
        assert await slow() == 1
        assert time.monotonic() - started < 1.8
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


async def test_waiters_are_woken_when_the_value_lands_not_by_polling(
    cache: Cache, redis_url: str, raw: redis_asyncio.Redis
) -> None:
    other = Cache(
        RedisBackend.from_url(redis_url, connect_timeout=2.0, command_timeout=2.0),
        namespace=cache.namespace,
    )
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "ready"

    # lock_ttl=60 makes the fallback re-check every 15 s; a prompt answer proves the wake-up.
    try:
        holder = asyncio.create_task(cache.get_or_set("k", slow, lock=True, lock_ttl=60))
        lock_name = cache.keys.lock_key(cache.keys.full("k"))
        while not await raw.exists(lock_name):  # noqa: ASYNC110  # a key in Redis, no event
            await asyncio.sleep(0.005)
        waiter = asyncio.create_task(other.get_or_set("k", lambda: "never", lock=True, lock_ttl=60))
        # Released only once the waiter is known to wait: a fixed sleep lost that race on a
        # loaded CI machine, where the waiter's first read answered after the value landed.
        await _until(lambda: other.stats.lock_waits == 1)
        release.set()
        started = time.monotonic()
        assert await asyncio.wait_for(waiter, 2) == "ready"
        assert time.monotonic() - started < 0.5
        assert await holder == "ready"
        assert other.stats.lock_waits == 1
    finally:
        release.set()
        await other.aclose()


async def _until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_lock_timeout_raises_when_asked(cache: Cache, raw: redis_asyncio.Redis) -> None:
    full = cache.keys.full("busy")
    await raw.set(cache.keys.lock_key(full), b"someone", px=10_000)
    with pytest.raises(LockTimeout, match="lock_timeout"):
        await cache.get_or_set(
            "busy", lambda: 1, lock=True, lock_timeout=0.3, on_lock_timeout="raise"
        )
    assert await cache.get_or_set("busy", lambda: 2, lock=True, lock_timeout=0.3) == 2
    await raw.delete(cache.keys.lock_key(full))


async def test_lock_release_survives_a_script_cache_flush(
    cache: Cache, raw: redis_asyncio.Redis
) -> None:
    """A Redis restart (or SCRIPT FLUSH) forgets loaded scripts; release reloads, never skips."""
    assert await cache.get_or_set("a", lambda: 1, lock=True) == 1
    await raw.script_flush()
    assert await cache.get_or_set("b", lambda: 2, lock=True) == 2
    assert await raw.exists(cache.keys.lock_key(cache.keys.full("b"))) == 0
