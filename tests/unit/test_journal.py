"""Invalidations that fail to reach the backend are journaled and replayed before it is trusted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from cachetier import BackendError, Cache, CircuitBreaker
from cachetier.backends import MemoryBackend
from cachetier.testing import FakeClock


class Switchable:
    """A `MemoryBackend` (all of its abilities) whose every call fails while ``down``."""

    in_process = False  # merge reads as over Redis

    def __init__(self, inner: MemoryBackend) -> None:
        self.inner = inner
        self.down = False
        self.calls: list[str] = []

    @property
    def kind(self) -> str:
        return "switchable"

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute) or name in ("scan", "subscribe", "invalidations", "aclose"):
            if name == "scan":
                return self._scan
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if self.down:
                raise BackendError(f"{name.upper()} failed: connection refused")
            return await attribute(*args, **kwargs)

        return call

    async def _scan(self, pattern: str, *, count: int = 500) -> Any:
        if self.down:
            raise BackendError("SCAN failed: connection refused")
        async for batch in self.inner.scan(pattern, count=count):
            yield batch


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


@pytest.fixture
def store() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def backend(store: MemoryBackend) -> Switchable:
    return Switchable(store)


def make_cache(backend: object, clock: FakeClock, **options: Any) -> Cache:
    breaker = CircuitBreaker(threshold=3, cooldown=1.0, clock=clock)
    return Cache(backend, namespace="app", clock=clock, breaker=breaker, **options)  # type: ignore[arg-type]


Invalidation = Callable[[Cache], Awaitable[object]]

KINDS: dict[str, Invalidation] = {
    "delete": lambda cache: cache.delete("row:1"),
    "tag": lambda cache: cache.invalidate_tags("rows"),
    "pattern": lambda cache: cache.delete_pattern("row:*"),
    "invalidate": lambda cache: cache.invalidate("row:1", tags=["rows"], patterns=["x:*"]),
    "clear": lambda cache: cache.clear(),
}


@pytest.mark.parametrize("kind", list(KINDS))
async def test_an_invalidation_during_an_outage_is_replayed_before_the_next_read(
    kind: str, backend: Switchable, store: MemoryBackend, clock: FakeClock
) -> None:
    async with make_cache(backend, clock) as app, make_cache(store, clock) as other:
        await app.set("row:1", "old", tags=["rows"])
        backend.down = True
        await KINDS[kind](app)  # fails open: no error for the caller
        assert app.stats.journaled >= 1
        # Neither this process nor another serves the old value during the outage.
        assert await app.get("row:1") is None
        backend.down = False
        clock.advance(2)  # past the breaker's cool-down
        assert await app.get("row:1") is None
        assert app.stats.replays == 1
        assert not app.stats.awaiting_replay
        # The store itself no longer serves it, so no other process does either.
        assert await other.get("row:1") is None


async def test_bump_version_during_an_outage_raises_and_is_replayed(
    backend: Switchable, store: MemoryBackend, clock: FakeClock
) -> None:
    async with (
        make_cache(backend, clock) as app,
        make_cache(store, clock, version_check_interval=0) as other,
    ):
        await app.set("row:1", "old")
        assert await other.get("row:1") == "old"
        backend.down = True
        with pytest.raises(BackendError):
            await app.bump_version()
        backend.down = False
        clock.advance(2)
        assert await app.get("row:1") is None
        assert await other.get("row:1") is None


async def test_reads_stay_misses_while_the_replay_fails(
    backend: Switchable, clock: FakeClock
) -> None:
    runs = 0
    async with make_cache(backend, clock) as app:

        @app.cached(key="row:{n}")
        async def row(n: int) -> str:
            nonlocal runs
            runs += 1
            return "computed"

        assert await row(1) == "computed"
        backend.down = True
        assert await app.delete("row:1") == 0
        clock.advance(2)
        assert await row(1) == "computed"  # the function runs; nothing is served or stored
        assert app.stats.awaiting_replay
        backend.down = False
        clock.advance(2)
        assert await row(1) == "computed"
        assert app.stats.replays == 1
        assert await row(1) == "computed"
        assert runs == 3  # the last call was a hit of what the third stored


async def test_a_journal_past_its_limit_replays_as_one_bump_version(
    backend: Switchable, store: MemoryBackend, clock: FakeClock
) -> None:
    async with make_cache(backend, clock, journal_limit=3) as app:
        await app.set_many({f"row:{n}": n for n in range(10)})
        await app.set("kept", "old")
        backend.down = True
        for n in range(5):
            await app.delete(f"row:{n}")
        assert app.stats.journal_overflows == 1
        backend.down = False
        clock.advance(2)
        generation_before = await store.get(app.keys.generation_key())
        assert await app.get_many([f"row:{n}" for n in range(10)] + ["kept"]) == {}
        assert await store.get(app.keys.generation_key()) != generation_before
        assert app.stats.replays == 1


async def test_one_replay_serves_every_concurrent_reader(
    backend: Switchable, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_cache(backend, clock) as app:
        await app.set_many({f"row:{n}": n for n in range(20)})
        backend.down = True
        await app.delete(*[f"row:{n}" for n in range(10)])
        backend.down = False
        clock.advance(2)
        backend.calls.clear()
        with caplog.at_level(logging.WARNING, logger="cachetier"):
            found = await asyncio.gather(*(app.get(f"row:{n}") for n in range(20)))
        assert found == [None] * 10 + list(range(10, 20))
        assert backend.calls.count("delete") == 1
        assert app.stats.replays == 1
        assert "replayed 10 invalidations" in caplog.text


async def test_the_journal_limit_is_checked(clock: FakeClock) -> None:
    from cachetier import ConfigurationError

    with pytest.raises(ConfigurationError, match="journal_limit"):
        Cache(journal_limit=0)


def test_a_bump_stands_for_everything_journaled_before_or_after_it() -> None:
    from cachetier._core.journal import Journal

    journal = Journal(limit=10)
    journal.record(keys=["a", "b"], tags=["t"])
    journal.record(bump=True)
    journal.record(keys=["c"], patterns=["p:*"])
    pending = journal.take()
    assert (pending.bump, pending.size(), journal.overflows, journal.journaled) == (True, 1, 0, 3)
    assert not journal.pending
