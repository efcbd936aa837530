"""Prometheus metrics for caches: reads by outcome and function, backend latency, counters, state.

::

    from prometheus_client import start_http_server
    from cachetier.contrib.prometheus import instrument

    metrics = instrument(cache)  # into prometheus_client's default registry
    instrument(sessions)         # another cache, same registry: told apart by `namespace`
    start_http_server(9100)

Exported, with the default ``prefix="cachetier"``; every metric has a ``namespace`` label, the
namespace of the cache it describes:

- ``cachetier_reads_total{namespace, outcome, function}``: reads since `instrument`, by how
  they ended (``hit``, ``miss``, ``stale``, ``backend_error``, ``decode_error``, ``bypassed``)
  and by the decorated function that read (``module.qualname``; empty for `Cache` methods).
  Keys are never a label: they are unbounded, and every distinct label value is a new time
  series.
- ``cachetier_backend_latency_seconds{namespace}``: a histogram of the time backend calls
  took (``_bucket``, ``_sum``, ``_count``), with bounds from 100 µs to 1 s; it is
  `CacheStats.latency_buckets`, so it holds calls to backends that do I/O (Redis) while
  ``latency_stats`` is on, and a call counts towards a bound only when it certainly lies
  under it. Added in 0.2.
- ``cachetier_sets_total``, ``cachetier_deletes_total``, ``cachetier_refreshes_total``,
  ``cachetier_lock_waits_total``, ``cachetier_errors_total``, and (added in 0.2)
  ``cachetier_journaled_total``, ``cachetier_replays_total``,
  ``cachetier_journal_overflows_total``: `Cache.stats`, read at scrape time, so they count
  from the cache's creation.
- ``cachetier_awaiting_replay{namespace}``: 1 while invalidations wait in the journal, else 0.
  Added in 0.2.
- ``cachetier_breaker_open{namespace}``: 1 while the circuit breaker is open or half-open
  (`Cache.breaker_state`), else 0. Added in 0.2.

Several caches share a registry: `instrument` registers one collector per registry and prefix
and adds each cache to it, so their series differ by ``namespace``. Two caches of the same
namespace need different prefixes. ``examples/grafana/cachetier.json`` in the repository is a
Grafana dashboard over these metrics.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, final

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "cachetier.contrib.prometheus needs prometheus-client; install it with: "
        'pip install "cachetier[prometheus]"'
    ) from exc

from .._cache import Cache
from .._core.stats import CacheStats, ReadEvent
from .._types import Outcome

__all__ = ("CacheCollector", "instrument")

# (field of CacheStats, which is also the metric's name after the prefix; help text)
_STATS_COUNTERS: Final[tuple[tuple[str, str], ...]] = (
    ("sets", "Values the cache stored."),
    ("deletes", "Keys the cache removed (delete, delete_pattern, clear)."),
    ("refreshes", "Background and early refreshes the cache ran."),
    ("lock_waits", "Reads that waited for another process's lock (lock=True)."),
    ("errors", "Reads that failed on the backend or on decoding."),
    ("journaled", "Invalidations that failed to reach the backend and were journaled."),
    ("replays", "Replays of the journal once the backend answered again."),
    ("journal_overflows", "Times the journal overflowed and stood for one bump_version."),
)

# The collector installed in each registry, per prefix. Weak, so that it never keeps a registry
# alive; nothing here refers to a registry strongly (the collectors hold a weak reference).
_INSTALLED: Final[weakref.WeakKeyDictionary[CollectorRegistry, dict[str, _RegistryCollector]]] = (
    weakref.WeakKeyDictionary()
)
_INSTALLED_LOCK: Final = threading.Lock()


def instrument(
    cache: Cache, registry: CollectorRegistry | None = None, prefix: str = "cachetier"
) -> CacheCollector:
    """Exports ``cache``'s reads, latency and counters to ``registry`` (prometheus_client's default if omitted).

    Adds a read hook to ``cache`` and adds the cache to the registry's collector for
    ``prefix``, registering that collector with the first cache; call
    `CacheCollector.uninstrument` on the result to undo both.

    Raises:
        ValueError: a cache of the same namespace is instrumented in ``registry`` with the same
            ``prefix`` already, or ``registry`` holds other metrics of these names.
    """
    collector = CacheCollector(cache, prefix=prefix)
    collector.install(REGISTRY if registry is None else registry)
    return collector


@dataclass(frozen=True, slots=True)
class _Sample:
    """One cache's numbers at one scrape."""

    namespace: str
    counts: dict[tuple[str, str], int]
    stats: CacheStats
    breaker_open: bool
    created: float


