"""Invalidation that holds under races: keys, patterns, tags and versions, on every backend.

Each race test plays the story of SPEC §3: a request misses and reads the database, a writer
updates the row and invalidates, then the first request finishes. Its old row must never be
read from the cache afterwards. The computation is held open with events so the interleaving
is exact, not timed. Two `Cache` objects over one store stand for two processes.

The control test at the end runs the same story over a backend without `GuardedBackend` and
sees the old row come back: the scenario does exercise the race the protection closes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest

from cachetier import Cache
from cachetier.backends import Backend, MemoryBackend, RedisBackend
from cachetier.testing import FakeClock

pytestmark = pytest.mark.asyncio


@dataclass
class Store:
    """One store shared by several caches, as one Redis is shared by several processes."""

    kind: str
    make_backend: Callable[[], Backend]
    backends: list[Backend] = field(default_factory=list)
    namespace: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:12]}")

    def cache(self, **options: Any) -> Cache:
        backend = self.make_backend()
        self.backends.append(backend)
        return Cache(backend, namespace=self.namespace, default_ttl=60, **options)


@pytest.fixture(params=["memory", "fakeredis", "redis", "cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        shared = MemoryBackend()
        yield Store("memory", lambda: shared)
        return
    if request.param == "fakeredis":
        server = fakeredis.FakeServer()
        made = Store("fakeredis", lambda: RedisBackend(fakeredis.FakeAsyncRedis(server=server)))
    elif request.param == "redis":
        url = request.getfixturevalue("redis_url")
        # Generous timeouts: these tests check semantics, on CI machines that may stall.
        made = Store(
            "redis", lambda: RedisBackend.from_url(url, connect_timeout=2.0, command_timeout=2.0)
        )
    else:
        url = request.getfixturevalue("redis_cluster").url
        made = Store(
            "cluster",
            lambda: RedisBackend.from_url(url, connect_timeout=2.0, command_timeout=2.0),
        )
    yield made
    if made.backends:
        cleaner = Cache(made.backends[0], namespace=made.namespace)
        await cleaner.clear()
        await made.backends[0].delete(cleaner.keys.generation_key())
    for backend in made.backends:
        await backend.aclose()


class Row:
    """A database row whose reads can be held open between reading and returning."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.reads = 0
        self.hold: asyncio.Event | None = None
        self.read_done = asyncio.Event()

    async def read(self) -> str:
        self.reads += 1
        value = self.value
        if self.hold is not None:
            hold, self.hold = self.hold, None
            self.read_done.set()
            await hold.wait()
        return value


async def race(
    reader: Callable[[], Awaitable[str]],
    row: Row,
    invalidate: Callable[[], Awaitable[object]],
) -> str:
    """Starts ``reader``, lets it read the row, updates and invalidates, then lets it finish."""
    hold = row.hold = asyncio.Event()
    row.read_done = asyncio.Event()
    task = asyncio.create_task(reader())
    await asyncio.wait_for(row.read_done.wait(), 5)
    row.value = "new"
    await invalidate()
    hold.set()
    return await asyncio.wait_for(task, 5)


# -- one cache: each kind of invalidation racing a miss --------------------------------------


async def test_delete_during_a_miss_wins(store: Store) -> None:
    cache = store.cache()
    row = Row("old")
    read = lambda: cache.get_or_set("task:1", row.read)  # noqa: E731
    assert await race(read, row, lambda: cache.delete("task:1")) == "old"
    assert await read() == "new"
    assert row.reads == 2


async def test_pattern_invalidation_during_a_miss_wins(store: Store) -> None:
    cache = store.cache()
    row = Row("old")
    read = lambda: cache.get_or_set("task:1", row.read)  # noqa: E731
    assert await race(read, row, lambda: cache.delete_pattern("task:*")) == "old"
    assert await read() == "new"


async def test_tag_invalidation_during_a_miss_wins(store: Store) -> None:
    cache = store.cache()
    row = Row("old")
    read = lambda: cache.get_or_set("task:1", row.read, tags=["project:7"])  # noqa: E731
    assert await race(read, row, lambda: cache.invalidate_tags("project:7")) == "old"
    assert await read() == "new"


