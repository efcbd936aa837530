"""Prometheus metrics for a `Cache`: reads by outcome and function, and the cache's counters.

::

    from prometheus_client import start_http_server
    from cachetier.contrib.prometheus import instrument

    metrics = instrument(cache)  # into prometheus_client's default registry
    start_http_server(9100)

Exported, with the default ``prefix="cachetier"``:

- ``cachetier_reads_total{outcome, function}``: reads since `instrument`, by how they ended
  (``hit``, ``miss``, ``stale``, ``backend_error``, ``decode_error``, ``bypassed``) and by the
  decorated function that read (``module.qualname``; empty for `Cache` methods). Keys are never
  a label: they are unbounded, and every distinct label value is a new time series.
- ``cachetier_sets_total``, ``cachetier_deletes_total``, ``cachetier_refreshes_total``,
  ``cachetier_lock_waits_total``, ``cachetier_errors_total``: `Cache.stats`, read at scrape time,
  so they count from the cache's creation.

One registry holds the metrics of one cache per prefix; give each other cache its own prefix.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import Final, final

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, Metric
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "cachetier.contrib.prometheus needs prometheus-client; install it with: "
        'pip install "cachetier[prometheus]"'
    ) from exc

from .._cache import Cache
from .._stats import CacheStats, ReadEvent
from .._types import Outcome

__all__ = ("CacheCollector", "instrument")

# (field of CacheStats, which is also the metric's name after the prefix; help text)
_STATS_COUNTERS: Final[tuple[tuple[str, str], ...]] = (
    ("sets", "Values the cache stored."),
    ("deletes", "Keys the cache removed (delete, delete_pattern, clear)."),
    ("refreshes", "Background and early refreshes the cache ran."),
    ("lock_waits", "Reads that waited for another process's lock (lock=True)."),
    ("errors", "Reads that failed on the backend or on decoding."),
)


def instrument(
    cache: Cache, registry: CollectorRegistry | None = None, prefix: str = "cachetier"
) -> CacheCollector:
    """Exports ``cache``'s reads and counters to ``registry`` (prometheus_client's default if omitted).

    Adds a read hook to ``cache`` and registers a collector; call `CacheCollector.uninstrument`
    on the result to undo both.

    Raises:
        ValueError: ``registry`` already holds metrics of these names (another cache
            instrumented with the same ``prefix``).
    """
    collector = CacheCollector(cache, prefix=prefix)
    collector.install(REGISTRY if registry is None else registry)
    return collector


@final
class CacheCollector:
    """A Prometheus collector of one cache's reads and counters; what `instrument` returns.

    Reads are counted by a read hook into a plain dictionary and turned into metrics only at
    scrape time: the hook runs inline on every cache read, where a labelled
    ``prometheus_client.Counter`` would cost a label lookup and its own lock per read.
    """

    __slots__ = ("_cache", "_counts", "_created", "_lock", "_prefix", "_registry")

    def __init__(self, cache: Cache, *, prefix: str = "cachetier") -> None:
        """Builds the collector; `install` (which `instrument` calls) registers it and hooks the cache."""
        self._cache = cache
        self._prefix = prefix
        self._created = time.time()
        # A scrape runs on the HTTP server's thread while reads count on the event loop's,
        # and a cache may be read from more than one thread's loop.
        self._lock = threading.Lock()
        # Every outcome starts at 0 for plain `Cache` reads, so that rate() and ratios have
        # a series to work on before the first read of each kind.
        self._counts: dict[tuple[str, str], int] = {(outcome.value, ""): 0 for outcome in Outcome}
        self._registry: CollectorRegistry | None = None

    def record(self, event: ReadEvent) -> None:
        """Counts one read; this is the hook `instrument` adds to the cache."""
        labels = (event.outcome.value, event.function or "")
        with self._lock:
            self._counts[labels] = self._counts.get(labels, 0) + 1

    def collect(self) -> Iterator[Metric]:
        """Yields the metrics as of now; prometheus_client calls it at each scrape."""
        with self._lock:
            counts = self._counts.copy()
        yield self._reads(counts)
        yield from self._stats_counters(self._cache.stats)

    def describe(self) -> Iterable[Metric]:
        """Yields the metrics without samples, so that a registry can refuse a name clash."""
        yield self._reads({})
        yield from self._stats_counters(None)

    def install(self, registry: CollectorRegistry) -> None:
        """Registers the collector in ``registry`` and adds its read hook to the cache.

        Raises:
            ValueError: ``registry`` already holds metrics of these names.
            RuntimeError: the collector is installed already.
        """
        if self._registry is not None:
            raise RuntimeError("this collector is installed already; uninstrument() it first")
        # Registered before the hook is added, so that a name clash leaves the cache untouched.
        registry.register(self)
        self._registry = registry
        self._cache.add_hook(self.record)

    def uninstrument(self) -> None:
        """Removes the read hook and unregisters the collector; does nothing the second time."""
        self._cache.remove_hook(self.record)
        registry, self._registry = self._registry, None
        if registry is not None:
            registry.unregister(self)

    def _reads(self, counts: dict[tuple[str, str], int]) -> CounterMetricFamily:
        family = CounterMetricFamily(
            f"{self._prefix}_reads",
            "Cache reads by outcome and by the decorated function that read (empty for Cache methods).",
            labels=("outcome", "function"),
        )
        for labels, value in sorted(counts.items()):
            family.add_metric(labels, value, created=self._created)
        return family

    def _stats_counters(self, stats: CacheStats | None) -> Iterator[CounterMetricFamily]:
        for field, documentation in _STATS_COUNTERS:
            name = f"{self._prefix}_{field}"
            if stats is None:
                yield CounterMetricFamily(name, documentation, labels=())
            else:
                yield CounterMetricFamily(name, documentation, value=getattr(stats, field))
