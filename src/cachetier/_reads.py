"""`SharedReads`: concurrent reads merged into as few backend round trips as possible."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, final

from ._errors import BackendError

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ("SharedReads",)


class _ReadAbandoned(Exception):
    """Tells the readers waiting on a read that it was cancelled before its answer came."""


# One read under way for a key: ``[its event loop, *the futures of readers waiting for it]``.
# A plain list, because a lone read (the common case) must cost almost nothing; the list's
# identity tells its owner whether the key still points at its read (see `detach`).
_Read = list[Any]


@final
class SharedReads:
    """The read path of one `Engine`: merges reads of one key, and batches reads of many."""

    __slots__ = ("_engine", "batch", "batch_loop", "in_flight", "reads")

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # Reads to the backend under way, and the keys queued to go out together as one MGET.
        self.in_flight = 0
        self.batch: list[tuple[str, _Read]] | None = None
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

    async def get(self, full: str) -> bytes | None:
        """GETs ``full``, merging concurrent reads into as few round trips as possible.

        Two merges, both invisible to callers. Readers of a key that is already being read
        wait for that answer instead of sending another GET: a burst on a hot key costs one
        round trip. And a read that starts while other reads are in flight joins a batch that
        goes out as one MGET at the end of the event loop's turn: a burst over many keys costs
        two round trips instead of one per key (and one connection each). A read with nothing
        else in flight goes out at once, so a lone hit pays neither merge. Each waiter waits on
        a future of its own, so its cancellation cancels nothing else.
        """
        engine = self._engine
        if not engine.merge_reads:
            engine.gate("GET")
            data = await engine.fetch_one(full)
            if engine.breaker.failures:
                engine.breaker.succeeded()
            return data
        loop = asyncio.get_running_loop()
        reads = self.reads
        read = reads.get(full)
        if read is not None and read[0] is loop:
            return await self._wait_for(read, full, loop)
        # Nothing to join (or another event loop reads this key: read without merging).
        engine.gate("GET")
        if read is None and self.in_flight and self.batch_loop in (None, loop):
            batch = self.batch
            if batch is None:
                batch = self.batch = []
                self.batch_loop = loop
                loop.call_soon(self._send_batch)
            read = reads[full] = [loop]
            batch.append((full, read))
            return await self._wait_for(read, full, loop)
        own: _Read | None = None
        if read is None:
            own = reads[full] = [loop]
        self.in_flight += 1
        try:
            data = await engine.fetch_one(full)
        except BaseException as exc:
            if not isinstance(exc, BackendError):
                engine.breaker.abandoned()
            if own is not None:
                self._finish(full, own, None, exc)
            raise
        finally:
            self.in_flight -= 1
        if own is not None:
            self._finish(full, own, data, None)
        breaker = engine.breaker
        if breaker.failures or breaker.open_until:
            breaker.succeeded()
        return data

    async def _wait_for(
        self, read: _Read, full: str, loop: asyncio.AbstractEventLoop
    ) -> bytes | None:
        future: asyncio.Future[bytes | None] = loop.create_future()
        read.append(future)
        try:
            return await future
        except _ReadAbandoned:
            # The read this one waited for was cancelled before its answer came: read alone.
            self._engine.gate("GET")
            return await self._engine.fetch_one(full)

    def _send_batch(self) -> None:
        """Sends the reads that queued during this turn of the event loop as one MGET."""
        batch, self.batch, loop, self.batch_loop = self.batch, None, self.batch_loop, None
        if batch and loop is not None:
            self._engine.track(loop.create_task(self._read_batch(batch)))

    async def _read_batch(self, batch: list[tuple[str, _Read]]) -> None:
        self.in_flight += 1
        try:
            values = await self._engine.load_many([full for full, _ in batch])
        except BaseException as exc:
            # Each waiter's caller counts the failure for the breaker and logs it.
            for full, read in batch:
                self._finish(full, read, None, exc)
            if not isinstance(exc, (BackendError, asyncio.CancelledError)):
                raise
            return
        finally:
            self.in_flight -= 1
        # `load_many` told the breaker the backend answered.
        for (full, read), data in zip(batch, values, strict=True):
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
