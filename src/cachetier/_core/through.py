"""`ReadThrough`: reads that compute on a miss — freshness, stale-while-revalidate, stale-if-error,
XFetch early refresh, single flight, leases, the cross-process lock — and the plain reads of
`Cache.get`, which share its rules for what a stored entry means."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import math
import random
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, final

from .._errors import BackendError, SerializationError
from .._keys import KeyBuilder
from .._log import LOGGER
from .._types import MISSING, Clock, Outcome
from ..backends._protocol import LockingBackend
from .entry import (
    DELTA,
    DELTA_OFFSET,
    FORMAT,
    FRESH,
    FRESH_OFFSET,
    GENERATION_END,
    GENERATION_OFFSET,
    HEADER_SIZE,
    LEASE_PREFIX,
    LEASE_SIZE,
    MAGIC,
    UNSIGNED,
    EntrySigner,
    entry_tags,
)
from .generation import Generation
from .guard import Guard
from .local import LocalState
from .lock import compute_locked
from .lookups import Lookups
from .reads import Later, Reader
from .singleflight import Flights
from .spec import FetchSpec
from .stats import ReadEvent, Reporter, StatsRecorder, debug_enabled
from .tags import Tags
from .writes import LEASE_TTL, Writer

__all__ = ("ReadThrough",)

_GONE: Final = -1
"""What `ReadThrough._verify` answers for an entry that must not be served."""
_UNREADABLE: Final = -2
"""What `ReadThrough._verify` answers for an entry it dropped: nothing is at the key now."""


@final
class ReadThrough:
    """The read-through of one `Cache`: `Cache.get_or_set` and every decorated call come here."""

    __slots__ = (
        "bypassing",
        "clock",
        "flights",
        "generation",
        "guard",
        "keys",
        "local",
        "lookups",
        "reader",
        "reporter",
        "signer",
        "stats",
        "tags",
        "writer",
    )

    def __init__(
        self,
        guard: Guard,
        reader: Reader,
        generation: Generation,
        tags: Tags,
        writer: Writer,
        flights: Flights,
        reporter: Reporter,
        lookups: Lookups,
        *,
        keys: KeyBuilder,
        signer: EntrySigner | None,
        clock: Clock,
        bypassing: contextvars.ContextVar[bool],
    ) -> None:
        self.guard = guard
        self.reader = reader
        self.generation = generation
        self.tags = tags
        self.writer = writer
        self.flights = flights
        self.reporter = reporter
        self.stats = reporter.stats
        self.lookups = lookups
        self.keys = keys
        self.signer = signer
        self.clock = clock
        self.bypassing = bypassing
        # Set with the backend (`Engine.use`): the local tier follows it.
        self.local: LocalState | None = None

    # -- read-through ---------------------------------------------------------------------------

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
        miss. The fresh hit is the hot path: it allocates nothing it does not return, and
        calls nothing but the read; the rarer cases (signed, tagged, of another generation,
        stale, undecodable) each have a method of their own.
        """
        function_stats = spec.stats
        breaker = self.guard.breaker
        if self.bypassing.get() or (
            breaker.open_until and not self.guard.strict and breaker.blocked()
        ):
            return await self._uncached(full, func, args, kwargs, function_stats)
        # The local tier was asked first (`LocalState.get`); this read may keep what it finds.
        local = self.local
        seq = 0 if local is None else local.seq
        read_failed = False
        reader = self.reader
        try:
            answer: bytes | Later | None = (
                reader.now(full) if self.guard.nowait is not None else Later.LATER
            )
            if answer is Later.LATER:
                data = await reader.get(
                    full, None if function_stats is None else function_stats.latency
                )
            else:
                data = answer
        except BackendError as exc:
            self.guard.failed("get", exc)
            self.reporter.count(Outcome.BACKEND_ERROR, full, function_stats)
            data = None
            # The backend just failed us: computing is enough, a write would wait on it again.
            read_failed = True
        else:
            if data is None or (len(data) == LEASE_SIZE and data[:2] == LEASE_PREFIX):
                # Absent, or leased by a computation under way (which will store it).
                self.reporter.count(Outcome.MISS, full, function_stats)
                data = None
        # The entry as stored: a computation stores only if the key still holds it (`begin`).
        seen = data
        stale: bytes | None = None
        if data is not None and self.signer is not None:
            data, seen = await self._unsigned(full, data, function_stats)
        if data is not None:
            if len(data) >= HEADER_SIZE and data[0] == MAGIC and data[1] == FORMAT:
                offset = HEADER_SIZE
                tag_keys: list[str] = []
                if data[GENERATION_OFFSET:GENERATION_END] != self.generation.packed or data[2]:
                    offset, tag_keys = await self._verify(full, data, function_stats)
                    if offset == _UNREADABLE:
                        seen = None
                if offset >= 0:
                    fresh_until = FRESH.unpack_from(data, FRESH_OFFSET)[0]
                    now = self.clock()
                    if not fresh_until or now < fresh_until:
                        try:
                            value = spec.codec.loads(data[offset:])
                        except SerializationError as exc:
                            await self._undecodable(full, exc, function_stats)
                            seen = None
                        else:
                            # A hit, counted inline: record() and its branches cost a microsecond.
                            self.stats.hits += 1
                            if function_stats is not None:
                                function_stats.hits += 1
                            if self.reporter.hooks or debug_enabled(logging.DEBUG):
                                self._tell_hit(full, function_stats)
                            if local is not None:
                                local.keep(
                                    full,
                                    spec.codec,
                                    value,
                                    min(fresh_until or math.inf, now + local.settings.ttl),
                                    seq,
                                    tag_keys,
                                )
                            if spec.freshness.early_refresh_beta and fresh_until:
                                self._refresh_early(
                                    full, data, fresh_until, now, (func, args, kwargs), spec, seen
                                )
                            return value
                    else:
                        served, value, stale, seen = await self._past_fresh(
                            full, data, offset, fresh_until, now, (func, args, kwargs), spec, seen
                        )
                        if served:
                            return value
            else:
                await self._undecodable(
                    full, "not an entry written by a cached function", function_stats
                )
                seen = None
        return await self._compute_missing(
            full, func, args, kwargs, spec, write=not read_failed, seen=seen, stale=stale
        )

    async def _uncached(
        self,
        full: str,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        function_stats: Any,
    ) -> Any:
        """Runs the function as if no cache existed: inside `Cache.bypass`, or while the
        breaker is open — with no single flight, serialization or write, so an outage costs
        microseconds a call."""
        outcome = Outcome.BYPASSED if self.bypassing.get() else Outcome.BACKEND_ERROR
        self.reporter.count(outcome, full, function_stats)
        result = func(*args, **kwargs)
        return (await result) if inspect.isawaitable(result) else result

    def _tell_hit(self, full: str, function_stats: StatsRecorder | None) -> None:
        """Tells the read hooks of a hit, and the debug log; the hit is counted already."""
        reporter = self.reporter
        if reporter.hooks:
            reporter.notify(ReadEvent(full, Outcome.HIT, function_stats and function_stats.name))
        if debug_enabled(logging.DEBUG):
            LOGGER.debug("cache hit: %s", full)

    def _refresh_early(
        self,
        full: str,
        data: bytes,
        fresh_until: float,
        now: float,
        call: tuple[Callable[..., Any], tuple[Any, ...], Mapping[str, Any]],
        spec: FetchSpec,
        seen: bytes | None,
    ) -> None:
        """XFetch: refreshes a fresh hit in the background when its draw says it is time."""
        delta = DELTA.unpack_from(data, DELTA_OFFSET)[0]
        if _xfetch_due(now, fresh_until, delta, spec.freshness.early_refresh_beta):
            self.refresh_soon(full, *call, spec, seen)

    async def _unsigned(
        self, full: str, data: bytes, function_stats: StatsRecorder | None
    ) -> tuple[bytes | None, bytes | None]:
        """Returns the unsigned entry in the stored ``data``, and ``data`` (what a computation's
        write is guarded by); ``(None, None)`` (dropped, counted) if it does not verify."""
        opened = self.signer.open(full, data) if self.signer is not None else data
        if opened is None:
            await self._undecodable(full, UNSIGNED, function_stats)
            return None, None
        return opened, data

    async def _undecodable(self, full: str, reason: object, function_stats: Any) -> None:
        await self.lookups.drop_undecodable(full, reason)
        self.reporter.count(Outcome.DECODE_ERROR, full, function_stats)

    async def _verify(self, full: str, data: bytes, function_stats: Any) -> tuple[int, list[str]]:
        """Checks the generation and the tags of an entry: returns where its payload starts and
        its tag keys, or `_GONE` (counted as a miss) or `_UNREADABLE` (dropped, counted)."""
        if data[GENERATION_OFFSET:GENERATION_END] != self.generation.packed and (
            not self.generation.current(data)
        ):
            # Written before `bump_version`: neither fresh nor stale, only gone.
            self.reporter.count(Outcome.MISS, full, function_stats)
            return _GONE, []
        if not data[2]:
            return HEADER_SIZE, []
        try:
            tag_keys, stamps, offset = entry_tags(data)
        except (ValueError, IndexError, struct.error) as exc:
            await self._undecodable(full, f"its tag section is unreadable: {exc}", function_stats)
            return _UNREADABLE, []
        if not await self.tags.hold(tag_keys, stamps):
            # Invalidated through a tag: gone, not even stale.
            self.reporter.count(Outcome.MISS, full, function_stats)
            return _GONE, []
        return offset, tag_keys

    async def _past_fresh(
        self,
        full: str,
        data: bytes,
        offset: int,
        fresh_until: float,
        now: float,
        call: tuple[Callable[..., Any], tuple[Any, ...], Mapping[str, Any]],
        spec: FetchSpec,
        seen: bytes | None,
    ) -> tuple[bool, Any, bytes | None, bytes | None]:
        """An entry past its fresh time: served while stale-while-revalidate allows (and
        refreshed in the background), else kept for stale-if-error.

        Returns (served, the value, the payload kept for stale-if-error, the entry seen).
        """
        freshness = spec.freshness
        function_stats = spec.stats
        if freshness.stale_ttl and now < fresh_until + freshness.stale_ttl:
            try:
                value = spec.codec.loads(data[offset:])
            except SerializationError as exc:
                await self._undecodable(full, exc, function_stats)
                return False, MISSING, None, None
            # Stale-while-revalidate: serve it, and refresh it in the background.
            self.reporter.count(Outcome.STALE, full, function_stats)
            self.refresh_soon(full, *call, spec, seen)
            return True, value, None, seen
        stale = None
        if freshness.stale_if_error and now < fresh_until + freshness.stale_if_error:
            stale = data[offset:]
        self.reporter.count(Outcome.MISS, full, function_stats)
        return False, MISSING, stale, seen

    async def _compute_missing(
        self,
        full: str,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        spec: FetchSpec,
        *,
        write: bool,
        seen: bytes | None,
        stale: bytes | None,
    ) -> Any:
        """Computes a missing value once in this process; serves ``stale`` if that raises."""
        produce = functools.partial(func, *args, **kwargs)
        tags = spec.tags_of(args, kwargs)

        async def compute() -> Any:
            return await self.compute(full, produce, spec, write=write, seen=seen, tags=tags)

        if stale is None:
            return await self.flights.run(full, compute)
        try:
            return await self.flights.run(full, compute)
        except Exception as exc:  # noqa: BLE001  # stale-if-error absorbs exactly the fetch's own errors
            try:
                value = spec.codec.loads(stale)
            except SerializationError:
                raise exc from None
            self.reporter.count(Outcome.STALE, full, spec.stats)
            self.guard.log.warning(
                "stale_if_error", "serving the stale value of %s: computing it raised %r", full, exc
            )
            return value

    # -- computing --------------------------------------------------------------------------------

    def refresh_soon(
        self,
        full: str,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        spec: FetchSpec,
        seen: bytes | None,
    ) -> None:
        """Starts one background recomputation of ``full`` unless one is already under way."""
        flights = self.flights.flights
        if flights.is_running(full):
            return
        self.stats.refreshes += 1
        if spec.stats is not None:
            spec.stats.refreshes += 1
        produce = functools.partial(func, *args, **kwargs)
        tags = spec.tags_of(args, kwargs)

        async def compute() -> Any:
            return await self.compute(full, produce, spec, seen=seen, tags=tags)

        task, _ = flights.start(full, compute)
        task.add_done_callback(self._log_failed_refresh)

    def _log_failed_refresh(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.guard.log.warning(
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
        backend = self.guard.backend
        if (
            spec.stampede.lock
            and isinstance(backend, LockingBackend)
            and not self.guard.breaker.open_until
        ):
            return await compute_locked(
                backend,
                full,
                spec,
                keys=self.keys,
                guard=self.guard,
                stats=self.stats,
                peek=self.lookups.peek,
                fetch=functools.partial(
                    self.fetch_and_store, full, produce, spec, seen=seen, tags=tags
                ),
                force=force,
            )
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

        The write is guarded (`Writer.begin`): it stores only if no invalidation reached
        ``full`` since before ``produce`` was called.
        """
        writer = self.writer
        guard = await writer.begin(full, seen) if write else None
        stamps: list[tuple[str, bytes]] | None = []
        if guard is not None and tags:
            ttl = spec.ttl
            stamps = await self.tags.stamp(
                full,
                tags,
                None if ttl is None else ttl + spec.freshness.keep_after_ttl + LEASE_TTL,
            )
            if stamps is None:
                await writer.release(full, guard)
                guard = None
        generation = self.generation.value
        if stamps:
            self.flights.recorded(stamps)
        started = time.perf_counter()
        try:
            result = produce()
            if inspect.isawaitable(result):
                result = await result
        except BaseException:
            if guard:
                await writer.release(full, guard)
            raise
        delta = time.perf_counter() - started
        stored = False
        if (
            guard is not None
            and generation is not None
            and (spec.should_store is None or spec.should_store(result))
        ):
            stored = await writer.store(full, result, spec, delta, guard, generation, stamps or ())
        if guard and not stored:
            await writer.release(full, guard)
        return result


def _xfetch_due(now: float, fresh_until: float, delta: float, beta: float) -> bool:
    """XFetch: refresh early with a probability that grows near expiry and with compute time.

    ``now - delta * beta * ln(U)`` for uniform ``U`` in (0, 1] reaches ``fresh_until`` early
    more often the longer the value took to compute (``delta``); see Vattani et al., VLDB 2015.
    """
    u = 1.0 - random.random()  # noqa: S311  # a refresh schedule, not security
    return now - delta * beta * math.log(u) >= fresh_until
