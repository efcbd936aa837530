"""`Engine`: the machinery behind `Cache` — reads, stores, fetch-through, refreshes and locks.

`Cache` is the façade users hold: it checks arguments, builds keys and documents behaviour.
The engine holds the state those operations share (the backend, stats, hooks, in-flight
reads and computations, background tasks) and implements the rules once: how an entry is
encoded, when it is fresh or stale, how concurrent misses merge, and how a failure fails open.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import math
import random
import re
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Final, cast, final

from ._breaker import CircuitBreaker
from ._entry import (
    GUARD_SIZE,
    HEADER_SIZE,
    LEASE_PREFIX,
    MAGIC,
    SIGNED_MAGIC,
    EntrySigner,
    encode_entry,
    new_lease,
)
from ._errors import (
    BackendError,
    CircuitOpenError,
    CounterError,
    SerializationError,
)
from ._keys import KeyBuilder
from ._local import LocalState, LocalTier
from ._locking import compute_locked
from ._log import LOGGER, RateLimitedLog
from ._policy import FreshnessPolicy, StampedePolicy
from ._reads import SharedReads
from ._singleflight import SingleFlight
from ._stats import ReadEvent, ReadHook, StatsRecorder
from ._types import MISSING, Clock, Outcome
from .backends._protocol import Backend, GuardedBackend, LockingBackend, TrackingBackend
from .serializers import Serializer

__all__ = ("LEASE_TTL", "Engine", "FetchSpec", "check_tags")

_FORMAT: Final = 2
# Bound once: asked on every read, and the logging module caches its answer per level.
_debug_enabled: Final = LOGGER.isEnabledFor
_GENERATION: Final = struct.Struct("<I")
_GENERATION_OFFSET: Final = 4
_GENERATION_END: Final = 8
_FRESH: Final = struct.Struct("<d")
_FRESH_OFFSET: Final = 16
_DELTA: Final = struct.Struct("<f")
_DELTA_OFFSET: Final = 24
LEASE_TTL: Final = 60.0
"""Seconds a lease holds the key of a value being computed; a longer computation is not stored."""
_UNGUARDED: Final = b""
_LEASE: Final = LEASE_PREFIX
_LEASE_SIZE: Final = len(LEASE_PREFIX) + 16
_ENTRY_MAGICS: Final = (MAGIC, SIGNED_MAGIC)
"""The guard of a write to a backend without `GuardedBackend`: a plain SET."""
_COUNTER: Final = re.compile(rb"-?[0-9]{1,20}")
_UNSIGNED: Final = (
    "its signature does not verify (unsigned, tampered, or written under another key)"
)


def check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Returns ``tags`` as a tuple without repeats, checked to be non-empty ``str``.

    Raises:
        TypeError: ``tags`` is a single ``str`` (a common slip for a one-tag list), or a tag is
            not a ``str``.
        ValueError: a tag is empty.
    """
    if isinstance(tags, str):
        raise TypeError(f"tags must be a collection of str, not a str: write [{tags!r}]")
    checked: dict[str, None] = {}
    for tag in tags:
        if not isinstance(tag, str):
            raise TypeError(f"tags must be str, not {type(tag).__name__}")
        if not tag:
            raise ValueError("tags must not be empty strings")
        checked[tag] = None
    return tuple(checked)


@dataclass(frozen=True, slots=True)
class FetchSpec:
    """How one kind of read-through call behaves; a decorated function keeps one for all calls.

    ``ttl`` is the fresh lifetime in seconds (``None``: no expiry); ``codec`` turns values into
    payloads and back; ``stats`` are the decorated function's own counters; ``should_store``
    decides whether a computed value is cached (``None``: always).
    """

    ttl: float | None
    codec: Serializer
    stampede: StampedePolicy
    freshness: FreshnessPolicy
    stats: StatsRecorder | None = None
    should_store: Callable[[Any], bool] | None = None
    tags: Callable[[tuple[Any, ...], Mapping[str, Any]], tuple[str, ...]] | None = None