async def test_version_bump_during_a_miss_wins(store: Store) -> None:
    cache = store.cache()
    row = Row("old")
    read = lambda: cache.get_or_set("task:1", row.read)  # noqa: E731
    assert await race(read, row, cache.bump_version) == "old"
    assert await read() == "new"


async def test_delete_during_a_refresh_of_a_stale_entry_wins(store: Store) -> None:
    """Stale-while-revalidate: the refresh began before the delete, so it must not store."""
    clock = FakeClock(1_000_000.0)
    cache = store.cache(clock=clock)
    row = Row("old")
    read = lambda: cache.get_or_set("task:1", row.read, ttl=10, stale_ttl=600)  # noqa: E731
    assert await read() == "old"
    clock.advance(11)
    hold = row.hold = asyncio.Event()
    row.read_done = asyncio.Event()
    assert await read() == "old"  # stale, served while one refresh runs in the background
    await asyncio.wait_for(row.read_done.wait(), 5)
    row.value = "new"
    await cache.delete("task:1")
    hold.set()
    for _ in range(50):
        await asyncio.sleep(0.01)
        if not cache._engine.tasks:  # the refresh has finished
            break
    assert await read() == "new"


async def test_decorated_function_with_templated_tags_is_invalidated_by_them(
    store: Store,
) -> None:
    cache = store.cache()
    rows = {7: Row("old"), 8: Row("other")}

    @cache.cached(key="tasks:{project_id}", tags=["tasks", "project:{project_id}"])
    async def tasks(project_id: int) -> str:
        return await rows[project_id].read()

    assert await race(lambda: tasks(7), rows[7], lambda: cache.invalidate_tags("project:7"))
    assert await tasks(7) == "new"
    assert await tasks(8) == "other"
    assert await cache.invalidate_tags("project:7") == 1
    assert await tasks(8) == "other"
    assert rows[8].reads == 1  # another project's entry was untouched
    assert await cache.invalidate_tags("tasks") == 1  # project 7's entry was already gone
    assert await tasks(8) == "other"
    assert rows[8].reads == 2


# -- two caches over one store: the writer is another process ----------------------------------


@pytest.mark.parametrize("kind", ["delete", "pattern", "tag", "invalidate"])
async def test_invalidation_by_another_process_during_a_miss_wins(store: Store, kind: str) -> None:
    reader, writer = store.cache(), store.cache()
    row = Row("old")
    read = lambda: reader.get_or_set("task:1", row.read, tags=["task:1"])  # noqa: E731
    invalidations: Mapping[str, Callable[[], Awaitable[object]]] = {
        "delete": lambda: writer.delete("task:1"),
        "pattern": lambda: writer.delete_pattern("task:*"),
        "tag": lambda: writer.invalidate_tags("task:1"),
        "invalidate": lambda: writer.invalidate(tags=["task:1"]),
    }
    assert await race(read, row, invalidations[kind]) == "old"
    assert await writer.get("task:1") is None
    assert await read() == "new"
    assert await writer.get("task:1") == "new"


async def test_version_bump_by_another_process_reaches_readers_within_the_interval(
    store: Store,
) -> None:
    clock = FakeClock(1_000_000.0)
    reader = store.cache(clock=clock, version_check_interval=1.0)
    writer = store.cache(clock=clock, version_check_interval=1.0)
    row = Row("old")
    read = lambda: reader.get_or_set("task:1", row.read)  # noqa: E731
    assert await read() == "old"
    row.value = "new"
    await writer.bump_version()
    assert await writer.get("task:1") is None  # at once in the process that bumped
    clock.advance(1.0)
    assert await read() == "new"  # the next read fetched the generation along
    assert await writer.get("task:1") == "new"


async def test_a_fetch_under_the_old_generation_is_never_read_after_a_bump(store: Store) -> None:
    clock = FakeClock(1_000_000.0)
    reader = store.cache(clock=clock, version_check_interval=1.0)
    writer = store.cache(clock=clock, version_check_interval=1.0)
    row = Row("old")
    read = lambda: reader.get_or_set("task:1", row.read)  # noqa: E731
    assert await reader.get("warm") is None  # the reader learns generation 0
    assert await race(read, row, writer.bump_version) == "old"
    assert await writer.get("task:1") is None
    clock.advance(1.0)
    assert await read() == "new"


