"""`SharedReads`: concurrent reads merged into as few backend round trips as possible."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, final

from ._errors import BackendError

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ("SharedReads",)


class _ReadAbandoned(Exception):
    """Tells the readers waiting on a read that it was cancelled before its answer came."""


@final
class SharedReads:
    """The read path of one `Engine`: merges reads of one key, and batches reads of many."""

    __slots__ = ("_engine", "batch", "batch_loop", "in_flight", "reads")

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # Reads to the backend under way, and the keys queued to go out together as one MGET.
        self.in_flight = 0
        self.batch: list[str] | None = None
        self.batch_loop: asyncio.AbstractEventLoop | None = None
        # Key -> the event loop of its one reader, or the futures of readers waiting for it.
        self.reads: dict[str, asyncio.AbstractEventLoop | list[asyncio.Future[bytes | None]]] = {}

    async def get(self, full: str) -> bytes | None:
        """GETs ``full``, merging concurrent reads into as few round trips as possible.

        Two merges, both invisible to callers. Readers of a key that is already being read
        wait for that answer instead of sending another GET: a burst on a hot key costs one
        round trip. And a read that starts while other reads are in flight joins a batch that
        goes out as one MGET at the end of the event loop's turn: a burst over many keys costs
        two round trips instead of one per key (and one connection each). A read with nothing
        else in flight goes out at once, so a lone hit pays neither merge, only three dict
        operations. Each waiter waits on a future of its own, so its cancellation cancels
        nothing else.
        """
        if not self._engine.merge_reads:
            self._engine.gate("GET")
            data = await self._engine.fetch_one(full)
            if self._engine.breaker.failures:
                self._engine.breaker.succeeded()
            return data
        loop = asyncio.get_running_loop()
        reads = self.reads
        waiting = reads.get(full)
        if waiting is not None:
            if waiting is loop:
                waiting = reads[full] = []
            if isinstance(waiting, list):
                return await self._wait_for(waiting, full, loop)
            # Otherwise another event loop reads this key: read without merging.
        self._engine.gate("GET")
        if waiting is None and self.in_flight and self.batch_loop in (None, loop):
            batch = self.batch
            if batch is None:
                batch = self.batch = []
                self.batch_loop = loop
                loop.call_soon(self._send_batch)
            batch.append(full)
            waiting = reads[full] = []
            return await self._wait_for(waiting, full, loop)
        owner = waiting is None
        if owner:
            reads[full] = loop
        self.in_flight += 1
        try:
            data = await self._engine.fetch_one(full)
        except BaseException as exc:
            if not isinstance(exc, BackendError):
                self._engine.breaker.abandoned()
            if owner:
                self._answer(reads.pop(full, None), None, exc)
            raise
        finally:
            self.in_flight -= 1
        if owner:
            waiters = reads.pop(full, None)
            if waiters is not loop:
                self._answer(waiters, data, None)
        breaker = self._engine.breaker
        if breaker.failures or breaker.open_until:
            breaker.succeeded()
        return data

    async def _wait_for(
        self,
        waiting: list[asyncio.Future[bytes | None]],
        full: str,
        loop: asyncio.AbstractEventLoop,
    ) -> bytes | None:
        future: asyncio.Future[bytes | None] = loop.create_future()
        waiting.append(future)
        try:
            return await future
        except _ReadAbandoned:
            # The read this one waited for was cancelled before its answer came: read alone.
            self._engine.gate("GET")
            return await self._engine.fetch_one(full)

    def _send_batch(self) -> None:
        """Sends the reads that queued during this turn of the event loop as one MGET."""
        keys, self.batch, loop, self.batch_loop = self.batch, None, self.batch_loop, None
        if keys and loop is not None:
            self._engine.track(loop.create_task(self._read_batch(keys)))

    async def _read_batch(self, keys: list[str]) -> None:
        reads = self.reads
        self.in_flight += 1
        try:
            values = await self._engine.load_many(keys)
        except BaseException as exc:
            # Each waiter's caller counts the failure for the breaker and logs it.
            for key in keys:
                self._answer(reads.pop(key, None), None, exc)
            if not isinstance(exc, (BackendError, asyncio.CancelledError)):
                raise
            return
        finally:
            self.in_flight -= 1
        # `load_many` told the breaker the backend answered.
        for key, data in zip(keys, values, strict=True):
            self._answer(reads.pop(key, None), data, None)

    @staticmethod
    def _answer(waiters: object, data: bytes | None, exc: BaseException | None) -> None:
        """Hands the first reader's answer (or failure) to the readers that waited for it."""
        if not isinstance(waiters, list):
            return
        failure = (
            None if exc is None else exc if isinstance(exc, BackendError) else _ReadAbandoned()
        )
        for future in waiters:
            if future.done():
                continue  # that reader was cancelled
            if failure is None:
                future.set_result(data)
            else:
                future.set_exception(failure)
                future.exception()  # retrieved: its reader may be gone
