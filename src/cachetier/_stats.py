"""Counters of what a cache did, and `CacheStats`, their immutable snapshot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias, final

from ._types import Outcome

__all__ = ("CacheStats", "ReadEvent", "ReadHook", "StatsRecorder")


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
        """Sets every counter to zero."""
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
        )
