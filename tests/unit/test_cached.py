"""`Cache.cached`: keys from calls, typed round trips, invalidation helpers, policies."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any

import pydantic
import pytest

from cachetier import MISSING, Cache, CachedFunction, ConfigurationError
from cachetier.backends import MemoryBackend
from cachetier.testing import FakeClock

from .test_cache import SpyBackend


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory(clock: FakeClock) -> MemoryBackend:
    return MemoryBackend(clock=clock)


@pytest.fixture
def cache(memory: MemoryBackend, clock: FakeClock) -> Cache:
    return Cache(memory, namespace="app", version="v1", default_ttl=60, clock=clock)


class Counter:
    def __init__(self) -> None:
        self.calls = 0


async def test_second_call_is_a_hit_and_does_not_run_the_body(cache: Cache) -> None:
    runs = Counter()

    @cache.cached(ttl=30)
    async def square(x: int) -> int:
        runs.calls += 1
        return x * x

    assert await square(3) == 9
    assert await square(3) == 9
    assert await square(4) == 16
    assert runs.calls == 2
    assert (square.stats.hits, square.stats.misses) == (1, 2)


async def test_bare_decorator_uses_the_default_ttl(cache: Cache, clock: FakeClock) -> None:
    runs = Counter()

    @cache.cached
    async def value() -> str:
        runs.calls += 1
        return "v"

    await value()
    clock.advance(59)
    await value()
    clock.advance(2)
    await value()
    assert runs.calls == 2


async def test_keyword_order_defaults_and_positional_passing_share_one_key(cache: Cache) -> None:
    runs = Counter()

    @cache.cached()
    async def page(query: str, limit: int = 10, *, offset: int = 0) -> list[str]:
        runs.calls += 1
        return [query] * limit

    await page("a")
    await page("a", 10)
    await page(query="a", offset=0, limit=10)
    await page(limit=10, query="a")
    assert runs.calls == 1
    assert page.key_for("a") == page.key_for(limit=10, query="a", offset=0)


async def test_arguments_of_different_types_are_different_keys(cache: Cache) -> None:
    @cache.cached()
    async def echo(value: object) -> str:
        return type(value).__name__

    assert [await echo(v) for v in (1, "1", 1.0, True)] == ["int", "str", "float", "bool"]


async def test_key_template_is_the_user_visible_key(cache: Cache) -> None:
    runs = Counter()

    @cache.cached(ttl=30, key="tasks:pending:{limit}")
    async def pending(limit: int = 10) -> list[int]:
        runs.calls += 1
        return list(range(limit))

    await pending(10)
    assert pending.key_for(10) == "tasks:pending:10"
    assert await cache.get("tasks:pending:10") == list(range(10))
    assert await cache.delete("tasks:pending:10") == 1
    await pending(10)
    await pending(20)
    assert await cache.delete_pattern("tasks:pending:*") == 2
    await pending(10)
    assert runs.calls == 4


async def test_key_template_escapes_substituted_values(cache: Cache) -> None:
    @cache.cached(key="user:{name}")
    async def profile(name: str) -> str:
        return name

    await profile("*")
    await profile("bob")
    assert profile.key_for("a:b") == "user:a\\:b"
    # A literal "*" in a value cannot widen a pattern built from the same escaping.
    assert await cache.delete_pattern("user:" + cache.keys.literal("*")) == 1
    assert await cache.get("user:bob") == "bob"


async def test_key_prefix_groups_keys_for_pattern_invalidation(cache: Cache) -> None:
    runs = Counter()

    @cache.cached(key_prefix="tasks:")
    async def tasks(status: str) -> list[str]:
        runs.calls += 1
        return [status]

    @cache.cached(key_prefix="tasks:")
    async def other_tasks(status: str) -> list[str]:
        runs.calls += 1
        return [status, status]

    assert await tasks("open") == ["open"]
    assert await other_tasks("open") == ["open", "open"]
    assert tasks.key_for("open").startswith("tasks:")
    assert await cache.delete_pattern("tasks:*") == 2
    await tasks("open")
    assert runs.calls == 3


async def test_bad_key_template_or_exclude_is_refused_at_decoration(cache: Cache) -> None:
    async def fn(a: int) -> int:
        return a

    with pytest.raises(TypeError, match="names no parameter"):
        cache.cached(key="x:{b}")(fn)
    with pytest.raises(TypeError, match="names no parameter"):
        cache.cached(exclude=["b"])(fn)


async def test_sync_functions_are_refused(cache: Cache) -> None:
    def sync(a: int) -> int:
        return a

    with pytest.raises(TypeError, match="async def"):
        cache.cached()(sync)  # type: ignore[arg-type]


async def test_excluded_arguments_do_not_split_the_cache(cache: Cache) -> None:
    runs = Counter()

    class Session:
        pass

    @cache.cached(exclude=["session"])
    async def load(item_id: int, session: Session) -> int:
        runs.calls += 1
        return item_id

    await load(1, Session())
    await load(1, Session())
    assert runs.calls == 1


async def test_unkeyable_argument_raises_a_clear_type_error(cache: Cache) -> None:
    class Session:
        pass

    @cache.cached()
    async def load(session: Session) -> int:
        return 1

    with pytest.raises(TypeError, match="memory address"):
        await load(Session())


async def test_templates_refuse_values_whose_text_is_a_memory_address(cache: Cache) -> None:
    class Session:
        pass

    @cache.cached(key="load:{session}")
    async def by_key(session: Session) -> int:
        return 1

    @cache.cached(key="load:fixed", tags=["session:{session}"])
    async def by_tag(session: Session) -> int:
        return 1

    with pytest.raises(TypeError, match=r"cache key from a \S*Session value"):
        await by_key(Session())
    with pytest.raises(TypeError, match=r"cache tag from a \S*Session value"):
        await by_tag(Session())


async def test_methods_bind_and_share_results_only_when_self_is_excluded(cache: Cache) -> None:
    runs = Counter()

    class Repository:
        def __init__(self, name: str) -> None:
            self.name = name

        @cache.cached(ttl=30, exclude=["self"])
        async def find(self, item_id: int) -> dict[str, Any]:
            runs.calls += 1
            return {"id": item_id, "by": self.name}

    first, second = Repository("first"), Repository("second")
    assert await first.find(1) == {"id": 1, "by": "first"}
    assert await second.find(1) == {"id": 1, "by": "first"}
    assert runs.calls == 1
    assert first.find.key_for(1) == second.find.key_for(1)
    assert isinstance(Repository.find, CachedFunction)
    assert await first.find.invalidate(1) is True
    assert await second.find(1) == {"id": 1, "by": "second"}


async def test_exceptions_propagate_and_are_not_cached(cache: Cache) -> None:
    runs = Counter()

    @cache.cached()
    async def flaky(x: int) -> int:
        runs.calls += 1
        if runs.calls == 1:
            raise ValueError("boom")
        return x

    with pytest.raises(ValueError, match="boom"):
        await flaky(1)
    assert await flaky(1) == 1
    assert await flaky(1) == 1
    assert runs.calls == 2


async def test_none_results_are_not_cached_unless_asked(cache: Cache) -> None:
    runs = Counter()

    @cache.cached()
    async def nothing() -> None:
        runs.calls += 1

    @cache.cached(cache_none=True)
    async def cached_nothing() -> None:
        runs.calls += 10

    await nothing()
    await nothing()
    await cached_nothing()
    await cached_nothing()
    assert runs.calls == 12


async def test_condition_decides_which_results_are_cached(cache: Cache) -> None:
    runs = Counter()

    @cache.cached(condition=lambda rows: len(rows) > 0)
    async def rows(n: int) -> list[int]:
        runs.calls += 1
        return list(range(n))

    await rows(0)
    await rows(0)
    await rows(2)
    await rows(2)
    assert runs.calls == 3


async def test_refresh_recomputes_and_invalidate_removes(cache: Cache) -> None:
    version = Counter()

    @cache.cached()
    async def current() -> int:
        version.calls += 1
        return version.calls

    assert await current() == 1
    assert await current.refresh() == 2
    assert await current() == 2
    assert await current.invalidate() is True
    assert await current.invalidate() is False
    assert await current() == 3


async def test_wrapper_keeps_name_doc_and_wrapped(cache: Cache) -> None:
    async def documented(a: int) -> int:
        """Doubles a."""
        return 2 * a

    wrapped = cache.cached()(documented)
    assert wrapped.__name__ == "documented"
    assert wrapped.__doc__ == "Doubles a."
    assert wrapped.__wrapped__ is documented


async def test_thousand_concurrent_cold_calls_run_the_body_once(cache: Cache) -> None:
    runs = Counter()

    @cache.cached()
    async def slow(x: int) -> int:
        runs.calls += 1
        await asyncio.sleep(0.02)
        return x

    results = await asyncio.gather(*(slow(7) for _ in range(1000)))
    assert results == [7] * 1000
    assert runs.calls == 1


async def test_use_routes_decorated_functions_to_the_other_backend(cache: Cache) -> None:
    @cache.cached()
    async def value() -> str:
        return "v"

    await value()
    other = MemoryBackend()
    with cache.use(other):
        await value()
        assert await other.get(cache.keys.full(value.key_for())) is not None


async def test_backend_outage_runs_the_function_uncached(
    memory: MemoryBackend, clock: FakeClock
) -> None:
    spy = SpyBackend(memory)
    cache = Cache(spy, clock=clock)
    runs = Counter()

    @cache.cached()
    async def compute(x: int) -> int:
        runs.calls += 1
        return x + 1

    spy.down = True
    assert [await compute(1) for _ in range(3)] == [2, 2, 2]
    assert runs.calls == 3
    assert compute.stats.backend_errors == 3


# -- typed round trip ----------------------------------------------------------------------------


class Status(enum.Enum):
    OPEN = "open"
    DONE = "done"


class Task(pydantic.BaseModel):
    id: uuid.UUID
    title: str
    status: Status
    due: dt.datetime
    price: Decimal
    tags: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class Summary:
    day: dt.date
    total: Decimal
    tasks: tuple[Task, ...]


def make_task(n: int) -> Task:
    return Task(
        id=uuid.UUID(int=n),
        title=f"task {n}",
        status=Status.OPEN,
        due=dt.datetime(2026, 1, n % 28 + 1, 12, tzinfo=dt.timezone.utc),
        price=Decimal("10.25"),
        tags=frozenset({"a", "b"}),
    )


async def test_hits_rebuild_the_declared_types(cache: Cache) -> None:
    @cache.cached()
    async def summary(n: int) -> Summary:
        return Summary(
            day=dt.date(2026, 1, 2),
            total=Decimal("20.50"),
            tasks=tuple(make_task(i) for i in range(n)),
        )

    @cache.cached()
    async def by_id(n: int) -> dict[uuid.UUID, list[Task]]:
        return {uuid.UUID(int=i): [make_task(i)] for i in range(n)}

    @cache.cached()
    async def when() -> dt.datetime:
        return dt.datetime(2026, 11, 25, 8, 30, tzinfo=dt.timezone.utc)

    for fn, arg in ((summary, (3,)), (by_id, (2,)), (when, ())):
        miss = await fn(*arg)  # type: ignore[operator]
        hit = await fn(*arg)  # type: ignore[operator]
        assert hit == miss
        assert type(hit) is type(miss)
    hit_summary = await summary(3)
    assert isinstance(hit_summary.tasks[0], Task)
    assert hit_summary.tasks[0].status is Status.OPEN
    assert summary.stats.hits == 2


async def test_entry_that_no_longer_validates_is_a_miss(cache: Cache) -> None:
    runs = Counter()

    @cache.cached(key="task:{n}")
    async def task(n: int) -> Task:
        runs.calls += 1
        return make_task(n)

    await cache.set("task:1", {"id": "not-a-uuid", "title": 3})
    result = await task(1)
    assert result == make_task(1)
    assert runs.calls == 1
    assert task.stats.decode_errors == 1
    assert await task(1) == make_task(1)
    assert runs.calls == 1


async def test_unsupported_annotation_caches_untyped(
    cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    class Opaque:
        pass

    @cache.cached(cache_none=True)
    async def odd() -> Opaque | None:
        return None

    assert await odd() is None
    assert await odd() is None


# -- freshness policies ------------------------------------------------------------------------


async def settle() -> None:
    """Lets background refresh tasks run to completion."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_stale_value_served_while_refresh_runs(cache: Cache, clock: FakeClock) -> None:
    version = Counter()
    release = asyncio.Event()

    @cache.cached(ttl=10, stale_ttl=60)
    async def report() -> int:
        version.calls += 1
        if version.calls > 1:
            await release.wait()
        return version.calls

    assert await report() == 1
    clock.advance(15)
    assert await report() == 1  # stale, served at once while the refresh waits
    assert await report() == 1
    await settle()
    assert version.calls == 2  # one background refresh, not one per stale read
    release.set()
    await settle()
    assert await report() == 2
    assert report.stats.stale_served == 2
    clock.advance(100)
    release.clear()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(report(), 0.05)  # past the stale window: a plain miss waits


