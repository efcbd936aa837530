"""`Reader`: every read of entries from the backend — concurrent reads merged into as few round
trips as possible, the generation fetched along, the journal replayed first, and each round
trip timed once."""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable, Iterable
from time import perf_counter_ns
from typing import Any, final

from .._errors import BackendError
from .generation import Generation
from .guard import Guard
from .journal import Journal
from .stats import LatencyHistogram, StatsRecorder

__all__ = ("Reader",)


class Later(enum.Enum):
    """What `Reader.now` answers when the read must be awaited (`Reader.get`)."""

    LATER = enum.auto()


class _ReadAbandoned(Exception):
    """Tells the readers waiting on a read that it was cancelled before its answer came."""


# One read under way for a key: ``[its event loop, *the futures of readers waiting for it]``.
# A plain list, because a lone read (the common case) must cost almost nothing; the list's
# identity tells its owner whether the key still points at its read (see `detach`).
_Read = list[Any]


@final
class Reader:
    """The read path of one `Cache`: merges reads of one key, and batches reads of many."""

    __slots__ = (
        "batch",
        "batch_loop",
        "generation",
        "guard",
        "in_flight",
        "journal",
        "reads",
        "replay",
        "stats",
        "track",
    )

    def __init__(
        self,
        guard: Guard,
        generation: Generation,
        journal: Journal,
        stats: StatsRecorder,
        *,
        replay: Callable[[], Awaitable[None]],
        track: Callable[[asyncio.Task[Any]], None],
    ) -> None:
        self.guard = guard
        self.generation = generation
        self.journal = journal
        # The cache's stats: each GET or MGET sent is one latency sample (`StatsRecorder.latency`
        # is replaced by a reset, so it is looked up at each use).
        self.stats = stats
        # Replays the invalidations the journal holds; asked before anything is read.
        self.replay = replay
        self.track = track
        # Reads to the backend under way, and the keys queued to go out together as one MGET.
        self.in_flight = 0
        self.batch: list[tuple[str, _Read, LatencyHistogram | None]] | None = None
        self.batch_loop: asyncio.AbstractEventLoop | None = None
        # Key -> the read under way that later readers of that key may join.
        self.reads: dict[str, _Read] = {}

    def detach(self, keys: Iterable[str] | None = None) -> None:
        """Lets no reader join the reads of ``keys`` (all keys: ``None``) now under way.

        Called when this process changes or invalidates keys: a read sent before the change
        may be answered with what the key held before it, which is fine for the readers that
        were already waiting but not for one that starts after the change returned. The
        detached reads still answer their own readers.
        """
        if keys is None:
            self.reads.clear()
            return
        reads = self.reads
        for key in keys:
            reads.pop(key, None)

    def now(self, full: str) -> bytes | Later | None:
        """GETs ``full`` from an in-process backend without a coroutine, or returns `Later.LATER`
        when the read must be awaited with `get` (the backend has no ``get_nowait``, the
        journal waits for a replay, or the generation is due for a check).

        Raises:
            CircuitOpenError: the breaker is open.
        """
        nowait = self.guard.nowait
        generation = self.generation
        if (
            nowait is None
            or self.journal.pending
            or generation.value is None
            or generation.clock() >= generation.due
        ):
            return Later.LATER
        guard = self.guard
        guard.gate("GET")
        data = nowait(full)
        if guard.breaker.failures:
            guard.breaker.succeeded()
        return data

    async def get(self, full: str, latency: LatencyHistogram | None = None) -> bytes | None:
        """GETs ``full``, merging concurrent reads into as few round trips as possible.

        Two merges, both invisible to callers. Readers of a key that is already being read
        wait for that answer instead of sending another GET: a burst on a hot key costs one
        round trip. And a read that starts while other reads are in flight joins a batch that
        goes out as one MGET at the end of the event loop's turn: a burst over many keys costs
        two round trips instead of one per key (and one connection each). A read with nothing
        else in flight goes out at once, so a lone hit pays neither merge. Each waiter waits on
        a future of its own, so its cancellation cancels nothing else.

        Each round trip is one latency sample, when the guard times reads: in the cache's stats,
        and in ``latency`` (a decorated function's) if it was sent for this read. A read that
        joins another's adds none; a batch's MGET adds one to the cache's stats and one to the
        histogram of each function it read for.
        """
        guard = self.guard
        if not guard.merge_reads:
            guard.gate("GET")
            data = await self.fetch_one(full)
            if guard.breaker.failures:
                guard.breaker.succeeded()
            return data
        # A reader that joins a read, or a batch, takes its loop to be this one: that spares
        # each reader of a burst `asyncio.get_running_loop()` (a getpid() system call before
        # Python 3.12). A reader on another loop learns otherwise at its await, where asyncio
        # refuses a future of another loop, and reads alone.
        reads = self.reads
        read = reads.get(full)
        loop: asyncio.AbstractEventLoop
        if read is not None:
            loop = read[0]
        elif self.batch is not None and self.in_flight and self.batch_loop is not None:
            guard.gate("GET")
            loop = self.batch_loop
            read = reads[full] = [loop]
            self.batch.append((full, read, latency))
        else:
            loop = asyncio.get_running_loop()
            guard.gate("GET")
            if not self.in_flight or self.batch_loop not in (None, loop):
                # Nothing else in flight: read at once, for any reader that comes meanwhile.
                own = reads[full] = [loop]
                return await self._read(full, latency, own)
            batch = self.batch
            if batch is None:
                batch = self.batch = []
                self.batch_loop = loop
                loop.call_soon(self._send_batch)
            read = reads[full] = [loop]
            batch.append((full, read, latency))
        # Joined, or batched: waited for here, not in a coroutine of its own (one frame less
        # for each of a burst's hundred readers).
        future: asyncio.Future[bytes | None] = loop.create_future()
        read.append(future)
        try:
            return await future
        except _ReadAbandoned:
            # The read this one waited for was cancelled before its answer came.
            guard.gate("GET")
            return await self._read(full, latency, None)
        except RuntimeError:
            if asyncio.get_running_loop() is loop:
                raise
            # The read (or batch) belongs to another event loop: another thread's, or one that
            # closed under it, which no reader may join again.
            with contextlib.suppress(ValueError):
                read.remove(future)
            if loop.is_closed():
                if reads.get(full) is read:
                    del reads[full]
                if self.batch_loop is loop:
                    self.batch = self.batch_loop = None
            guard.gate("GET")
            return await self._read(full, latency, None)

    async def _read(
        self, full: str, latency: LatencyHistogram | None, own: _Read | None
    ) -> bytes | None:
        """GETs ``full`` for one reader, past the breaker's gate; answers the readers that
        joined ``own`` too, when it was listed for joining (a read alone, after a merged read
        that could not answer, is not)."""
        guard = self.guard
        self.in_flight += 1
        started = perf_counter_ns() if guard.timing else 0
        try:
            data = await self.fetch_one(full)
        except BaseException as exc:
            if not isinstance(exc, BackendError):
                guard.breaker.abandoned()
            if own is not None:
                self._finish(full, own, None, exc)
            raise
        finally:
            self.in_flight -= 1
        if started:
            elapsed = perf_counter_ns() - started
            self.stats.latency.record(elapsed)
            if latency is not None:
                latency.record(elapsed)
        if own is not None:
            self._finish(full, own, data, None)
        breaker = guard.breaker
        if breaker.failures or breaker.open_until:
            breaker.succeeded()
        return data

    def _send_batch(self) -> None:
        """Sends the reads that queued during this turn of the event loop as one MGET."""
        batch, self.batch, loop, self.batch_loop = self.batch, None, self.batch_loop, None
        if batch and loop is not None:
            self.track(loop.create_task(self._read_batch(batch)))

    async def _read_batch(self, batch: list[tuple[str, _Read, LatencyHistogram | None]]) -> None:
        self.in_flight += 1
        started = perf_counter_ns() if self.guard.timing else 0
        try:
            values = await self.load_many([full for full, _, _ in batch])
        except BaseException as exc:
            # Each waiter's caller counts the failure for the breaker and logs it.
            for full, read, _ in batch:
                self._finish(full, read, None, exc)
            if not isinstance(exc, (BackendError, asyncio.CancelledError)):
                raise
            return
        finally:
            self.in_flight -= 1
        if started:
            elapsed = perf_counter_ns() - started
            self.stats.latency.record(elapsed)
            for histogram in {id(h): h for _, _, h in batch if h is not None}.values():
                histogram.record(elapsed)
        # `load_many` told the breaker the backend answered.
        for (full, read, _), data in zip(batch, values, strict=True):
            self._finish(full, read, data, None)

    def _finish(
        self, full: str, read: _Read, data: bytes | None, exc: BaseException | None
    ) -> None:
        """Ends ``read``: unlists it (unless detached) and hands its answer to its waiters."""
        reads = self.reads
        if reads.get(full) is read:
            del reads[full]
        if len(read) == 1:
            return
        failure = (
            None if exc is None else exc if isinstance(exc, BackendError) else _ReadAbandoned()
        )
        for future in read[1:]:
            if future.done():
                continue  # that reader was cancelled
            if failure is None:
                future.set_result(data)
            else:
                future.set_exception(failure)
                future.exception()  # retrieved: its reader may be gone

    async def fetch_one(self, full: str) -> bytes | None:
        """GETs ``full``; every ``generation.interval`` seconds, with the generation in one MGET.

        Keeping up with `bump_version` in other processes so costs no round trip of its own.
        Once the generation known is due for a check, every read asks for it until an answer
        has been adopted: a read that took the one known meanwhile could serve an entry from
        before a bump older than the interval.
        """
        if self.journal.pending:
            await self.replay()
        generation = self.generation
        if generation.value is not None and generation.clock() < generation.due:
            return await self.guard.backend.get(full)
        sent, sent_at = generation.send()
        data, raw = _answered(await self.guard.backend.get_many([full, generation.key]), 2)
        await generation.learn(raw, sent, sent_at)
        return data

    async def load_many(self, keys: list[str]) -> list[bytes | None]:
        """GETs ``keys`` in one MGET, fetching the generation too when it is due."""
        self.guard.gate("MGET")
        if self.journal.pending:
            await self.replay()
        generation = self.generation
        if generation.fresh():
            found = _answered(await self.guard.backend.get_many(keys), len(keys))
        else:
            sent, sent_at = generation.send()
            found = _answered(
                await self.guard.backend.get_many([*keys, generation.key]), len(keys) + 1
            )
            await generation.learn(found.pop(), sent, sent_at)
        self.guard.succeeded()
        return found


def _answered(values: list[bytes | None], count: int) -> list[bytes | None]:
    """Returns the ``count`` values an MGET answered, or raises: a backend that answers
    another number (a desynchronised connection) must fail the read, not leave waiters of the
    keys it did not answer waiting for ever.

    Raises:
        BackendError: ``values`` does not hold ``count`` values.
    """
    if len(values) != count:
        raise BackendError(f"MGET answered {len(values)} values for {count} keys")
    return values