@final
class CacheCollector:
    """The Prometheus metrics of one cache, and its read hook; what `instrument` returns.

    Reads are counted by a read hook into a plain dictionary and turned into metrics only at
    scrape time: the hook runs inline on every cache read, where a labelled
    ``prometheus_client.Counter`` would cost a label lookup and its own lock per read.

    `install` adds it to the registry's shared collector; `collect` and `describe` also let
    it be registered in a registry of its own by hand.
    """

    __slots__ = ("_cache", "_counts", "_created", "_installed", "_lock", "_prefix")

    def __init__(self, cache: Cache, *, prefix: str = "cachetier") -> None:
        """Builds the collector; `install` (which `instrument` calls) exports it and hooks the cache."""
        self._cache = cache
        self._prefix = prefix
        self._created = time.time()
        # A scrape runs on the HTTP server's thread while reads count on the event loop's,
        # and a cache may be read from more than one thread's loop.
        self._lock = threading.Lock()
        # Every outcome starts at 0 for plain `Cache` reads, so that rate() and ratios have
        # a series to work on before the first read of each kind.
        self._counts: dict[tuple[str, str], int] = {(outcome.value, ""): 0 for outcome in Outcome}
        self._installed: _RegistryCollector | None = None

    def record(self, event: ReadEvent) -> None:
        """Counts one read; this is the hook `instrument` adds to the cache."""
        labels = (event.outcome.value, event.function or "")
        with self._lock:
            self._counts[labels] = self._counts.get(labels, 0) + 1

    def collect(self) -> Iterator[Metric]:
        """Yields this cache's metrics as of now; prometheus_client calls it at each scrape."""
        return _families(self._prefix, [self._sample()])

    def describe(self) -> Iterable[Metric]:
        """Yields the metrics without samples, so that a registry can refuse a name clash."""
        return _families(self._prefix, [])

    def install(self, registry: CollectorRegistry) -> None:
        """Adds the cache to ``registry``'s collector for this prefix and hooks the cache.

        Raises:
            ValueError: a cache of the same namespace is there already, or ``registry`` holds
                other metrics of these names.
            RuntimeError: the collector is installed already.
        """
        if self._installed is not None:
            raise RuntimeError("this collector is installed already; uninstrument() it first")
        # Added before the hook is, so that a clash leaves the cache untouched.
        self._installed = _RegistryCollector.add(registry, self)
        self._cache.add_hook(self.record)

    def uninstrument(self) -> None:
        """Removes the read hook and the cache's metrics; does nothing the second time.

        The registry's collector is unregistered with the last of its caches.
        """
        self._cache.remove_hook(self.record)
        installed, self._installed = self._installed, None
        if installed is not None:
            installed.remove(self)

    @property
    def namespace(self) -> str:
        """The namespace of the cache, the value of its ``namespace`` label. Added in 0.2."""
        return self._cache.namespace

    @property
    def prefix(self) -> str:
        """The start of every metric name. Added in 0.2."""
        return self._prefix

    def _sample(self) -> _Sample:
        with self._lock:
            counts = self._counts.copy()
        return _Sample(
            namespace=self._cache.namespace,
            counts=counts,
            stats=self._cache.stats,
            breaker_open=self._cache.breaker_state != "closed",
            created=self._created,
        )


