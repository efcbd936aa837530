"""The two-tier cache: a local tier per process, kept coherent through a real Redis.

Process B is this test; process A (``local_writer.py``) changes keys on command. B must stop
serving a value from its local tier within the documented window once A's change is done:
at once while the invalidation channel is up, and also when the channel is cut (B bypasses
its tier until a new subscription is confirmed). Windows are asserted against the documented
bound, `WINDOW`, and the measured figures are printed (``-s`` shows them).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio

from cachetier import Cache, LocalTier
from cachetier.backends import NullBackend, RedisBackend

from ..servers import RedisServer

WRITER = Path(__file__).with_name("local_writer.py")
HEARTBEAT = 0.2
WINDOW = 2 * HEARTBEAT
"""The documented bound on serving a changed value: two heartbeats (the silent-loss case)."""


class Writer:
    """Process A."""

    def __init__(self, url: str, namespace: str) -> None:
        self.process = subprocess.Popen(  # our own script
            [sys.executable, str(WRITER), url, namespace],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parents[2],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        )
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    async def do(self, command: str) -> float:
        """Runs ``command`` in process A; returns the wall-clock time it was done."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer = await asyncio.to_thread(self._line)
        assert answer.startswith("done "), answer
        return float(answer.split()[1])

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture(scope="module")
def server(private_redis: RedisServer) -> RedisServer:
    return private_redis


@pytest.fixture
def writer(server: RedisServer, namespace: str) -> Iterator[Writer]:
    process = Writer(server.url, namespace)
    yield process
    process.close()


@pytest.fixture
async def cache(server: RedisServer, namespace: str) -> AsyncIterator[Cache]:
    async with Cache(
        RedisBackend.from_url(server.url, command_timeout=2.0),
        namespace=namespace,
        local=LocalTier(heartbeat=HEARTBEAT),
    ) as cache:
        yield cache


async def until(condition: object, timeout: float = 5.0) -> float:
    """Waits for ``condition()`` to hold; returns how long it took."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.001)
    return time.monotonic() - started


def live(cache: Cache) -> bool:
    local = cache._engine.local
    return local is not None and local.live


async def served_locally(cache: Cache, reads: Callable[[], Awaitable[object]]) -> None:
    """Runs ``reads`` until a run makes no backend call: every read a local hit.

    A run during which the invalidation channel emptied the tier is tried again: on a loaded
    machine a stall of two heartbeats gives the channel up, and the tier is emptied by design
    (the documented bound on staleness). A backend call with the channel up fails the test.
    """
    for _ in range(5):
        await until(lambda: live(cache))
        local = cache._engine.local
        assert local is not None
        emptied = local.emptied
        await reads()  # kept now that the tier is live
        calls = cache.stats.backend_calls
        await reads()
        if cache.stats.backend_calls == calls:
            return
        assert local.emptied != emptied or not local.live, "hits must not reach Redis"
    raise AssertionError("the invalidation channel kept dropping: no run was served locally")


async def cached_locally(cache: Cache, key: str, value: object) -> None:
    """Reads ``key`` until the value is served from the local tier."""
    assert await cache.get(key) == value  # starts the subscription

    async def reads() -> None:
        for _ in range(10):
            assert await cache.get(key) == value

    await served_locally(cache, reads)


async def until_changed(
    read: Callable[[], Awaitable[object]], old: object, done_at: float
) -> float:
    """Calls ``read`` until it stops giving ``old``; returns how long after this process heard
    that A was done (at ``done_at``) the last read that gave ``old`` began, 0 if none did.

    Timed from hearing, not from ``done_at``: A's answer crosses a pipe and a thread, which a
    loaded CI machine stalled past the window (0.51 s), and this process reads nothing
    meanwhile. Redis sends the invalidation before A's reply, so it is on its way by then.
    """
    heard = time.monotonic()
    last_old: float | None = None
    while True:
        began = time.monotonic()
        if await read() != old:
            return 0.0 if last_old is None else last_old - heard
        last_old = began
        if time.time() - done_at > 5:
            raise AssertionError("still served the old value 5 s after the change")
        await asyncio.sleep(0)  # polling is the point: each read is a probe


async def stops_serving(cache: Cache, key: str, old: object, done_at: float) -> float:
    """Reads ``key`` until the old value is gone; returns `until_changed`'s figure."""
    return await until_changed(lambda: cache.get(key), old, done_at)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("set k v2", "v2"),
        ("delete k", None),
        ("tag group", None),
        ("pattern k*", None),
        ("bump", None),
    ],
)
async def test_another_process_invalidates_and_this_one_stops_serving_within_the_window(
    cache: Cache, writer: Writer, change: str, expected: object
) -> None:
    await writer.do("set k v1")
    await cached_locally(cache, "k", "v1")
    done_at = await writer.do(change)
    waited = await stops_serving(cache, "k", "v1", done_at)
    assert await cache.get("k") == expected
    print(f"{change!r}: old value last served {waited * 1e3:.2f} ms after B heard A was done")
    assert waited < WINDOW