async def test_a_cache_adopts_a_later_generation_from_the_entries_it_reads(store: Store) -> None:
    first = store.cache()
    await first.bump_version()
    await first.set("k", "v")
    late = store.cache(version_check_interval=3600)
    assert await late.get("k") == "v"


# -- tags ------------------------------------------------------------------------------------


async def test_set_with_tags_and_invalidate_tags_counts_the_tags_in_use(store: Store) -> None:
    cache = store.cache()
    await cache.set("a", 1, tags=["x"])
    await cache.set("b", 2, tags=["x", "y"])
    await cache.set("c", 3, tags=["y"])
    await cache.set("d", 4)
    assert await cache.invalidate_tags("x") == 1
    assert await cache.get_many(["a", "b", "c", "d"]) == {"c": 3, "d": 4}
    assert await cache.invalidate_tags("y", "nothing") == 1
    assert await cache.get_many(["a", "b", "c", "d"]) == {"d": 4}
    assert await cache.invalidate_tags() == 0


async def test_tags_holding_separators_and_globs_stay_apart(store: Store) -> None:
    cache = store.cache()
    await cache.set("a", 1, tags=["user:*"])
    await cache.set("b", 2, tags=["user:1"])
    assert await cache.invalidate_tags("user:*") == 1
    assert await cache.get("b") == 2


async def test_a_pattern_matching_a_tag_index_leaves_the_tag_working(store: Store) -> None:
    """``*:1`` matches the index of tag ``project:1``; only `clear` may remove indexes."""
    cache = store.cache()
    await cache.set("task:7", "t", tags=["project:1"])
    await cache.set("list:1", "l")
    assert await cache.delete_pattern("*:1") == 1  # the entry list:1, not the index
    assert await cache.invalidate_tags("project:1") == 1
    assert await cache.get("task:7") is None
    await cache.set("task:8", "t", tags=["project:1"])
    assert await cache.clear() >= 1  # the entry, and its index where it is a key (Redis)
    assert await cache.invalidate_tags("project:1") == 0


async def test_a_large_tag_is_invalidated_whole_by_one_write(store: Store) -> None:
    cache = store.cache()
    for start in range(0, 1_234, 100):
        stop = min(start + 100, 1_234)
        await asyncio.gather(*(cache.set(f"k{i}", i, tags=["big"]) for i in range(start, stop)))
    assert await cache.invalidate_tags("big") == 1
    assert await cache.get_many([f"k{i}" for i in range(1_234)]) == {}


async def test_bad_tags_are_refused_before_anything_is_stored(store: Store) -> None:
    cache = store.cache()
    with pytest.raises(TypeError, match="not a str"):
        await cache.set("k", 1, tags="solo")
    with pytest.raises(TypeError, match="tags must be str"):
        await cache.set("k", 1, tags=[1])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="empty"):
        await cache.get_or_set("k", lambda: 1, tags=[""])
    with pytest.raises(TypeError, match="names no parameter"):

        @cache.cached(tags=["project:{nope}"])
        async def f(project_id: int) -> int:
            return project_id

    assert await cache.get("k") is None


async def test_invalidating_block_invalidates_after_the_write_even_when_it_raises(
    store: Store,
) -> None:
    cache = store.cache()
    await cache.set("task:1", "old", tags=["project:7"])
    await cache.set("task:2", "old")
    await cache.set("list:a", "old")
    async with cache.invalidating("task:2", tags=["project:7"], patterns=["list:*"]):
        assert await cache.get("task:1") == "old"  # still there while the write runs
    assert await cache.get_many(["task:1", "task:2", "list:a"]) == {}
    await cache.set("task:1", "old", tags=["project:7"])
    with pytest.raises(RuntimeError, match="write failed"):
        async with cache.invalidating(tags=["project:7"]):
            raise RuntimeError("write failed")
    assert await cache.get("task:1") is None


async def test_clear_keeps_the_generation(store: Store) -> None:
    cache = store.cache()
    generation = await cache.bump_version()
    await cache.set("k", 1)
    await cache.clear()
    assert await cache.bump_version() == generation + 1


