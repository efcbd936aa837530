"""Counters of what a cache did, and `CacheStats`, their immutable snapshot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias, final

from ._types import Outcome

__all__ = ("CacheStats", "LatencyHistogram", "ReadEvent", "ReadHook", "StatsRecorder")

# Four buckets per power of two of nanoseconds: quantiles within 25 % of the true value, from
# 1 ns to hours, in a fixed list of ints; recording is a bit_length, two shifts and an add.
_SUB_BITS: Final = 2
_BUCKETS: Final = 64 << _SUB_BITS


@final
class LatencyHistogram:
    """Durations in log-spaced buckets, for percentiles that cost O(1) to record."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.total = 0

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


def _upper_edge(index: int) -> int:
    if index < 1 << _SUB_BITS:
        return index + 1
    octave, mantissa = divmod(index, 1 << _SUB_BITS)
    exponent = octave + _SUB_BITS - 1
    return ((1 << _SUB_BITS) + mantissa + 1) << (exponent - _SUB_BITS)


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
        )
