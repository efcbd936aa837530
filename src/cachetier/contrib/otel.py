"""OpenTelemetry metrics for caches: reads by outcome and function, backend latency, counters, state.

::

    from cachetier.contrib.otel import instrument

    instruments = instrument(cache)  # on the global meter provider
    instrument(sessions)             # another cache, same instruments: told apart by `namespace`

Instruments, on the meter ``cachetier``; every observation has a ``namespace`` attribute, the
namespace of the cache it describes:

- ``cachetier.reads`` (also ``outcome`` and, for decorated functions, ``function``): reads
  since `instrument`, by how they ended (``hit``, ``miss``, ``stale``, ``backend_error``,
  ``decode_error``, ``bypassed``) and by the function's ``module.qualname``. Keys are never an
  attribute: they are unbounded, and each distinct attribute set is a new time series.
- ``cachetier.sets``, ``cachetier.deletes``, ``cachetier.refreshes``, ``cachetier.lock_waits``,
  ``cachetier.errors``, and (added in 0.2) ``cachetier.journaled``, ``cachetier.replays``,
  ``cachetier.journal_overflows``: `Cache.stats`, observed at collection, so they count from
  the cache's creation.
- ``cachetier.backend.latency.bucket`` (also ``le``, the upper bound in seconds as Prometheus
  spells it: ``"0.0001"`` to ``"1.0"``, then ``"+Inf"``), ``cachetier.backend.latency.count``
  and ``cachetier.backend.latency.sum`` (seconds): the time backend calls took, as the
  cumulative bucket counts of `CacheStats.latency_buckets`. Backends that speak OpenTelemetry
  natively see three counters, not a histogram; exported to Prometheus, the bucket counter
  keeps its ``le`` attribute, so ``histogram_quantile`` works on it as on a histogram's
  ``_bucket`` series. Added in 0.2.
- ``cachetier.awaiting_replay`` and ``cachetier.breaker.open`` (gauges): 1 while
  invalidations wait in the journal, and while the circuit breaker is open or half-open
  (`Cache.breaker_state`); else 0. Added in 0.2.

All are observable (asynchronous): a read hook counts into a dictionary and everything is
reported at each collection. A synchronous ``Counter.add`` or ``Histogram.record`` per read
would put the SDK's attribute lookup and lock on every cache read (about 9 µs measured,
against about 0.3 µs for the dictionary), more than the whole overhead the cache allows itself
on a hit.

The SDK keeps one instrument per name and meter, so the instruments are created once per meter
provider and report every cache instrumented on it. Two caches of the same namespace cannot
share a meter provider.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Final, final

try:
    from opentelemetry.metrics import (
        CallbackOptions,
        MeterProvider,
        Observation,
        get_meter_provider,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'cachetier.contrib.otel needs opentelemetry-api; install it with: pip install "cachetier[otel]"'
    ) from exc

from .._cache import Cache
from .._core.stats import CacheStats, ReadEvent
from .._version import __version__

__all__ = ("CacheInstruments", "instrument")

# (field of CacheStats, which is also the instrument's name after "cachetier."; unit; description)
_STATS_COUNTERS: Final[tuple[tuple[str, str, str], ...]] = (
    ("sets", "{entry}", "Values the cache stored."),
    ("deletes", "{key}", "Keys the cache removed (delete, delete_pattern, clear)."),
    ("refreshes", "{refresh}", "Background and early refreshes the cache ran."),
    ("lock_waits", "{wait}", "Reads that waited for another process's lock (lock=True)."),
    ("errors", "{error}", "Reads that failed on the backend or on decoding."),
    ("journaled", "{invalidation}", "Invalidations that failed to reach the backend."),
    ("replays", "{replay}", "Replays of the journal once the backend answered again."),
    ("journal_overflows", "{overflow}", "Times the journal overflowed into a bump_version."),
)

# The instruments created on each meter provider. Weak, so that it never keeps a provider alive;
# nothing in the values refers to a provider.
_SHARED: Final[weakref.WeakKeyDictionary[MeterProvider, _SharedInstruments]] = (
    weakref.WeakKeyDictionary()
)
_SHARED_LOCK: Final = threading.Lock()


def instrument(cache: Cache, meter_provider: MeterProvider | None = None) -> CacheInstruments:
    """Reports ``cache``'s reads, latency and counters through ``meter_provider`` (the global one if omitted).

    Adds a read hook to ``cache`` and adds the cache to the provider's instruments, creating
    them for the first cache; call `CacheInstruments.uninstrument` on the result to stop
    reporting it.

    Raises:
        ValueError: a cache of the same namespace is instrumented on ``meter_provider`` already.
    """
    provider = get_meter_provider() if meter_provider is None else meter_provider
    return CacheInstruments(cache, provider)


@final
class CacheInstruments:
    """One cache's share of the OpenTelemetry instruments, and its read hook; what `instrument` returns."""

    __slots__ = ("_cache", "_counts", "_lock", "_shared")

    def __init__(self, cache: Cache, meter_provider: MeterProvider) -> None:
        """Adds ``cache`` to the instruments on ``meter_provider`` and the read hook to ``cache``.

        Raises:
            ValueError: a cache of the same namespace is instrumented on ``meter_provider``.
        """
        self._cache = cache
        # Collection may run on an exporter's thread while reads count on the event loop's.
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str | None], int] = {}
        # Added before the hook is, so that a refusal leaves the cache untouched.
        self._shared: _SharedInstruments | None = _SharedInstruments.add(meter_provider, self)
        cache.add_hook(self.record)

    def record(self, event: ReadEvent) -> None:
        """Counts one read; this is the hook added to the cache."""
        labels = (event.outcome.value, event.function)
        with self._lock:
            self._counts[labels] = self._counts.get(labels, 0) + 1

    def uninstrument(self) -> None:
        """Removes the read hook; the instruments report nothing of this cache from then on.

        The OpenTelemetry API cannot delete an instrument, so they stay on the meter, reporting
        the other caches' observations, or none.
        """
        self._cache.remove_hook(self.record)
        shared, self._shared = self._shared, None
        if shared is not None:
            shared.remove(self)

    @property
    def namespace(self) -> str:
        """The namespace of the cache, the value of its ``namespace`` attribute. Added in 0.2."""
        return self._cache.namespace

    def _reads(self) -> list[Observation]:
        namespace = self._cache.namespace
        with self._lock:
            counts = self._counts.copy()
        return [
            Observation(
                value,
                # A read by a `Cache` method has no function: the attribute is left out
                # rather than given an empty value.
                {"namespace": namespace, "outcome": outcome}
                if function is None
                else {"namespace": namespace, "outcome": outcome, "function": function},
            )
            for (outcome, function), value in counts.items()
        ]


