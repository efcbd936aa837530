"""`Writer`: every write of entries — payloads, entries, leases and the guarded write that loses to
any invalidation since the computation began."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from time import perf_counter_ns
from typing import Final, cast, final

from .._errors import BackendError, SerializationError
from .._log import LOGGER
from .._types import Clock
from ..backends._protocol import GuardedBackend
from ..serializers import Serializer
from .entry import GUARD_SIZE, EntrySigner, encode_entry, is_lease, new_lease
from .generation import Generation
from .guard import Guard
from .journal import Journal
from .singleflight import Flights
from .spec import FetchSpec
from .stats import StatsRecorder, debug_enabled
from .tags import Tags

__all__ = ("LEASE_TTL", "Writer")

LEASE_TTL: Final = 60.0
"""Seconds a lease holds the key of a value being computed; a longer computation is not stored."""
_UNGUARDED: Final = b""
"""The guard of a write to a backend without `GuardedBackend`: a plain SET."""


@final
class Writer:
    """Writes the entries of one `Cache`: encoded, signed if signing, guarded against races."""

    __slots__ = (
        "changed",
        "clock",
        "flights",
        "generation",
        "guard",
        "jitter",
        "journal",
        "max_value_bytes",
        "signer",
        "stats",
        "tags",
        "trusted",
    )

    def __init__(
        self,
        guard: Guard,
        generation: Generation,
        flights: Flights,
        stats: StatsRecorder,
        journal: Journal,
        tags: Tags,
        *,
        trusted: Callable[[], Awaitable[None]],
        changed: Callable[[Sequence[str]], None],
        signer: EntrySigner | None,
        clock: Clock,
        jitter: float,
        max_value_bytes: int | None,
    ) -> None:
        self.guard = guard
        self.generation = generation
        self.flights = flights
        self.stats = stats
        self.journal = journal
        self.tags = tags
        # Forgets what this process read or computes of keys it wrote (`Invalidations.changed`).
        self.changed = changed
        # Replays the journal, if it holds anything, before anything is written.
        self.trusted = trusted
        self.signer = signer
        self.clock = clock
        self.jitter = jitter
        self.max_value_bytes = max_value_bytes

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
            self.guard.log.warning(
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
        checks = self.guard
        started = perf_counter_ns() if checks.timing else 0
        try:
            checks.gate("SET")
            if self.journal.pending:
                await self.trusted()
            if guard:
                if not await cast("GuardedBackend", checks.backend).set_if(
                    full, guard, data, seconds
                ):
                    checks.succeeded()
                    self.flights.overtaken_now()
                    if debug_enabled(logging.DEBUG):
                        LOGGER.debug("cache not storing %s: invalidated while computing", full)
                    return False
            else:
                await checks.backend.set(full, data, seconds)
        except BackendError as exc:
            checks.failed("set", exc)
            return False
        except BaseException:
            checks.breaker.abandoned()
            raise
        if started:
            self.stats.latency.record(perf_counter_ns() - started)
        checks.succeeded()
        self.stats.sets += 1
        return True

    async def store(
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
            self.guard.log.warning("serialize", "not caching %s: %s", full, exc)
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

    async def set(
        self,
        full: str,
        value: object,
        seconds: float | None,
        tags: tuple[str, ...],
        codec: Serializer,
    ) -> bool:
        """`Cache.set`: stores ``value`` at ``full`` with the stamps of ``tags``."""
        seconds = self.jittered(seconds)
        payload = self.dumps(full, value, codec)
        if payload is None:
            return False
        try:
            generation = await self.known_generation("set")
            if generation is None:
                return False
            stamps: list[tuple[str, bytes]] | None = []
            if tags:
                stamps = await self.tags.stamp(full, tags, seconds)
            if stamps is None:
                return False
            data = self.entry(full, payload, seconds, generation=generation, tags=stamps)
            return await self.write(full, data, seconds)
        finally:
            self.changed((full,))

    async def add(self, full: str, value: object, seconds: float | None, codec: Serializer) -> bool:
        """`Cache.add`: stores ``value`` at ``full`` only if it holds nothing."""
        seconds = self.jittered(seconds)
        payload = self.dumps(full, value, codec)
        if payload is None:
            return False
        generation = await self.known_generation("add")
        if generation is None:
            return False
        data = self.entry(full, payload, seconds, generation=generation)
        guard = self.guard
        try:
            stored = await guard.run(
                "SET NX", "add", guard.backend.add, full, data, seconds, fallback=False
            )
        finally:
            self.changed((full,))
        if stored:
            self.stats.sets += 1
        return stored

    async def set_many(
        self, items: Mapping[str, object], seconds: float | None, codec: Serializer
    ) -> bool:
        """`Cache.set_many`: stores every item of ``items`` (by stored key) in one round trip."""
        # One jitter for the batch: the backend writes it with a single TTL in one round trip.
        seconds = self.jittered(seconds)
        payloads: dict[str, bytes] = {}
        for full, value in items.items():
            payload = self.dumps(full, value, codec)
            if payload is not None:
                payloads[full] = payload
        if not payloads:
            return not items
        generation = await self.known_generation("set_many")
        if generation is None:
            return False
        entries = {
            full: self.entry(full, payload, seconds, generation=generation)
            for full, payload in payloads.items()
        }
        guard = self.guard

        async def write() -> bool:
            await guard.backend.set_many(entries, seconds)
            return True

        try:
            stored = await guard.run("SET (many)", "set_many", write, fallback=False)
        finally:
            self.changed(tuple(entries))
        if not stored:
            return False
        self.stats.sets += len(entries)
        return len(entries) == len(items)

    async def incr(self, full: str, amount: int, seconds: float | None) -> int:
        """`Cache.incr`: adds ``amount`` to the counter at ``full``; a failure always raises."""

        async def increment() -> int:
            await self.trusted()
            return await self.guard.backend.incr(full, amount, seconds)

        try:
            # No fallback is returned: with always_raise, a failure raises.
            return await self.guard.run("INCRBY", "incr", increment, fallback=0, always_raise=True)
        finally:
            self.changed((full,))

    async def known_generation(self, operation: str) -> int | None:
        """Returns the generation to write with, learning it first if due; ``None`` when the
        backend failed open (logged, counted)."""
        generation = self.generation
        if generation.fresh() and not self.journal.pending:
            return generation.value

        async def learn() -> int | None:
            await self.trusted()
            await generation.ensure()
            return generation.value

        return await self.guard.run(operation, operation, learn, fallback=None)

    async def begin(self, full: str, seen: bytes | None) -> bytes | None:
        """Prepares to compute ``full``: returns the guard of its write.

        The guard is what the key holds before the computation reads anything: the leading
        bytes of the entry there (``seen``, as the miss read it), or else a new lease put
        there. Every invalidation of the key removes or replaces it, so a write conditional
        on it (`write`) stores only values computed after the last invalidation. Returns
        ``None`` when the result must not be stored: another computation holds the key, or
        the backend failed. Also learns the generation if not known, to write with.
        """
        checks = self.guard
        try:
            checks.gate("SET NX (lease)")
            await self.trusted()
            await self.generation.ensure()
            if not checks.guarded:
                checks.succeeded()
                return _UNGUARDED
            if seen is not None and not is_lease(seen):
                checks.succeeded()
                return seen[:GUARD_SIZE]
            lease = new_lease()
            if await checks.backend.add(full, lease, LEASE_TTL):
                checks.succeeded()
                return lease
            current = await checks.backend.get(full)
        except BackendError as exc:
            checks.failed("lease", exc)
            return None
        checks.succeeded()
        if current is None or is_lease(current):
            return None
        return current[:GUARD_SIZE]

    async def release(self, full: str, guard: bytes) -> None:
        """Removes the lease ``guard`` from ``full`` when its computation stores nothing."""
        if not is_lease(guard):
            return
        checks = self.guard
        try:
            checks.gate("DEL (lease)")
            held = await cast("GuardedBackend", checks.backend).delete_if(full, guard)
        except BackendError as exc:
            checks.failed("release lease", exc)
        else:
            checks.succeeded()
            if not held:
                self.flights.overtaken_now()  # the lease was gone: an invalidation removed it
