"""Issue 19: an invalidation that cannot reach Redis is journaled and replayed before Redis is
trusted again, and a restarted Redis empties the local tier that followed the old one.

Each test runs redis-server processes of its own and kills (SIGKILL) or freezes (SIGSTOP) them.
The servers that come back after a kill keep an append-only file fsynced on every write, so they
return with the entries from before the kill: the worst case for an invalidation lost on the way.
Two `Cache` objects with their own connections, breakers and journals stand for processes A and
B (the engine keeps no state between `Cache` objects, so a subprocess would add start-up time
and nothing else). Both read one "database" dict through a decorated function, so a read that
returns the old value can only have come from the cache.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cachetier import BackendError, Cache, CachedFunction, CircuitBreaker, LocalTier
from cachetier.backends import RedisBackend
from cachetier.testing import FakeClock

from ..conftest import need_redis_server
from ..servers import RedisServer, running_redis

pytestmark = pytest.mark.redis

OLD, NEW = 10, 20
# Short enough that a frozen server opens a breaker within a second or two; long enough that a
# healthy server on a loaded 2-core CI machine answers (CI once saw a 100 ms connect time out
# and a precondition read fail open).
COMMAND_TIMEOUT = 0.5
CONNECT_TIMEOUT = 1.0
THRESHOLD = 2
COOLDOWN = 0.2
POLL = 0.01
# "Within seconds": how long A may take to reach the server again, and B to stop serving the old
# value after that. Passing runs take a cool-down plus `version_check_interval` (0.25 s) at most.
RECOVERY = 3.0
# How long A and B are watched after recovery for a return of the old value.
WATCH = 0.25
HEARTBEAT = 0.1
KINDS = ["key", "function", "tag", "pattern", "version"]


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server that fsyncs every write to its AOF, so a restart brings back what it had."""
    need_redis_server()
    with running_redis(tmp_path, "--appendonly", "yes", "--appendfsync", "always") as server:
        yield server


@pytest.fixture
def forgetful_redis(own_redis: RedisServer) -> RedisServer:
    """A redis-server without persistence: it comes back empty."""
    return own_redis


@dataclass
class Process:
    """One application process: its cache and a cached function over the shared database."""

    cache: Cache
    price: CachedFunction[[int], int]
    runs: Counter[int]


@pytest.fixture
async def processes() -> AsyncIterator[list[Process]]:
    """The processes a test made; closed at the end."""
    made: list[Process] = []
    yield made
    for process in made:
        await process.cache.aclose()


def start_process(
    made: list[Process],
    url: str,
    db: dict[int, int],
    *,
    breaker: CircuitBreaker | None = None,
    **options: Any,
) -> Process:
    backend = RedisBackend.from_url(
        url, connect_timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT
    )
    cache = Cache(
        backend,
        namespace="outage",
        default_ttl=3600,
        breaker=breaker or CircuitBreaker(threshold=THRESHOLD, cooldown=COOLDOWN),
        **options,
    )
    runs: Counter[int] = Counter()

    @cache.cached(ttl=3600, key="item:{item}", tags=["item:{item}"])
    async def price(item: int) -> int:
        runs[item] += 1
        return db[item]

    process = Process(cache, price, runs)
    made.append(process)
    return process


async def invalidate(process: Process, kind: str, item: int) -> None:
    """A's invalidation of ``item`` after its database write, one way or another."""
    cache = process.cache
    if kind == "key":
        await cache.delete(f"item:{item}")
    elif kind == "function":
        await process.price.invalidate(item)
    elif kind == "tag":
        await cache.invalidate_tags(f"item:{item}")
    elif kind == "pattern":
        await cache.delete_pattern("item:*")
    else:
        assert kind == "version"
        with pytest.raises(BackendError):  # a lost bump must not go unnoticed
            await cache.bump_version()


async def restart(server: RedisServer) -> None:
    """Starts a killed server again on its port, from its files if it keeps any."""
    await asyncio.to_thread(server.start)


async def kill(server: RedisServer) -> None:
    await asyncio.to_thread(server.kill)


