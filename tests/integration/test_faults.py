"""Fault injection: a killed, silent or refusing Redis never breaks the app, and recovery is automatic."""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio

from cachetier import BackendError, Cache, CircuitBreaker, Outcome, ReadEvent
from cachetier.backends import RedisBackend

from ..conftest import need_redis_server
from ..servers import RedisServer, black_hole, closed_port, running_redis

COMMAND_TIMEOUT = 0.1
CONNECT_TIMEOUT = 0.25
COOLDOWN = 0.5
KEYS = 5
# Scheduling room on a loaded 2-core machine; far below redis-py's own 5 s defaults.
MARGIN = 0.1


def expected(k: int) -> dict[str, int]:
    """What the decorated function returns for ``k``, whether or not the cache answers."""
    return {"k": k, "square": k * k, "tag": 7919 * k + 1}


@pytest.fixture
def killable_redis(own_redis: RedisServer) -> RedisServer:
    """A redis-server of this test's own, which the test may SIGKILL and restart on its port."""
    return own_redis


@pytest.fixture
async def silent_url() -> AsyncIterator[str]:
    """A server that accepts connections and never answers."""
    async with black_hole() as port:
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def refusing_url() -> str:
    """A loopback port that refuses connections, with a password that must never show."""
    return f"redis://app:pw-fault-S3CRET@127.0.0.1:{closed_port()}/0"


def _cache(url: str, breaker: CircuitBreaker, *, strict: bool = False) -> Cache:
    backend = RedisBackend.from_url(
        url, command_timeout=COMMAND_TIMEOUT, connect_timeout=CONNECT_TIMEOUT
    )
    return Cache(backend, namespace="faults", breaker=breaker, strict=strict)


@pytest.mark.redis
@pytest.mark.slow
async def test_sigkill_under_load_reaches_no_caller_and_hits_resume_after_restart(
    killable_redis: RedisServer,
) -> None:
    """20 tasks call a decorated function for 3 s; the server is killed at 0.5 s, back at 1.5 s."""
    server = killable_redis
    breaker = CircuitBreaker(threshold=3, cooldown=COOLDOWN)
    cache = _cache(server.url, breaker)
    runs: Counter[int] = Counter()
    hit_times: list[float] = []

    def on_read(event: ReadEvent) -> None:
        if event.outcome is Outcome.HIT:
            hit_times.append(time.monotonic())

    cache.add_hook(on_read)

    @cache.cached(ttl=60)
    async def lookup(k: int) -> dict[str, int]:
        runs[k] += 1
        await asyncio.sleep(0.001)  # a little real work, so the loop turns
        return expected(k)

    escaped: list[BaseException] = []
    wrong: list[tuple[int, object]] = []
    durations: list[float] = []
    deadline = time.monotonic() + 3.0

    async def worker(offset: int) -> None:
        n = 0
        while time.monotonic() < deadline:
            k = (offset + n) % KEYS
            n += 1
            started = time.perf_counter()
            try:
                value = await lookup(k)
            except Exception as exc:
                escaped.append(exc)
                continue
            durations.append(time.perf_counter() - started)
            if value != expected(k):
                wrong.append((k, value))

    async with cache:
        workers = [asyncio.create_task(worker(i)) for i in range(20)]
        await asyncio.sleep(0.5)
        hits_before_kill = cache.stats.hits
        await asyncio.to_thread(server.kill)
        await asyncio.sleep(0.3)
        down = await cache.health_check()
        await asyncio.sleep(0.7)
        await asyncio.to_thread(server.start)  # on the same port, as a supervisor would
        restarted = time.monotonic()
        await asyncio.gather(*workers)

        assert escaped == []
        assert wrong == []
        assert hits_before_kill > 0
        assert down.status == "unhealthy"
        assert down.available is False
        assert down.breaker == "open"
        assert cache.stats.backend_errors > 0
        # Calls never waited on the dead server: connections were refused, then skipped.
        assert max(durations) < CONNECT_TIMEOUT + COMMAND_TIMEOUT + MARGIN

        hits_after_restart = [t for t in hit_times if t > restarted]
        assert hits_after_restart, "no cache hit in the 1.5 s after the server came back"
        recovery = hits_after_restart[0] - restarted
        assert recovery < COOLDOWN + MARGIN, f"first hit {recovery:.3f} s after the restart"

        # Served from the restarted server now: no body runs again.
        runs_before = runs.copy()
        assert [await lookup(k) for k in range(KEYS)] == [expected(k) for k in range(KEYS)]
        assert runs == runs_before

        up = await cache.health_check(degraded_after_ms=5_000)
        assert up.status == "healthy"
        assert up.breaker == "closed"
        assert up.uptime_seconds is not None
        assert up.uptime_seconds < 5


