"""One regression test per defect of issue 14: a call that starts after an invalidation returned
must never be served what it invalidated.

Each test plays the story of one reproducer in ``../shared/repro/`` through public API only,
with events and hooks instead of sleeps: a computation held open, a read reply held back, a
command followed by another process's writes. Two `Cache` objects over one store stand for two
processes. Tests assert what reads return, never counts or key layouts, so the same test is
meaningful on the old tag indexes and on versioned tags.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis

from cachetier import Cache
from cachetier.backends import Backend, MemoryBackend, RedisBackend
from cachetier.testing import FakeClock

from ..conftest import need_redis_server
from ..servers import RedisServer, running_redis

pytestmark = pytest.mark.asyncio

# Long enough for a task parked on a flight or a merged read to be parked for sure; a task
# that does not join returns well before it, so passing runs do not wait for it.
JOIN_WINDOW = 0.05


class Store:
    """One store shared by several caches, as one Redis is shared by several processes."""

    def __init__(
        self,
        kind: str,
        make_backend: Callable[[], Backend],
        namespace: str,
        server: fakeredis.FakeServer | None = None,
    ) -> None:
        self.kind = kind
        self.make_backend = make_backend
        self.namespace = namespace
        self.server = server
        self.backends: list[Backend] = []

    def cache(self, backend: Backend | None = None, **options: Any) -> Cache:
        backend = backend if backend is not None else self.make_backend()
        self.backends.append(backend)
        return Cache(backend, namespace=self.namespace, default_ttl=60, **options)


@pytest.fixture(params=["memory", "fakeredis"])
async def store(request: pytest.FixtureRequest, namespace: str) -> AsyncIterator[Store]:
    if request.param == "memory":
        shared = MemoryBackend()
        made = Store("memory", lambda: shared, namespace)
    else:
        server = fakeredis.FakeServer()
        made = Store(
            "fakeredis",
            lambda: RedisBackend(fakeredis.FakeAsyncRedis(server=server)),
            namespace,
            server,
        )
    yield made
    for backend in made.backends:
        await backend.aclose()


class ReplyGate:
    """Holds back the reply of the next read once armed, until released."""

    def __init__(self) -> None:
        self.armed = False
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    def arm(self) -> None:
        self.armed = True
        self.held.clear()
        self.release.clear()

    async def pass_reply(self) -> None:
        if self.armed:
            self.armed = False
            self.held.set()
            await self.release.wait()


class HeldReads(fakeredis.FakeAsyncRedis):
    """A fakeredis client whose GET and MGET replies `gate` can hold back (a slow network)."""

    gate: ReplyGate

    async def get(self, name: Any) -> Any:
        value = await super().get(name)
        await self.gate.pass_reply()
        return value

    async def mget(self, keys: Any, *args: Any) -> Any:
        values = await super().mget(keys, *args)
        await self.gate.pass_reply()
        return values


def held_reads_backend(server: fakeredis.FakeServer) -> tuple[RedisBackend, ReplyGate]:
    client = HeldReads(server=server)
    client.gate = ReplyGate()
    return RedisBackend(client), client.gate


async def finished_or_parked(task: asyncio.Task[Any]) -> None:
    """Returns once ``task`` is done, or has had `JOIN_WINDOW` to park on something."""
    await asyncio.wait({task}, timeout=JOIN_WINDOW)


# -- defect 1: single flight and read merging -------------------------------------------------


async def test_a_call_started_after_delete_returned_never_joins_the_computation_before_it(
    store: Store,
) -> None:
    """Defect 1: in-process single flight handed a later call an earlier flight's result."""
    cache = store.cache()
    db = {"title": "old"}
    first_read = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    @cache.cached(ttl=60, key="task:{tid}")
    async def task(tid: int) -> str:
        nonlocal calls
        calls += 1
        title = db["title"]
        if calls == 1:  # the first request reads the row, then is slow to finish
            first_read.set()
            await release.wait()
        return title

    earlier = asyncio.create_task(task(1))
    await asyncio.wait_for(first_read.wait(), 5)
    db["title"] = "new"
    await cache.delete("task:1")
    after = asyncio.create_task(task(1))  # starts after the delete returned
    await finished_or_parked(after)
    release.set()
    await asyncio.wait_for(earlier, 5)
    assert await asyncio.wait_for(after, 5) == "new"
    assert await task(1) == "new"