@final
class _RegistryCollector:
    """The one collector registered per registry and prefix; yields the metrics of its caches.

    prometheus_client refuses a second collector with the same metric names, so caches that
    share a registry share this collector and differ by their ``namespace`` label.
    """

    __slots__ = ("_lock", "_members", "_prefix", "_registry")

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        self._registry = weakref.ref(registry)
        self._prefix = prefix
        self._lock = threading.Lock()
        self._members: dict[str, CacheCollector] = {}

    @classmethod
    def add(cls, registry: CollectorRegistry, member: CacheCollector) -> _RegistryCollector:
        """Adds ``member`` to ``registry``'s collector for its prefix, registering it if new."""
        with _INSTALLED_LOCK:
            by_prefix = _INSTALLED.setdefault(registry, {})
            shared = by_prefix.get(member.prefix)
            if shared is None:
                shared = cls(registry, member.prefix)
                # Raises on a clash with another collector, before anything is kept.
                registry.register(shared)
                by_prefix[member.prefix] = shared
            elif member.namespace in shared._members:
                raise ValueError(
                    f"a cache of namespace {member.namespace!r} is instrumented with prefix "
                    f"{member.prefix!r} in this registry already; give this one another prefix"
                )
            with shared._lock:
                shared._members[member.namespace] = member
        return shared

    def remove(self, member: CacheCollector) -> None:
        """Removes ``member``; unregisters this collector when it was the last."""
        with _INSTALLED_LOCK:
            with self._lock:
                if self._members.get(member.namespace) is member:
                    del self._members[member.namespace]
                empty = not self._members
            registry = self._registry()
            if empty and registry is not None:
                registry.unregister(self)
                by_prefix = _INSTALLED.get(registry, {})
                if by_prefix.get(self._prefix) is self:
                    del by_prefix[self._prefix]

    def collect(self) -> Iterator[Metric]:
        """Yields the metrics of every cache added, as of now."""
        with self._lock:
            members = list(self._members.values())
        return _families(self._prefix, [member._sample() for member in members])

    def describe(self) -> Iterable[Metric]:
        """Yields the metrics without samples, so that a registry can refuse a name clash."""
        return _families(self._prefix, [])


def _families(prefix: str, samples: Sequence[_Sample]) -> Iterator[Metric]:
    reads = CounterMetricFamily(
        f"{prefix}_reads",
        "Cache reads by outcome and by the decorated function that read (empty for Cache methods).",
        labels=("namespace", "outcome", "function"),
    )
    for sample in samples:
        for (outcome, function), value in sorted(sample.counts.items()):
            reads.add_metric((sample.namespace, outcome, function), value, created=sample.created)
    yield reads

    latency = HistogramMetricFamily(
        f"{prefix}_backend_latency_seconds",
        "Time backend calls took, for backends that do I/O (Redis).",
        labels=("namespace",),
    )
    for sample in samples:
        latency.add_metric(
            (sample.namespace,),
            buckets=[
                (_bucket_bound(bound), count) for bound, count in sample.stats.latency_buckets
            ],
            sum_value=sample.stats.latency_sum_seconds,
        )
    yield latency

    for field, documentation in _STATS_COUNTERS:
        counter = CounterMetricFamily(f"{prefix}_{field}", documentation, labels=("namespace",))
        for sample in samples:
            counter.add_metric((sample.namespace,), getattr(sample.stats, field))
        yield counter

    awaiting = GaugeMetricFamily(
        f"{prefix}_awaiting_replay",
        "1 while invalidations wait in the journal for the backend, else 0.",
        labels=("namespace",),
    )
    breaker = GaugeMetricFamily(
        f"{prefix}_breaker_open",
        "1 while the circuit breaker is open or half-open, else 0.",
        labels=("namespace",),
    )
    for sample in samples:
        awaiting.add_metric((sample.namespace,), int(sample.stats.awaiting_replay))
        breaker.add_metric((sample.namespace,), int(sample.breaker_open))
    yield awaiting
    yield breaker


def _bucket_bound(bound: float) -> str:
    # The exposition format's spelling: "+Inf", and Python's shortest repr for the others.
    return "+Inf" if bound == math.inf else repr(bound)