def freeze(server: RedisServer, sig: signal.Signals) -> None:
    assert server.process is not None
    os.kill(server.process.pid, sig)


async def served_locally(process: Process, item: int, value: int) -> None:
    """Calls ``process`` until its local tier serves ``item`` (a hit without a backend call);
    every answer must be ``value``."""
    deadline = time.monotonic() + RECOVERY
    while True:
        calls, hits = process.cache.stats.backend_calls, process.cache.stats.hits
        assert await process.price(item) == value
        if process.cache.stats.hits > hits and process.cache.stats.backend_calls == calls:
            return
        assert time.monotonic() < deadline, "the local tier never served the item"
        await asyncio.sleep(POLL)


async def a_recovers(a: Process, items: list[int], new: dict[int, int]) -> None:
    """Calls A until it reads every item from the server again: each answer must be new."""
    deadline = time.monotonic() + RECOVERY
    hits = a.cache.stats.hits
    while True:
        for item in items:
            value = await a.price(item)
            assert value == new[item], f"A returned the old value of item {item} after recovery"
        if a.cache.stats.hits >= hits + len(items):
            return  # every item came from the server, recomputed after the invalidation
        assert time.monotonic() < deadline, f"A did not reach the server within {RECOVERY} s"
        await asyncio.sleep(POLL)


async def b_follows(b: Process, items: list[int], new: dict[int, int]) -> float:
    """Calls B until it returns every new value; returns how long that took."""
    started = time.monotonic()
    while True:
        values = {item: await b.price(item) for item in items}
        if values == {item: new[item] for item in items}:
            return time.monotonic() - started
        assert time.monotonic() - started < RECOVERY, (
            f"B still returned {values} {RECOVERY} s after A reached the server again"
        )
        await asyncio.sleep(POLL)


async def neither_goes_back(
    processes: list[Process], items: list[int], new: dict[int, int]
) -> None:
    deadline = time.monotonic() + WATCH
    while time.monotonic() < deadline:
        for name, process in zip("AB", processes, strict=True):
            for item in items:
                assert await process.price(item) == new[item], f"{name} went back to the old value"
        await asyncio.sleep(POLL)


# -- 1. Redis killed, A invalidates, Redis restarts from its AOF ---------------------------------


@pytest.mark.parametrize("local", [False, True], ids=["redis", "local-tier"])
@pytest.mark.parametrize("kind", KINDS)
async def test_an_invalidation_during_a_crash_is_replayed_before_the_restarted_server_is_read(
    persistent_redis: RedisServer, processes: list[Process], kind: str, local: bool
) -> None:
    """With ``local-tier``, A and B also keep values in their local tiers: emptied when the
    channel drops, refilled from the restarted server, and emptied by the replay's changes."""
    server = persistent_redis
    db = {1: OLD}
    options = {"local": LocalTier(heartbeat=HEARTBEAT)} if local else {}
    a = start_process(processes, server.url, db, **options)
    b = start_process(processes, server.url, db, **options)
    assert await a.price(1) == OLD
    assert await b.price(1) == OLD
    assert b.runs[1] == 0, "B should have read A's entry from the server"

    await kill(server)
    db[1] = NEW
    await invalidate(a, kind, 1)
    for _ in range(3):  # the outage: A's calls fail open and the function runs
        assert await a.price(1) == NEW, "A returned the old value during the outage"
    await restart(server)

    # The restarted server has the old entry, and B knows nothing of A's invalidation.
    assert await b.price(1) == OLD, "precondition: the server came back with the old entry"
    if local:  # B's tier follows the new server and holds the old value again
        await served_locally(b, 1, OLD)
    await a_recovers(a, [1], db)
    stats = a.cache.stats
    assert (stats.replays, stats.awaiting_replay) == (1, False)
    assert stats.journaled >= 1
    await b_follows(b, [1], db)
    await neither_goes_back([a, b], [1], db)