@pytest.mark.parametrize("write", ["set", "delete"])
async def test_a_get_after_a_write_returned_never_joins_a_read_sent_before_it(
    namespace: str, write: str
) -> None:
    """Defect 1: read merging handed a get() after set()/delete() the GET sent before it."""
    server = fakeredis.FakeServer()
    backend, gate = held_reads_backend(server)
    cache = Cache(backend, namespace=namespace, default_ttl=60)
    try:
        await cache.set("k", "old")
        gate.arm()
        other = asyncio.create_task(cache.get("k"))  # another request's GET ...
        await asyncio.wait_for(gate.held.wait(), 5)  # ... has its reply on the way
        if write == "set":
            await cache.set("k", "new")
        else:
            await cache.delete("k")
        mine = asyncio.create_task(cache.get("k"))  # reads its own write
        await finished_or_parked(mine)
        gate.release.set()
        assert await asyncio.wait_for(other, 5) == "old"
        assert await asyncio.wait_for(mine, 5) == ("new" if write == "set" else None)
    finally:
        await cache.aclose()


# -- defect 2: an invalidation between recording a miss's tags and its lease ------------------


class PauseAfterTagRecord:
    """Pauses once, right after the backend records a computation's tags, until `go`.

    Old code records tags with ``tag_add`` (an index), new code with ``tag_stamps``.
    """

    paused: asyncio.Event
    go: asyncio.Event

    async def _pause(self) -> None:
        if not self.go.is_set():
            self.paused.set()
            await self.go.wait()

    async def tag_add(self, tags: Sequence[str], member: str, ttl: float | None) -> None:
        await super().tag_add(tags, member, ttl)  # type: ignore[misc]
        await self._pause()

    async def tag_stamps(self, keys: Sequence[str], fresh: bytes, ttl: float | None) -> list[bytes]:
        stamps: list[bytes] = await super().tag_stamps(keys, fresh, ttl)  # type: ignore[misc]
        await self._pause()
        return stamps


class PausingMemoryBackend(PauseAfterTagRecord, MemoryBackend):
    pass


class PausingRedisBackend(PauseAfterTagRecord, RedisBackend):
    pass


async def test_an_entry_computed_across_tag_invalidations_is_never_served_after_the_last(
    store: Store,
) -> None:
    """Defect 2: invalidate_tags between a miss's tag record and its lease left it unindexed."""
    if store.kind == "memory":
        backend: PauseAfterTagRecord = PausingMemoryBackend()
    else:
        backend = PausingRedisBackend(fakeredis.FakeAsyncRedis(server=store.server))
    backend.paused, backend.go = asyncio.Event(), asyncio.Event()
    cache = store.cache(backend)  # type: ignore[arg-type]
    db = {"v": 1}
    has_read = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    @cache.cached(ttl=60, key="project:{pid}", tags=["project:{pid}"])
    async def project(pid: int) -> int:
        nonlocal calls
        calls += 1
        v = db["v"]
        if calls == 1:
            has_read.set()
            await release.wait()
        return v

    reader = asyncio.create_task(project(7))
    await asyncio.wait_for(backend.paused.wait(), 5)
    db["v"] = 2  # a write and its invalidation, inside the gap
    await cache.invalidate_tags("project:7")
    backend.go.set()
    await asyncio.wait_for(has_read.wait(), 5)  # the reader computes with v=2
    db["v"] = 3
    await cache.invalidate_tags("project:7")
    release.set()
    await asyncio.wait_for(reader, 5)
    db["v"] = 4
    await cache.invalidate_tags("project:7")
    assert await project(7) == 4
    assert await project(7) == 4


# -- defect 3: a big tag invalidated while others tag entries --------------------------------


class HookAfterNextCommand(fakeredis.FakeAsyncRedis):
    """Runs `after_next_command` once, right after the reply of the next command sent."""

    after_next_command: Callable[[], Awaitable[None]] | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        result = await super().execute_command(*args, **options)
        hook, self.after_next_command = self.after_next_command, None
        if hook is not None:
            await hook()
        return result


