"""`Engine`: the machinery behind `Cache` — reads, stores, fetch-through, refreshes and locks.

`Cache` is the façade users hold: it checks arguments, builds keys and documents behaviour.
The engine holds the state those operations share (the backend, stats, hooks, in-flight
reads and computations, background tasks) and implements the rules once: how an entry is
encoded, when it is fresh or stale, how concurrent misses merge, and how a failure fails open.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import math
import random
import re
import secrets
import struct
import time
import weakref
import zlib
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Final, cast, final

from ._breaker import CircuitBreaker
from ._entry import (
    FORMAT,
    GUARD_SIZE,
    HEADER_SIZE,
    LEASE_PREFIX,
    MAGIC,
    EntrySigner,
    encode_entry,
    entry_tags,
    new_lease,
    new_stamp,
)
from ._errors import (
    BackendError,
    CircuitOpenError,
    CounterError,
    SerializationError,
    ValueRejected,
)
from ._glob import compile_glob
from ._journal import Journal
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

__all__ = ("LEASE_TTL", "TAG_KEEP", "Engine", "FetchSpec", "Opened", "check_tags")

# Bound once: asked on every read, and the logging module caches its answer per level.
_debug_enabled: Final = LOGGER.isEnabledFor
_GENERATION: Final = struct.Struct("<Q")
_GENERATION_OFFSET: Final = 4
_GENERATION_END: Final = 12
_FRESH: Final = struct.Struct("<d")
_FRESH_OFFSET: Final = 20
_DELTA: Final = struct.Struct("<f")
_DELTA_OFFSET: Final = 28
# A generation is an epoch (its high 32 bits: random, drawn when a store has no generation) and
# a count of bumps in that epoch (its low 32 bits; INCR adds to them). No two lifetimes of a
# generation key (flushed, restarted, evicted) then share an epoch but by a 2**-31 chance, and
# within one epoch the count only grows, so an entry of a later count proves a bump happened.
_EPOCH_SHIFT: Final = 32
_EPOCH_SPAN: Final = (1 << 31) - 1
_GENERATION_MASK: Final = (1 << 64) - 1
_BATCH: Final = 500
TAG_KEEP: Final = 60.0
"""Seconds a tag's new stamp is kept after `Cache.invalidate_tags` unless an entry needs it
longer: its entries from before are invalid whatever happens to it, so it may expire."""
LEASE_TTL: Final = 60.0
"""Seconds a lease holds the key of a value being computed; a longer computation is not stored."""
_UNGUARDED: Final = b""
"""The guard of a write to a backend without `GuardedBackend`: a plain SET."""
_LEASE: Final = LEASE_PREFIX
_LEASE_SIZE: Final = len(LEASE_PREFIX) + 16
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
        "flight_stamps",
        "flights",
        "generation",
        "generation_bytes",
        "generation_due",
        "generation_interval",
        "generation_key",
        "generation_seen",
        "generation_sent",
        "guarded",
        "hooks",
        "jitter",
        "journal",
        "keys",
        "local",
        "local_settings",
        "max_value_bytes",
        "merge_reads",
        "overtaken",
        "replaying",
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
        journal_limit: int = 1000,
    ) -> None:
        self.timing_wanted = latency_stats
        self.local_settings = local
        self.local: LocalState | None = None
        self.keys = keys
        self.generation_key = keys.generation_key()
        self.failures = RateLimitedLog()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.journal = Journal(journal_limit)
        self.replaying: asyncio.Task[None] | None = None
        self.generation_interval = generation_interval
        self.set_backend(backend)
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
        # Computations an invalidation overtook, and the tag stamps each recorded: what a
        # caller that joined one checks before taking its result (`run_flight`).
        self.overtaken: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self.flight_stamps: weakref.WeakKeyDictionary[
            asyncio.Task[Any], list[tuple[str, bytes]]
        ] = weakref.WeakKeyDictionary()
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
        # The namespace generation (`Cache.bump_version`) of this store is unknown until a read
        # or a write learns it (`learn_generation`); until then every read asks for it.
        self.generation: int | None = None
        self.generation_bytes = b""
        self.generation_due = -math.inf
        # Generation reads sent, and the latest one whose answer was adopted (see `learn`).
        self.generation_sent = 0
        self.generation_seen = 0
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
        if not isinstance(exc, CircuitOpenError | CounterError | ValueRejected):
            # A refused value is the value's fault, not a sign the backend is down.
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

    def dumps(self, full: str, value: object, codec: Serializer) -> bytes | None:
        """Returns the payload of ``value``, or ``None`` (logged) when it is too large to cache.

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
        return payload

    def entry(
        self,
        full: str,
        payload: bytes,
        seconds: float | None,
        *,
        generation: int,
        delta: float = 0.0,
        tags: Sequence[tuple[str, bytes]] = (),
    ) -> bytes:
        """Returns the stored form of ``payload``: fresh for ``seconds``, signed if signing."""
        now = self.clock()
        data = encode_entry(
            payload,
            created=now,
            fresh_until=0.0 if seconds is None else now + seconds,
            delta=delta,
            generation=generation,
            tags=tags,
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
            if self.journal.pending:
                await self.replay()
            if guard:
                if not await cast("GuardedBackend", self.backend).set_if(
                    full, guard, data, seconds
                ):
                    self.succeeded()
                    self.overtaken_now()
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
        guard: bytes,
        generation: int,
        tags: Sequence[tuple[str, bytes]],
    ) -> bool:
        """Stores a computed value; a value that cannot be stored is logged, never raised.

        Returns whether it was stored.
        """
        seconds = self.jittered(spec.ttl)
        try:
            payload = self.dumps(full, value, spec.codec)
        except SerializationError as exc:
            self.failures.warning("serialize", "not caching %s: %s", full, exc)
            return False
        if payload is None:
            return False
        data = self.entry(full, payload, seconds, generation=generation, delta=delta, tags=tags)
        physical = None if seconds is None else seconds + spec.freshness.keep_after_ttl
        if not await self.write(full, data, physical, guard):
            return False
        if spec.stats is not None:
            spec.stats.sets += 1
        return True

    # -- guarding computations against invalidation -------------------------------------------

    def changed(self, keys: list[str] | tuple[str, ...]) -> None:
        """Forgets what this process read or is computing of ``keys``: it changed them.

        Called when a write or an invalidation of ``keys`` has returned (or failed, since a
        failed call may still have reached the store): from then on, no caller may be handed
        a read or a computation that was under way before, since it may hold what the keys
        held before the change. Reads and computations under way finish for their own
        callers; the local tier keeps nothing they bring back.
        """
        self.shared.detach(keys)
        self.flights.detach(keys)
        if self.local is not None:
            self.local.drop(keys)

    def changed_matching(self, full_pattern: str) -> None:
        """Like `changed`, for the keys that match a Redis glob (`Cache.delete_pattern`)."""
        matches = compile_glob(full_pattern).fullmatch
        self.shared.detach([key for key in self.shared.reads if matches(key)])
        self.flights.detach([key for key in self.flights.running() if matches(key)])
        if self.local is not None:
            self.local.drop_matching(full_pattern)

    def changed_all(self) -> None:
        """Like `changed`, for every key of this cache (tags, patterns, versions, clear)."""
        self.shared.detach()
        self.flights.detach()
        if self.local is not None:
            self.local.clear()

    async def holds_value(self, full: str, data: bytes) -> bool:
        """Returns whether ``data`` stored at ``full`` is a value: not a lease, not of another
        generation, not invalidated through a tag."""
        opened = self.examine(full, data)
        if isinstance(opened, Opened):
            return not opened.tag_keys or await self.tags_hold(opened.tag_keys, opened.stamps)
        # A miss is a lease, an entry of another generation, or (signed cache) a plain integer,
        # which is still a counter that exists. Anything else a read would refuse is there.
        return opened[0] is not Outcome.MISS or (
            not _is_lease(data) and _COUNTER.fullmatch(data) is not None
        )

    async def tags_hold(self, keys: list[str], stamps: list[bytes]) -> bool:
        """Returns whether every tag key still holds the stamp an entry recorded.

        A backend failure answers ``False``: an entry whose tags cannot be checked is a miss.
        """
        current = await self.current_stamps(keys)
        return current == stamps

    async def current_stamps(self, keys: list[str]) -> list[bytes | None] | None:
        """Returns the stamps the tag ``keys`` hold now, in one MGET; ``None`` when the backend
        failed (logged, counted)."""
        try:
            self.gate("MGET (tags)")
            current = await self.backend.get_many(keys)
        except BackendError as exc:
            self.backend_failed("tags", exc)
            return None
        self.succeeded()
        return current

    async def stamp_tags(
        self, full: str, tags: tuple[str, ...], seconds: float | None
    ) -> list[tuple[str, bytes]] | None:
        """Returns (tag key, stamp) for each of ``tags``, to record in the entry of ``full``.

        Taken before the value is computed, so that an invalidation of any of the tags from
        now on changes a stamp and the entry is never served. Each tag key is kept at least
        ``seconds``. Returns ``None`` when the stamps cannot be had (the backend failed, or
        keeps no tags): the value must then not be cached, since `Cache.invalidate_tags`
        could not reach it.
        """
        if not self.guarded:
            self.failures.warning(
                "tags",
                "not caching %s: its backend %s keeps no tags",
                full,
                self.backend.kind,
            )
            return None
        keys = self.tag_keys(tags)
        try:
            self.gate("tag stamps")
            stamps = await cast("GuardedBackend", self.backend).tag_stamps(
                keys, new_stamp(), seconds
            )
        except BackendError as exc:
            self.backend_failed("tag stamps", exc)
            return None
        self.succeeded()
        return list(zip(keys, stamps, strict=True))

    def tag_keys(self, tags: tuple[str, ...]) -> list[str]:
        """Returns the keys that hold the stamps of ``tags``."""
        return [self.keys.tag_key(tag) for tag in tags]

    async def known_generation(self, operation: str) -> int | None:
        """Returns the generation to write with, learning it first if due; ``None`` when the
        backend failed open (logged, counted)."""
        if (
            self.generation is not None
            and self.clock() < self.generation_due
            and not self.journal.pending
        ):
            return self.generation
        try:
            self.gate(operation)
            await self.trusted()
            await self.ensure_generation()
        except BackendError as exc:
            self.backend_failed(operation, exc)
            return None
        self.succeeded()
        return self.generation

    async def begin(self, full: str, seen: bytes | None) -> bytes | None:
        """Prepares to compute ``full``: returns the guard of its write.

        The guard is what the key holds before the computation reads anything: the leading
        bytes of the entry there (``seen``, as the miss read it), or else a new lease put
        there. Every invalidation of the key removes or replaces it, so a write conditional
        on it (`write`) stores only values computed after the last invalidation. Returns
        ``None`` when the result must not be stored: another computation holds the key, or
        the backend failed. Also learns the generation if not known, to write with.
        """
        try:
            self.gate("SET NX (lease)")
            await self.trusted()
            await self.ensure_generation()
            if not self.guarded:
                self.succeeded()
                return _UNGUARDED
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
            held = await cast("GuardedBackend", self.backend).delete_if(full, guard)
        except BackendError as exc:
            self.backend_failed("release lease", exc)
        else:
            self.succeeded()
            if not held:
                self.overtaken_now()  # the lease was gone: an invalidation removed it

    # -- computations that an invalidation overtook --------------------------------------------

    def overtaken_now(self) -> None:
        """Marks the computation running in the current task as overtaken by an invalidation."""
        task = asyncio.current_task()
        if task is not None:
            self.overtaken.add(task)

    async def run_flight(self, full: str, compute: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Returns the result of the one computation of ``full`` in this process, joining it.

        A caller that joins a computation already under way gets its result only if no
        invalidation overtook it: one from another process (which this process cannot see
        coming) removes its lease or replaces the stamps of its tags, and its result, read from
        the database before that invalidation, is then no answer for a call that may have
        started after it. Such callers compute again, together. The caller that started the
        computation takes its result either way: it started before the invalidation.
        """
        task, leader = self.flights.start(full, compute)
        value = await asyncio.shield(task)
        if leader or not await self.was_overtaken(task):
            return value
        self.flights.forget(full, task)
        task, _ = self.flights.start(full, compute)
        return await asyncio.shield(task)

    async def was_overtaken(self, task: asyncio.Task[Any]) -> bool:
        """Whether an invalidation overtook the computation ``task`` ran (see `run_flight`)."""
        if task in self.overtaken:
            return True
        stamps = self.flight_stamps.get(task)
        if not stamps:
            return False
        return not await self.tags_hold([key for key, _ in stamps], [s for _, s in stamps])

    # -- invalidations that failed: the journal ----------------------------------------------

    async def trusted(self) -> None:
        """Replays the journal first if it holds anything (see `replay`)."""
        if self.journal.pending:
            await self.replay()

    async def replay(self) -> None:
        """Replays the invalidations that failed to reach the backend; one replay at a time.

        Every backend call asks for this first while the journal holds anything, so nothing is
        read from the backend, nor written to it, before the invalidations this process owes
        it have gone through: a read that finds the replay failing fails too (a miss, and the
        function runs), and the journal is kept for the next try.

        Raises:
            BackendError: the backend still fails; the journal keeps everything.
        """
        task = self.replaying
        if task is None or task.done():
            task = self.replaying = asyncio.get_running_loop().create_task(self._replay())
            self.track(task)
        # Shielded: a caller that gives up (a timeout, a client gone) leaves it running for
        # the others, and the journal is never half taken.
        await asyncio.shield(task)

    async def _replay(self) -> None:
        pending = self.journal.take()
        if not pending.size():
            return
        backend = self.backend
        try:
            if pending.bump:
                # A bump stands for everything else the journal held.
                await self.start_generation()
                self.bumped(await backend.incr(self.generation_key))
            else:
                if pending.clear:
                    _, failure = await self.unlink_matching(self.keys.pattern("*"), tag_keys=True)
                    if failure is not None:
                        raise failure
                for pattern in sorted(pending.patterns):
                    _, failure = await self.unlink_matching(pattern, tag_keys=False)
                    if failure is not None:
                        raise failure
                keys = sorted(pending.keys)
                for start in range(0, len(keys), _BATCH):
                    await backend.delete(*keys[start : start + _BATCH])
                if pending.tags and self.guarded:
                    await cast("GuardedBackend", backend).tag_bump(
                        sorted(pending.tags), new_stamp(), TAG_KEEP
                    )
        except BaseException:
            self.journal.give_back(pending)
            raise
        self.journal.replayed += 1
        self.changed_all()
        LOGGER.warning(
            "cache %s: replayed %d invalidations that failed while the backend was unreachable%s",
            self.keys.prefix.rstrip(":"),
            pending.size(),
            " (as one bump_version: more than the journal holds)" if pending.bump else "",
        )

    async def unlink_matching(
        self,
        full_pattern: str,
        *,
        tag_keys: bool,
        on_progress: Callable[[int, int], object] | None = None,
    ) -> tuple[int, BackendError | None]:
        """SCANs for the keys matching ``full_pattern`` and UNLINKs them in batches.

        Returns how many it removed and, if the backend failed part way, the failure. The
        generation is never removed: processes still reading at it would otherwise disagree
        with those that see it gone. Tag stamps go only when ``tag_keys`` (`Cache.clear`): a
        pattern may well match one by chance (``*:1`` and the stamp of tag ``project:1``).
        ``on_progress`` is called after each SCAN step with the keys scanned and removed so far.
        """
        generation_key = self.generation_key
        tag_prefix = self.keys.tag_key("")
        backend = self.backend
        deleted = scanned = 0
        # Each batch's UNLINK runs while the next SCAN step is under way: one round trip per
        # batch instead of two, and still at most one batch of keys in flight.
        unlinking: asyncio.Future[int] | None = None
        try:
            async for batch in backend.scan(full_pattern, count=_BATCH):
                scanned += len(batch)
                keys = [
                    key
                    for key in batch
                    if key != generation_key and (tag_keys or not key.startswith(tag_prefix))
                ]
                if unlinking is not None:
                    deleted += await unlinking
                    unlinking = None
                if keys:
                    unlinking = asyncio.ensure_future(backend.delete(*keys))
                if on_progress is not None:
                    on_progress(scanned, deleted)
            if unlinking is not None:
                deleted += await unlinking
                unlinking = None
        except BackendError as exc:
            return deleted, exc
        finally:
            if unlinking is not None:
                # The scan failed or was cancelled: let the batch under way finish, so that
                # what it removed is counted and no task is left behind.
                with contextlib.suppress(BackendError):
                    deleted += await asyncio.shield(unlinking)
        return deleted, None

    # -- reading ------------------------------------------------------------------------------

    def examine(self, full: str, data: bytes) -> Opened | tuple[Outcome, object]:
        """Opens stored ``data`` as far as it can be without decoding its value.

        Returns the entry (signature checked and removed, tags parsed), or the final outcome:
        (HIT, int) for a counter, (MISS, `MISSING`) for a lease, an entry of another
        generation or, in a signed cache, a plain integer, or (DECODE_ERROR, the reason).
        """
        signer = self.signer
        # An unsigned entry, the common case, is told apart by its first byte alone.
        if signer is not None or not data or data[0] != MAGIC:
            if _is_lease(data):
                return Outcome.MISS, MISSING
            if _COUNTER.fullmatch(data):
                if signer is not None:
                    # A plain integer cannot be told from a counter (INCRBY needs them
                    # unsigned), and anyone who can write to the store can write one: a signed
                    # cache serves none, and drops none either. `incr(key, 0)` reads a counter.
                    return Outcome.MISS, MISSING
                return Outcome.HIT, int(data)
            if signer is not None:
                opened = signer.open(full, data)
                if opened is None:
                    return Outcome.DECODE_ERROR, _UNSIGNED
                data = opened
        if len(data) < HEADER_SIZE or data[0] != MAGIC or data[1] != FORMAT:
            return Outcome.DECODE_ERROR, "not a cachetier entry (foreign or corrupt value)"
        if not self.current(data):
            return Outcome.MISS, MISSING
        if not data[2]:
            return Opened(data, _NO_TAGS, _NO_STAMPS, HEADER_SIZE)
        try:
            keys, stamps, offset = entry_tags(data)
        except (ValueError, IndexError, struct.error) as exc:
            return Outcome.DECODE_ERROR, f"its tag section is unreadable: {exc}"
        return Opened(data, keys, stamps, offset)

    @staticmethod
    def finish(
        opened: Opened, loads: Callable[[bytes], object], now: float
    ) -> tuple[Outcome, object]:
        """Decodes an entry whose tags hold: (HIT or STALE, value) or (DECODE_ERROR, reason)."""
        data = opened.data
        fresh_until = _FRESH.unpack_from(data, _FRESH_OFFSET)[0]
        try:
            value = loads(data[opened.offset :])
        except SerializationError as exc:
            return Outcome.DECODE_ERROR, str(exc)
        if not (not fresh_until or now < fresh_until):  # as in through(): NaN is never fresh
            return Outcome.STALE, value
        return Outcome.HIT, value

    async def decode(
        self, full: str, data: bytes, loads: Callable[[bytes], object], now: float
    ) -> tuple[Outcome, object]:
        """Returns what stored ``data`` means for a plain read: see `examine` and `finish`;
        an entry invalidated through one of its tags is (MISS, `MISSING`)."""
        opened = self.examine(full, data)
        if not isinstance(opened, Opened):
            return opened
        if opened.tag_keys and not await self.tags_hold(opened.tag_keys, opened.stamps):
            return Outcome.MISS, MISSING
        return self.finish(opened, loads, now)

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
        opened = self.examine(full, data)
        if not isinstance(opened, Opened):
            outcome, value = opened
        elif opened.tag_keys and not await self.tags_hold(opened.tag_keys, opened.stamps):
            outcome, value = Outcome.MISS, MISSING
        else:
            outcome, value = self.finish(opened, loads, now)
        if outcome is Outcome.HIT:
            self.count(outcome, full)
            if local is not None and isinstance(opened, Opened):
                fresh_until = _FRESH.unpack_from(opened.data, _FRESH_OFFSET)[0]
                local.keep(
                    full,
                    self.serializer,
                    value,
                    min(fresh_until or math.inf, now + local.settings.ttl),
                    seq,
                    opened.tag_keys,
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
        Once the generation known is due for a check, every read asks for it until an answer
        has been adopted: a read that took the one known meanwhile could serve an entry from
        before a bump older than the interval.
        """
        if self.journal.pending:
            await self.replay()
        if self.generation is not None and self.clock() < self.generation_due:
            return await self.backend.get(full)
        sent_at = self.clock()
        self.generation_sent = sent = self.generation_sent + 1
        data, generation = await self.backend.get_many([full, self.generation_key])
        await self.learn_generation(generation, sent, sent_at)
        return data

    async def load_many(self, keys: list[str]) -> list[bytes | None]:
        """GETs ``keys`` in one MGET, fetching the generation too when it is due."""
        self.gate("MGET")
        if self.journal.pending:
            await self.replay()
        due = self.generation is None or self.clock() >= self.generation_due
        if not due:
            found = await self.backend.get_many(keys)
        else:
            sent_at = self.clock()
            self.generation_sent = sent = self.generation_sent + 1
            found = await self.backend.get_many([*keys, self.generation_key])
            await self.learn_generation(found.pop(), sent, sent_at)
        self.succeeded()
        return found

    async def ensure_generation(self) -> None:
        """Learns the generation unless known and checked within ``generation_interval``.

        A write must record the generation readers check: one written under a generation
        another process has since bumped would be stored, and then never read.
        """
        if self.generation is not None and self.clock() < self.generation_due:
            return
        sent_at = self.clock()
        self.generation_sent = sent = self.generation_sent + 1
        await self.learn_generation(await self.backend.get(self.generation_key), sent, sent_at)

    async def learn_generation(self, raw: bytes | None, sent: int, sent_at: float) -> None:
        """Adopts the generation as read by the ``sent``-th generation read, sent at ``sent_at``.

        It is then trusted for ``generation_interval`` from when it was asked for, not from
        when the answer came: it may have been true only then.

        An answer older than one already adopted, or than this process's own `bump_version`,
        is ignored: replies on different connections arrive in any order, and adopting a
        stale one would make entries from before a bump current again. A store that holds
        no generation (new, flushed, restarted without persistence, or evicted it) is given
        a random one, never a fixed start: entries written under any earlier generation can
        then never match it by accident.
        """
        if raw is None or not _COUNTER.fullmatch(raw):
            raw = await self.start_generation()
        if sent <= self.generation_seen:
            return
        self.generation_seen = sent
        found = (int(raw) if _COUNTER.fullmatch(raw) else zlib.crc32(raw)) & _GENERATION_MASK
        known = self.generation
        if known is None or found >> _EPOCH_SHIFT != known >> _EPOCH_SHIFT or found > known:
            # Within an epoch the count only grows: a lower one is an answer overtaken by a
            # later count this process saw in an entry.
            self.adopt_generation(found)
        self.generation_due = sent_at + self.generation_interval

    async def start_generation(self) -> bytes:
        """Stores a random generation unless one is there; returns the one stored."""
        start = (secrets.randbelow(_EPOCH_SPAN) + 1) << _EPOCH_SHIFT
        if await self.backend.add(self.generation_key, str(start).encode(), None):
            return str(start).encode()
        return await self.backend.get(self.generation_key) or str(start).encode()

    def adopt_generation(self, generation: int) -> None:
        """Makes ``generation`` the one entries are checked against and written with."""
        generation &= _GENERATION_MASK
        if generation != self.generation and self.generation is not None:
            # Another process bumped (or the store lost its generation): nothing this
            # process remembers from before is current.
            self.changed_all()
        self.generation = generation
        self.generation_bytes = _GENERATION.pack(generation)

    def bumped(self, generation: int) -> None:
        """Adopts the generation this process's `bump_version` just set.

        Generation reads sent before it are answered with what was there before: ignored.
        """
        self.generation_sent = self.generation_seen = self.generation_sent + 1
        self.adopt_generation(generation)
        self.generation_due = self.clock() + self.generation_interval
        self.changed_all()

    def current(self, data: bytes) -> bool:
        """Returns whether the entry ``data`` (header checked) is of the current generation.

        An entry of a later count in the same epoch proves that another process bumped the
        generation: it is adopted, and the entry is current. Any other generation is not: an
        earlier count was bumped away, and another epoch belongs to another life of the store,
        in which no order means anything. Such an entry also makes the next read learn the
        generation again, in case another process has just bumped it.
        """
        if data[_GENERATION_OFFSET:_GENERATION_END] == self.generation_bytes:
            return True
        known = self.generation
        found = _GENERATION.unpack_from(data, _GENERATION_OFFSET)[0]
        if known is not None and found > known and found >> _EPOCH_SHIFT == known >> _EPOCH_SHIFT:
            # Newer than any generation read under way can answer: those answers are ignored.
            self.generation_seen = self.generation_sent
            self.adopt_generation(found)
            return True
        self.generation_due = -math.inf
        return False

    async def peek(self, full: str, codec: Serializer) -> Any:
        """Returns the fresh value at ``full``, or `MISSING`; counts nothing."""
        await self.trusted()
        data = await self.backend.get(full)
        if data is None:
            return MISSING
        outcome, value = await self.decode(full, data, codec.loads, self.clock())
        return value if outcome is Outcome.HIT else MISSING

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
            if len(data) >= HEADER_SIZE and data[0] == MAGIC and data[1] == FORMAT:
                fresh_until = _FRESH.unpack_from(data, _FRESH_OFFSET)[0]
                now = self.clock()
                freshness = spec.freshness
                fresh = not fresh_until or now < fresh_until
                offset = HEADER_SIZE
                tag_keys: list[str] = []
                gone = False
                if data[_GENERATION_OFFSET:_GENERATION_END] != self.generation_bytes and (
                    not self.current(data)
                ):
                    # Written before `bump_version`: neither fresh nor stale, only gone.
                    gone = True
                    self.count(Outcome.MISS, full, function_stats)
                elif data[2]:
                    try:
                        tag_keys, stamps, offset = entry_tags(data)
                    except (ValueError, IndexError, struct.error) as exc:
                        await self.drop_undecodable(full, f"its tag section is unreadable: {exc}")
                        self.count(Outcome.DECODE_ERROR, full, function_stats)
                        gone = True
                        seen = None
                    else:
                        if not await self.tags_hold(tag_keys, stamps):
                            # Invalidated through a tag: gone, not even stale.
                            gone = True
                            self.count(Outcome.MISS, full, function_stats)
                if gone:
                    pass
                elif fresh or (freshness.stale_ttl and now < fresh_until + freshness.stale_ttl):
                    try:
                        value = spec.codec.loads(data[offset:])
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
                                tag_keys,
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
                        stale = data[offset:]
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
            return await self.run_flight(full, compute)
        try:
            value = await self.run_flight(full, compute)
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
        force: bool = False,
    ) -> Any:
        """Computes and stores ``full``, under a cross-process lock when the policy asks for one.

        ``seen`` is the entry the miss read found at ``full`` (``None``: nothing usable) and
        ``tags`` the tags to record. With ``write=False`` the value is only computed: neither
        locked nor stored. With ``force``, the value is computed even when the lock's holder
        stored one meanwhile (a refresh asked for a new value).
        """
        if not write:
            return await self.fetch_and_store(full, produce, spec, write=False)
        backend = self.backend
        if (
            spec.stampede.lock
            and isinstance(backend, LockingBackend)
            and not self.breaker.open_until
        ):
            return await compute_locked(self, backend, full, produce, spec, seen, tags, force=force)
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
        guard = await self.begin(full, seen) if write else None
        stamps: list[tuple[str, bytes]] | None = []
        if guard is not None and tags:
            ttl = spec.ttl
            stamps = await self.stamp_tags(
                full,
                tags,
                None if ttl is None else ttl + spec.freshness.keep_after_ttl + LEASE_TTL,
            )
            if stamps is None:
                await self.release(full, guard)
                guard = None
        generation = self.generation
        if stamps:
            task = asyncio.current_task()
            if task is not None:
                self.flight_stamps[task] = stamps
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
        if (
            guard is not None
            and generation is not None
            and (spec.should_store is None or spec.should_store(result))
        ):
            stored = await self.store_quietly(
                full, result, spec, delta, guard, generation, stamps or ()
            )
        if guard and not stored:
            await self.release(full, guard)
        return result


_NO_TAGS: Final[list[str]] = []
_NO_STAMPS: Final[list[bytes]] = []


@final
class Opened:
    """An entry opened by `Engine.examine`: unsigned, with its tags parsed."""

    __slots__ = ("data", "offset", "stamps", "tag_keys")

    def __init__(self, data: bytes, tag_keys: list[str], stamps: list[bytes], offset: int):
        self.data = data
        self.tag_keys = tag_keys
        self.stamps = stamps
        self.offset = offset


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
