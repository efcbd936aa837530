"""Counters of what a cache did, `CacheStats`, their immutable snapshot, and `Reporter`, which
counts each read and tells the read hooks."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeAlias, final

from .._log import LOGGER, RateLimitedLog
from .._types import Outcome

__all__ = (
    "LATENCY_BOUNDS",
    "CacheStats",
    "LatencyHistogram",
    "ReadEvent",
    "ReadHook",
    "Reporter",
    "StatsRecorder",
    "debug_enabled",
)

# Bound once: asked on every read, and the logging module caches its answer per level.
debug_enabled: Final = LOGGER.isEnabledFor

# Four buckets per power of two of nanoseconds: quantiles within 25 % of the true value, from
# 1 ns to hours, in a fixed list of ints; recording is a bit_length, two shifts and an add.
_SUB_BITS: Final = 2
_BUCKETS: Final = 64 << _SUB_BITS

LATENCY_BOUNDS: Final[tuple[float, ...]] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
"""Upper bounds in seconds of `CacheStats.latency_buckets`, before the final ``math.inf``."""


@final
class LatencyHistogram:
    """Durations in log-spaced buckets, for percentiles that cost O(1) to record."""

    __slots__ = ("counts", "sum_ns", "total")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.total = 0
        self.sum_ns = 0

    def record(self, nanoseconds: int) -> None:
        """Counts one duration."""
        if nanoseconds < 1 << _SUB_BITS:
            index = max(nanoseconds, 0)
        else:
            exponent = nanoseconds.bit_length() - 1
            mantissa = (nanoseconds >> (exponent - _SUB_BITS)) & ((1 << _SUB_BITS) - 1)
            index = min((exponent - _SUB_BITS + 1) << _SUB_BITS | mantissa, _BUCKETS - 1)
        self.counts[index] += 1
        self.total += 1
        self.sum_ns += nanoseconds

    def quantile(self, q: float) -> float | None:
        """Returns the duration in milliseconds below which a fraction ``q`` of the durations fall.

        The answer is the upper edge of the bucket holding that rank; ``None`` before any
        duration was recorded.
        """
        if not self.total:
            return None
        rank = q * self.total
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if count and seen >= rank:
                return _upper_edge(index) / 1e6
        return _upper_edge(_BUCKETS - 1) / 1e6  # pragma: no cover - ranks never exceed total

    def cumulative(self) -> tuple[tuple[float, int], ...]:
        """Returns ``(bound in seconds, durations at or under it)`` for `LATENCY_BOUNDS` and ``math.inf``.

        Derived from the log-spaced buckets, so a duration counts towards a bound only when
        its whole bucket lies at or under it: a count may leave out durations up to 25 %
        under its bound (they are in the next one), never include one above it.
        """
        per_bound = [0] * (len(LATENCY_BOUNDS) + 1)
        for index, count in enumerate(self.counts):
            if count:
                per_bound[_BOUND_OF_BUCKET[index]] += count
        buckets: list[tuple[float, int]] = []
        seen = 0
        for bound, count in zip((*LATENCY_BOUNDS, math.inf), per_bound, strict=True):
            seen += count
            buckets.append((bound, seen))
        return tuple(buckets)


def _upper_edge(index: int) -> int:
    if index < 1 << _SUB_BITS:
        return index + 1
    octave, mantissa = divmod(index, 1 << _SUB_BITS)
    exponent = octave + _SUB_BITS - 1
    return ((1 << _SUB_BITS) + mantissa + 1) << (exponent - _SUB_BITS)


def _bound_of_bucket(index: int) -> int:
    # The bucket holds whole nanoseconds below its upper edge, so its largest is edge - 1.
    largest = _upper_edge(index) - 1
    for position, bound in enumerate(LATENCY_BOUNDS):
        if largest <= round(bound * 1e9):
            return position
    return len(LATENCY_BOUNDS)


# Which of LATENCY_BOUNDS (or the final infinite one) each log-spaced bucket counts towards.
_BOUND_OF_BUCKET: Final[tuple[int, ...]] = tuple(_bound_of_bucket(i) for i in range(_BUCKETS))
_NO_LATENCIES: Final[tuple[tuple[float, int], ...]] = LatencyHistogram().cumulative()


@dataclass(frozen=True, slots=True)
class ReadEvent:
    """One read and how it ended, as passed to read hooks.

    ``key`` is the stored key (namespace and version included); ``function`` is the
    ``module.qualname`` of the decorated function that read it, or ``None`` for `Cache` methods.
    """

    key: str
    outcome: Outcome
    function: str | None = None


ReadHook: TypeAlias = Callable[[ReadEvent], None]
"""A callable told of every read; it must be quick, and what it raises is logged, not raised."""


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of a cache's counters (or of one decorated function's).

    ``hit_ratio`` is ``hits / (hits + misses)``: reads that failed on the backend or on
    decoding are counted apart (``backend_errors``, ``decode_errors``) so that an outage shows
    as errors, not as a low hit ratio. It is ``0.0`` before any read.

    ``latency_p50_ms``, ``latency_p95_ms`` and ``latency_p99_ms`` are percentiles of the time
    reads and writes spent waiting on the backend (within 25 %), over ``backend_calls`` calls;
    ``None`` before the first. For a decorated function they cover its own reads. They are
    measured for backends that do I/O (Redis), not for in-process ones (memory, null), where the
    timing would cost more than the call it times.

    ``journaled`` counts invalidations (delete, invalidate_tags, delete_pattern, clear,
    bump_version) that failed to reach the backend and wait in this process's journal;
    ``replays`` the replays of that journal once the backend answered again;
    ``journal_overflows`` the times it held more than ``Cache(journal_limit=...)`` and stood for
    one bump_version instead; ``awaiting_replay`` whether anything waits now (reads are misses
    until it has gone through). A decorated function's own stats leave them at zero.

    ``latency_buckets`` holds the same backend calls as a Prometheus-style histogram:
    ``(upper bound in seconds, calls that took at most that long)`` for bounds from 100 µs to
    1 s, then ``math.inf`` with every call (``backend_calls``). The counts are derived from
    the buckets behind the percentiles: a call counts towards a bound only when it certainly
    lies under it, so a count may leave out calls up to 25 % under its bound.
    ``latency_sum_seconds`` is their total duration. Added in 0.2.
    """

    hits: int = 0
    misses: int = 0
    stale_served: int = 0
    backend_errors: int = 0
    decode_errors: int = 0
    bypassed: int = 0
    sets: int = 0
    deletes: int = 0
    errors: int = 0
    refreshes: int = 0
    lock_waits: int = 0
    backend_calls: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    journaled: int = 0
    replays: int = 0
    journal_overflows: int = 0
    awaiting_replay: bool = False
    latency_buckets: tuple[tuple[float, int], ...] = field(default=_NO_LATENCIES, repr=False)
    latency_sum_seconds: float = 0.0

    @property
    def hit_ratio(self) -> float:
        """Hits over hits plus misses; ``0.0`` before any read."""
        reads = self.hits + self.misses
        return self.hits / reads if reads else 0.0

    @property
    def reads(self) -> int:
        """Every read, whatever its outcome."""
        return (
            self.hits
            + self.misses
            + self.stale_served
            + self.backend_errors
            + self.decode_errors
            + self.bypassed
        )