async def test_exists_and_ttl_do_not_count_a_lease_or_an_old_generation(store: Store) -> None:
    cache = store.cache()
    row = Row("old")
    hold = row.hold = asyncio.Event()
    task = asyncio.create_task(cache.get_or_set("k", row.read))
    await asyncio.wait_for(row.read_done.wait(), 5)
    assert await cache.exists("k") is False  # a lease holds the key, no value
    assert await cache.ttl("k") is None
    hold.set()
    await task
    assert await cache.exists("k") is True
    await cache.bump_version()
    assert await cache.exists("k") is False
    assert await cache.ttl("k") is None


async def test_a_failed_computation_releases_its_lease(store: Store) -> None:
    cache = store.cache()

    async def boom() -> str:
        raise RuntimeError("db down")

    with pytest.raises(RuntimeError):
        await cache.get_or_set("k", boom)
    other = store.cache()
    assert await other.get_or_set("k", lambda: "v") == "v"
    assert await cache.get("k") == "v"  # stored: the lease was gone


async def test_a_result_not_cached_by_condition_releases_its_lease(store: Store) -> None:
    cache = store.cache()

    @cache.cached(key="row:{n}")
    async def row(n: int) -> str | None:
        return None

    assert await row(1) is None
    assert await cache.add("row:1", "created") is True


# -- bounded metadata ------------------------------------------------------------------------


async def test_tag_metadata_is_one_key_a_tag_and_expires_with_its_entries(store: Store) -> None:
    """Ten rounds of 200 tagged entries under 5 tags leave at most one stamp key per tag, and
    the stamps of short-lived entries expire soon after them."""
    cache = store.cache()
    for round_ in range(10):
        await asyncio.gather(
            *(
                cache.set(f"r{round_}:{i}", i, ttl=0.5, tags=[f"t{i % 4}", "all"])
                for i in range(200)
            )
        )
        await cache.invalidate_tags(f"t{round_ % 4}")
    assert await _tag_keys(cache) == 5
    await asyncio.sleep(1.2)  # twice the entries' TTL, and the invalidated stamps' 60 s do not
    assert await _tag_keys(cache) <= 4


async def _tag_keys(cache: Cache) -> int:
    """Counts the keys of this cache that hold tag stamps."""
    prefix = cache.keys.tag_key("")
    return sum(
        [
            len([key for key in batch if key.startswith(prefix)])
            async for batch in cache.backend.scan(cache.keys.pattern("*"))
        ]
    )


# -- control: the same story without the protection -------------------------------------------


class Unguarded:
    """A backend that is not a `GuardedBackend`: only the `Backend` protocol, so no leases."""

    def __init__(self, inner: MemoryBackend) -> None:
        self._inner = inner
        self.in_process = True

    @property
    def kind(self) -> str:
        return "unguarded"

    def __getattr__(self, name: str) -> Any:
        if name in ("set_if", "delete_if", "tag_stamps", "tag_bump"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    async def get(self, key: str) -> bytes | None:
        return await self._inner.get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return await self._inner.get_many(keys)


async def test_control_without_guarded_writes_the_race_serves_the_old_row() -> None:
    cache = Cache(Unguarded(MemoryBackend()), default_ttl=60)  # type: ignore[arg-type]
    row = Row("old")
    read = lambda: cache.get_or_set("task:1", row.read)  # noqa: E731
    assert await race(read, row, lambda: cache.delete("task:1")) == "old"
    assert await read() == "old"  # the race these tests guard against


async def test_without_tag_indexes_tagged_values_are_computed_but_never_cached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An entry invalidate_tags could not reach would be served stale: better not to keep it."""
    cache = Cache(Unguarded(MemoryBackend()), default_ttl=60)  # type: ignore[arg-type]
    runs = 0

    def fetch() -> int:
        nonlocal runs
        runs += 1
        return runs

    assert await cache.get_or_set("k", fetch, tags=["t"]) == 1
    assert await cache.get_or_set("k", fetch, tags=["t"]) == 2
    assert await cache.set("s", 1, tags=["t"]) is False
    assert await cache.get("s") is None
    assert await cache.get_or_set("plain", fetch) == 3  # untagged values are cached as ever
    assert await cache.get_or_set("plain", fetch) == 3
    assert "keeps no tags" in caplog.text