async def test_invalidate_tags_reaches_every_entry_tagged_before_it_while_others_tag_more(
    namespace: str,
) -> None:
    """Defect 3: short-TTL entries tagged during invalidate_tags used up its count of members."""
    server = fakeredis.FakeServer()
    client = HookAfterNextCommand(server=server)
    cache = Cache(RedisBackend(client), namespace=namespace)
    other = Cache(RedisBackend(fakeredis.FakeAsyncRedis(server=server)), namespace=namespace)
    # Old code counted the index, then removed batches of 500, earliest expiry first, until
    # that count was used up: entries tagged meanwhile with a shorter TTL took the place of
    # entries tagged before the call. A whole batch makes the count run out exactly.
    old, new = 500, 100
    try:
        for i in range(old):
            await cache.set(f"old:{i}", i, ttl=3600, tags=["project:7"])

        async def others_write() -> None:  # another process caches short-lived views meanwhile
            for n in range(new):
                await other.set(f"new:{n}", n, ttl=30, tags=["project:7"])

        client.after_next_command = others_write
        await cache.invalidate_tags("project:7")
        assert client.after_next_command is None  # the other process did write meanwhile
        assert await cache.get_many([f"old:{i}" for i in range(old)]) == {}
        assert await other.get_many([f"old:{i}" for i in range(old)]) == {}
    finally:
        await cache.aclose()
        await other.aclose()


# -- defect 4: tags under allkeys-lru eviction -----------------------------------------------


@pytest.fixture
def lru_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with 4 MB of memory and allkeys-lru eviction."""
    need_redis_server()
    extra = ("--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru")
    with running_redis(tmp_path, *extra) as server:
        yield server


async def test_invalidate_tags_still_works_when_redis_evicts_under_allkeys_lru(
    lru_redis: RedisServer, namespace: str
) -> None:
    """Defect 4: Redis evicted the never-read tag indexes while their (read) entries lived."""
    groups, per_group = 50, 10
    cache = Cache(RedisBackend.from_url(lru_redis.url, command_timeout=5), namespace=namespace)
    raw = aioredis.Redis.from_url(lru_redis.url, socket_timeout=5)
    try:
        for g in range(groups):
            for j in range(per_group):
                value = {"g": g, "v": 1, "pad": "x" * 300}
                await cache.set(f"item:{g}:{j}", value, ttl=3600, tags=[f"group:{g}"])
        for rnd in range(8):  # traffic: the entries are read, other keys are written
            for g in range(groups):
                await cache.get_many([f"item:{g}:{j}" for j in range(per_group)])
            pipeline = raw.pipeline(transaction=False)
            for n in range(1500):
                pipeline.set(f"filler:{namespace}:{rnd}:{n}", b"y" * 500, ex=3600)
            await pipeline.execute()
        assert int((await raw.info("stats"))["evicted_keys"]) > 0
        served_old = 0
        for g in range(groups):  # every group's data changes; invalidate by tag
            await cache.invalidate_tags(f"group:{g}")
            found = await cache.get_many([f"item:{g}:{j}" for j in range(per_group)])
            served_old += len(found)
        assert served_old == 0
    finally:
        await raw.aclose()
        await cache.aclose()


# -- defect 5: memory backend tag bookkeeping grows without bound ----------------------------


@pytest.mark.skipif(
    sys.implementation.name != "cpython", reason="counts CPython's allocated memory blocks"
)
async def test_memory_backend_stays_bounded_with_a_new_tag_per_call(namespace: str) -> None:
    """Defect 5: MemoryBackend kept the index of every per-call tag after its entry was gone."""
    backend = MemoryBackend(max_entries=1_000, max_bytes=1024 * 1024)
    cache = Cache(backend, namespace=namespace)

    @cache.cached(ttl=60, tags=["user:{uid}"])
    async def profile(uid: int) -> dict[str, int]:
        return {"uid": uid}

    for uid in range(1_500):  # the store is full from here on
        await profile(uid)
    gc.collect()
    full = sys.getallocatedblocks()
    calls = 2_000
    for uid in range(1_500, 1_500 + calls):
        await profile(uid)
    gc.collect()
    grown = sys.getallocatedblocks() - full
    # Memory in use must not grow with the number of tags ever used (the old indexes kept
    # eight blocks, about 500 bytes, per call); less than one block a call is noise.
    assert grown < calls, f"{grown} more memory blocks after {calls} calls on a full store"


# -- defect 6: generation bookkeeping --------------------------------------------------------


async def test_a_generation_read_in_flight_during_bump_version_never_undoes_it(
    namespace: str,
) -> None:
    """Defect 6: a generation reply handled after bump_version() moved back to the old one."""
    server = fakeredis.FakeServer()
    backend, gate = held_reads_backend(server)
    clock = FakeClock()
    cache = Cache(
        backend, namespace=namespace, default_ttl=60, clock=clock, version_check_interval=0.25
    )
    try:
        await cache.get("sync")  # learns the current generation
        await cache.set("k", "before-bump")
        clock.advance(1)  # the next read fetches the generation with its key
        gate.arm()
        other_request = asyncio.create_task(cache.get("other"))
        await asyncio.wait_for(gate.held.wait(), 5)  # its reply holds the old generation
        await cache.bump_version()
        gate.release.set()
        await asyncio.wait_for(other_request, 5)
        assert await cache.get("k") is None
    finally:
        await cache.aclose()


async def test_a_new_process_whose_first_call_is_a_write_writes_what_readers_find(
    store: Store,
) -> None:
    """Defect 6: a process's first set() after an old bump_version() wrote unreadable entries."""
    app = store.cache()
    await app.bump_version()  # some deploy bumped once, long ago
    worker = store.cache()  # a new process: its first calls are writes
    assert await worker.set("report:1", {"total": 42})
    assert await worker.set_many({"report:2": 1, "report:3": 2})
    assert await worker.get("report:1") == {"total": 42}
    assert await app.get("report:1") == {"total": 42}
    assert await app.get_many(["report:2", "report:3"]) == {"report:2": 1, "report:3": 2}