async def test_decorated_functions_are_served_locally_and_invalidated_elsewhere(
    cache: Cache, writer: Writer
) -> None:
    runs = 0

    @cache.cached(key="k", ttl=60)
    async def read() -> str:
        nonlocal runs
        runs += 1
        return f"computed {runs}"

    await writer.do("set k v1")
    assert await read() == "v1"

    async def reads() -> None:
        assert [await read() for _ in range(5)] == ["v1"] * 5

    await served_locally(cache, reads)
    done_at = await writer.do("delete k")
    waited = await until_changed(read, "v1", done_at)
    assert await read() == "computed 1"
    assert waited < WINDOW


async def test_a_cut_channel_bypasses_the_tier_until_it_is_restored(
    cache: Cache, writer: Writer, server: RedisServer
) -> None:
    await writer.do("set k v1")
    await cached_locally(cache, "k", "v1")
    admin = redis_asyncio.Redis.from_url(server.url)
    try:
        assert await admin.client_kill_filter(_type="pubsub") >= 1
        # Cut: the change below lands while the subscription is down.
        done_at = await writer.do("set k v2")
        assert await stops_serving(cache, "k", "v1", done_at) < WINDOW
        assert await cache.get("k") == "v2"
        # Restored: a new subscription is confirmed and the tier serves again.
        await until(lambda: live(cache))
        await cached_locally(cache, "k", "v2")
        done_at = await writer.do("set k v3")
        assert await stops_serving(cache, "k", "v2", done_at) < WINDOW
    finally:
        await admin.aclose()


async def test_a_silent_server_is_noticed_by_the_heartbeat(
    cache: Cache, writer: Writer, server: RedisServer
) -> None:
    """A server that stops answering (paused, or a partition) sends no error: PINGs notice."""
    await writer.do("set k v1")
    await cached_locally(cache, "k", "v1")
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        noticed = await until(lambda: not live(cache), timeout=5)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    print(f"silent server noticed after {noticed * 1e3:.0f} ms")
    # Given up once the last answer is two heartbeats old, checked every heartbeat: within
    # three heartbeats of the pause, plus the scheduling of a loaded machine.
    assert noticed < 3.5 * HEARTBEAT
    await until(lambda: live(cache))
    assert await cache.get("k") == "v1"


async def test_own_changes_are_seen_at_once(cache: Cache) -> None:
    await cache.set("k", 1)
    await cached_locally(cache, "k", 1)
    await cache.set("k", 2)
    assert await cache.get("k") == 2
    await cache.delete("k")
    assert await cache.get("k") is None


async def test_a_backend_that_cannot_report_changes_runs_without_the_tier(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="cachetier")
    cache = Cache(NullBackend(), local=LocalTier())
    await cache.set("k", 1)
    assert await cache.get("k") is None
    assert cache._engine.local is None
    assert any("local tier off" in record.getMessage() for record in caplog.records)


async def test_get_or_set_is_served_locally_and_hooks_see_local_hits(cache: Cache) -> None:
    events: list[str] = []
    cache.add_hook(lambda event: events.append(event.outcome.value))
    assert await cache.get_or_set("g", lambda: "v") == "v"
    hits = 0

    async def reads() -> None:
        nonlocal hits
        hits = cache.stats.hits
        assert [await cache.get_or_set("g", lambda: "other") for _ in range(3)] == ["v"] * 3

    await served_locally(cache, reads)
    assert cache.stats.hits == hits + 3
    assert events[-3:] == ["hit"] * 3