async def test_stale_if_error_serves_the_old_value_when_fetch_fails(
    cache: Cache, clock: FakeClock
) -> None:
    fail = False

    @cache.cached(ttl=10, stale_if_error=60)
    async def rates() -> dict[str, float]:
        if fail:
            raise ConnectionError("upstream down")
        return {"eur": 1.1}

    assert await rates() == {"eur": 1.1}
    clock.advance(15)
    fail = True
    assert await rates() == {"eur": 1.1}
    assert rates.stats.stale_served == 1
    clock.advance(60)
    with pytest.raises(ConnectionError):
        await rates()


async def test_without_stale_if_error_a_failing_fetch_raises(
    cache: Cache, clock: FakeClock
) -> None:
    fail = False

    @cache.cached(ttl=10)
    async def rates() -> dict[str, float]:
        if fail:
            raise ConnectionError("upstream down")
        return {"eur": 1.1}

    await rates()
    clock.advance(15)
    fail = True
    with pytest.raises(ConnectionError):
        await rates()


async def test_early_refresh_recomputes_before_expiry_only_near_it(
    cache: Cache, clock: FakeClock
) -> None:
    runs = Counter()

    @cache.cached(ttl=100, early_refresh=True)
    async def heavy() -> int:
        runs.calls += 1
        await asyncio.sleep(0.02)  # the measured compute time (delta) that XFetch scales by
        return runs.calls

    await heavy()
    for _ in range(50):
        await heavy()
    assert runs.calls == 1  # 100 s from expiry, a 20 ms computation is never refreshed early
    clock.advance(99.99)
    for _ in range(50):
        assert await heavy() >= 1
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    assert runs.calls >= 2
    assert heavy.stats.refreshes >= 1