@pytest.fixture
def restartable_redis(own_redis: RedisServer) -> RedisServer:
    """A private redis-server without persistence, for a test that kills and restarts it."""
    return own_redis


async def test_bump_version_after_a_redis_restart_invalidates_entries_from_before_it(
    restartable_redis: RedisServer, namespace: str
) -> None:
    """Defect 6: after a restart, entries written with the old, higher generation were kept."""
    url = restartable_redis.url
    clock = FakeClock()  # the generation stays known across the restart until advanced
    cache = Cache(
        RedisBackend.from_url(url, command_timeout=5),
        namespace=namespace,
        clock=clock,
        version_check_interval=2,
    )
    other = Cache(RedisBackend.from_url(url, command_timeout=5), namespace=namespace, clock=clock)
    db = {"price": 10}
    try:

        @cache.cached(ttl=3600, key="price")
        async def price() -> int:
            return db["price"]

        for _ in range(3):
            await cache.bump_version()  # deploys over the past weeks
        await cache.get("warm")
        restartable_redis.kill()  # the server dies without persistence ...
        restartable_redis.start()  # ... and comes back empty
        assert await price() == 10
        db["price"] = 99
        await other.bump_version()
        clock.advance(3)  # longer than version_check_interval
        assert await price() == 99
    finally:
        await cache.aclose()
        await other.aclose()


# -- defect 7: refresh of a lock=True function ----------------------------------------------


async def test_refresh_of_a_locked_function_runs_it_and_stores_the_result(namespace: str) -> None:
    """Defect 7: fn.refresh() of a lock=True function on Redis returned the cached value."""
    # On memory, refresh() of a lock=True function already computed: the defect was on Redis.
    cache = Cache(RedisBackend(fakeredis.FakeAsyncRedis()), namespace=namespace, default_ttl=60)
    db = {"v": 1}
    calls = 0

    @cache.cached(ttl=60, key="price", lock=True)
    async def price() -> int:
        nonlocal calls
        calls += 1
        return db["v"]

    try:
        assert await price() == 1
        db["v"] = 2
        assert await price.refresh() == 2
        assert calls == 2
        assert await price() == 2
    finally:
        await cache.aclose()