# -- 2. Redis frozen after A's breaker opened: A's invalidation is never sent --------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_an_invalidation_skipped_by_an_open_breaker_is_replayed_when_the_server_answers(
    persistent_redis: RedisServer, processes: list[Process], kind: str
) -> None:
    server = persistent_redis
    db = {1: OLD}
    # A fake clock holds A's breaker open until the test lets it probe: nothing A does while it
    # is open can reach the frozen server's socket and run once the server thaws.
    breaker_clock = FakeClock()
    a_breaker = CircuitBreaker(threshold=THRESHOLD, cooldown=COOLDOWN, clock=breaker_clock)
    a = start_process(processes, server.url, db, breaker=a_breaker)
    b = start_process(processes, server.url, db)
    assert await a.price(1) == OLD
    assert await b.price(1) == OLD

    freeze(server, signal.SIGSTOP)
    try:
        for _ in range(10 * THRESHOLD):
            if a_breaker.state == "open":
                break
            assert await a.price(1) == OLD  # times out, fails open; nothing changed yet
        assert a_breaker.state == "open"
        db[1] = NEW
        await invalidate(a, kind, 1)
        for _ in range(3):
            assert await a.price(1) == NEW, "A returned the old value while the breaker was open"
    finally:
        freeze(server, signal.SIGCONT)

    assert await b.price(1) == OLD, "precondition: A's invalidation never reached the server"
    breaker_clock.advance(COOLDOWN)
    await a_recovers(a, [1], db)
    stats = a.cache.stats
    assert (stats.replays, stats.awaiting_replay) == (1, False)
    assert stats.journaled >= 1
    await b_follows(b, [1], db)
    await neither_goes_back([a, b], [1], db)


# -- 3. More failed invalidations than the journal holds: one bump_version -----------------------


async def test_a_journal_past_its_limit_replays_as_one_bump_of_the_version(
    persistent_redis: RedisServer, processes: list[Process]
) -> None:
    server = persistent_redis
    items = [1, 2, 3, 4, 5, 6]
    deleted = items[:5]
    db = dict.fromkeys(items, OLD)
    a = start_process(processes, server.url, db, journal_limit=3)
    b = start_process(processes, server.url, db)
    for item in items:
        assert await a.price(item) == OLD
        assert await b.price(item) == OLD

    await kill(server)
    for item in deleted:
        db[item] = NEW
        await a.cache.delete(f"item:{item}")
    # Item 6 changes without an invalidation: only a bump of the version, which stands for
    # every entry of the namespace, makes its old entry a miss. A replay of the last keys the
    # journal could hold would leave it, and A and B would go on returning the old value.
    db[6] = NEW
    await restart(server)

    assert [await b.price(item) for item in items] == [OLD] * 6, "precondition"
    await a_recovers(a, items, db)
    stats = a.cache.stats
    assert (stats.journaled, stats.journal_overflows, stats.replays) == (5, 1, 1)
    assert not stats.awaiting_replay
    await b_follows(b, items, db)
    await neither_goes_back([a, b], items, db)


# -- 4. A restarted server empties the local tier that followed the old one ----------------------


async def test_a_restarted_server_empties_the_local_tier_that_followed_the_old_one(
    forgetful_redis: RedisServer, processes: list[Process]
) -> None:
    server = forgetful_redis
    db = {1: OLD}
    a = start_process(processes, server.url, db, local=LocalTier(heartbeat=HEARTBEAT))
    await served_locally(a, 1, OLD)

    # The database changes behind the cache's back; the restarted server has no entry for it,
    # so a value from before the restart must not outlive the tier's staleness bound.
    db[1] = NEW
    await kill(server)
    await restart(server)
    restarted = time.monotonic()
    bound = 3 * HEARTBEAT + 0.5  # three heartbeats, and scheduling room on a loaded machine
    while await a.price(1) == OLD:
        assert time.monotonic() - restarted < bound, (
            f"A's local tier still served the old value {bound:g} s after the restart"
        )
        await asyncio.sleep(POLL)
    deadline = time.monotonic() + WATCH
    while time.monotonic() < deadline:
        assert await a.price(1) == NEW, "A's local tier went back to the old value"
        await asyncio.sleep(POLL)