async def test_policy_options_are_validated(cache: Cache) -> None:
    with pytest.raises(ConfigurationError, match="early_refresh"):
        cache.cached(early_refresh=-1.0)
    with pytest.raises(ConfigurationError, match="stale_if_error"):
        cache.cached(stale_if_error=True)
    with pytest.raises(ConfigurationError, match="stale_ttl"):
        cache.cached(stale_ttl=-5)


async def test_get_or_set_takes_the_same_policies(cache: Cache, clock: FakeClock) -> None:
    await cache.get_or_set("k", lambda: "old", ttl=10, stale_ttl=30)
    clock.advance(12)

    def fresh() -> str:
        return "new"

    assert await cache.get_or_set("k", fresh, ttl=10, stale_ttl=30) == "old"
    await settle()
    assert await cache.get("k") == "new"


async def test_lock_on_a_process_local_backend_is_single_flight(cache: Cache) -> None:
    runs = Counter()

    @cache.cached(lock=True, on_lock_timeout="raise")
    async def compute() -> int:
        runs.calls += 1
        await asyncio.sleep(0.01)
        return 1

    assert await asyncio.gather(*(compute() for _ in range(100))) == [1] * 100
    assert runs.calls == 1


async def test_get_returns_missing_for_entries_past_ttl_even_in_the_stale_window(
    cache: Cache, clock: FakeClock
) -> None:
    await cache.get_or_set("k", lambda: 1, ttl=10, stale_ttl=100)
    clock.advance(11)
    assert await cache.get("k", MISSING) is MISSING