async def test_silent_server_costs_one_timeout_per_call_then_nothing_once_open(
    silent_url: str,
) -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=60)
    runs = 0

    async with _cache(silent_url, breaker) as cache:

        @cache.cached(ttl=60)
        async def lookup(k: int) -> dict[str, int]:
            nonlocal runs
            runs += 1
            return expected(k)

        for k in range(breaker.threshold):
            started = time.perf_counter()
            assert await lookup(k) == expected(k)
            elapsed = time.perf_counter() - started
            assert elapsed < COMMAND_TIMEOUT + MARGIN, f"call {k} took {elapsed:.3f} s"
        assert breaker.state == "open"

        calls = 2000
        open_costs = await _mean_call_cost(lookup, calls)
        bare_costs = await _mean_call_cost(lookup.__wrapped__, calls)
        assert runs == breaker.threshold + 2 * calls
        # The spec's budget (bare + 5 us) is a benchmark, not a timed test: here the call with
        # the breaker open must only cost far less than any wait on the server.
        assert open_costs < 0.001, (
            f"{open_costs * 1e6:.1f} us a call with the breaker open, {bare_costs * 1e6:.1f} us bare"
        )


async def _mean_call_cost(function: object, calls: int) -> float:
    """Returns the median over 5 rounds of the mean seconds per call of ``function(k)``."""
    assert callable(function)
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for i in range(calls // 5):
            await function(i % KEYS)
        rounds.append((time.perf_counter() - started) / (calls // 5))
    return statistics.median(rounds)


async def test_refused_connections_open_the_breaker_at_its_threshold_and_log_rarely(
    refusing_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    breaker = CircuitBreaker(threshold=3, cooldown=0.1)

    async with _cache(refusing_url, breaker) as cache:

        @cache.cached(ttl=60)
        async def lookup(k: int) -> dict[str, int]:
            return expected(k)

        for attempt in range(1, breaker.threshold + 1):
            assert breaker.state == "closed"
            assert await cache.get("plain", "default") == "default"
            assert breaker.failures == attempt
        assert breaker.state == "open"
        # While open, nothing reaches the server: the failure count stays at the threshold.
        for k in range(50):
            assert await lookup(k) == expected(k)
            assert await cache.get("plain", "default") == "default"
        assert breaker.failures == breaker.threshold

        calls = 0
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            k = calls % KEYS
            assert await lookup(k) == expected(k)
            assert await cache.get(f"plain:{k}", "default") == "default"
            assert await cache.set(f"plain:{k}", k) is False
            calls += 1
            await asyncio.sleep(0.002)

    assert calls > 100
    # Each cool-down let one probe through, and each failed probe reopened the breaker.
    assert breaker.opened >= 3
    assert cache.stats.backend_errors >= 2 * calls
    # The per-read DEBUG lines are wanted; the failure warnings are what must stay rare.
    lines = [
        r for r in caplog.records if r.name.startswith("cachetier") and r.levelno >= logging.WARNING
    ]
    assert 1 <= len(lines) <= 5, [r.getMessage() for r in lines]
    assert any("connection refused" in r.getMessage() for r in lines)
    assert all(r.levelno == logging.WARNING for r in lines)
    for record in caplog.records:
        assert "pw-fault-S3CRET" not in record.getMessage()


@pytest.mark.redis
async def test_connections_pooled_before_a_restart_fail_no_call_after_it(
    killable_redis: RedisServer,
) -> None:
    """A Redis restart while the app is idle leaves dead sockets in the pool; none may fail a call."""
    server = killable_redis
    breaker = CircuitBreaker(threshold=3, cooldown=60)
    # Timeouts a loaded CI machine does not trip (the 100 ms one did, right after the restart,
    # and the reads failed open as None): a dead pooled socket fails at once, not by timing out.
    backend = RedisBackend.from_url(server.url, command_timeout=2.0, connect_timeout=2.0)
    async with Cache(backend, namespace="faults", breaker=breaker) as cache:
        # Concurrent writes open (and then pool) one connection each.
        assert await asyncio.gather(*(cache.set(f"k{i}", i) for i in range(10))) == [True] * 10
        await asyncio.to_thread(server.kill)
        await asyncio.to_thread(server.start)

        assert await asyncio.gather(*(cache.set(f"k{i}", -i) for i in range(10))) == [True] * 10
        assert await asyncio.gather(*(cache.get(f"k{i}") for i in range(10))) == [
            -i for i in range(10)
        ]
        assert cache.stats.backend_errors == 0
        assert breaker.state == "closed"


@dataclass(frozen=True)
class Outage:
    """A server URL and, for a server that is up at first, how to crash it."""

    url: str
    crash: Callable[[], None] | None = None


@pytest.fixture(params=["refused", "silent", "killed"])
async def outage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Outage]:
    """A server that refuses, never answers, or serves until the test SIGKILLs it."""
    if request.param == "refused":
        yield Outage(f"redis://127.0.0.1:{closed_port()}/0")
    elif request.param == "silent":
        async with black_hole() as port:
            yield Outage(f"redis://127.0.0.1:{port}/0")
    else:
        need_redis_server()
        with running_redis(tmp_path) as server:
            yield Outage(server.url, server.kill)


async def test_strict_cache_raises_backend_error_for_the_same_outage(outage: Outage) -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=60)
    async with _cache(outage.url, breaker, strict=True) as cache:
        if outage.crash is not None:
            # A pooled connection and a stored value exist when the server dies.
            assert await cache.set("k", 1) is True
            assert await cache.get("k") == 1
            await asyncio.to_thread(outage.crash)

        runs = 0

        @cache.cached(ttl=60)
        async def lookup(k: int) -> dict[str, int]:
            nonlocal runs
            runs += 1
            return expected(k)

        started = time.perf_counter()
        with pytest.raises(BackendError, match=r"^M?GET "):
            await cache.get("k")
        # A set first learns the generation to write with, if it never could: a GET.
        with pytest.raises(BackendError, match=r"^(SET|GET) "):
            await cache.set("k", 2)
        with pytest.raises(BackendError):
            await lookup(1)
        elapsed = time.perf_counter() - started
        assert elapsed < 3 * (CONNECT_TIMEOUT + COMMAND_TIMEOUT) + MARGIN
        assert runs == 0
        # With the breaker open, the same calls still raise, at once.
        assert breaker.state == "open"
        started = time.perf_counter()
        for _ in range(10):
            with pytest.raises(BackendError):
                await cache.get("k")
            with pytest.raises(BackendError):
                await cache.set("k", 3)
            with pytest.raises(BackendError):
                await lookup(1)
            with pytest.raises(BackendError):
                await cache.get_or_set("g", lambda: 1)
        assert time.perf_counter() - started < 0.05
        assert runs == 0


@pytest.mark.redis
async def test_a_write_the_server_refuses_never_puts_the_value_in_the_error(
    killable_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A pipeline's error names its failed command with its arguments: the stored value must
    not reach the `BackendError`, nor the log (``set_many`` with a TTL is a pipeline)."""
    secret = "card-4111-1111-1111-1111"
    # Timeouts a loaded CI machine does not trip: a write that timed out would not name the
    # server's reason (maxmemory), which is what this test reads.
    backend = RedisBackend.from_url(killable_redis.url, connect_timeout=2.0, command_timeout=2.0)
    async with Cache(backend, namespace="refused") as cache:
        await cache.set("warm", 1)  # the generation is written while there is room
        admin = redis_asyncio.Redis.from_url(killable_redis.url)
        try:
            await admin.config_set("maxmemory", 1)
            await admin.config_set("maxmemory-policy", "noeviction")
        finally:
            await admin.aclose()
        assert not await cache.set_many({"a": secret, "b": secret}, ttl=60)
        strict = Cache(cache.backend, namespace="refused", strict=True)
        with pytest.raises(BackendError) as refused:
            await strict.set_many({"a": secret, "b": secret}, ttl=60)
    assert "maxmemory" in str(refused.value)  # the server's reason stays
    assert secret not in str(refused.value)
    assert caplog.records, "the failure was logged"
    assert all(secret not in record.getMessage() for record in caplog.records)