@final
class StatsRecorder:
    """Mutable counters behind `CacheStats`; incremented on the hot path, so plain attributes."""

    __slots__ = (
        "backend_errors",
        "bypassed",
        "decode_errors",
        "deletes",
        "errors",
        "hits",
        "latency",
        "lock_waits",
        "misses",
        "name",
        "refreshes",
        "sets",
        "stale_served",
    )

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self.reset()

    def reset(self) -> None:
        """Sets every counter to zero and forgets every latency."""
        self.latency = LatencyHistogram()
        self.hits = self.misses = self.stale_served = self.backend_errors = 0
        self.decode_errors = self.bypassed = self.sets = self.deletes = 0
        self.errors = self.refreshes = self.lock_waits = 0

    def record(self, outcome: Outcome) -> None:
        """Counts one read that ended with ``outcome``."""
        if outcome is Outcome.HIT:
            self.hits += 1
        elif outcome is Outcome.MISS:
            self.misses += 1
        elif outcome is Outcome.STALE:
            self.stale_served += 1
        elif outcome is Outcome.BACKEND_ERROR:
            self.backend_errors += 1
            self.errors += 1
        elif outcome is Outcome.DECODE_ERROR:
            self.decode_errors += 1
            self.errors += 1
        else:
            self.bypassed += 1

    def snapshot(self) -> CacheStats:
        """Returns the counters as an immutable `CacheStats`."""
        return CacheStats(
            hits=self.hits,
            misses=self.misses,
            stale_served=self.stale_served,
            backend_errors=self.backend_errors,
            decode_errors=self.decode_errors,
            bypassed=self.bypassed,
            sets=self.sets,
            deletes=self.deletes,
            errors=self.errors,
            refreshes=self.refreshes,
            lock_waits=self.lock_waits,
            backend_calls=self.latency.total,
            latency_p50_ms=self.latency.quantile(0.50),
            latency_p95_ms=self.latency.quantile(0.95),
            latency_p99_ms=self.latency.quantile(0.99),
            latency_buckets=self.latency.cumulative(),
            latency_sum_seconds=self.latency.sum_ns / 1e9,
        )


@final
class Reporter:
    """Counts the reads of one `Cache` in its stats (and a function's), and tells its hooks."""

    __slots__ = ("hooks", "log", "stats")

    def __init__(
        self, stats: StatsRecorder, hooks: tuple[ReadHook, ...], log: RateLimitedLog
    ) -> None:
        self.stats = stats
        self.hooks = hooks
        self.log = log

    def count(
        self, outcome: Outcome, full: str, function_stats: StatsRecorder | None = None
    ) -> None:
        """Counts a read in the cache's stats (and the function's), and tells the read hooks."""
        self.stats.record(outcome)
        if function_stats is not None:
            function_stats.record(outcome)
        if self.hooks:
            self.notify(ReadEvent(full, outcome, function_stats.name if function_stats else None))
        if debug_enabled(logging.DEBUG):
            LOGGER.debug("cache %s: %s", outcome.value, full)

    def notify(self, event: ReadEvent) -> None:
        """Tells every read hook of ``event``; a hook that raises is logged, never raised."""
        for hook in self.hooks:
            try:
                hook(event)
            except Exception as exc:  # noqa: BLE001, PERF203  # a broken hook must not break reads; try is free in 3.11+
                self.log.warning("hook", "read hook %r raised %r", hook, exc)