async def test_plain_json_annotation_still_refuses_a_value_of_another_shape(cache: Cache) -> None:
    runs = Counter()

    @cache.cached(key="doc")
    async def document() -> dict[str, Any]:
        runs.calls += 1
        return {"a": 1}

    await cache.set("doc", [1, 2, 3])  # an older version of the function returned a list
    assert await document() == {"a": 1}
    assert document.stats.decode_errors == 1
    assert await document() == {"a": 1}
    assert runs.calls == 1


async def test_a_call_the_signature_refuses_raises_type_error_even_when_cached(
    cache: Cache,
) -> None:
    @cache.cached()
    async def f(a: int, *, b: int = 1) -> int:
        return a + b

    assert await f(1) == 2
    with pytest.raises(TypeError):
        await f(1, 2)  # type: ignore[misc]  # b is keyword-only
    with pytest.raises(TypeError):
        await f(1, c=3)  # type: ignore[call-arg]


async def test_bypass_runs_functions_without_reading_or_writing_the_cache(cache: Cache) -> None:
    runs = Counter()

    @cache.cached()
    async def value() -> int:
        runs.calls += 1
        return runs.calls

    assert await value() == 1
    with cache.bypass():
        assert await value() == 2
        assert await value() == 3
        assert await cache.get_or_set("k", lambda: "computed") == "computed"
        assert await cache.get(value.key_for(), "default") == "default"

        async def other_task() -> int:
            return await value()

        assert await asyncio.create_task(other_task()) == 4  # started inside: bypassed too
    assert await value() == 1  # the entry written before the block is untouched
    assert await cache.get("k", MISSING) is MISSING
    assert value.stats.bypassed == 3
    assert cache.stats.bypassed == 5


async def test_bypass_is_local_to_the_task_that_entered_it(cache: Cache) -> None:
    @cache.cached()
    async def value() -> str:
        return "v"

    await value()
    entered = asyncio.Event()
    release = asyncio.Event()

    async def bypassing() -> None:
        with cache.bypass():
            entered.set()
            await release.wait()

    task = asyncio.create_task(bypassing())
    await entered.wait()
    await value()
    release.set()
    await task
    assert value.stats.hits == 1
    assert value.stats.bypassed == 0