@final
class _SharedInstruments:
    """The instruments of one meter provider; their callbacks observe every cache added."""

    __slots__ = ("_lock", "_members")

    def __init__(self, meter_provider: MeterProvider) -> None:
        self._lock = threading.Lock()
        self._members: dict[str, CacheInstruments] = {}
        meter = meter_provider.get_meter("cachetier", __version__)
        meter.create_observable_counter(
            "cachetier.reads",
            callbacks=[self._observe_reads],
            unit="{read}",
            description="Cache reads by outcome and by the decorated function that read.",
        )
        for field, unit, description in _STATS_COUNTERS:
            meter.create_observable_counter(
                f"cachetier.{field}",
                callbacks=[self._observer(attrgetter(field))],
                unit=unit,
                description=description,
            )
        meter.create_observable_counter(
            "cachetier.backend.latency.bucket",
            callbacks=[self._observe_latency_buckets],
            unit="{call}",
            description="Backend calls that took at most le seconds (cumulative buckets).",
        )
        meter.create_observable_counter(
            "cachetier.backend.latency.count",
            callbacks=[self._observer(lambda stats: stats.backend_calls)],
            unit="{call}",
            description="Backend calls timed, for backends that do I/O (Redis).",
        )
        meter.create_observable_counter(
            "cachetier.backend.latency.sum",
            callbacks=[self._observer(lambda stats: stats.latency_sum_seconds)],
            unit="s",
            description="Total time the timed backend calls took.",
        )
        meter.create_observable_gauge(
            "cachetier.awaiting_replay",
            callbacks=[self._observer(lambda stats: int(stats.awaiting_replay))],
            unit="1",
            description="1 while invalidations wait in the journal for the backend, else 0.",
        )
        meter.create_observable_gauge(
            "cachetier.breaker.open",
            callbacks=[self._observe_breaker],
            unit="1",
            description="1 while the circuit breaker is open or half-open, else 0.",
        )

    @classmethod
    def add(cls, meter_provider: MeterProvider, member: CacheInstruments) -> _SharedInstruments:
        """Adds ``member`` to the instruments of ``meter_provider``, creating them if new."""
        with _SHARED_LOCK:
            shared = _SHARED.get(meter_provider)
            if shared is None:
                shared = _SHARED[meter_provider] = cls(meter_provider)
            with shared._lock:
                if member.namespace in shared._members:
                    raise ValueError(
                        f"a cache of namespace {member.namespace!r} is instrumented on this "
                        "meter provider already"
                    )
                shared._members[member.namespace] = member
        return shared

    def remove(self, member: CacheInstruments) -> None:
        """Stops observing ``member``."""
        with self._lock:
            if self._members.get(member.namespace) is member:
                del self._members[member.namespace]

    def _current(self) -> list[CacheInstruments]:
        with self._lock:
            return list(self._members.values())

    def _observe_reads(self, options: CallbackOptions) -> Iterable[Observation]:
        return [observation for member in self._current() for observation in member._reads()]

    def _observer(
        self, value: Callable[[CacheStats], float]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(value(member._cache.stats), {"namespace": member.namespace})
                for member in self._current()
            ]

        return observe

    def _observe_latency_buckets(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"namespace": member.namespace, "le": _bucket_bound(bound)})
            for member in self._current()
            for bound, count in member._cache.stats.latency_buckets
        ]

    def _observe_breaker(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(
                int(member._cache.breaker_state != "closed"), {"namespace": member.namespace}
            )
            for member in self._current()
        ]


def _bucket_bound(bound: float) -> str:
    # As the Prometheus exposition format spells a bucket's ``le``: "+Inf", and the shortest repr.
    return "+Inf" if bound == math.inf else repr(bound)