@final
class Engine:
    """State and rules shared by every operation of one `Cache`; private to the package."""

    __slots__ = (
        "backend",
        "breaker",
        "bypassing",
        "clock",
        "failures",
        "flights",
        "generation",
        "generation_bytes",
        "generation_due",
        "generation_interval",
        "generation_key",
        "guarded",
        "hooks",
        "jitter",
        "keys",
        "local",
        "local_settings",
        "max_value_bytes",
        "merge_reads",
        "serializer",
        "shared",
        "signer",
        "stats",
        "strict",
        "tasks",
        "timing",
        "timing_wanted",
    )

    def __init__(
        self,
        backend: Backend,
        *,
        serializer: Serializer,
        strict: bool,
        max_value_bytes: int | None,
        jitter: float,
        hooks: tuple[ReadHook, ...],
        breaker: CircuitBreaker,
        signer: EntrySigner | None,
        keys: KeyBuilder,
        clock: Clock,
        generation_interval: float,
        local: LocalTier | None = None,
        latency_stats: bool = True,
    ) -> None:
        self.timing_wanted = latency_stats
        self.local_settings = local
        self.local: LocalState | None = None
        self.keys = keys
        self.generation_key = keys.generation_key()
        self.failures = RateLimitedLog()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.set_backend(backend)
        # The namespace generation (`Cache.bump_version`) as last read; `set_backend` made the
        # next read fetch it along with its entry.
        self.adopt_generation(0)
        self.generation_interval = generation_interval
        self.breaker = breaker
        self.signer = signer
        # True inside `Cache.bypass()` blocks of the current task (and tasks it starts).
        self.bypassing: contextvars.ContextVar[bool] = contextvars.ContextVar(
            "cachetier_bypass", default=False
        )
        self.serializer = serializer
        self.strict = strict
        self.max_value_bytes = max_value_bytes
        self.jitter = jitter
        self.hooks = hooks
        self.clock = clock
        self.stats = StatsRecorder()
        self.flights: SingleFlight[Any] = SingleFlight(on_start=self.track)
        self.shared = SharedReads(self)

    # -- bookkeeping --------------------------------------------------------------------------

    def set_backend(self, backend: Backend) -> None:
        """Makes ``backend`` the one every operation uses from now on."""
        self.backend: Backend = backend
        # Merging concurrent reads saves round trips; a backend whose calls never wait on I/O
        # (it says so with ``in_process = True``) answers before a second reader can arrive.
        self.merge_reads: bool = not getattr(backend, "in_process", False)
        # Latency is timed for backends that do I/O; an in-process one would only pay for it.
        self.timing: bool = self.merge_reads and self.timing_wanted
        self.guarded: bool = isinstance(backend, GuardedBackend)
        # Another store may be at another generation: learn it with the next read.
        self.generation_due = -math.inf
        if self.local is not None:
            self.local.live = False
            self.local.clear()
            if self.local.task is not None:
                self.local.task.cancel()
        self.local = None
        if self.local_settings is not None:
            if isinstance(backend, TrackingBackend):
                self.local = LocalState(self, backend, self.local_settings)
            else:
                LOGGER.info(
                    "local tier off: the %s backend cannot report changes of its keys",
                    backend.kind,
                )

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keeps ``task`` until it ends, so `cancel_background` can stop it."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def cancel_background(self) -> None:
        """Cancels and awaits every background computation."""
        tasks = [task for task in self.tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def count(
        self, outcome: Outcome, full: str, function_stats: StatsRecorder | None = None
    ) -> None:
        """Counts a read in the cache's stats (and the function's), and tells the read hooks."""
        self.stats.record(outcome)
        if function_stats is not None:
            function_stats.record(outcome)
        if self.hooks:
            self._notify(ReadEvent(full, outcome, function_stats.name if function_stats else None))
        if _debug_enabled(logging.DEBUG):
            LOGGER.debug("cache %s: %s", outcome.value, full)

    def local_get(self, full: str, codec: object, function_stats: StatsRecorder | None) -> Any:
        """Returns the local tier's value of ``full`` as ``codec`` decoded it, counted as a hit,
        or `MISSING` (no tier, not live yet, bypassed, absent, another codec's or expired).

        Callers ask this before the read-through, which then only reads Redis: a decorated
        call inlines no coroutine for a local hit.
        """
        local = self.local
        if local is None:
            return MISSING
        if not local.live:
            local.start()
            return MISSING
        found = local.entries.get(full)
        if (
            found is None
            or found[0] is not codec
            or not self.clock() < found[2]
            or self.bypassing.get()
        ):
            return MISSING
        found[3] = True
        self.stats.hits += 1
        if function_stats is not None:
            function_stats.hits += 1
        if self.hooks:
            self._notify(ReadEvent(full, Outcome.HIT, function_stats and function_stats.name))
        if _debug_enabled(logging.DEBUG):
            LOGGER.debug("cache hit (local): %s", full)
        return found[1]

    def _notify(self, event: ReadEvent) -> None:
        for hook in self.hooks:
            try:
                hook(event)
            except Exception as exc:  # noqa: BLE001, PERF203  # a broken hook must not break reads; try is free in 3.11+
                self.failures.warning("hook", "read hook %r raised %r", hook, exc)

    def gate(self, operation: str) -> None:
        """Raises `CircuitOpenError` unless the circuit breaker lets a call go to the backend."""
        breaker = self.breaker
        if breaker.open_until and not breaker.allow():
            raise CircuitOpenError(
                f"{operation} skipped: the circuit breaker is open after {breaker.failures} "
                f"consecutive failures; it probes again within {breaker.cooldown:g} s"
            )

    def succeeded(self) -> None:
        """Tells the breaker a backend call answered."""
        if self.breaker.failures or self.breaker.open_until:
            self.breaker.succeeded()

    def backend_failed(
        self, operation: str, exc: BackendError, *, always_raise: bool = False
    ) -> None:
        """Counts a failure for the breaker and logs it at a bounded rate; raises it when strict.

        A call the breaker skipped (`CircuitOpenError`) is not a new failure.
        """
        if not isinstance(exc, CircuitOpenError | CounterError):
            self.breaker.failed()
        if self.strict or always_raise:
            raise exc
        self.failures.warning(
            "backend:" + operation,
            "cache %s failed, continuing without the cache: %s",
            operation,
            exc,
        )

    # -- writing ------------------------------------------------------------------------------

    def jittered(self, seconds: float | None) -> float | None:
        """Returns ``seconds`` shortened by a random part of up to ``jitter`` of it."""
        if seconds is None or not self.jitter:
            return seconds
        return seconds * (1.0 - random.random() * self.jitter)  # noqa: S311  # spreading expiry, not security

    def encode(
        self,
        full: str,
        value: object,
        seconds: float | None,
        codec: Serializer,
        delta: float = 0.0,
        generation: int | None = None,
    ) -> bytes | None:
        """Returns the stored form of ``value`` fresh for ``seconds``, or ``None`` when too large.

        Raises:
            SerializationError: ``codec`` cannot encode ``value``.
        """
        payload = codec.dumps(value)
        if self.max_value_bytes is not None and len(payload) > self.max_value_bytes:
            self.failures.warning(
                "too_large",
                "not caching %s: its value is %d bytes, over max_value_bytes=%d",
                full,
                len(payload),
                self.max_value_bytes,
            )
            return None
        now = self.clock()
        fresh_until = 0.0 if seconds is None else now + seconds
        data = encode_entry(
            payload,
            created=now,
            fresh_until=fresh_until,
            delta=delta,
            generation=self.generation if generation is None else generation,
        )
        return data if self.signer is None else self.signer.seal(full, data)

    async def write(
        self, full: str, data: bytes, seconds: float | None, guard: bytes = _UNGUARDED
    ) -> bool:
        """Stores encoded ``data`` for ``seconds``; returns ``False`` when it was not stored.

        With a ``guard`` (see `begin`), the value is stored only if the key still holds it: an
        invalidation since then wins, and the write is skipped. A backend that failed open
        returns ``False`` too.
        """
        started = perf_counter_ns() if self.timing else 0
        try:
            self.gate("SET")
            if guard:
                if not await cast("GuardedBackend", self.backend).set_if(
                    full, guard, data, seconds
                ):
                    self.succeeded()
                    if _debug_enabled(logging.DEBUG):
                        LOGGER.debug("cache not storing %s: invalidated while computing", full)
                    return False
            else:
                await self.backend.set(full, data, seconds)
        except BackendError as exc:
            self.backend_failed("set", exc)
            return False
        except BaseException:
            self.breaker.abandoned()
            raise
        if started:
            self.stats.latency.record(perf_counter_ns() - started)
        self.succeeded()
        self.stats.sets += 1
        return True

    async def store_quietly(
        self,
        full: str,
        value: object,
        spec: FetchSpec,
        delta: float,
        guard: bytes = _UNGUARDED,
        generation: int | None = None,
    ) -> bool:
        """Stores a computed value; a value that cannot be stored is logged, never raised.

        Returns whether it was stored.
        """
        seconds = self.jittered(spec.ttl)
        try:
            data = self.encode(full, value, seconds, spec.codec, delta, generation)
        except SerializationError as exc:
            self.failures.warning("serialize", "not caching %s: %s", full, exc)
            return False
        if data is None:
            return False
        physical = None if seconds is None else seconds + spec.freshness.keep_after_ttl
        if not await self.write(full, data, physical, guard):
            return False
        if spec.stats is not None:
            spec.stats.sets += 1
        return True

    # -- guarding computations against invalidation -------------------------------------------

    def forget(self, keys: list[str] | tuple[str, ...]) -> None:
        """Drops ``keys`` from the local tier, if any, after this process changed them."""
        if self.local is not None:
            self.local.drop(keys)

    def forget_all(self) -> None:
        """Empties the local tier, if any."""
        if self.local is not None:
            self.local.clear()

    def holds_value(self, data: bytes) -> bool:
        """Returns whether stored ``data`` is a value: not a lease, not of an earlier generation."""
        if _is_lease(data):
            return False
        if len(data) >= HEADER_SIZE and data[0] in _ENTRY_MAGICS and data[1] == _FORMAT:
            # Signed entries keep the header's layout, generation included.
            return self.current(data)
        return True

    async def record_tags(self, full: str, tags: tuple[str, ...], seconds: float | None) -> bool:
        """Records ``full`` under ``tags`` for ``seconds``; returns ``False`` when it could not,
        and the value must then not be cached: an entry that `Cache.invalidate_tags` cannot
        reach would be served stale."""
        if not self.guarded:
            self.failures.warning(
                "tags",
                "not caching %s: its backend %s keeps no tag indexes",
                full,
                self.backend.kind,
            )
            return False
        try:
            self.gate("tag_add")
            await cast("GuardedBackend", self.backend).tag_add(self.tag_keys(tags), full, seconds)
        except BackendError as exc:
            self.backend_failed("tag_add", exc)
            return False
        self.succeeded()
        return True

    def tag_keys(self, tags: tuple[str, ...]) -> list[str]:
        """Returns the index keys of ``tags``."""
        return [self.keys.tag_key(tag) for tag in tags]

    async def begin(
        self, full: str, seen: bytes | None, spec: FetchSpec, tags: tuple[str, ...]
    ) -> bytes | None:
        """Prepares to compute ``full``: records its tags, and returns the guard of its write.

        The guard is what the key holds before the computation reads anything: the leading
        bytes of the entry there (``seen``, as the miss read it), or else a new lease put
        there. Every invalidation removes or replaces it, so a write conditional on it
        (`write`) stores only values computed after the last invalidation. Returns ``None``
        when the result must not be stored: another computation holds the key, tags cannot be
        recorded, or the backend failed.
        """
        # Tags first, before the computation reads anything, so an invalidation of a tag from
        # now on finds this key (its lease, or the entry being refreshed) and removes it.
        ttl = spec.ttl
        if tags and not await self.record_tags(
            full, tags, None if ttl is None else ttl + spec.freshness.keep_after_ttl + LEASE_TTL
        ):
            return None
        if not self.guarded:
            return _UNGUARDED
        try:
            self.gate("SET NX (lease)")
            if seen is not None and not _is_lease(seen):
                self.succeeded()
                return seen[:GUARD_SIZE]
            lease = new_lease()
            if await self.backend.add(full, lease, LEASE_TTL):
                self.succeeded()
                return lease
            current = await self.backend.get(full)
        except BackendError as exc:
            self.backend_failed("lease", exc)
            return None
        self.succeeded()
        if current is None or _is_lease(current):
            return None
        return current[:GUARD_SIZE]

    async def release(self, full: str, guard: bytes) -> None:
        """Removes the lease ``guard`` from ``full`` when its computation stores nothing."""
        if not _is_lease(guard):
            return
        try:
            self.gate("DEL (lease)")
            await cast("GuardedBackend", self.backend).delete_if(full, guard)
        except BackendError as exc:
            self.backend_failed("release lease", exc)
        else:
            self.succeeded()

    # -- reading ------------------------------------------------------------------------------

    def unseal(self, full: str, data: bytes) -> bytes:
        """Returns ``data`` with its signature checked and removed (``b""`` if it fails).

        Without a signing key, ``data`` is returned as it is. Counters are plain integers
        (INCRBY needs them so) and pass unsigned.
        """
        if self.signer is None or _is_lease(data) or _COUNTER.fullmatch(data):
            return data
        return self.signer.open(full, data) or b""

    def decode(
        self, data: bytes, loads: Callable[[bytes], object], now: float
    ) -> tuple[Outcome, object]:
        """Returns (HIT or STALE, value), (MISS, `MISSING`) for a lease or an entry of an
        earlier generation, or (DECODE_ERROR, the reason as text)."""
        if len(data) < HEADER_SIZE or data[0] != MAGIC or data[1] != _FORMAT:
            if _COUNTER.fullmatch(data):
                return Outcome.HIT, int(data)
            if _is_lease(data):
                return Outcome.MISS, MISSING
            return Outcome.DECODE_ERROR, "not a cachetier entry (foreign or corrupt value)"
        if not self.current(data):
            return Outcome.MISS, MISSING
        fresh_until = _FRESH.unpack_from(data, _FRESH_OFFSET)[0]
        try:
            value = loads(data[HEADER_SIZE:])
        except SerializationError as exc:
            return Outcome.DECODE_ERROR, str(exc)
        if not (not fresh_until or now < fresh_until):  # as in through(): NaN is never fresh
            return Outcome.STALE, value
        return Outcome.HIT, value

    async def read(self, full: str, loads: Callable[[bytes], object]) -> tuple[Outcome, object]:
        """Reads and decodes one entry for `Cache.get`; counts the outcome."""
        if self.bypassing.get():
            self.count(Outcome.BYPASSED, full)
            return Outcome.BYPASSED, MISSING
        local = self.local
        seq = 0
        if local is not None:
            value = self.local_get(full, self.serializer, None)
            if value is not MISSING:
                return Outcome.HIT, value
            seq = local.seq
        started = perf_counter_ns() if self.timing else 0
        try:
            data = await self.shared.get(full)
        except BackendError as exc:
            self.backend_failed("get", exc)
            self.count(Outcome.BACKEND_ERROR, full)
            return Outcome.BACKEND_ERROR, MISSING
        if started:
            self.stats.latency.record(perf_counter_ns() - started)
        if data is None:
            self.count(Outcome.MISS, full)
            return Outcome.MISS, MISSING
        now = self.clock()
        outcome, value = self.decode(self.unseal(full, data), loads, now)
        if outcome is Outcome.HIT:
            self.count(outcome, full)
            if local is not None:
                fresh_until = (
                    _FRESH.unpack_from(data, _FRESH_OFFSET)[0] if len(data) >= HEADER_SIZE else 0.0
                )
                local.keep(
                    full,
                    self.serializer,
                    value,
                    min(fresh_until or math.inf, now + local.settings.ttl),
                    seq,
                )
            return outcome, value
        if outcome is Outcome.DECODE_ERROR:
            await self.drop_undecodable(full, value)
            value = MISSING
        elif outcome is Outcome.MISS:
            self.count(outcome, full)
            return outcome, value
        # A stale entry is served only by policies that ask for it; a plain read misses.
        self.count(Outcome.MISS if outcome is Outcome.STALE else outcome, full)
        return outcome, value

    async def drop_undecodable(self, full: str, reason: object) -> None:
        """Drops an entry that cannot be served, so the next read recomputes it."""
        self.failures.warning("decode", "dropping unreadable cache entry %s: %s", full, reason)
        try:
            self.gate("UNLINK")
            await self.backend.delete(full)
        except BackendError as exc:
            self.backend_failed("delete", exc)

    async def fetch_one(self, full: str) -> bytes | None:
        """GETs ``full``; every ``generation_interval`` seconds, with the generation in one MGET.

        Keeping up with `bump_version` in other processes so costs no round trip of its own.
        One read at a time carries the generation; reads meanwhile use the one known.
        """
        if self.clock() < self.generation_due:
            return await self.backend.get(full)
        self.generation_due = self.clock() + self.generation_interval
        data, generation = await self.backend.get_many([full, self.generation_key])
        self.learn_generation(generation)
        return data

    async def load_many(self, keys: list[str]) -> list[bytes | None]:
        """GETs ``keys`` in one MGET, fetching the generation too when it is due."""
        self.gate("MGET")
        due = self.clock() >= self.generation_due
        if due:
            self.generation_due = self.clock() + self.generation_interval
        found = await self.backend.get_many([*keys, self.generation_key] if due else keys)
        if due:
            self.learn_generation(found.pop())
        self.succeeded()
        return found

    def learn_generation(self, raw: bytes | None) -> None:
        """Adopts the generation counter as read from the backend (absent: 0)."""
        self.adopt_generation(int(raw) if raw is not None and _COUNTER.fullmatch(raw) else 0)

    def adopt_generation(self, generation: int) -> None:
        """Makes ``generation`` the one entries are checked against and written with."""
        generation &= 0xFFFFFFFF
        self.generation = generation
        self.generation_bytes = _GENERATION.pack(generation)

    def current(self, data: bytes) -> bool:
        """Returns whether the entry ``data`` (header checked) is of the current generation.

        The counter only grows, so an entry of a later generation than the one known proves
        that generation was reached: it is adopted, and the entry is current.
        """
        if data[_GENERATION_OFFSET:_GENERATION_END] == self.generation_bytes:
            return True
        generation = _GENERATION.unpack_from(data, _GENERATION_OFFSET)[0]
        if generation < self.generation:
            return False
        self.adopt_generation(generation)
        return True

    async def peek(self, full: str, codec: Serializer) -> Any:
        """Returns the fresh value at ``full``, or `MISSING`; counts nothing."""
        data = await self.backend.get(full)
        if data is not None and self.signer is not None:
            data = self.signer.open(full, data)
        if (
            data is None
            or len(data) < HEADER_SIZE
            or data[0] != MAGIC
            or data[1] != _FORMAT
            or not self.current(data)
        ):
            return MISSING
        fresh_until = _FRESH.unpack_from(data, _FRESH_OFFSET)[0]
        if fresh_until and not self.clock() < fresh_until:
            return MISSING
        try:
            return codec.loads(data[HEADER_SIZE:])
        except SerializationError:
            return MISSING

    # -- read-through -------------------------------------------------------------------------

    async def through(
        self,
        full: str,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        spec: FetchSpec,
    ) -> Any:
        """Reads ``full``; on a miss computes it once (per process, or per cluster with a lock).

        The one place where freshness, stampede and fail-open rules meet: `Cache.get_or_set`
        and every decorated call come here. ``func(*args, **kwargs)`` computes the value on a
        miss. The fresh hit is the hot path: it allocates nothing it does not return.
        """
        function_stats = spec.stats
        breaker = self.breaker
        if self.bypassing.get():
            self.count(Outcome.BYPASSED, full, function_stats)
            result = func(*args, **kwargs)
            return (await result) if inspect.isawaitable(result) else result
        if breaker.open_until and not self.strict and breaker.blocked():
            # The server is known to be down: run the function as if no cache existed, with no
            # single flight, serialization or write, so an outage costs microseconds a call.
            self.count(Outcome.BACKEND_ERROR, full, function_stats)
            result = func(*args, **kwargs)
            return (await result) if inspect.isawaitable(result) else result
        # The local tier was asked first (`local_get`); this read may keep what it finds there.
        local = self.local
        seq = 0 if local is None else local.seq
        read_failed = False
        # Latency is measured for backends that do I/O; an in-process one would only pay for it.
        started = perf_counter_ns() if self.timing else 0
        try:
            data = await self.shared.get(full)
        except BackendError as exc:
            self.backend_failed("get", exc)
            self.count(Outcome.BACKEND_ERROR, full, function_stats)
            data = None
            # The backend just failed us: computing is enough, a write would wait on it again.
            read_failed = True
        else:
            if started:
                waited = perf_counter_ns() - started
                self.stats.latency.record(waited)
                if function_stats is not None:
                    function_stats.latency.record(waited)
            if data is None or (len(data) == _LEASE_SIZE and data[:2] == _LEASE):
                # Absent, or leased by a computation under way (which will store it).
                self.count(Outcome.MISS, full, function_stats)
                data = None
        # The entry as stored: a computation stores only if the key still holds it (`begin`).
        seen = data
        stale: bytes | None = None
        if data is not None and self.signer is not None:
            opened = self.signer.open(full, data)
            if opened is None:
                await self.drop_undecodable(full, _UNSIGNED)
                self.count(Outcome.DECODE_ERROR, full, function_stats)
                seen = None
            data = opened
        if data is not None:
            if len(data) >= HEADER_SIZE and data[0] == MAGIC and data[1] == _FORMAT:
                fresh_until = _FRESH.unpack_from(data, _FRESH_OFFSET)[0]
                now = self.clock()
                freshness = spec.freshness
                fresh = not fresh_until or now < fresh_until
                if data[_GENERATION_OFFSET:_GENERATION_END] != self.generation_bytes and (
                    not self.current(data)
                ):
                    # Written before `bump_version`: neither fresh nor stale, only gone.
                    self.count(Outcome.MISS, full, function_stats)
                elif fresh or (freshness.stale_ttl and now < fresh_until + freshness.stale_ttl):
                    try:
                        value = spec.codec.loads(data[HEADER_SIZE:])
                    except SerializationError as exc:
                        await self.drop_undecodable(full, exc)
                        self.count(Outcome.DECODE_ERROR, full, function_stats)
                        seen = None
                    else:
                        if not fresh:
                            # Stale-while-revalidate: serve it, and refresh it in the background.
                            self.count(Outcome.STALE, full, function_stats)
                            self.refresh_soon(
                                full,
                                functools.partial(func, *args, **kwargs),
                                spec,
                                seen,
                                self.resolve_tags(spec, args, kwargs),
                            )
                            return value
                        # A hit, counted inline: record() and its branches cost a microsecond.
                        self.stats.hits += 1
                        if function_stats is not None:
                            function_stats.hits += 1
                        if self.hooks:
                            self._notify(
                                ReadEvent(full, Outcome.HIT, function_stats and function_stats.name)
                            )
                        if _debug_enabled(logging.DEBUG):
                            LOGGER.debug("cache hit: %s", full)
                        if local is not None:
                            local.keep(
                                full,
                                spec.codec,
                                value,
                                min(fresh_until or math.inf, now + local.settings.ttl),
                                seq,
                            )
                        beta = freshness.early_refresh_beta
                        if beta and fresh_until:
                            delta = _DELTA.unpack_from(data, _DELTA_OFFSET)[0]
                            if _xfetch_due(now, fresh_until, delta, beta):
                                self.refresh_soon(
                                    full,
                                    functools.partial(func, *args, **kwargs),
                                    spec,
                                    seen,
                                    self.resolve_tags(spec, args, kwargs),
                                )
                        return value
                else:
                    if freshness.stale_if_error and now < fresh_until + freshness.stale_if_error:
                        stale = data[HEADER_SIZE:]
                    self.count(Outcome.MISS, full, function_stats)
            else:
                await self.drop_undecodable(full, "not an entry written by a cached function")
                self.count(Outcome.DECODE_ERROR, full, function_stats)
                seen = None

        produce = functools.partial(func, *args, **kwargs)
        tags = self.resolve_tags(spec, args, kwargs)

        async def compute() -> Any:
            return await self.compute(
                full, produce, spec, write=not read_failed, seen=seen, tags=tags
            )

        if stale is None:
            value, _ = await self.flights.run(full, compute)
            return value
        try:
            value, _ = await self.flights.run(full, compute)
        except Exception as exc:  # noqa: BLE001  # stale-if-error absorbs exactly the fetch's own errors
            try:
                value = spec.codec.loads(stale)
            except SerializationError:
                raise exc from None
            self.count(Outcome.STALE, full, function_stats)
            self.failures.warning(
                "stale_if_error", "serving the stale value of %s: computing it raised %r", full, exc
            )
        return value

    @staticmethod
    def resolve_tags(
        spec: FetchSpec, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[str, ...]:
        """Returns the tags of one call."""
        return () if spec.tags is None else spec.tags(args, kwargs)

    def refresh_soon(
        self,
        full: str,
        produce: Callable[[], Any],
        spec: FetchSpec,
        seen: bytes | None,
        tags: tuple[str, ...],
    ) -> None:
        """Starts one background recomputation of ``full`` unless one is already under way."""
        if self.flights.is_running(full):
            return
        self.stats.refreshes += 1
        if spec.stats is not None:
            spec.stats.refreshes += 1

        async def compute() -> Any:
            return await self.compute(full, produce, spec, seen=seen, tags=tags)

        task, _ = self.flights.start(full, compute)
        task.add_done_callback(self._log_failed_refresh)

    def _log_failed_refresh(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.failures.warning(
                "refresh", "background refresh failed, the old value stays: %r", exc
            )

    async def compute(
        self,
        full: str,
        produce: Callable[[], Any],
        spec: FetchSpec,
        *,
        write: bool = True,
        seen: bytes | None = None,
        tags: tuple[str, ...] = (),
    ) -> Any:
        """Computes and stores ``full``, under a cross-process lock when the policy asks for one.

        ``seen`` is the entry the miss read found at ``full`` (``None``: nothing usable) and
        ``tags`` the tags to record. With ``write=False`` the value is only computed: neither
        locked nor stored.
        """
        if not write:
            return await self.fetch_and_store(full, produce, spec, write=False)
        backend = self.backend
        if (
            spec.stampede.lock
            and isinstance(backend, LockingBackend)
            and not self.breaker.open_until
        ):
            return await compute_locked(self, backend, full, produce, spec, seen, tags)
        return await self.fetch_and_store(full, produce, spec, seen=seen, tags=tags)

    async def fetch_and_store(
        self,
        full: str,
        produce: Callable[[], Any],
        spec: FetchSpec,
        *,
        write: bool = True,
        seen: bytes | None = None,
        tags: tuple[str, ...] = (),
    ) -> Any:
        """Calls ``produce`` (awaiting what it returns, if awaitable) and stores the result.

        The write is guarded (`begin`): it stores only if no invalidation reached ``full``
        since before ``produce`` was called.
        """
        guard = await self.begin(full, seen, spec, tags) if write else None
        generation = self.generation
        started = time.perf_counter()
        try:
            result = produce()
            if inspect.isawaitable(result):
                result = await result
        except BaseException:
            if guard:
                await self.release(full, guard)
            raise
        delta = time.perf_counter() - started
        stored = False
        if guard is not None and (spec.should_store is None or spec.should_store(result)):
            stored = await self.store_quietly(full, result, spec, delta, guard, generation)
        if guard and not stored:
            await self.release(full, guard)
        return result


def _is_lease(data: bytes) -> bool:
    """Returns whether ``data`` is a lease (see `begin`) rather than a value."""
    return len(data) == _LEASE_SIZE and data[:2] == _LEASE


def _xfetch_due(now: float, fresh_until: float, delta: float, beta: float) -> bool:
    """XFetch: refresh early with a probability that grows near expiry and with compute time.

    ``now - delta * beta * ln(U)`` for uniform ``U`` in (0, 1] reaches ``fresh_until`` early
    more often the longer the value took to compute (``delta``); see Vattani et al., VLDB 2015.
    """
    u = 1.0 - random.random()  # noqa: S311  # a refresh schedule, not security
    return now - delta * beta * math.log(u) >= fresh_until
